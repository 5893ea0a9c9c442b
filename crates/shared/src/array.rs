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

    /// Copies `out.len()` elements from element `start` into `out`, under the
    /// lock: Python's `arr[start:start + n]` into a buffer you reuse, so a
    /// large array can be read in cache-sized chunks without allocating.
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
        let _g = self.held();
        self.mem.read_into(start, out);
        Ok(())
    }

    /// Python's `iter(arr)` under `with arr.get_lock():` — the elements in
    /// order, the lock held until the iterator is dropped. Elements are
    /// copied out a few thousand at a time into a small buffer, so iterating
    /// a large array allocates little and stays in the cache:
    /// `arr.iter().sum::<f64>()` is the fast way to sum one.
    ///
    /// ```
    /// let a = mp_shared::Array::from_slice(&[1.5f64, 2.5])?;
    /// assert_eq!(a.iter().sum::<f64>(), 4.0);
    /// assert_eq!(a.iter().rev().collect::<Vec<_>>(), [2.5, 1.5]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn iter(&self) -> Iter<T> {
        Iter::new(self.mem.clone(), self.held())
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

    /// Copies `out.len()` elements from element `start` into `out`.
    ///
    /// ```
    /// let a = mp_shared::RawArray::from_slice(&[1u8, 2, 3])?;
    /// let mut buf = [0u8; 2];
    /// a.read_into(1, &mut buf)?;
    /// assert_eq!(buf, [2, 3]);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn read_into(&self, start: usize, out: &mut [T]) -> Result<(), SharedError> {
        self.mem.check_range(start, out.len())?;
        self.mem.read_into(start, out);
        Ok(())
    }

    /// The elements in order, copied out a few thousand at a time (another
    /// process's concurrent writes may be seen part-way).
    ///
    /// ```
    /// let a = mp_shared::RawArray::from_slice(&[1u32, 2, 3])?;
    /// assert_eq!(a.iter().max(), Some(3));
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn iter(&self) -> Iter<T> {
        Iter::new(self.mem.clone(), None)
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

impl<T: Pod> IntoIterator for &Array<T> {
    type Item = T;
    type IntoIter = Iter<T>;
    fn into_iter(self) -> Iter<T> {
        self.iter()
    }
}

impl<T: Pod> IntoIterator for &RawArray<T> {
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
