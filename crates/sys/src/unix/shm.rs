//! Named POSIX shared memory (`shm_open`): segments that live in `/dev/shm`
//! under a name until someone unlinks them.
//!
//! This is what Python's `multiprocessing.shared_memory.SharedMemory` uses.
//! Unlike a [`Region`](crate::region::Region), a named segment outlives every
//! process that maps it until [`unlink`] removes its name, so its owner must
//! unlink it. Names follow Python's: given without the leading slash
//! (`"psm_1234"`), at most [`MAX_NAME_LEN`] bytes, without `/` or NUL.
//!
//! # Views of the bytes, and other handles
//!
//! [`Segment::as_slice`] and [`Segment::as_mut_slice`] lend the mapping's
//! bytes under the borrow rules of the `Segment` (`&mut self` for writing),
//! as Python's `shm.buf` lends a memoryview. Each `Segment` is its own
//! mapping: another `Segment` of the same name, in this process
//! ([`Segment::open`] again, [`Segment::try_clone`]) or in another one,
//! reaches the same memory at another address, and its writes race with
//! this handle's views exactly as another process's writes do in CPython:
//! a view may see old, new or torn bytes. Nothing else can happen (every
//! bit pattern is a valid `u8`), and processes that need consistent values
//! agree on a lock. An earlier design lent one mapping to every handle of a
//! process and refused writes while other handles lived; it made
//! `SharedMemory` and `ShareableList` unusable the way Python uses them, so
//! the handles stay independent and this race is documented instead.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::{Mode, fstat};
use nix::unistd::ftruncate;

use super::mapping::Mapping;
use super::{invalid_input, retry};

/// The longest segment name accepted, without the leading slash (the file
/// name limit of `/dev/shm`, less the slash).
pub const MAX_NAME_LEN: usize = 254;

/// A named shared-memory segment mapped read-write and shared.
///
/// Dropping it unmaps it and closes its descriptor; the segment and its name
/// stay until [`unlink`].
pub struct Segment {
    name: String,
    fd: OwnedFd,
    map: Mapping,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.map.len())
            .finish()
    }
}

/// Checks a segment name and returns its `/name` form for the system calls.
fn path(name: &str) -> io::Result<CString> {
    if name.is_empty() {
        return Err(invalid_input("a shared memory name must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid_input(format!(
            "the shared memory name {:?}... is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.chars().take(16).collect::<String>(),
            name.len()
        )));
    }
    if name.contains('/') {
        return Err(invalid_input(format!(
            "the shared memory name {name:?} contains '/': give a plain name such as \"psm_data\""
        )));
    }
    CString::new(format!("/{name}")).map_err(|_| invalid_input("a shared memory name must not contain NUL bytes"))
}

impl Segment {
    /// Creates the segment `name` of `len` bytes (zero-filled). Fails with
    /// `AlreadyExists` if the name is taken.
    ///
    /// ```
    /// use mp_sys::shm::{Segment, unlink};
    /// let name = format!("mp_sys_doc_{}", std::process::id());
    /// let s = Segment::create(&name, 100)?;
    /// assert_eq!(s.len(), 100);
    /// assert!(Segment::create(&name, 100).is_err()); // taken
    /// unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: &str, len: usize) -> io::Result<Segment> {
        if len == 0 {
            return Err(invalid_input("a shared memory segment must be at least one byte long"));
        }
        let p = path(name)?;
        let size =
            libc::off_t::try_from(len).map_err(|_| invalid_input(format!("{len} bytes is too large a segment")))?;
        let fd = retry(|| {
            shm_open(
                p.as_c_str(),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
                Mode::S_IRUSR | Mode::S_IWUSR,
            )
        })?;
        if let Err(e) = retry(|| ftruncate(&fd, size)) {
            let _ = unlink(name);
            return Err(e);
        }
        Self::map(name, fd, len).inspect_err(|_| {
            let _ = unlink(name);
        })
    }

    /// Opens the existing segment `name` at its whole size. Fails with
    /// `NotFound` if there is none.
    ///
    /// ```
    /// let e = mp_sys::shm::Segment::open("mp_sys_no_such_segment").unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn open(name: &str) -> io::Result<Segment> {
        let p = path(name)?;
        let fd = retry(|| shm_open(p.as_c_str(), OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()))?;
        let len = usize::try_from(fstat(&fd)?.st_size).map_err(|_| invalid_input("the segment has a negative size"))?;
        if len == 0 {
            return Err(invalid_input(format!("the shared memory segment {name:?} is empty")));
        }
        Self::map(name, fd, len)
    }

    fn map(name: &str, fd: OwnedFd, len: usize) -> io::Result<Segment> {
        let map = Mapping::new(fd.as_fd(), len, false)?;
        Ok(Segment {
            name: name.to_owned(),
            fd,
            map,
        })
    }

    /// A second mapping of the same segment, with its own descriptor (it
    /// works after [`unlink`] too).
    ///
    /// ```
    /// # let name = format!("mp_sys_doc_clone_{}", std::process::id());
    /// let mut a = mp_sys::shm::Segment::create(&name, 4)?;
    /// let b = a.try_clone()?;
    /// mp_sys::shm::unlink(&name)?;
    /// a.as_mut_slice()[0] = 1;
    /// assert_eq!(b.as_slice()[0], 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<Segment> {
        Self::map(&self.name, self.fd.try_clone()?, self.map.len())
    }

    /// The name, without the leading slash.
    ///
    /// ```
    /// # let name = format!("mp_sys_doc_name_{}", std::process::id());
    /// let s = mp_sys::shm::Segment::create(&name, 8)?;
    /// assert_eq!(s.name(), name);
    /// # mp_sys::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mapped length in bytes.
    ///
    /// ```
    /// # let name = format!("mp_sys_doc_len_{}", std::process::id());
    /// assert_eq!(mp_sys::shm::Segment::create(&name, 3)?.len(), 3);
    /// # mp_sys::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: a segment holds at least one byte.
    ///
    /// ```
    /// # let name = format!("mp_sys_doc_empty_{}", std::process::id());
    /// assert!(!mp_sys::shm::Segment::create(&name, 3)?.is_empty());
    /// # mp_sys::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The bytes. Other processes that map the segment, and other
    /// `Segment`s of it in this process, may change them at any time, as
    /// with Python's `shm.buf` or a file mapped with `mmap`: synchronize
    /// with a lock, or read values once and check them (see the
    /// [module docs](self#views-of-the-bytes-and-other-handles)).
    ///
    /// ```
    /// # let name = format!("mp_sys_doc_slice_{}", std::process::id());
    /// let mut a = mp_sys::shm::Segment::create(&name, 4)?;
    /// a.as_mut_slice().copy_from_slice(b"abcd");
    /// let b = mp_sys::shm::Segment::open(&name)?;
    /// assert_eq!(b.as_slice(), b"abcd");
    /// # mp_sys::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn as_slice(&self) -> &[u8] {
        // A segment reaches its mapping only through these borrows.
        self.map.bytes(self.map.len())
    }

    /// The bytes, writable, while `self` is borrowed mutably. Writes by
    /// other handles and processes race with this view as they do with
    /// CPython's `shm.buf`; see [`as_slice`](Segment::as_slice).
    ///
    /// ```
    /// # let name = format!("mp_sys_doc_mut_{}", std::process::id());
    /// let mut s = mp_sys::shm::Segment::create(&name, 2)?;
    /// s.as_mut_slice()[1] = 9;
    /// assert_eq!(s.as_slice(), [0, 9]);
    /// # mp_sys::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.map.len();
        self.map.bytes_mut(len)
    }
}

/// Removes the name `name`: later opens fail, and the memory is freed once
/// every mapping of it is gone.
///
/// ```
/// let e = mp_sys::shm::unlink("mp_sys_never_created").unwrap_err();
/// assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
/// ```
pub fn unlink(name: &str) -> io::Result<()> {
    let p = path(name)?;
    Ok(shm_unlink(p.as_c_str())?)
}

/// Checks a name as [`Segment::create`] would, without creating anything.
///
/// ```
/// assert!(mp_sys::shm::check_name("psm_1").is_ok());
/// assert!(mp_sys::shm::check_name("a/b").is_err());
/// assert!(mp_sys::shm::check_name(&"x".repeat(300)).is_err());
/// ```
pub fn check_name(name: &str) -> io::Result<()> {
    path(name).map(drop)
}
