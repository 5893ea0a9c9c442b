//! `SharedMemory`: Python's `multiprocessing.shared_memory.SharedMemory`, a
//! named segment in `/dev/shm`.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use bytemuck::Pod;
use mp_sys::shm::{self, Segment};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SharedError;

/// Python's `SharedMemory`: a block of bytes under a name that other
/// processes attach to.
///
/// ```
/// use mp_shared::SharedMemory;
/// let mut shm = SharedMemory::create(None, 16)?;      // a name is generated
/// shm.as_mut_slice()[..5].copy_from_slice(b"hello");
/// let other = SharedMemory::attach(shm.name())?;      // in any process
/// assert_eq!(&other.as_slice()[..5], b"hello");
/// shm.unlink()?;                                      // the creator unlinks
/// # Ok::<(), mp_shared::SharedError>(())
/// ```
///
/// The contract is Python's: the segment and its name outlive every handle
/// until [`unlink`](SharedMemory::unlink) is called, once, normally by the
/// process that created it; [`close`](SharedMemory::close) (or drop) only
/// unmaps it in the calling process. A segment whose creator never unlinks it
/// stays in `/dev/shm` until the machine restarts. For memory that needs no
/// name, [`Value`](crate::Value) and [`Array`](crate::Array) use anonymous
/// memfd regions that the kernel frees on its own.
///
/// A SharedMemory is a handle by name: passing it to a child process sends
/// the name, and the child attaches.
pub struct SharedMemory {
    seg: Option<Segment>,
    name: String,
    size: usize,
}

fn io_error(name: &str, e: io::Error) -> SharedError {
    match e.kind() {
        io::ErrorKind::NotFound => SharedError::NotFound(name.to_owned()),
        io::ErrorKind::AlreadyExists => SharedError::AlreadyExists(name.to_owned()),
        io::ErrorKind::InvalidInput => SharedError::InvalidArgument(e.to_string()),
        _ => SharedError::Io(e),
    }
}

/// Why `bytes` bytes of the segment `name` cannot be viewed as `T`s.
fn cast_error<T>(name: &str, bytes: usize, e: bytemuck::PodCastError) -> SharedError {
    let t = std::any::type_name::<T>();
    SharedError::InvalidArgument(match e {
        bytemuck::PodCastError::TargetAlignmentGreaterAndInputNotAligned => format!(
            "the shared memory segment {name:?} is not aligned for {t} ({}-byte alignment)",
            align_of::<T>()
        ),
        _ => format!(
            "{bytes} bytes of the shared memory segment {name:?} are not a whole number of {t} ({} bytes each)",
            size_of::<T>()
        ),
    })
}

/// A fresh name, `psm_` and 8 hex digits, as Python makes them.
fn generated_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = [
        u64::from(std::process::id()),
        u64::from(nanos),
        u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)),
    ];
    let h = seed.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, x| {
        (h ^ x).wrapping_mul(0x0100_0000_01b3).rotate_left(29)
    });
    format!("psm_{:08x}", h as u32 ^ (h >> 32) as u32)
}

impl SharedMemory {
    /// Python's `SharedMemory(name, create=True, size=size)`: a new segment
    /// of `size` zeroed bytes, under `name` or a generated one (`psm_...`).
    /// Fails if the name is taken, too long (over 254 bytes), has a `/`, or
    /// `size` is zero.
    ///
    /// ```
    /// let shm = mp_shared::SharedMemory::create(None, 10)?;
    /// assert!(shm.name().starts_with("psm_"));
    /// assert_eq!(shm.size(), 10);
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn create(name: Option<&str>, size: usize) -> Result<SharedMemory, SharedError> {
        if size == 0 {
            return Err(SharedError::InvalidArgument(
                "a shared memory segment needs a size above zero".into(),
            ));
        }
        let seg = match name {
            Some(n) => Segment::create(n, size).map_err(|e| io_error(n, e))?,
            None => {
                let mut tries = 0;
                loop {
                    let n = generated_name();
                    match Segment::create(&n, size) {
                        Ok(s) => break s,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
                        Err(e) => return Err(io_error(&n, e)),
                    }
                }
            }
        };
        Ok(SharedMemory {
            name: seg.name().to_owned(),
            size,
            seg: Some(seg),
        })
    }

    /// Python's `SharedMemory(name)`: attaches to an existing segment, at
    /// its whole size. [`SharedError::NotFound`] if there is none.
    ///
    /// ```
    /// let e = mp_shared::SharedMemory::attach("psm_not_there").unwrap_err();
    /// assert!(matches!(e, mp_shared::SharedError::NotFound(_)));
    /// ```
    pub fn attach(name: &str) -> Result<SharedMemory, SharedError> {
        let seg = Segment::open(name).map_err(|e| io_error(name, e))?;
        Ok(SharedMemory {
            name: name.to_owned(),
            size: seg.len(),
            seg: Some(seg),
        })
    }

    /// Attaches and checks that the segment holds at least `size` bytes;
    /// [`size`](SharedMemory::size) is then `size`. Asking for more than the
    /// segment holds, or for zero bytes, is an error.
    ///
    /// ```
    /// let shm = mp_shared::SharedMemory::create(None, 8)?;
    /// assert_eq!(mp_shared::SharedMemory::attach_with_size(shm.name(), 4)?.size(), 4);
    /// assert!(mp_shared::SharedMemory::attach_with_size(shm.name(), 9).is_err());
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn attach_with_size(name: &str, size: usize) -> Result<SharedMemory, SharedError> {
        if size == 0 {
            return Err(SharedError::InvalidArgument("attaching needs a size above zero".into()));
        }
        let mut shm = Self::attach(name)?;
        if size > shm.size {
            return Err(SharedError::InvalidArgument(format!(
                "the shared memory segment {name:?} holds {} bytes, fewer than the {size} asked for",
                shm.size
            )));
        }
        shm.size = size;
        Ok(shm)
    }

    /// Python's `shm.name`, without the leading slash.
    ///
    /// ```
    /// let shm = mp_shared::SharedMemory::create(Some("mp_shared_doc_name"), 1)?;
    /// assert_eq!(shm.name(), "mp_shared_doc_name");
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Python's `shm.size`: the usable length in bytes.
    ///
    /// ```
    /// let shm = mp_shared::SharedMemory::create(None, 3)?;
    /// assert_eq!(shm.size(), 3);
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn size(&self) -> usize {
        self.size
    }

    /// Python's `shm.buf`, read-only: the bytes (empty after
    /// [`close`](SharedMemory::close)). Other processes may change them at
    /// any time; synchronize with a lock where that matters.
    ///
    /// ```
    /// let shm = mp_shared::SharedMemory::create(None, 2)?;
    /// assert_eq!(shm.as_slice(), [0, 0]);
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn as_slice(&self) -> &[u8] {
        self.seg.as_ref().map_or(&[], |s| &s.as_slice()[..self.size])
    }

    /// Python's `shm.buf`, writable.
    ///
    /// ```
    /// let mut shm = mp_shared::SharedMemory::create(None, 2)?;
    /// shm.as_mut_slice()[1] = 7;
    /// assert_eq!(shm.as_slice(), [0, 7]);
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let size = self.size;
        match self.seg.as_mut() {
            Some(s) => &mut s.as_mut_slice()[..size],
            None => &mut [],
        }
    }

    /// The bytes as `[T]` in place, without a copy: Python's
    /// `shm.buf.cast(format)`. An error, not a panic, when the size is not a
    /// whole number of `T`s, the segment is not aligned for `T` (a segment
    /// starts on a page, so only a `T` aligned above 4096 bytes fails), or
    /// the handle is closed. Other processes' writes race with the view as
    /// with [`as_slice`](SharedMemory::as_slice).
    ///
    /// ```
    /// let mut shm = mp_shared::SharedMemory::create(None, 32)?;
    /// shm.as_mut_slice_of::<f64>()?[3] = 2.5;
    /// assert_eq!(shm.as_slice_of::<f64>()?, [0.0, 0.0, 0.0, 2.5]);
    /// assert!(shm.as_slice_of::<[u8; 5]>().is_err()); // 32 is not a multiple of 5
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn as_slice_of<T: Pod>(&self) -> Result<&[T], SharedError> {
        self.check_open()?;
        bytemuck::try_cast_slice(self.as_slice()).map_err(|e| self.cast_error::<T>(self.size, e))
    }

    /// The bytes as `[T]` in place, writable: see
    /// [`as_slice_of`](SharedMemory::as_slice_of).
    ///
    /// ```
    /// let mut shm = mp_shared::SharedMemory::create(None, 12)?;
    /// shm.as_mut_slice_of::<u32>()?.copy_from_slice(&[1, 2, 3]);
    /// assert_eq!(shm.as_slice()[4], 2);
    /// assert!(shm.as_mut_slice_of::<u64>().is_err()); // 12 bytes
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn as_mut_slice_of<T: Pod>(&mut self) -> Result<&mut [T], SharedError> {
        self.check_open()?;
        let size = self.size;
        let name = self.name.clone();
        bytemuck::try_cast_slice_mut(self.as_mut_slice()).map_err(|e| cast_error::<T>(&name, size, e))
    }

    #[cfg(feature = "ndarray")]
    /// The first `count` elements of `T` in place, for a view of a given
    /// shape: Python's `np.ndarray(shape, dtype, buffer=shm.buf)` uses the
    /// first bytes of a buffer at least that large.
    pub(crate) fn prefix_of<T: Pod>(&self, count: usize) -> Result<&[T], SharedError> {
        self.check_open()?;
        let bytes = self.prefix_len::<T>(count)?;
        bytemuck::try_cast_slice(&self.as_slice()[..bytes]).map_err(|e| self.cast_error::<T>(bytes, e))
    }

    #[cfg(feature = "ndarray")]
    /// [`prefix_of`](SharedMemory::prefix_of), writable.
    pub(crate) fn prefix_of_mut<T: Pod>(&mut self, count: usize) -> Result<&mut [T], SharedError> {
        self.check_open()?;
        let bytes = self.prefix_len::<T>(count)?;
        let name = self.name.clone();
        bytemuck::try_cast_slice_mut(&mut self.as_mut_slice()[..bytes]).map_err(|e| cast_error::<T>(&name, bytes, e))
    }

    #[cfg(feature = "ndarray")]
    fn prefix_len<T>(&self, count: usize) -> Result<usize, SharedError> {
        match count.checked_mul(size_of::<T>()) {
            Some(b) if b <= self.size => Ok(b),
            _ => Err(SharedError::InvalidArgument(format!(
                "{count} elements of {} ({} bytes each) do not fit in the shared memory segment {:?} of {} bytes",
                std::any::type_name::<T>(),
                size_of::<T>(),
                self.name,
                self.size
            ))),
        }
    }

    fn check_open(&self) -> Result<(), SharedError> {
        if self.is_closed() {
            return Err(SharedError::Closed(self.name.clone()));
        }
        Ok(())
    }

    fn cast_error<T>(&self, bytes: usize, e: bytemuck::PodCastError) -> SharedError {
        cast_error::<T>(&self.name, bytes, e)
    }

    /// Whether [`close`](SharedMemory::close) was called.
    ///
    /// ```
    /// let mut shm = mp_shared::SharedMemory::create(None, 2)?;
    /// shm.close()?;
    /// assert!(shm.is_closed());
    /// # shm.unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.seg.is_none()
    }

    /// Python's `shm.close()`: unmaps the segment in this process (a second
    /// close does nothing). The segment itself stays until unlinked.
    ///
    /// ```
    /// let mut shm = mp_shared::SharedMemory::create(None, 2)?;
    /// let name = shm.name().to_owned();
    /// shm.close()?;
    /// assert!(shm.as_slice().is_empty());
    /// mp_shared::SharedMemory::attach(&name)?.unlink()?; // still there
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn close(&mut self) -> Result<(), SharedError> {
        self.seg = None;
        Ok(())
    }

    /// Python's `shm.unlink()`: removes the name, so no process can attach
    /// any more; the memory is freed once every mapping is closed. Call it
    /// once; a second call fails with [`SharedError::NotFound`].
    ///
    /// ```
    /// let shm = mp_shared::SharedMemory::create(None, 2)?;
    /// shm.unlink()?;
    /// assert!(shm.unlink().is_err());
    /// assert_eq!(shm.as_slice().len(), 2); // this mapping still works
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn unlink(&self) -> Result<(), SharedError> {
        shm::unlink(&self.name).map_err(|e| io_error(&self.name, e))
    }
}

impl Clone for SharedMemory {
    /// Another mapping of the same segment (a closed handle clones closed).
    ///
    /// # Panics
    ///
    /// If the system cannot map the segment again (out of memory or address
    /// space), like an allocation failure.
    fn clone(&self) -> Self {
        SharedMemory {
            seg: self.seg.as_ref().map(|s| {
                s.try_clone()
                    .unwrap_or_else(|e| panic!("cannot map shared memory {:?} again: {e}", self.name))
            }),
            name: self.name.clone(),
            size: self.size,
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.name, self.size as u64).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, size) = <(String, u64)>::deserialize(d)?;
        let size = usize::try_from(size).map_err(mp_codec::handle::invalid)?;
        SharedMemory::attach_with_size(&name, size).map_err(mp_codec::handle::invalid)
    }
}
