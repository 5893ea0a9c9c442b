//! `Array` (with its RLock) and `RawArray`: a fixed-length array of
//! plain-data elements in shared memory, both the one generic
//! [`SharedArray`] with a [`Locking`] kind.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;
use mp_sync::{LockError, RLock, RLockGuard, SyncError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SharedError;
use crate::locking::{Locking, NoLock, RegionOf, kind};
use crate::mem::{Mem, MemRef};
use crate::view::{Held, Spare};

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
///   `arr[:]` is [`to_vec`](SharedArray::to_vec) /
///   [`set_slice`](SharedArray::set_slice).
/// - [`lock`](SharedArray::lock) gives the elements in shared memory as a
///   slice under the lock, without a copy (Python's `arr.get_obj()` under
///   `with arr.get_lock():`).
pub type Array<T> = SharedArray<T, RLock>;

/// Python's `multiprocessing.RawArray`: an [`Array`] without a lock. Each
/// element is copied in or out on its own; another process's concurrent
/// writes may be seen part-way. There is no slice view: nothing keeps other
/// writers out while one would live. To work on the elements in place, use
/// an [`Array`] and its [`lock`](SharedArray::lock).
///
/// ```
/// let a = mp_shared::RawArray::from_slice(&[1u64, 2])?;
/// a.set(0, 9)?;
/// assert_eq!(a.to_vec(), [9, 2]);
/// # Ok::<(), mp_shared::SharedError>(())
/// ```
pub type RawArray<T> = SharedArray<T, NoLock>;

/// A fixed-length array of plain-data elements in shared memory, guarded by
/// `L`: [`Array`] (`L` = [`RLock`]) and [`RawArray`] (`L` = [`NoLock`]) are
/// this type, so their shared methods are written once. Name it through
/// those aliases, or generically to accept both:
///
/// ```
/// use mp_shared::{Array, Locking, RawArray, SharedArray};
/// fn total<L: Locking>(a: &SharedArray<f64, L>) -> f64 {
///     a.iter().sum()
/// }
/// assert_eq!(total(&Array::from_slice(&[1.0, 2.0])?), 3.0);
/// assert_eq!(total(&RawArray::from_slice(&[4.0])?), 4.0);
/// # Ok::<(), mp_shared::SharedError>(())
/// ```
pub struct SharedArray<T, L: Locking = RLock> {
    mem: Arc<Mem<T>>,
    lock: L,
    spare: Arc<Spare>,
}

impl<T, L: Locking> Clone for SharedArray<T, L> {
    fn clone(&self) -> Self {
        SharedArray {
            mem: self.mem.clone(),
            lock: self.lock.clone(),
            spare: self.spare.clone(),
        }
    }
}

impl<T: Pod, L: Locking> SharedArray<T, L> {
    fn with(mem: Mem<T>) -> Result<Self, SharedError> {
        Ok(SharedArray {
            mem: Arc::new(mem),
            lock: L::new_lock()?,
            spare: Arc::default(),
        })
    }

    /// Python's `Array(typecode, n)` or `RawArray(typecode, n)`: `len`
    /// zeroed elements.
    ///
    /// ```
    /// assert_eq!(mp_shared::Array::<f64>::new(3)?.to_vec(), [0.0; 3]);
    /// assert_eq!(mp_shared::RawArray::<i8>::new(2)?.to_vec(), [0, 0]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn new(len: usize) -> Result<Self, SharedError> {
        Self::with(Mem::create(kind::<L>(true), len)?)
    }

    /// Python's `Array(typecode, sequence)` or `RawArray(typecode,
    /// sequence)`: a copy of `v`.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[1u8, 2, 3])?;
    /// assert_eq!(a.len(), 3);
    /// assert_eq!(mp_shared::RawArray::from_slice(&[5i16])?.get(0), Some(5));
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn from_slice(v: &[T]) -> Result<Self, SharedError> {
        let mem = Mem::create(kind::<L>(true), v.len())?;
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
    /// assert!(!mp_shared::RawArray::<u8>::new(1)?.is_empty());
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.mem.len() == 0
    }

    /// Python's `arr[i]` (under the lock, for an [`Array`]); `None` past the
    /// end.
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
        let _g = self.lock.hold();
        Some(self.mem.read(i))
    }

    /// Python's `arr[i] = v` (under the lock, for an [`Array`]);
    /// [`SharedError::OutOfRange`] past the end.
    ///
    /// ```
    /// let a = mp_shared::Array::<i32>::new(2)?;
    /// a.set(1, 5)?;
    /// assert!(a.set(2, 5).is_err());
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn set(&self, i: usize, v: T) -> Result<(), SharedError> {
        self.mem.check_range(i, 1)?;
        let _g = self.lock.hold();
        self.mem.write(i, &v);
        Ok(())
    }

    /// Python's `arr[start:start + len(values)] = values` (under the lock,
    /// for an [`Array`]).
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
        let _g = self.lock.hold();
        self.mem.write_from(start, values);
        Ok(())
    }

    /// Copies `out.len()` elements from element `start` into `out` (under
    /// the lock, for an [`Array`]): Python's `arr[start:start + n]` into a
    /// buffer you reuse, so a large array can be read in cache-sized chunks
    /// without allocating.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[1.0f64, 2.0, 3.0, 4.0])?;
    /// let mut buf = [0.0; 2];
    /// let mut sum = 0.0;
    /// for start in (0..a.len()).step_by(buf.len()) {
    ///     a.read_into(start, &mut buf)?;
    ///     sum += buf.iter().sum::<f64>();
    /// }
    /// assert_eq!(sum, 10.0);
    /// assert!(a.read_into(3, &mut buf).is_err()); // past the end
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn read_into(&self, start: usize, out: &mut [T]) -> Result<(), SharedError> {
        self.mem.check_range(start, out.len())?;
        let _g = self.lock.hold();
        self.mem.read_into(start, out);
        Ok(())
    }

    /// Python's `iter(arr)` (under `with arr.get_lock():`, for an
    /// [`Array`]: the lock is held until the iterator is dropped). Elements
    /// are copied out a few thousand at a time into a small buffer, so
    /// iterating a large array allocates little and stays in the cache.
    /// For a [`RawArray`], another process's concurrent writes may be seen
    /// part-way.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[1.5f64, 2.5])?;
    /// assert_eq!(a.iter().sum::<f64>(), 4.0);
    /// assert_eq!(a.iter().rev().collect::<Vec<_>>(), [2.5, 1.5]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn iter(&self) -> Iter<T> {
        Iter::new(self.mem.clone(), self.lock.hold())
    }

    /// Python's `arr[:]`: a copy of every element (under the lock, for an
    /// [`Array`]).
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[1.0f32, 2.0])?;
    /// assert_eq!(a.to_vec(), [1.0, 2.0]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        let _g = self.lock.hold();
        self.mem.to_vec()
    }
}

impl<T: Pod> SharedArray<T, RLock> {
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

    /// Takes the lock and gives the elements in shared memory as a slice,
    /// to read and change in place: nothing is copied, so locking a 1 GiB
    /// array costs what locking a 1-byte one does, and a write through the
    /// guard is in the shared memory at once (the same thread's
    /// [`get`](Array::get) sees it; the lock is reentrant). A holder that
    /// dies leaves what it wrote: the next [`lock`](Array::lock) returns
    /// [`LockError::OwnerDied`], whose guard shows it.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[3u32, 1, 2])?;
    /// let mut g = a.lock()?;
    /// g.sort();
    /// assert_eq!(a.get(0), Some(1)); // visible before the guard drops
    /// drop(g);
    /// assert_eq!(a.to_vec(), [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A process that writes the array without its lock while a guard lives
    /// races with the guard, as it does in CPython.
    pub fn lock(&self) -> Result<ArrayGuard<T>, LockError<ArrayGuard<T>>> {
        match self.lock.acquire() {
            Ok(g) => self.guard(g).map_err(LockError::Sync),
            Err(LockError::OwnerDied(g)) => Err(match self.guard(g) {
                Ok(g) => LockError::OwnerDied(g),
                Err(e) => LockError::Sync(e),
            }),
            Err(LockError::Sync(e)) => Err(LockError::Sync(e)),
        }
    }

    fn guard(&self, held: RLockGuard) -> Result<ArrayGuard<T>, SyncError> {
        let view = self.spare.view(&self.mem, "view of a shared Array")?;
        Ok(ArrayGuard(Held::new(view, self.spare.clone(), held)))
    }
}

impl<T: Pod + fmt::Debug, L: Locking> fmt::Debug for SharedArray<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(if L::RAW { "RawArray" } else { "Array" })
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<T: Pod, L: Locking> Serialize for SharedArray<T, L> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (MemRef(&self.mem), &self.lock).serialize(s)
    }
}

impl<'de, T: Pod, L: Locking> Deserialize<'de> for SharedArray<T, L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (RegionOf(region), lock) = <(RegionOf, L)>::deserialize(d)?;
        let mem = Mem::open(region, kind::<L>(true)).map_err(mp_codec::handle::invalid)?;
        Ok(SharedArray {
            mem: Arc::new(mem),
            lock,
            spare: Arc::default(),
        })
    }
}

/// The elements of an [`Array`] in shared memory while its lock is held, as
/// a slice read and written in place; dropping the guard releases the lock.
/// Nothing is copied: a holder that dies leaves what it wrote.
///
/// ```
/// let a = mp_shared::Array::<i32>::new(3)?;
/// let mut g = a.lock()?;
/// g.copy_from_slice(&[1, 2, 3]);
/// drop(g);
/// assert_eq!(a.to_vec(), [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ArrayGuard<T: Pod>(Held<T>);

impl<T: Pod> Deref for ArrayGuard<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        self.0.slice()
    }
}

impl<T: Pod> DerefMut for ArrayGuard<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        self.0.slice_mut()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&**self).finish()
    }
}

/// Elements per refill of an [`Iter`]'s buffer: 32 KiB of `f64`s, which
/// stays in the L1/L2 cache.
const CHUNK: usize = 4096;

/// An iterator over the elements of an [`Array`] (holding its lock) or a
/// [`RawArray`], made by their `iter`.
///
/// ```
/// let a = mp_shared::Array::from_slice(&[1u8, 2, 3])?;
/// let mut it = a.iter();
/// assert_eq!(it.len(), 3);
/// assert_eq!(it.next(), Some(1));
/// assert_eq!(it.next_back(), Some(3));
/// # Ok::<(), mp_shared::SharedError>(())
/// ```
pub struct Iter<T: Pod> {
    mem: Arc<Mem<T>>,
    buf: Vec<T>,
    /// Element index of `buf[0]`.
    buf_start: usize,
    /// The next element from the front, and one past the last from the back.
    front: usize,
    back: usize,
    _held: Option<RLockGuard>,
}

impl<T: Pod> Iter<T> {
    fn new(mem: Arc<Mem<T>>, held: Option<RLockGuard>) -> Iter<T> {
        let back = mem.len();
        Iter {
            mem,
            buf: Vec::new(),
            buf_start: 0,
            front: 0,
            back,
            _held: held,
        }
    }

    /// Element `i` (in `front..back`), refilling the buffer around it.
    fn fetch(&mut self, i: usize, forward: bool) -> T {
        if i < self.buf_start || i >= self.buf_start + self.buf.len() {
            let start = if forward {
                i
            } else {
                (i + 1).saturating_sub(CHUNK).max(self.front)
            };
            let end = if forward { (i + CHUNK).min(self.back) } else { i + 1 };
            self.buf.resize(end - start, T::zeroed());
            self.mem.read_into(start, &mut self.buf);
            self.buf_start = start;
        }
        self.buf[i - self.buf_start]
    }
}

impl<T: Pod> Iterator for Iter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.front >= self.back {
            return None;
        }
        let v = self.fetch(self.front, true);
        self.front += 1;
        Some(v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }

    /// Folds whole chunks at a time (what `sum`, `for_each` and friends use),
    /// so the work runs over plain slices.
    fn fold<B, F: FnMut(B, T) -> B>(mut self, init: B, mut f: F) -> B {
        let mut acc = init;
        // What is left of the current buffer first.
        if self.front < self.back && self.front >= self.buf_start && self.front < self.buf_start + self.buf.len() {
            let end = (self.buf_start + self.buf.len()).min(self.back);
            acc = self.buf[self.front - self.buf_start..end - self.buf_start]
                .iter()
                .copied()
                .fold(acc, &mut f);
            self.front = end;
        }
        while self.front < self.back {
            let end = (self.front + CHUNK).min(self.back);
            self.buf.resize(end - self.front, T::zeroed());
            self.mem.read_into(self.front, &mut self.buf);
            self.buf_start = self.front;
            acc = self.buf.iter().copied().fold(acc, &mut f);
            self.front = end;
        }
        acc
    }
}

impl<T: Pod> DoubleEndedIterator for Iter<T> {
    fn next_back(&mut self) -> Option<T> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        Some(self.fetch(self.back, false))
    }
}

impl<T: Pod> ExactSizeIterator for Iter<T> {}

impl<T: Pod> std::iter::FusedIterator for Iter<T> {}

impl<T: Pod + fmt::Debug> fmt::Debug for Iter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("remaining", &(self.back - self.front))
            .finish()
    }
}

impl<T: Pod, L: Locking> IntoIterator for &SharedArray<T, L> {
    type Item = T;
    type IntoIter = Iter<T>;
    fn into_iter(self) -> Iter<T> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iter_crosses_chunks_in_both_directions() {
        let data: Vec<u32> = (0..(3 * CHUNK as u32 + 17)).collect();
        let a = Array::from_slice(&data).unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), data);
        assert_eq!(
            a.iter().rev().collect::<Vec<_>>(),
            data.iter().rev().copied().collect::<Vec<_>>()
        );
        assert_eq!(
            a.iter().map(u64::from).sum::<u64>(),
            data.iter().map(|&x| u64::from(x)).sum()
        );
        // Mixed ends, then a fold over what is left.
        let mut it = a.iter();
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(it.next().unwrap());
        }
        let last = it.next_back().unwrap();
        assert_eq!(last, *data.last().unwrap());
        assert_eq!(it.len(), data.len() - 6);
        let rest = it.fold(got, |mut v, x| {
            v.push(x);
            v
        });
        assert_eq!(rest, data[..data.len() - 1]);
        let empty = Array::<u8>::new(0).unwrap();
        assert_eq!(empty.iter().next(), None);
        assert_eq!(empty.iter().fold(0, |a, _| a + 1), 0);
    }

    #[test]
    fn iter_holds_the_lock() {
        let a = Array::<u8>::new(3).unwrap();
        let it = a.iter();
        assert!(a.get_lock().is_owned());
        drop(it);
        assert!(!a.get_lock().is_locked());
    }
}
