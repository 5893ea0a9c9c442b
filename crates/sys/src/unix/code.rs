//! Naming a function so that another process running the same binary can
//! call it: the mechanism behind spawn and fork-server targets.
//!
//! An [`Entry<T>`] is a function taking a `T`, remembered as its offset from
//! a fixed anchor function (stable under ASLR, since the whole binary moves
//! together) and a tag that hashes the offset, `T`'s type name and the
//! binary's identity. [`Entry::call`] checks the tag before it jumps, so an
//! entry made by another binary, or corrupted on the way, is an error and
//! never a jump to a wrong address.
//!
//! Only zero-sized function values (fn items and closures that capture
//! nothing) can be entries: the receiving process makes its own copy of the
//! value, and a value without bytes is the same everywhere.
#![allow(unsafe_code)]

use std::any::type_name;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::mem;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

/// The fixed point that offsets are measured from.
#[inline(never)]
fn anchor() -> u64 {
    std::hint::black_box(0x6d70_616e_6368_6f72)
}

fn anchor_addr() -> usize {
    let f: fn() -> u64 = anchor;
    f as usize
}

/// An identity of the running binary: the device, inode, size and
/// modification time of the file behind `/proc/self/exe`. A process
/// re-executed from `/proc/self/exe` has the same identity even if the file
/// was replaced on disk since.
///
/// ```
/// assert_eq!(mp_sys::code::build_id(), mp_sys::code::build_id());
/// ```
pub fn build_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        let mut h = DefaultHasher::new();
        match std::fs::metadata("/proc/self/exe") {
            Ok(m) => (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(&mut h),
            // No /proc: fall back to the code's own layout, which still
            // differs between most binaries.
            Err(_) => (anchor_addr() & 0xfff, env!("CARGO_PKG_VERSION")).hash(&mut h),
        }
        h.finish()
    })
}

/// Why an [`Entry`] could not be made or called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// The function value holds data (a closure that captures something):
    /// it cannot be recreated in another process.
    NotZeroSized(&'static str),
    /// The entry was made by another binary, for another input type, or was
    /// corrupted on the way.
    Mismatch,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryError::NotZeroSized(t) => write!(
                f,
                "the target `{t}` captures data, so another process cannot recreate it; \
                 pass a fn item or a closure that captures nothing, and the data as arguments"
            ),
            EntryError::Mismatch => f.write_str(
                "the target was named by a different binary (or the message naming it was corrupted): \
                 parent and child must run the same executable",
            ),
        }
    }
}

impl std::error::Error for EntryError {}

/// A function taking a `T`, callable from another process of the same
/// binary. See the [module docs](self).
///
/// ```
/// use mp_sys::code::Entry;
/// let e = Entry::<u32>::new(|x: u32| (x * 2) as i32)?;
/// let (offset, tag) = e.parts();
/// // ... the parts travel to another process of this binary ...
/// let again = Entry::<u32>::from_parts(offset, tag);
/// assert_eq!(again.call(21)?, 42);
/// assert!(Entry::<u32>::from_parts(offset + 1, tag).call(1).is_err());
/// # Ok::<(), mp_sys::code::EntryError>(())
/// ```
pub struct Entry<T> {
    offset: i64,
    tag: u64,
    input: PhantomData<fn(T)>,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Entry<T> {}

impl<T> fmt::Debug for Entry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("offset", &self.offset)
            .field("input", &type_name::<T>())
            .finish()
    }
}

impl<T: 'static> Entry<T> {
    /// Names `f`, which must be zero-sized: a fn item, or a closure that
    /// captures nothing (or only zero-sized values).
    ///
    /// ```
    /// use mp_sys::code::Entry;
    /// let n = 5;
    /// assert!(Entry::<u8>::new(move |x: u8| i32::from(x) + n).is_err());
    /// ```
    pub fn new<F>(f: F) -> Result<Entry<T>, EntryError>
    where
        F: Fn(T) -> i32 + Copy + Send + 'static,
    {
        if mem::size_of::<F>() != 0 {
            return Err(EntryError::NotZeroSized(type_name::<F>()));
        }
        let _ = f;
        let thunk: fn(T) -> i32 = call_zero_sized::<F, T>;
        let offset = (thunk as usize as i64).wrapping_sub(anchor_addr() as i64);
        Ok(Entry {
            offset,
            tag: tag::<T>(offset),
            input: PhantomData,
        })
    }

    /// The offset and tag, to send to another process.
    pub fn parts(&self) -> (i64, u64) {
        (self.offset, self.tag)
    }

    /// An entry from parts received from another process. Nothing is
    /// checked until [`call`](Entry::call).
    pub fn from_parts(offset: i64, tag: u64) -> Entry<T> {
        Entry {
            offset,
            tag,
            input: PhantomData,
        }
    }

    /// Checks that the entry was made by this binary for this input type,
    /// without calling it.
    pub fn check(&self) -> Result<(), EntryError> {
        if self.tag == tag::<T>(self.offset) {
            Ok(())
        } else {
            Err(EntryError::Mismatch)
        }
    }

    /// Calls the function with `input`, after checking that the entry was
    /// made by this binary for this input type.
    pub fn call(&self, input: T) -> Result<i32, EntryError> {
        self.check()?;
        let addr = (anchor_addr() as i64).wrapping_add(self.offset) as usize;
        // SAFETY: the tag binds the offset to this binary's identity and to
        // `T`, and only `Entry::new` computes tags for offsets, from the
        // address of a `call_zero_sized::<F, T>` instance (a `fn(T) -> i32`).
        // Same binary, same offset from the anchor: the same function. A
        // forged tag needs a deliberate attacker with access to the
        // process's private channels, which is outside the threat model.
        let thunk = unsafe { mem::transmute::<usize, fn(T) -> i32>(addr) };
        Ok(thunk(input))
    }
}

fn tag<T>(offset: i64) -> u64 {
    let mut h = DefaultHasher::new();
    (build_id(), offset, type_name::<T>(), "mp-sys entry v1").hash(&mut h);
    h.finish()
}

fn call_zero_sized<F: Fn(T) -> i32 + Copy, T>(input: T) -> i32 {
    // SAFETY: `F` is zero-sized (`Entry::new`, the only place this
    // function's address is taken, checks it) and `Copy`, and a value of it
    // existed in the process that made the entry. A zero-sized value has no
    // bytes, so this is a copy of that value; fn items and closures carry no
    // invariants beyond their type.
    let f: F = unsafe { mem::zeroed() };
    f(input)
}
