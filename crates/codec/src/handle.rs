//! How handle types carry file descriptors through a frame.
//!
//! While [`encode`](crate::encode) runs, a thread-local collector is active:
//! a handle's `Serialize` calls [`put_fd`], which duplicates the descriptor
//! into the collector and returns its index, and the handle serializes that
//! index. While [`decode`](crate::decode) runs, the frame's descriptors sit in
//! the same thread-local slot, and the handle's `Deserialize` reads the index
//! and calls [`take_fd`]. Outside the codec (serde_json, say) both functions
//! fail, so a handle encoded by another format is a clear error, never a
//! number that means nothing in the other process.
//!
//! Handle types use the serde adapters [`fd`] and [`region`], or the [`Fd`]
//! wrapper:
//!
//! ```
//! use mp_sys::region::Region;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Counter {
//!     #[serde(with = "mp_codec::handle::region")]
//!     memory: Region,
//!     label: String,
//! }
//!
//! let c = Counter { memory: Region::create("counter", 8)?, label: "hits".into() };
//! let frame = mp_codec::encode(&c)?;
//! assert_eq!(frame.fds().len(), 1);
//! let back: Counter = mp_codec::decode(frame)?;
//! assert_eq!(back.label, "hits");
//! assert!(serde_json::to_string(&c).is_err()); // only mp-codec carries handles
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name handles give the newtype that wraps their descriptor index, so a
/// human reading a trace can tell an index from a number.
const FD_NEWTYPE: &str = "$mp_codec::Fd";

/// The thread's codec state while an encode or decode runs.
struct Slot {
    fds: Fds,
    /// The first handle error, kept because postcard drops the messages of
    /// custom serde errors.
    error: Option<String>,
}

enum Fds {
    /// Encoding: descriptors collected so far.
    Collect(Vec<OwnedFd>),
    /// Decoding: the frame's descriptors; `None` once taken.
    Supply(Vec<Option<OwnedFd>>),
}

thread_local! {
    static SLOT: RefCell<Option<Slot>> = const { RefCell::new(None) };
}

/// Runs `f` with `fds` installed, and returns what is left in the slot. The
/// previous slot is restored afterwards, also when `f` panics, so nested use
/// (a handle encoding another message) is safe.
fn with_slot<R>(fds: Fds, f: impl FnOnce() -> R) -> (R, Slot) {
    struct Restore(Option<Option<Slot>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(prev) = self.0.take() {
                SLOT.with(|s| *s.borrow_mut() = prev);
            }
        }
    }
    let prev = SLOT.with(|s| s.borrow_mut().replace(Slot { fds, error: None }));
    let mut restore = Restore(Some(prev));
    let r = f();
    let prev = restore.0.take().unwrap_or(None);
    let slot = SLOT.with(|s| std::mem::replace(&mut *s.borrow_mut(), prev));
    (
        r,
        slot.unwrap_or(Slot {
            fds: Fds::Collect(Vec::new()),
            error: None,
        }),
    )
}

/// Runs an encode: returns its result, the descriptors the handles put, and
/// the first handle error.
pub(crate) fn collecting<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>, Option<String>) {
    let (r, slot) = with_slot(Fds::Collect(Vec::new()), f);
    match slot.fds {
        Fds::Collect(fds) => (r, fds, slot.error),
        Fds::Supply(_) => (r, Vec::new(), slot.error),
    }
}

/// Runs a decode over `fds`: returns its result, how many descriptors no
/// handle claimed (they are closed), and the first handle error.
pub(crate) fn supplying<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> (R, usize, Option<String>) {
    let (r, slot) = with_slot(Fds::Supply(fds.into_iter().map(Some).collect()), f);
    let unclaimed = match slot.fds {
        Fds::Supply(v) => v.iter().filter(|f| f.is_some()).count(),
        Fds::Collect(_) => 0,
    };
    (r, unclaimed, slot.error)
}

/// Records `msg` as the handle error of the running encode or decode (the
/// first one wins), and returns it.
fn note(msg: String) -> String {
    SLOT.with(|s| {
        if let Some(slot) = &mut *s.borrow_mut() {
            slot.error.get_or_insert_with(|| msg.clone());
        }
    });
    msg
}

/// Why [`put_fd`] or [`take_fd`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleError(String);

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandleError {}

const OUTSIDE: &str = "a handle (a value holding a file descriptor) can only be encoded and decoded by mp-codec, \
     which sends the descriptor beside the bytes; another serde format cannot carry it";

/// Whether an [`encode`](crate::encode) is running on this thread.
///
/// ```
/// assert!(!mp_codec::handle::is_encoding());
/// ```
pub fn is_encoding() -> bool {
    SLOT.with(|s| {
        matches!(
            &*s.borrow(),
            Some(Slot {
                fds: Fds::Collect(_),
                ..
            })
        )
    })
}

/// Adds a duplicate of `fd` to the message being encoded and returns its
/// index, for the handle to serialize. Fails outside [`encode`](crate::encode).
///
/// ```
/// use std::os::fd::AsFd;
/// let (r, _w) = mp_sys::fd::pipe()?;
/// assert!(mp_codec::handle::put_fd(r.as_fd()).is_err()); // no encode running
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn put_fd(fd: BorrowedFd<'_>) -> Result<u32, HandleError> {
    SLOT.with(|s| match &mut *s.borrow_mut() {
        Some(Slot {
            fds: Fds::Collect(fds), ..
        }) => {
            let index = u32::try_from(fds.len()).map_err(|_| HandleError("too many descriptors".into()))?;
            let dup = fd
                .try_clone_to_owned()
                .map_err(|e| HandleError(format!("cannot duplicate a handle's descriptor: {e}")))?;
            fds.push(dup);
            Ok(index)
        }
        _ => Err(HandleError(OUTSIDE.into())),
    })
}

/// Takes the descriptor at `index` out of the frame being decoded. Each index
/// can be taken once. Fails outside [`decode`](crate::decode).
///
/// ```
/// assert!(mp_codec::handle::take_fd(0).is_err()); // no decode running
/// ```
pub fn take_fd(index: u32) -> Result<OwnedFd, HandleError> {
    SLOT.with(|s| match &mut *s.borrow_mut() {
        Some(Slot {
            fds: Fds::Supply(fds), ..
        }) => {
            let n = fds.len();
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| fds.get_mut(i))
                .ok_or_else(|| {
                    HandleError(format!(
                        "the value names descriptor #{index} but the frame carries only {n}"
                    ))
                })?;
            slot.take()
                .ok_or_else(|| HandleError(format!("descriptor #{index} is claimed by two handles")))
        }
        _ => Err(HandleError(OUTSIDE.into())),
    })
}

/// Serializes a descriptor as a handle: for handle types' `Serialize`.
///
/// ```
/// use serde::Serialize;
/// use std::os::fd::AsFd;
/// struct Pipe(std::os::fd::OwnedFd);
/// impl Serialize for Pipe {
///     fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
///         mp_codec::handle::serialize_fd(self.0.as_fd(), s)
///     }
/// }
/// let (r, _w) = mp_sys::fd::pipe()?;
/// assert_eq!(mp_codec::encode(&Pipe(r))?.fds().len(), 1);
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn serialize_fd<S: Serializer>(fd: BorrowedFd<'_>, s: S) -> Result<S::Ok, S::Error> {
    let index = put_fd(fd).map_err(|e| serde::ser::Error::custom(note(e.0)))?;
    s.serialize_newtype_struct(FD_NEWTYPE, &index)
}

/// Deserializes a descriptor serialized by [`serialize_fd`]: for handle
/// types' `Deserialize`.
///
/// ```
/// # use serde::{Deserialize, Deserializer};
/// struct Pipe(std::os::fd::OwnedFd);
/// impl<'de> Deserialize<'de> for Pipe {
///     fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
///         mp_codec::handle::deserialize_fd(d).map(Pipe)
///     }
/// }
/// ```
pub fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename = "$mp_codec::Fd")]
    struct Index(u32);
    let Index(index) = Index::deserialize(d)?;
    take_fd(index).map_err(|e| serde::de::Error::custom(note(e.0)))
}

/// `#[serde(with = "mp_codec::handle::fd")]` for an `OwnedFd` field.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Msg {
///     #[serde(with = "mp_codec::handle::fd")]
///     pipe: std::os::fd::OwnedFd,
/// }
/// let (r, _w) = mp_sys::fd::pipe()?;
/// let m: Msg = mp_codec::decode(mp_codec::encode(&Msg { pipe: r })?)?;
/// # drop(m);
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub mod fd {
    use super::*;

    /// Serializes the descriptor as a handle.
    pub fn serialize<S: Serializer>(fd: &OwnedFd, s: S) -> Result<S::Ok, S::Error> {
        super::serialize_fd(fd.as_fd(), s)
    }

    /// Deserializes a descriptor sent as a handle.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
        super::deserialize_fd(d)
    }
}

/// `#[serde(with = "mp_codec::handle::region")]` for an
/// [`mp_sys::region::Region`] field: the region travels by descriptor, and the
/// receiver maps the same memory. See the [module docs](self).
pub mod region {
    use super::*;
    use mp_sys::region::Region;

    /// Serializes the region as a handle.
    pub fn serialize<S: Serializer>(r: &Region, s: S) -> Result<S::Ok, S::Error> {
        super::serialize_fd(r.as_fd(), s)
    }

    /// Deserializes and maps a region sent as a handle.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Region, D::Error> {
        let fd = super::deserialize_fd(d)?;
        Region::from_fd(fd).map_err(|e| serde::de::Error::custom(super::note(format!("cannot map a region: {e}"))))
    }
}

/// An owned file descriptor that travels as a handle.
///
/// ```
/// let (r, _w) = mp_sys::fd::pipe()?;
/// let frame = mp_codec::encode(&mp_codec::Fd(r))?;
/// let mp_codec::Fd(r2) = mp_codec::decode(frame)?;
/// # drop(r2);
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
#[derive(Debug)]
pub struct Fd(pub OwnedFd);

impl Serialize for Fd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0.as_fd(), s)
    }
}

impl<'de> Deserialize<'de> for Fd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_fd(d).map(Fd)
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
