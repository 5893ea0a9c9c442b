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

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name handles give the newtype that wraps their descriptor index, so a
/// human reading a trace can tell an index from a number.
const FD_NEWTYPE: &str = "$mp_codec::Fd";

/// What the thread's codec is doing. The state is split into cheap `Cell`s so
/// that a value without handles (the common case) never touches the
/// descriptor list: encoding an `i64` costs a few nanoseconds over postcard.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idle,
    /// Measuring an encoding: handles get indexes, nothing is duplicated.
    Count,
    /// Encoding: handles' descriptors are duplicated into `FDS`.
    Collect,
    /// Decoding: handles take the frame's descriptors out of `FDS`.
    Supply,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Idle) };
    /// Handles put (Count, Collect) so far.
    static PUT: Cell<u32> = const { Cell::new(0) };
    /// Whether `ERROR` holds a message.
    static FAILED: Cell<bool> = const { Cell::new(false) };
    /// Collect: the duplicates; Supply: the frame's descriptors, `None` once taken.
    static FDS: RefCell<Vec<Option<OwnedFd>>> = const { RefCell::new(Vec::new()) };
    /// The first handle error, kept apart so that the encode or decode
    /// reports it as a handle error, whatever the value's impls made of it.
    static ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What an encode or decode pass left behind.
pub(crate) struct Pass {
    /// Handles put (Count, Collect).
    pub(crate) put: usize,
    /// Collect: the duplicated descriptors. Supply: the unclaimed ones.
    pub(crate) fds: Vec<Option<OwnedFd>>,
    /// The first handle error.
    pub(crate) error: Option<String>,
}

/// Runs `f` in `mode` with `fds` installed (only used by Supply). The previous
/// state is restored afterwards, also when `f` panics, so nested use (a
/// handle encoding another message) is safe.
#[inline]
fn run<R>(mode: Mode, fds: Vec<Option<OwnedFd>>, f: impl FnOnce() -> R) -> (R, Pass) {
    struct Saved {
        mode: Mode,
        put: u32,
        failed: bool,
        fds: Option<Vec<Option<OwnedFd>>>,
        error: Option<String>,
        done: bool,
    }
    impl Drop for Saved {
        fn drop(&mut self) {
            if self.done {
                return;
            }
            // Unwinding out of `f`: restore the outer state.
            MODE.set(self.mode);
            PUT.set(self.put);
            FAILED.set(self.failed);
            let fds = self.fds.take().unwrap_or_default();
            FDS.with(|v| *v.borrow_mut() = fds);
            ERROR.with(|e| *e.borrow_mut() = self.error.take());
        }
    }
    if MODE.get() == Mode::Idle && fds.is_empty() {
        return run_outermost(mode, f);
    }
    let outer = MODE.replace(mode);
    let nested = outer != Mode::Idle;
    let install = nested || !fds.is_empty();
    let mut saved = Saved {
        mode: outer,
        put: PUT.replace(0),
        failed: FAILED.replace(false),
        fds: install.then(|| FDS.with(|v| std::mem::replace(&mut *v.borrow_mut(), fds))),
        error: if nested {
            ERROR.with(|e| e.borrow_mut().take())
        } else {
            None
        },
        done: false,
    };
    let r = f();
    let put = PUT.replace(saved.put);
    MODE.set(saved.mode);
    let error = if FAILED.replace(saved.failed) {
        ERROR.with(|e| e.borrow_mut().take())
    } else {
        None
    };
    if let Some(outer_error) = saved.error.take() {
        ERROR.with(|e| *e.borrow_mut() = Some(outer_error));
    }
    // The descriptor list was touched if it was installed, or if a handle
    // was put while collecting.
    let touched = saved.fds.is_some() || (mode == Mode::Collect && put > 0);
    let fds = if touched {
        let outer_fds = saved.fds.take().unwrap_or_default();
        FDS.with(|v| std::mem::replace(&mut *v.borrow_mut(), outer_fds))
    } else {
        Vec::new()
    };
    saved.done = true;
    (
        r,
        Pass {
            put: put as usize,
            fds,
            error,
        },
    )
}

/// [`run`] for the common case: no codec pass is running on this thread and
/// no descriptors arrived, so only the cheap cells need saving.
#[inline]
fn run_outermost<R>(mode: Mode, f: impl FnOnce() -> R) -> (R, Pass) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            // Also on unwinding out of `f`: back to idle, with nothing left.
            MODE.set(Mode::Idle);
            PUT.set(0);
            if FAILED.replace(false) {
                ERROR.with(|e| e.borrow_mut().take());
            }
        }
    }
    MODE.set(mode);
    let reset = Reset;
    let r = f();
    let put = PUT.get();
    let error = if FAILED.get() {
        ERROR.with(|e| e.borrow_mut().take())
    } else {
        None
    };
    let fds = if mode == Mode::Collect && put > 0 {
        FDS.with(|v| std::mem::take(&mut *v.borrow_mut()))
    } else {
        Vec::new()
    };
    drop(reset);
    (
        r,
        Pass {
            put: put as usize,
            fds,
            error,
        },
    )
}

/// Runs the sizing pass of an encode: handles get their indexes but no
/// descriptor is duplicated.
#[inline]
pub(crate) fn counting<R>(f: impl FnOnce() -> R) -> (R, Pass) {
    run(Mode::Count, Vec::new(), f)
}

/// Runs an encode: the pass holds the duplicated descriptors, in order.
#[inline]
pub(crate) fn collecting<R>(f: impl FnOnce() -> R) -> (R, Pass) {
    run(Mode::Collect, Vec::new(), f)
}

/// Runs a decode over `fds`: the pass holds the descriptors no handle claimed
/// (as `Some`).
pub(crate) fn supplying<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> (R, Pass) {
    run(Mode::Supply, fds.into_iter().map(Some).collect(), f)
}

/// Records `msg` as the handle error of the running encode or decode (the
/// first one wins), and returns it.
fn note(msg: String) -> String {
    if MODE.get() != Mode::Idle && !FAILED.replace(true) {
        ERROR.with(|e| *e.borrow_mut() = Some(msg.clone()));
    }
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
    matches!(MODE.get(), Mode::Count | Mode::Collect)
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
    let mode = MODE.get();
    if !matches!(mode, Mode::Count | Mode::Collect) {
        return Err(HandleError(OUTSIDE.into()));
    }
    let index = PUT.get();
    PUT.set(
        index
            .checked_add(1)
            .ok_or_else(|| HandleError("too many descriptors".into()))?,
    );
    if mode == Mode::Collect {
        let dup = fd
            .try_clone_to_owned()
            .map_err(|e| HandleError(format!("cannot duplicate a handle's descriptor: {e}")))?;
        FDS.with(|v| v.borrow_mut().push(Some(dup)));
    }
    Ok(index)
}

/// Takes the descriptor at `index` out of the frame being decoded. Each index
/// can be taken once. Fails outside [`decode`](crate::decode).
///
/// ```
/// assert!(mp_codec::handle::take_fd(0).is_err()); // no decode running
/// ```
pub fn take_fd(index: u32) -> Result<OwnedFd, HandleError> {
    if MODE.get() != Mode::Supply {
        return Err(HandleError(OUTSIDE.into()));
    }
    FDS.with(|v| {
        let mut fds = v.borrow_mut();
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

/// A deserialization error for a handle whose descriptor arrived but does not
/// describe what the type expects (a region of another kind, say). The decode
/// returns it as a [`CodecError::Handle`](crate::CodecError::Handle) with this
/// message (another `Error::custom` is a
/// [`CodecError::Decode`](crate::CodecError::Decode) with its message).
///
/// ```
/// #[derive(Debug)]
/// struct Even(u32);
/// impl<'de> serde::Deserialize<'de> for Even {
///     fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
///         let n = u32::deserialize(d)?;
///         if n % 2 == 0 { Ok(Even(n)) } else { Err(mp_codec::handle::invalid(format!("{n} is odd"))) }
///     }
/// }
/// let err = mp_codec::decode::<Even>(mp_codec::encode(&3u32)?).unwrap_err();
/// assert!(err.to_string().contains("3 is odd"), "{err}");
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn invalid<E: serde::de::Error>(msg: impl fmt::Display) -> E {
    E::custom(note(msg.to_string()))
}

/// A hash (FNV-1a) of `T`'s type name, the same in every process of one
/// binary: what a typed handle (a `Value<f64>`, a `Queue<String>`) stores
/// beside its memory so that a handle decoded as another type is refused
/// instead of reinterpreting the bytes.
///
/// ```
/// use mp_codec::handle::type_tag;
/// assert_eq!(type_tag::<f64>(), type_tag::<f64>());
/// assert_ne!(type_tag::<u32>(), type_tag::<i32>());
/// ```
pub fn type_tag<T: ?Sized>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
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

/// A borrowed descriptor that serializes as a handle: the sending half of
/// [`Fd`], for a handle type that writes its descriptors into a wire struct
/// without giving them up (decode the field as [`Fd`] or with [`fd`]).
///
/// ```
/// use std::os::fd::AsFd;
/// let (r, _w) = std::io::pipe()?;
/// let frame = mp_codec::encode(&mp_codec::handle::FdRef(r.as_fd()))?;
/// assert_eq!(frame.fds().len(), 1);
/// let mp_codec::Fd(copy) = mp_codec::decode(frame)?;
/// # drop(copy);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FdRef<'a>(pub BorrowedFd<'a>);

impl Serialize for FdRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0, s)
    }
}
