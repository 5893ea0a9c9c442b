//! Shared memory regions: a memfd mapped `MAP_SHARED`, passed between
//! processes by its file descriptor.
//!
//! A [`Region`] has no name in the file system, so nothing is left in
//! `/dev/shm`: the kernel frees the memory when the last process holding the
//! descriptor or a mapping exits, killed or not. Regions are sealed against
//! shrinking (`F_SEAL_SHRINK`), and [`Region::from_fd`] refuses a descriptor
//! without that seal, so no peer can truncate the file under another process's
//! mapping (which would turn its next access into `SIGBUS`).
//!
//! # Memory model
//!
//! Other processes, and other threads of this one, read and write a region's
//! bytes at any time, so every access this module makes to them is atomic:
//! [`atomic_u32`](Region::atomic_u32) and friends hand out atomics, and the
//! copies ([`read`](Region::read), [`write`](Region::write),
//! [`copy_within`](Region::copy_within)) are relaxed atomic loads and
//! stores: one access for an aligned 8- or 4-byte value (an array element),
//! and a byte-wise atomic copy for anything else (`rep movsb` on x86-64,
//! whose byte accesses the hardware makes single-copy atomic; 8-byte atomic
//! words with bytes at the edges elsewhere). A copy that overlaps bytes
//! another side is changing therefore reads or leaves a mix of old and new
//! bytes, never undefined behaviour; no reference to the bytes (`&[u8]`) is
//! handed out. Miri checks the word-loop copies against concurrent atomic
//! users (the unit tests of `shared_copy`); it cannot run the assembly.
//!
//! Rust's memory model (C++'s) adds one rule this module cannot enforce for
//! its callers: atomic accesses of *different sizes* to the same bytes must
//! not race unless all of them are reads. The layers above keep it by
//! layout: each header word is used at one width only, and bytes that are
//! copied (a ring's data area) are never used as atomics. Mixing widths on
//! one word while another thread writes it is a race these layouts avoid.
//!
//! # Views: `&mut [T]` over a region, for the holder of a lock
//!
//! [`Region::into_slice_of`] turns a region (one mapping of the memfd) into
//! a [`RegionSlice`], which derefs to `[T]` and `[T]` mutably: this is the one
//! place in the workspace that makes a reference into shared bytes, for
//! `Value`/`Array` guards that work on the shared memory itself instead of a
//! copy. Why it is sound:
//!
//! - The `RegionSlice` owns its mapping, so in this process the bytes at that
//!   address are reached only through it, under Rust's borrow rules (`&self`
//!   for `&[T]`, `&mut self` for `&mut [T]`); the region's copies and
//!   atomics cannot be called on a mapping that is moved into a view.
//! - `T: bytemuck::Pod`: every bit pattern is a valid `T`, so whatever the
//!   bytes hold, reading them as `T` is defined; the range and its alignment
//!   are checked.
//! - Other mappings of the same memfd (another handle, here or in another
//!   process) are other memory to this process, like another process's. The
//!   caller keeps them out while a view lives by holding a lock that every
//!   writer takes (`Array`'s `RLock`). A process that writes the bytes without
//!   the lock while a view lives races, as it does in CPython when it writes
//!   a `multiprocessing.Array` without its lock: the view may see old or
//!   torn values, and writes through the view may reach the memory late
//!   (at the latest when the lock is released, which is a release store).
//!
//! On x86-64 the copies cost what `memcpy` costs (`rep movsb` is what glibc's
//! `memcpy` uses for large copies on CPUs with fast strings); the portable
//! word loop costs up to twice as much for large copies that stay in cache.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::mapping::Mapping;
use super::shared_copy::{Atom, SharedBytes};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;

use super::{invalid_input, retry};

/// A memfd mapped read-write and shared. See the [module docs](self).
///
/// The bytes may be changed by other processes at any time, so the region
/// hands out copies ([`read`](Region::read), [`write`](Region::write)),
/// atomics ([`atomic_u32`](Region::atomic_u32)), and a raw pointer; every
/// access is atomic (see the [module docs](self#memory-model)).
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
const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK;

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
    let fd = memfd_create(cname.as_c_str(), MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    set_file_len(fd.as_fd(), len)?;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(SEALS))?;
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
        // A descriptor that is not a memfd fails with EINVAL.
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).map(SealFlag::from_bits_truncate);
        if !seals.is_ok_and(|s| s.contains(SEALS)) {
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
    /// write through their own mappings at any time, so reach the bytes only
    /// with atomic operations (see the [module docs](self#memory-model)).
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

    /// The backed bytes, for copies.
    #[inline]
    fn bytes(&self) -> SharedBytes<'_> {
        // SAFETY: the first `len` bytes of the mapping are backed by the file
        // and stay mapped while `self` is borrowed (only `grow`/`refresh`,
        // which take `&mut self`, move the mapping).
        unsafe { SharedBytes::new(self.map.as_ptr(), self.len()) }
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) -> io::Result<()> {
        let avail = self.len();
        match offset.checked_add(len) {
            Some(end) if end <= avail => Ok(()),
            _ => Err(outside(offset, len, avail)),
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
        let bytes = self.bytes();
        if bytes.copy_within(src, dst, len) {
            Ok(())
        } else {
            Err(outside(src.max(dst), len, bytes.len()))
        }
    }

    /// Copies `buf.len()` bytes at `offset` out of the region, with relaxed
    /// atomic loads (see the [module docs](self#memory-model)).
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
        // One bounds check, in `load`: this is an array element's path.
        let bytes = self.bytes();
        if bytes.load(offset, buf) {
            Ok(())
        } else {
            Err(outside(offset, buf.len(), bytes.len()))
        }
    }

    /// Copies `data` into the region at `offset`, with relaxed atomic stores.
    ///
    /// ```
    /// let r = mp_sys::region::Region::create("w", 4)?;
    /// r.write(1, b"ab")?;
    /// assert!(r.write(3, b"ab").is_err()); // past the end
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn write(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        let bytes = self.bytes();
        if bytes.store(offset, data) {
            Ok(())
        } else {
            Err(outside(offset, data.len(), bytes.len()))
        }
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
        self.atom(offset)
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
        self.atom(offset)
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
        // The mapping is page-aligned and `len / 4` words lie inside it.
        let bytes = self.bytes();
        bytes.atoms(0, bytes.len() / 4).unwrap_or_default()
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
        let bytes = self.bytes();
        bytes.atoms(0, bytes.len() / 8).unwrap_or_default()
    }

    /// The atomic `A` at `offset`, checked to lie in the region and to be
    /// aligned (the mapping is page-aligned, so an aligned offset is an
    /// aligned address).
    fn atom<A: Atom>(&self, offset: usize) -> io::Result<&A> {
        self.check(offset, size_of::<A>())?;
        let misaligned = || {
            invalid_input(format!(
                "offset {offset} is not aligned for a {}",
                std::any::type_name::<A>().rsplit("::").next().unwrap_or("value")
            ))
        };
        match self.bytes().atoms::<A>(offset, 1) {
            Some([a]) => Ok(a),
            _ => Err(misaligned()),
        }
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

impl Region {
    /// Turns this mapping into a view of `count` elements of `T` from byte
    /// `offset`: a `[T]` over the shared bytes themselves, read and written
    /// in place (no copy). See the [module docs](self#views-mut-t-over-a-region-for-the-holder-of-a-lock)
    /// for why this is sound and what it asks of the caller: hold a lock that
    /// every process writing these bytes takes, for as long as the view is
    /// used. [`RegionSlice::into_region`] gives the mapping back.
    ///
    /// Fails with `InvalidInput` when the elements do not lie in the region
    /// or `offset` is not aligned for `T`.
    ///
    /// ```
    /// use mp_sys::region::Region;
    /// let r = Region::create("v", 64)?;
    /// let other = r.try_clone()?; // another handle: "another process"
    /// let mut v = r.into_slice_of::<u64>(8, 7)?;
    /// v[0] = 5;
    /// v[6] += 1;
    /// assert_eq!(v.len(), 7);
    /// let r = v.into_region();
    /// let mut b = [0u8; 8];
    /// other.read(8, &mut b)?;
    /// assert_eq!(u64::from_ne_bytes(b), 5);
    /// assert!(r.try_clone()?.into_slice_of::<u64>(4, 1).is_err()); // misaligned
    /// assert!(r.into_slice_of::<u64>(8, 8).is_err()); // past the end
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_slice_of<T: bytemuck::Pod>(self, offset: usize, count: usize) -> io::Result<RegionSlice<T>> {
        let bytes = count.checked_mul(size_of::<T>());
        let fits = bytes
            .and_then(|b| b.checked_add(offset))
            .is_some_and(|end| end <= self.len());
        if !fits {
            return Err(invalid_input(format!(
                "{count} elements of {} bytes from byte {offset} do not fit in a region of {} bytes",
                size_of::<T>(),
                self.len()
            )));
        }
        if !(self.as_ptr() as usize)
            .wrapping_add(offset)
            .is_multiple_of(align_of::<T>())
        {
            return Err(invalid_input(format!(
                "byte {offset} of a region is not aligned for {} ({}-byte alignment)",
                std::any::type_name::<T>(),
                align_of::<T>()
            )));
        }
        Ok(RegionSlice {
            region: self,
            offset,
            count,
            _elem: PhantomData,
        })
    }
}

/// `count` elements of `T` in place in a [`Region`] whose mapping this view
/// owns: made by [`Region::into_slice_of`], it derefs to `[T]`. See the
/// [module docs](self#views-mut-t-over-a-region-for-the-holder-of-a-lock):
/// hold the lock that guards the bytes while the view is used.
pub struct RegionSlice<T> {
    region: Region,
    offset: usize,
    count: usize,
    _elem: PhantomData<T>,
}

impl<T> RegionSlice<T> {
    /// The region back, its mapping no longer borrowed.
    ///
    /// ```
    /// let r = mp_sys::region::Region::create("b", 8)?.into_slice_of::<u8>(0, 8)?.into_region();
    /// assert_eq!(r.len(), 8);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_region(self) -> Region {
        self.region
    }
}

// The mapping's bytes are lent by `Mapping::bytes`, whose contract holds
// here: the region is owned by the view, so its copies and atomics cannot
// reach the mapping while the view lives; the elements lie in the backed part
// (the region is sealed against shrinking, and `grow`/`extend`, which could
// only add bytes, are unreachable). `into_slice_of` checked the range and the
// alignment, so the casts cannot fail. Writes through other mappings (other
// handles, other processes) are kept out by the lock the caller holds
// (module docs).
impl<T: bytemuck::Pod> Deref for RegionSlice<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        let end = self.offset + self.count * size_of::<T>();
        bytemuck::cast_slice(&self.region.map.bytes(end)[self.offset..])
    }
}

impl<T: bytemuck::Pod> DerefMut for RegionSlice<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        let end = self.offset + self.count * size_of::<T>();
        bytemuck::cast_slice_mut(&mut self.region.map.bytes_mut(end)[self.offset..])
    }
}

impl<T> fmt::Debug for RegionSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionSlice")
            .field("region", &self.region)
            .field("offset", &self.offset)
            .field("count", &self.count)
            .finish()
    }
}

impl AsFd for Region {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The error for bytes `offset..offset + len` of a region of `avail` bytes.
#[cold]
fn outside(offset: usize, len: usize, avail: usize) -> io::Error {
    invalid_input(format!(
        "bytes {offset}..{} are outside the shared region of {avail} bytes",
        offset.saturating_add(len),
    ))
}

fn stat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    Ok(fstat(fd)?)
}

fn file_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    usize::try_from(stat(fd)?.st_size).map_err(|_| invalid_input("the shared region has a negative size"))
}

fn set_file_len(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| invalid_input(format!("{len} bytes is too large for a region")))?;
    retry(|| ftruncate(fd, len))
}
