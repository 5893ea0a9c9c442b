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

/// An identity of the running binary: the linker's build id (the
/// `NT_GNU_BUILD_ID` note, a hash of the linked output), so the same binary
/// copied to another host has the same identity, and any other link has
/// another. It is read from the executable's first pages (`/proc/self/exe`),
/// once per process, in microseconds. An executable without the note is
/// hashed whole instead (about 30 ms for 60 MB); children started by spawn
/// (and the fork server's) take the identity from their parent through
/// [`BUILD_ENV`], fork children inherit it.
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
        if let Some(id) = note_id() {
            return id;
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

/// How much of the executable [`build_id`] reads to find the note: the
/// headers and the first segment's notes sit in the first pages.
const NOTE_WINDOW: usize = 64 << 10;

/// The identity from this executable's build-id note, if it has one within
/// [`NOTE_WINDOW`].
fn note_id() -> Option<u64> {
    use std::io::Read;
    let mut head = Vec::with_capacity(NOTE_WINDOW);
    std::fs::File::open("/proc/self/exe")
        .ok()?
        .take(NOTE_WINDOW as u64)
        .read_to_end(&mut head)
        .ok()?;
    let id = &head[build_note(&head)?];
    let mut h = DefaultHasher::new();
    ("gnu build id", id).hash(&mut h);
    Some(h.finish())
}

/// Where the linker's build id (the description of the `NT_GNU_BUILD_ID`
/// note of a 64-bit little-endian ELF file) lies in `elf`, the file's bytes
/// or a prefix of them. `None` for anything else: another format, a file
/// without the note, a note past the end of `elf`, or headers that do not
/// add up. Every offset is checked, so any input gives an answer, never a
/// panic.
///
/// ```
/// let exe = std::fs::read("/proc/self/exe")?;
/// if let Some(at) = mp_sys::code::build_note(&exe) {
///     assert!(at.len() >= 8); // 20 bytes (SHA-1) from GNU ld, lld and mold
/// }
/// assert_eq!(mp_sys::code::build_note(b"#!/bin/sh"), None);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn build_note(elf: &[u8]) -> Option<std::ops::Range<usize>> {
    const PT_NOTE: u32 = 4;
    const NT_GNU_BUILD_ID: u32 = 3;
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at.checked_add(2)?)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at.checked_add(4)?)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at.checked_add(8)?)?.try_into().ok()?));
    let size = |v: u64| usize::try_from(v).ok();
    // ELF magic, 64-bit, little-endian.
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = size(u64_at(0x20)?)?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    if phentsize < 0x38 {
        return None;
    }
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_NOTE {
            continue;
        }
        let start = size(u64_at(ph + 0x08)?)?;
        let end = start.checked_add(size(u64_at(ph + 0x20)?)?)?;
        // Notes in a segment aligned to 8 are padded to 8, others to 4.
        let align = if u64_at(ph + 0x30)? == 8 { 8 } else { 4 };
        let mut at = start;
        while at.checked_add(12)? <= end {
            let namesz = size(u64::from(u32_at(at)?))?;
            let descsz = size(u64::from(u32_at(at + 4)?))?;
            let kind = u32_at(at + 8)?;
            let name = at + 12;
            let desc = name.checked_add(namesz.checked_next_multiple_of(align)?)?;
            let next = desc.checked_add(descsz.checked_next_multiple_of(align)?)?;
            let desc_end = desc.checked_add(descsz)?;
            if desc_end > end || desc_end > elf.len() {
                return None;
            }
            if kind == NT_GNU_BUILD_ID && elf.get(name..name + namesz)? == b"GNU\0" && descsz > 0 {
                return Some(desc..desc_end);
            }
            at = next;
        }
    }
    None
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
    fn this_binary_is_named_by_its_build_note() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let at = build_note(&exe).expect("the test binary has a GNU build-id note");
        assert!(at.end <= NOTE_WINDOW, "the note lies in the window build_id reads");
        let mut h = DefaultHasher::new();
        ("gnu build id", &exe[at]).hash(&mut h);
        assert_eq!(note_id(), Some(h.finish()));
        assert_eq!(build_id(), h.finish());
    }

    #[test]
    fn cut_or_scribbled_headers_give_no_note_and_no_panic() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let full = build_note(&exe).unwrap();
        let head = &exe[..NOTE_WINDOW.min(exe.len())];
        // Every cut: the note, or nothing.
        for cut in 0..=full.end + 64 {
            let got = build_note(&head[..cut.min(head.len())]);
            assert!(got.is_none() || got == Some(full.clone()), "cut at {cut}: {got:?}");
        }
        // Every byte of the headers and notes set to extremes.
        let mut bytes = head.to_vec();
        for i in 0..full.end {
            let keep = bytes[i];
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                bytes[i] = v;
                let _ = build_note(&bytes);
            }
            bytes[i] = keep;
        }
        // Random bytes.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut junk = b"\x7fELF\x02\x01".to_vec();
            for _ in 0..256 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                junk.push(x as u8);
            }
            let _ = build_note(&junk);
        }
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
