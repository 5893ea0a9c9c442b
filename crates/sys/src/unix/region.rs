//! Shared memory regions: a memfd mapped `MAP_SHARED`, passed between
//! processes by its file descriptor.
//!
//! A [`Region`] has no name in the file system, so nothing is left in
//! `/dev/shm`: the kernel frees the memory when the last process holding the
//! descriptor or a mapping exits, killed or not. Regions are sealed against
//! shrinking (`F_SEAL_SHRINK`), and [`Region::from_fd`] refuses a descriptor
//! without that seal, so no peer can truncate the file under another process's
//! mapping (which would turn its next access into `SIGBUS`).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::mapping::Mapping;
use super::{cvt, cvt_r, invalid_input};

/// A memfd mapped read-write and shared. See the [module docs](self).
///
/// The bytes may be changed by other processes at any time, so the region
/// hands out copies ([`read`](Region::read), [`write`](Region::write)),
/// atomics ([`atomic_u32`](Region::atomic_u32)), and raw pointers for the
/// layers that build their own synchronization on top.
pub struct Region {
    fd: OwnedFd,
    map: Mapping,
    /// How many bytes of the mapping the file backs: the whole mapping for a
    /// fixed region, the current length for a [growable](Region::create_growable)
    /// one (whose mapping reserves address space up to its maximum). Only
    /// grows.
    avail: AtomicUsize,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("fd", &self.fd.as_raw_fd())
            .field("len", &self.len())
            .finish()
    }
}

/// The seals every region carries.
const SEALS: libc::c_int = libc::F_SEAL_SHRINK;

impl Region {
    /// Creates a zero-filled region of `len` bytes. `name` shows in
    /// `/proc/<pid>/maps` as `/memfd:<name>` and helps debugging only.
    ///
    /// ```
    /// let r = mp_sys::region::Region::create("counter", 64)?;
    /// assert_eq!(r.len(), 64);
    /// assert_eq!(r.atomic_u32(0)?.load(std::sync::atomic::Ordering::Relaxed), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: &str, len: usize) -> io::Result<Region> {
        Self::map(new_memfd(name, len)?, len)
    }
}

/// A new memfd of `len` zero bytes, sealed against shrinking.
fn new_memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    if len == 0 {
        return Err(invalid_input("a shared region must be at least one byte long"));
    }
    let cname = CString::new(name).map_err(|_| invalid_input("a region name must not contain NUL bytes"))?;
    // SAFETY: `cname` is a valid NUL-terminated string for the call.
    let raw = cvt(unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_file_len(fd.as_fd(), len)?;
    // SAFETY: F_ADD_SEALS takes an int of seal flags; the fd is open.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) })?;
    Ok(fd)
}

impl Region {
    /// Maps a region received from another process (for example through
    /// [`socket::recv_with_fds`](crate::socket::recv_with_fds)), at the file's
    /// current size.
    ///
    /// Fails with `InvalidInput` when `fd` is not a region made by
    /// [`Region::create`] (a memfd sealed against shrinking).
    ///
    /// ```
    /// use mp_sys::region::Region;
    /// let a = Region::create("a", 16)?;
    /// let b = Region::from_fd(a.try_clone_fd()?)?;
    /// a.write(3, b"z")?;
    /// let mut c = [0u8];
    /// b.read(3, &mut c)?;
    /// assert_eq!(&c, b"z");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> io::Result<Region> {
        // SAFETY: F_GET_SEALS takes no argument; a descriptor that is not a
        // memfd fails with EINVAL.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals == -1 || seals & SEALS != SEALS {
            return Err(invalid_input(
                "the descriptor is not a shared region (a memfd sealed against shrinking)",
            ));
        }
        let len = file_len(fd.as_fd())?;
        if len == 0 {
            return Err(invalid_input("the shared region is empty"));
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Region> {
        let map = Mapping::new(fd.as_fd(), len, false)?;
        Ok(Region {
            fd,
            map,
            avail: AtomicUsize::new(len),
        })
    }

    /// Creates a zero-filled region of `len` bytes that can later
    /// [`extend`](Region::extend) in place up to `max_len` bytes.
    ///
    /// The mapping reserves `max_len` bytes of address space from the start
    /// (no memory: pages are allocated when first touched), so growing never
    /// moves it, and every process that maps the region with
    /// [`from_fd_growable`](Region::from_fd_growable) sees the new bytes after
    /// [`sync_len`](Region::sync_len) without remapping. Access is checked
    /// against the current length, never the reservation.
    ///
    /// ```
    /// use mp_sys::region::Region;
    /// let r = Region::create_growable("ring", 4096, 1 << 30)?;
    /// assert_eq!((r.len(), r.max_len()), (4096, 1 << 30));
    /// assert!(r.write(8192, b"x").is_err()); // not backed yet
    /// r.extend(16384)?;
    /// r.write(8192, b"x")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create_growable(name: &str, len: usize, max_len: usize) -> io::Result<Region> {
        if max_len < len {
            return Err(invalid_input(format!(
                "a growable region's maximum ({max_len} bytes) is below its length ({len} bytes)"
            )));
        }
        Self::map_growable(new_memfd(name, len)?, len, max_len)
    }

    /// Maps a growable region received from another process, reserving
    /// `max_len` bytes of address space (or the file's size, if larger).
    ///
    /// ```
    /// use mp_sys::region::Region;
    /// let a = Region::create_growable("ring", 4096, 1 << 20)?;
    /// let b = Region::from_fd_growable(a.try_clone_fd()?, 1 << 20)?;
    /// a.extend(8192)?;
    /// assert_eq!(b.sync_len()?, 8192);
    /// a.write(5000, b"y")?;
    /// let mut c = [0u8];
    /// b.read(5000, &mut c)?;
    /// assert_eq!(&c, b"y");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_fd_growable(fd: OwnedFd, max_len: usize) -> io::Result<Region> {
        let r = Self::from_fd(fd)?;
        let len = r.len();
        Self::map_growable(r.fd, len, max_len.max(len))
    }

    fn map_growable(fd: OwnedFd, len: usize, max_len: usize) -> io::Result<Region> {
        let map = Mapping::new(fd.as_fd(), max_len, true)?;
        Ok(Region {
            fd,
            map,
            avail: AtomicUsize::new(len),
        })
    }

    /// The most bytes the region can [`extend`](Region::extend) to without
    /// moving: its reservation (its length, for a fixed region).
    ///
    /// ```
    /// assert_eq!(mp_sys::region::Region::create("f", 64)?.max_len(), 64);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_len(&self) -> usize {
        self.map.len()
    }

    /// Extends the region in place to `new_len` bytes (new bytes are zero),
    /// within its [`max_len`](Region::max_len). Other processes see the new
    /// bytes after [`sync_len`](Region::sync_len). A `new_len` at or below the
    /// current length changes nothing.
    ///
    /// ```
    /// let r = mp_sys::region::Region::create_growable("e", 4096, 65536)?;
    /// r.extend(65536)?;
    /// assert_eq!(r.len(), 65536);
    /// assert!(r.extend(65537).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn extend(&self, new_len: usize) -> io::Result<()> {
        if new_len > self.map.len() {
            return Err(invalid_input(format!(
                "a region reserved for {} bytes cannot extend to {new_len}",
                self.map.len()
            )));
        }
        if new_len <= self.len() {
            return Ok(());
        }
        if new_len > file_len(self.fd.as_fd())? {
            set_file_len(self.fd.as_fd(), new_len)?;
        }
        self.avail.fetch_max(new_len, Ordering::Release);
        Ok(())
    }

    /// Takes in the length another process [extended](Region::extend) the
    /// region to (up to the reservation); returns the length now usable.
    ///
    /// ```
    /// let a = mp_sys::region::Region::create_growable("s", 4096, 65536)?;
    /// let b = a.try_clone()?;
    /// a.extend(8192)?;
    /// assert_eq!(b.len(), 4096);
    /// assert_eq!(b.sync_len()?, 8192);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn sync_len(&self) -> io::Result<usize> {
        let len = file_len(self.fd.as_fd())?.min(self.map.len());
        Ok(self.avail.fetch_max(len, Ordering::AcqRel).max(len))
    }

    /// The mapped length in bytes.
    ///
    /// ```
    /// assert_eq!(mp_sys::region::Region::create("n", 10)?.len(), 10);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn len(&self) -> usize {
        self.avail.load(Ordering::Acquire)
    }

    /// Always false: a region holds at least one byte.
    ///
    /// ```
    /// assert!(!mp_sys::region::Region::create("n", 1)?.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first byte of the mapping. Valid for [`len`](Region::len) bytes
    /// while `self` lives and is not [grown](Region::grow); other processes may
    /// write through their own mappings at any time.
    ///
    /// ```
    /// let r = mp_sys::region::Region::create("p", 8)?;
    /// assert!(!r.as_ptr().is_null());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// A new descriptor for the same memory, for sending to another process.
    ///
    /// ```
    /// let r = mp_sys::region::Region::create("c", 8)?;
    /// let fd = r.try_clone_fd()?;
    /// # drop(fd);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// A second mapping of the same memory, with its own descriptor.
    ///
    /// ```
    /// let a = mp_sys::region::Region::create("c", 8)?;
    /// let b = a.try_clone()?;
    /// a.write(0, &[9])?;
    /// let mut x = [0];
    /// b.read(0, &mut x)?;
    /// assert_eq!(x, [9]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<Region> {
        let len = self.len();
        if len == self.map.len() {
            Self::map(self.fd.try_clone()?, len)
        } else {
            Self::map_growable(self.fd.try_clone()?, len, self.map.len())
        }
    }

    /// Whether `other` maps the same memory (the same memfd, perhaps
    /// received through another descriptor), as opposed to equal bytes.
    ///
    /// ```
    /// use mp_sys::region::Region;
    /// let a = Region::create("a", 8)?;
    /// assert!(a.same_memory(&a.try_clone()?));
    /// assert!(!a.same_memory(&Region::create("a", 8)?));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn same_memory(&self, other: &Region) -> bool {
        std::ptr::eq(self, other)
            || matches!(
                (stat(self.fd.as_fd()), stat(other.fd.as_fd())),
                (Ok(a), Ok(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
            )
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) -> io::Result<()> {
        let avail = self.len();
        match offset.checked_add(len) {
            Some(end) if end <= avail => Ok(()),
            _ => Err(invalid_input(format!(
                "bytes {offset}..{} are outside the shared region of {avail} bytes",
                offset.saturating_add(len),
            ))),
        }
    }

    /// Copies `len` bytes inside the region from `src` to `dst` (the ranges
    /// may overlap).
    ///
    /// ```
    /// let r = mp_sys::region::Region::create("m", 8)?;
    /// r.write(0, b"abcd")?;
    /// r.copy_within(0, 4, 4)?;
    /// let mut b = [0u8; 8];
    /// r.read(0, &mut b)?;
    /// assert_eq!(&b, b"abcdabcd");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn copy_within(&self, src: usize, dst: usize, len: usize) -> io::Result<()> {
        self.check(src, len)?;
        self.check(dst, len)?;
        // SAFETY: both ranges were checked to lie in the mapping; `ptr::copy`
        // allows them to overlap.
        unsafe { ptr::copy(self.map.as_ptr().add(src), self.map.as_ptr().add(dst), len) };
        Ok(())
    }

    /// Copies `buf.len()` bytes at `offset` out of the region.
    ///
    /// ```
    /// let r = mp_sys::region::Region::create("r", 4)?;
    /// let mut b = [1u8; 4];
    /// r.read(0, &mut b)?;
    /// assert_eq!(b, [0; 4]);
    /// assert!(r.read(2, &mut b).is_err()); // past the end
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: the range was checked to lie in the mapping, which lives as
        // long as `self`; `buf` is a distinct local buffer.
        unsafe { ptr::copy_nonoverlapping(self.map.as_ptr().add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the region at `offset`.
    ///
    /// ```
    /// let r = mp_sys::region::Region::create("w", 4)?;
    /// r.write(1, b"ab")?;
    /// assert!(r.write(3, b"ab").is_err()); // past the end
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: the range was checked to lie in the writable mapping;
        // `data` cannot overlap it (it is a shared borrow of other memory or
        // of this mapping, which `copy` below tolerates).
        unsafe { ptr::copy(data.as_ptr(), self.map.as_ptr().add(offset), data.len()) };
        Ok(())
    }

    /// The `AtomicU32` at `offset` (a multiple of 4), shared with every
    /// process that maps the region: the building block for futexes.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let r = mp_sys::region::Region::create("a", 8)?;
    /// r.atomic_u32(4)?.store(5, Ordering::Release);
    /// assert_eq!(r.try_clone()?.atomic_u32(4)?.load(Ordering::Acquire), 5);
    /// assert!(r.atomic_u32(2).is_err()); // misaligned
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn atomic_u32(&self, offset: usize) -> io::Result<&AtomicU32> {
        let p = self.aligned::<AtomicU32>(offset)?;
        // SAFETY: `aligned` checked that 4 bytes at `p` lie in the mapping and
        // are aligned; the memory is valid for the lifetime of `&self`, every
        // bit pattern is a valid u32, and other processes access it atomically.
        Ok(unsafe { AtomicU32::from_ptr(p.cast()) })
    }

    /// The `AtomicU64` at `offset` (a multiple of 8).
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let r = mp_sys::region::Region::create("a", 16)?;
    /// r.atomic_u64(8)?.fetch_add(3, Ordering::AcqRel);
    /// assert_eq!(r.atomic_u64(8)?.load(Ordering::Acquire), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn atomic_u64(&self, offset: usize) -> io::Result<&AtomicU64> {
        let p = self.aligned::<AtomicU64>(offset)?;
        // SAFETY: as in `atomic_u32`, for 8 aligned bytes.
        Ok(unsafe { AtomicU64::from_ptr(p.cast()) })
    }

    /// The whole region as `AtomicU32`s (its length rounded down to a
    /// multiple of 4 bytes): the shared words of a synchronization primitive,
    /// reached by index without a fallible call on the hot path.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let r = mp_sys::region::Region::create("w", 10)?;
    /// let words = r.atomics_u32();
    /// assert_eq!(words.len(), 2);
    /// words[1].store(7, Ordering::Relaxed);
    /// assert_eq!(r.atomic_u32(4)?.load(Ordering::Relaxed), 7);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn atomics_u32(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is page-aligned and `len / 4` words lie inside
        // it; it lives as long as `&self`; every bit pattern is a valid u32,
        // and all processes access the words atomically.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU32>(), self.len() / 4) }
    }

    /// The whole region as `AtomicU64`s (its length rounded down to a
    /// multiple of 8 bytes).
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let r = mp_sys::region::Region::create("w", 16)?;
    /// r.atomics_u64()[1].fetch_add(2, Ordering::AcqRel);
    /// assert_eq!(r.atomic_u64(8)?.load(Ordering::Acquire), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn atomics_u64(&self) -> &[AtomicU64] {
        // SAFETY: as in `atomics_u32`, for `len / 8` aligned words.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), self.len() / 8) }
    }

    /// A pointer to a `T` at `offset`, checked to lie in the mapping and to
    /// be aligned for `T`.
    fn aligned<T>(&self, offset: usize) -> io::Result<*mut u8> {
        self.check(offset, size_of::<T>())?;
        if !offset.is_multiple_of(align_of::<T>()) {
            return Err(invalid_input(format!(
                "offset {offset} is not aligned for a {}",
                std::any::type_name::<T>().rsplit("::").next().unwrap_or("value")
            )));
        }
        // The mapping is page-aligned, so an aligned offset is an aligned
        // address; `wrapping_add` stays in bounds by the check above.
        Ok(self.map.as_ptr().wrapping_add(offset))
    }

    /// Grows the region to `new_len` bytes (new bytes are zero). Other
    /// processes keep their mappings at the old length until they call
    /// [`refresh`](Region::refresh). Shrinking is refused: the region is sealed.
    ///
    /// ```
    /// let mut r = mp_sys::region::Region::create("g", 8)?;
    /// r.write(0, b"keep")?;
    /// r.grow(1 << 20)?;
    /// let mut b = [0u8; 4];
    /// r.read(0, &mut b)?;
    /// assert_eq!(&b, b"keep");
    /// assert!(r.grow(4).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn grow(&mut self, new_len: usize) -> io::Result<()> {
        if new_len < self.len() {
            return Err(invalid_input(format!(
                "a shared region cannot shrink (from {} to {new_len} bytes)",
                self.len()
            )));
        }
        if new_len <= self.map.len() {
            // A growable region: within its reservation, nothing moves.
            return self.extend(new_len);
        }
        if new_len > file_len(self.fd.as_fd())? {
            set_file_len(self.fd.as_fd(), new_len)?;
        }
        self.map.remap(new_len)?;
        *self.avail.get_mut() = new_len;
        Ok(())
    }

    /// Maps the whole file again if another process [grew](Region::grow) it.
    /// Returns the new length.
    ///
    /// ```
    /// let mut a = mp_sys::region::Region::create("g", 8)?;
    /// let mut b = a.try_clone()?;
    /// a.grow(4096)?;
    /// assert_eq!(b.refresh()?, 4096);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn refresh(&mut self) -> io::Result<usize> {
        let len = file_len(self.fd.as_fd())?;
        if len > self.map.len() {
            self.map.remap(len)?;
        }
        self.sync_len()
    }
}

impl AsFd for Region {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn stat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer to a stat struct.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn file_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    usize::try_from(stat(fd)?.st_size).map_err(|_| invalid_input("the shared region has a negative size"))
}

fn set_file_len(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| invalid_input(format!("{len} bytes is too large for a region")))?;
    // SAFETY: ftruncate on an open descriptor with a non-negative length.
    cvt_r(|| unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(())
}
