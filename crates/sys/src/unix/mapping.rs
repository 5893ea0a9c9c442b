//! A shared, read-write mapping of a file: what a memfd
//! [`Region`](super::region::Region) and a named
//! [`Segment`](super::shm::Segment) both are underneath.
#![allow(unsafe_code)]

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use nix::sys::mman::{MRemapFlags, MapFlags, ProtFlags, mmap, mremap, munmap};

use super::invalid_input;

/// `len` bytes of a file mapped `MAP_SHARED`, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is not tied to the thread that made it; its owners
// decide how the bytes are reached (copies, atomics, or borrows of `&mut`).
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` hands out only the address.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd` read-write and shared. `reserve`:
    /// the file may be shorter than `len` for now (`MAP_NORESERVE`; its owner
    /// never touches bytes past the file's end).
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize, reserve: bool) -> io::Result<Mapping> {
        let flags = if reserve {
            MapFlags::MAP_SHARED | MapFlags::MAP_NORESERVE
        } else {
            MapFlags::MAP_SHARED
        };
        let size = NonZeroUsize::new(len).ok_or_else(|| invalid_input("cannot map zero bytes"))?;
        // SAFETY: a fresh shared mapping of `len` bytes of an open file; the
        // kernel picks the address, so no existing memory is affected.
        let p = unsafe { mmap(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, flags, fd, 0) }?;
        Ok(Mapping { ptr: p.cast(), len })
    }

    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first `len` bytes (at most the mapping's) as `&[u8]`, for owners
    /// that reach their mapping through these borrows alone: a named
    /// [`Segment`](super::shm::Segment), a
    /// [`RegionSlice`](super::region::RegionSlice). Never for a mapping whose
    /// bytes this process also reaches through `&self` by atomics or copies
    /// (a live `Region`'s), where the slice would alias them; and only over
    /// bytes the file backs (a growable region reserves more).
    #[inline]
    pub(crate) fn bytes(&self, len: usize) -> &[u8] {
        // Writes through other mappings and processes are outside this
        // allocation, like a device's memory (the callers' module docs: they
        // race as with CPython's `shm.buf`).
        // SAFETY: the first `len.min(self.len)` bytes are mapped, readable,
        // live while `self` is borrowed (`drop`/`remap` take `&mut self`), and
        // any bits are a valid u8; by this function's contract this process
        // changes them only through `bytes_mut`, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), len.min(self.len)) }
    }

    /// [`bytes`](Mapping::bytes), writable: the only reference to them in
    /// this process while it lives.
    #[inline]
    pub(crate) fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only
        // reference into the mapping in this process.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), len.min(self.len)) }
    }

    /// Grows or shrinks the mapping to `new_len` bytes; it may move. `&mut
    /// self` proves no borrow of the old address is alive.
    pub(crate) fn remap(&mut self, new_len: usize) -> io::Result<()> {
        if new_len == self.len {
            return Ok(());
        }
        // SAFETY: `ptr`/`len` describe our own live mapping and nothing
        // borrows it (`&mut self`); MREMAP_MAYMOVE lets the kernel move it,
        // and on failure the old mapping stays.
        let p = unsafe { mremap(self.ptr.cast(), self.len, new_len, MRemapFlags::MREMAP_MAYMOVE, None) }?;
        self.ptr = p.cast();
        self.len = new_len;
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, and its owners hand out no borrow
        // that outlives them.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}
