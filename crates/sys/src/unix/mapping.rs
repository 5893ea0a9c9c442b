//! A shared, read-write mapping of a file: what a memfd
//! [`Region`](super::region::Region) and a named
//! [`Segment`](super::shm::Segment) both are underneath.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};

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
            libc::MAP_SHARED | libc::MAP_NORESERVE
        } else {
            libc::MAP_SHARED
        };
        // SAFETY: a fresh shared mapping of `len` bytes of an open file; the
        // kernel picks the address, so no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Mapping { ptr, len })
    }

    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
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
        let p = unsafe { libc::mremap(self.ptr.as_ptr().cast(), self.len, new_len, libc::MREMAP_MAYMOVE) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mremap returned a null mapping"))?;
        self.len = new_len;
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, and its owners hand out no borrow
        // that outlives them.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
