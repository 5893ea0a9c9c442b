//! Naming a function so that another process running the same binary can
//! call it: the mechanism behind spawn and fork-server targets.
//!
//! An [`Entry<T>`] is a function taking a `T`, remembered as its offset from
//! a fixed anchor function (stable under ASLR, since the whole binary moves
//! together) and a tag: a MAC (keyed SipHash-2-4) of the offset, `T`'s type
//! name and the binary's identity. [`Entry::call`] checks the tag before it
//! jumps, so an entry made by another binary, corrupted on the way, or
//! forged is an error and never a jump to a wrong address.
//!
//! # Why a key
//!
//! [`Entry::from_parts`] is safe, and any safe code can call it with an
//! offset of its choosing. If the tag were a plain hash, that code could
//! compute a valid tag for any address and make [`Entry::call`] jump there.
//! The key is 128 random bits made when this crate is built (`build.rs`)
//! and private to this module: the same in every process of one binary
//! (parent, spawned child, fork server, a remote manager running the same
//! build), unknown to code outside it. A forger would have to guess it, or
//! read it out of the executable's bytes, which is in the same class as
//! writing `/proc/self/mem`: outside what a type system can promise.
//!
//! Only zero-sized function values (fn items and closures that capture
//! nothing) can be entries: the receiving process makes its own copy of the
//! value, and a value without bytes is the same everywhere.
#![allow(unsafe_code)]

use std::any::type_name;
use std::fmt;
#[allow(
    deprecated,
    reason = "std's SipHasher is SipHash-2-4 with a key: the keyed MAC this module needs"
)]
use std::hash::SipHasher;
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

/// The environment variable through which a child started by
/// [`spawn_self`](crate::process::spawn_self) learns its [`build_id`]
/// without hashing the executable again: `FILE:BUILD` in hex, where `FILE`
/// identifies the executable file (device, inode, size, modification time).
/// The child takes `BUILD` only when `FILE` is its own executable's.
pub const BUILD_ENV: &str = "MP_SYS_BUILD";

/// An identity of the running binary: a hash of the executable's contents
/// (`/proc/self/exe`), so the same binary copied to another host has the same
/// identity, and any other build has another. A process re-executed from
/// `/proc/self/exe` has the same identity even if the file was replaced on
/// disk since. Computed once per process, on first use: about 30 ms for a
/// 60 MB executable; children started by spawn (and the fork server's) take
/// it from their parent through [`BUILD_ENV`], fork children inherit it.
///
/// ```
/// assert_eq!(mp_sys::code::build_id(), mp_sys::code::build_id());
/// ```
pub fn build_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        let file = file_identity();
        if let (Some(file), Some(given)) = (file, std::env::var_os(BUILD_ENV)) {
            if let Some(id) = given.to_str().and_then(|v| parse_build_env(v, file)) {
                return id;
            }
        }
        match contents_hash() {
            Ok(id) => id,
            // No readable executable (no /proc): fall back to the file's
            // identity, or to the code's own layout, which still differs
            // between most binaries.
            Err(_) => file.unwrap_or_else(|| {
                let mut h = DefaultHasher::new();
                (anchor_addr() & 0xfff, env!("CARGO_PKG_VERSION")).hash(&mut h);
                h.finish()
            }),
        }
    })
}

/// The [`BUILD_ENV`] entry for a child of this process: `None` when the
/// executable file cannot be identified (the child then hashes it itself).
pub fn build_env() -> Option<(&'static str, String)> {
    let file = file_identity()?;
    Some((BUILD_ENV, format!("{file:016x}:{:016x}", build_id())))
}

/// `BUILD` of a `FILE:BUILD` value, if `FILE` is `file`.
fn parse_build_env(v: &str, file: u64) -> Option<u64> {
    let (f, b) = v.split_once(':')?;
    if u64::from_str_radix(f, 16).ok()? != file {
        return None;
    }
    u64::from_str_radix(b, 16).ok()
}

/// A hash of the device, inode, size and modification time of the file
/// behind `/proc/self/exe`: which file this process runs, not what it holds.
fn file_identity() -> Option<u64> {
    let m = std::fs::metadata("/proc/self/exe").ok()?;
    let mut h = DefaultHasher::new();
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(&mut h);
    Some(h.finish())
}

/// A hash of the executable's bytes.
fn contents_hash() -> std::io::Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open("/proc/self/exe")?;
    let mut h = DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(n) => h.write(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
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
        // An address that came as a number (from another process, perhaps):
        // a pointer made with exposed provenance, as for any address from
        // outside (a transmuted integer would have none, and a call through
        // it is undefined behaviour; Miri reports it).
        let code = std::ptr::with_exposed_provenance::<u8>(addr);
        // SAFETY: the tag is a MAC, under a key private to this module, of
        // the offset, this binary's identity and `T`; only `Entry::new`
        // computes tags, from the address of a `call_zero_sized::<F, T>`
        // instance (a `fn(T) -> i32`). Same binary, same offset from the
        // anchor: the same function. Safe code outside this module cannot
        // compute a tag (module docs, "Why a key").
        let thunk = unsafe { mem::transmute::<*const u8, fn(T) -> i32>(code) };
        Ok(thunk(input))
    }
}

include!(concat!(env!("OUT_DIR"), "/entry_key.rs"));

/// The MAC of an entry: keyed SipHash-2-4 over the binary's identity, the
/// offset and the input type.
fn tag<T>(offset: i64) -> u64 {
    #[allow(deprecated, reason = "SipHash-2-4 with a key, see the import")]
    let mut h = SipHasher::new_with_keys(ENTRY_KEY.0, ENTRY_KEY.1);
    (build_id(), offset, type_name::<T>(), "mp-sys entry v2").hash(&mut h);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> i32 {
        (x * 2) as i32
    }

    #[test]
    fn a_tag_computed_without_the_key_is_refused() {
        let good = Entry::<u32>::new(double).unwrap();
        let (offset, tag) = good.parts();
        assert_eq!(Entry::<u32>::from_parts(offset, tag).call(21), Ok(42));
        // What any safe code could compute before the key: the plain hash of
        // the same fields, for this offset and for a forged one.
        let unkeyed = |offset: i64, version: &str| {
            let mut h = DefaultHasher::new();
            (build_id(), offset, type_name::<u32>(), version).hash(&mut h);
            h.finish()
        };
        for version in ["mp-sys entry v1", "mp-sys entry v2"] {
            assert_eq!(
                Entry::<u32>::from_parts(offset, unkeyed(offset, version)).call(1),
                Err(EntryError::Mismatch)
            );
            let forged = offset + 64;
            assert_eq!(
                Entry::<u32>::from_parts(forged, unkeyed(forged, version)).check(),
                Err(EntryError::Mismatch)
            );
        }
    }

    #[test]
    fn flipped_bits_and_random_tags_are_refused() {
        let (offset, tag) = Entry::<u32>::new(double).unwrap().parts();
        for bit in 0..64 {
            assert!(Entry::<u32>::from_parts(offset, tag ^ (1 << bit)).check().is_err());
            assert!(Entry::<u32>::from_parts(offset ^ (1 << bit), tag).check().is_err());
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert!(Entry::<u32>::from_parts(x as i64, x.rotate_left(17)).check().is_err());
        }
    }

    #[test]
    fn the_tag_binds_the_input_type() {
        let (offset, tag) = Entry::<u32>::new(double).unwrap().parts();
        assert_eq!(Entry::<u64>::from_parts(offset, tag).check(), Err(EntryError::Mismatch));
    }
}
