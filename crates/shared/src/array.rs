//! `Array` (with its RLock) and `RawArray`: a fixed-length array of
//! plain-data elements in shared memory.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;
use mp_sync::{LockError, RLock, RLockGuard};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SharedError;
use crate::mem::{Kind, Mem, MemOf, MemRef};

/// Python's `multiprocessing.Array`: a fixed-length array of plain-data
/// elements (`T: Pod`) in shared memory, with an [`RLock`] that every access
/// takes.
///
/// ```
/// use mp_shared::Array;
/// let a = Array::from_slice(&[0i32, 1, 2, 3])?;
/// a.set(1, -1)?;
/// assert_eq!(a.get(1), Some(-1));
/// assert_eq!(a.get(4), None);
/// for x in a.lock()?.iter_mut() {
///     *x *= 10;
/// }
/// assert_eq!(a.to_vec(), [0, -10, 20, 30]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// An Array is a handle: clones, and copies passed to child processes or
/// pool tasks, all refer to the same memory, a memfd region that the kernel
/// frees with its last holder.
///
/// # Differences from Python
///
/// - `Array('i', 10)` is `Array::<i32>::new(10)`, `Array('i', range(10))`
///   is `Array::from_slice(&[..])`; `arr[i]` is `get(i)` / `set(i, v)`,
///   `arr[:]` is [`to_vec`](Array::to_vec) / [`set_slice`](Array::set_slice).
/// - [`lock`](Array::lock) gives the elements as a slice under the lock, in
///   one copy in and (if changed) one copy out.
pub struct Array<T> {
    mem: Arc<Mem<T>>,
    lock: RLock,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            mem: self.mem.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Pod> Array<T> {
    fn with(mem: Mem<T>) -> Result<Array<T>, SharedError> {
        Ok(Array {
            mem: Arc::new(mem),
            lock: RLock::new()?,
        })
    }

    /// Python's `Array(typecode, n)`: `len` zeroed elements.
    ///
    /// ```
    /// let a = mp_shared::Array::<f64>::new(3)?;
    /// assert_eq!(a.to_vec(), [0.0; 3]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn new(len: usize) -> Result<Array<T>, SharedError> {
        Self::with(Mem::create(Kind::Array, len)?)
    }

    /// Python's `Array(typecode, sequence)`: a copy of `v`.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[1u8, 2, 3])?;
    /// assert_eq!(a.len(), 3);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn from_slice(v: &[T]) -> Result<Array<T>, SharedError> {
        let mem = Mem::create(Kind::Array, v.len())?;
        mem.write_from(0, v);
        Self::with(mem)
    }

    /// Python's `len(arr)`.
    ///
    /// ```
    /// assert_eq!(mp_shared::Array::<u16>::new(5)?.len(), 5);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(mp_shared::Array::<u16>::new(0)?.is_empty());
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.mem.len() == 0
    }

    fn held(&self) -> Option<RLockGuard> {
        self.lock.acquire().map_or_else(LockError::into_guard, Some)
    }

    /// Python's `arr[i]`, under the lock; `None` past the end.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[4i64])?;
    /// assert_eq!(a.get(0), Some(4));
    /// assert_eq!(a.get(1), None);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len() {
            return None;
        }
        let _g = self.held();
        Some(self.mem.read(i))
    }

    /// Python's `arr[i] = v`, under the lock; [`SharedError::OutOfRange`]
    /// past the end.
    ///
    /// ```
    /// let a = mp_shared::Array::<i32>::new(2)?;
    /// a.set(1, 5)?;
    /// assert!(a.set(2, 5).is_err());
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn set(&self, i: usize, v: T) -> Result<(), SharedError> {
        self.mem.check_range(i, 1)?;
        let _g = self.held();
        self.mem.write(i, &v);
        Ok(())
    }

    /// Python's `arr[start:start + len(values)] = values`, under the lock.
    ///
    /// ```
    /// let a = mp_shared::Array::<u8>::new(4)?;
    /// a.set_slice(1, &[7, 8])?;
    /// assert_eq!(a.to_vec(), [0, 7, 8, 0]);
    /// assert!(a.set_slice(3, &[1, 2]).is_err());
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn set_slice(&self, start: usize, values: &[T]) -> Result<(), SharedError> {
        self.mem.check_range(start, values.len())?;
        let _g = self.held();
        self.mem.write_from(start, values);
        Ok(())
    }

    /// Python's `arr[:]`: a copy of every element, under the lock.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[1.0f32, 2.0])?;
    /// assert_eq!(a.to_vec(), [1.0, 2.0]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        let _g = self.held();
        self.mem.to_vec()
    }

    /// Python's `arr.get_lock()`.
    ///
    /// ```
    /// let a = mp_shared::Array::<i32>::new(1)?;
    /// let _held = a.get_lock().acquire()?;
    /// a.set(0, 1)?; // reentrant
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_lock(&self) -> &RLock {
        &self.lock
    }

    /// Takes the lock and gives the elements as a slice to read and change;
    /// changes are written back when the guard drops, before the lock is
    /// released. The guard works on a copy: while it lives, `get` on the same
    /// thread reads the elements as they were.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[3u32, 1, 2])?;
    /// a.lock()?.sort();
    /// assert_eq!(a.to_vec(), [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<ArrayGuard<T>, LockError<ArrayGuard<T>>> {
        match self.lock.acquire() {
            Ok(g) => Ok(self.guard(g)),
            Err(LockError::OwnerDied(g)) => Err(LockError::OwnerDied(self.guard(g))),
            Err(LockError::Sync(e)) => Err(LockError::Sync(e)),
        }
    }

    fn guard(&self, held: RLockGuard) -> ArrayGuard<T> {
        ArrayGuard {
            elems: self.mem.to_vec(),
            dirty: false,
            mem: self.mem.clone(),
            _held: held,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (MemRef(&self.mem), &self.lock).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (MemOf(mem), lock) = <(MemOf<T, { Kind::Array as u32 }>, RLock)>::deserialize(d)?;
        Ok(Array {
            mem: Arc::new(mem),
            lock,
        })
    }
}

/// The elements of an [`Array`] while its lock is held, as a slice; dropping
/// the guard writes changes back and releases the lock.
///
/// ```
/// let a = mp_shared::Array::<i32>::new(3)?;
/// let mut g = a.lock()?;
/// g.copy_from_slice(&[1, 2, 3]);
/// drop(g);
/// assert_eq!(a.to_vec(), [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ArrayGuard<T: Pod> {
    elems: Vec<T>,
    dirty: bool,
    mem: Arc<Mem<T>>,
    // Declared last: dropped after `drop` has written the elements back.
    _held: RLockGuard,
}

impl<T: Pod> Deref for ArrayGuard<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.elems
    }
}

impl<T: Pod> DerefMut for ArrayGuard<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.dirty = true;
        &mut self.elems
    }
}

impl<T: Pod> Drop for ArrayGuard<T> {
    fn drop(&mut self) {
        if self.dirty {
            self.mem.write_from(0, &self.elems);
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&self.elems).finish()
    }
}

/// Python's `multiprocessing.RawArray`: an [`Array`] without a lock. Each
/// element is copied in or out on its own; another process's concurrent
/// writes may be seen part-way.
///
/// ```
/// let a = mp_shared::RawArray::from_slice(&[1u64, 2])?;
/// a.set(0, 9)?;
/// assert_eq!(a.to_vec(), [9, 2]);
/// # Ok::<(), mp_shared::SharedError>(())
/// ```
pub struct RawArray<T> {
    mem: Arc<Mem<T>>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray { mem: self.mem.clone() }
    }
}

impl<T: Pod> RawArray<T> {
    /// Python's `RawArray(typecode, n)`: `len` zeroed elements.
    ///
    /// ```
    /// assert_eq!(mp_shared::RawArray::<i8>::new(2)?.to_vec(), [0, 0]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn new(len: usize) -> Result<RawArray<T>, SharedError> {
        Ok(RawArray {
            mem: Arc::new(Mem::create(Kind::RawArray, len)?),
        })
    }

    /// Python's `RawArray(typecode, sequence)`.
    ///
    /// ```
    /// assert_eq!(mp_shared::RawArray::from_slice(&[5i16])?.get(0), Some(5));
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn from_slice(v: &[T]) -> Result<RawArray<T>, SharedError> {
        let mem = Mem::create(Kind::RawArray, v.len())?;
        mem.write_from(0, v);
        Ok(RawArray { mem: Arc::new(mem) })
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(mp_shared::RawArray::<u8>::new(7)?.len(), 7);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(!mp_shared::RawArray::<u8>::new(1)?.is_empty());
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.mem.len() == 0
    }

    /// Element `i`; `None` past the end.
    ///
    /// ```
    /// assert_eq!(mp_shared::RawArray::<u8>::new(1)?.get(1), None);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len()).then(|| self.mem.read(i))
    }

    /// Writes element `i`; [`SharedError::OutOfRange`] past the end.
    ///
    /// ```
    /// let a = mp_shared::RawArray::<u8>::new(1)?;
    /// assert!(a.set(1, 0).is_err());
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn set(&self, i: usize, v: T) -> Result<(), SharedError> {
        self.mem.check_range(i, 1)?;
        self.mem.write(i, &v);
        Ok(())
    }

    /// Writes `values` from element `start` on.
    ///
    /// ```
    /// let a = mp_shared::RawArray::<u8>::new(3)?;
    /// a.set_slice(0, &[1, 2, 3])?;
    /// assert_eq!(a.to_vec(), [1, 2, 3]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn set_slice(&self, start: usize, values: &[T]) -> Result<(), SharedError> {
        self.mem.check_range(start, values.len())?;
        self.mem.write_from(start, values);
        Ok(())
    }

    /// A copy of every element.
    ///
    /// ```
    /// assert_eq!(mp_shared::RawArray::from_slice(&[0.5f64])?.to_vec(), [0.5]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.mem.to_vec()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<T: Pod> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.mem.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let MemOf(mem) = MemOf::<T, { Kind::RawArray as u32 }>::deserialize(d)?;
        Ok(RawArray { mem: Arc::new(mem) })
    }
}
