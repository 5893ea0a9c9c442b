//! `Value` (with its RLock) and `RawValue`: one plain-data value in shared
//! memory.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;
use mp_sync::{LockError, RLock, RLockGuard};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SharedError;
use crate::mem::{Kind, Mem, MemOf, MemRef};

/// Python's `multiprocessing.Value`: one plain-data value (`T: Pod`) in
/// shared memory, with an [`RLock`] that `get`, `set` and `lock` take.
///
/// ```
/// use mp_shared::Value;
/// let v = Value::new(0.0f64)?;
/// v.set(3.1415927);
/// assert_eq!(v.get(), 3.1415927);
/// *v.lock()? += 1.0; // read-modify-write under the lock
/// assert_eq!(v.get(), 4.1415927);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A Value is a handle: clones, and copies passed to child processes or pool
/// tasks, all refer to the same memory. The memory is a memfd region: nothing
/// in `/dev/shm`, freed when the last holder exits, killed or not.
///
/// # Differences from Python
///
/// - The type is a Rust type, not a ctypes code: `Value::new(0.0f64)` for
///   `Value('d', 0.0)`, `Value::new(0i32)` for `Value('i', 0)`, a
///   `#[repr(C)]` struct deriving `Pod` for a `Structure`.
/// - `v.value += 1` is two locked steps in Python as here (`get`, then `set`);
///   [`lock`](Value::lock) gives one: `*v.lock()? += 1`.
pub struct Value<T> {
    mem: Arc<Mem<T>>,
    lock: RLock,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            mem: self.mem.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Pod> Value<T> {
    /// Python's `Value(typecode, value)`: a new shared value with its own
    /// lock.
    ///
    /// ```
    /// let v = mp_shared::Value::new(7u64)?;
    /// assert_eq!(v.get(), 7);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn new(v: T) -> Result<Value<T>, SharedError> {
        let mem = Mem::create(Kind::Value, 1)?;
        mem.write(0, &v);
        Ok(Value {
            mem: Arc::new(mem),
            lock: RLock::new()?,
        })
    }

    /// Python's `v.value`: the value, read under the lock.
    ///
    /// ```
    /// assert_eq!(mp_shared::Value::new(-2i32)?.get(), -2);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn get(&self) -> T {
        let _g = self.lock.acquire().map_or_else(LockError::into_guard, Some);
        self.mem.read(0)
    }

    /// Python's `v.value = x`: writes the value under the lock.
    ///
    /// ```
    /// let v = mp_shared::Value::new(0u8)?;
    /// v.set(9);
    /// assert_eq!(v.get(), 9);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn set(&self, v: T) {
        let _g = self.lock.acquire().map_or_else(LockError::into_guard, Some);
        self.mem.write(0, &v);
    }

    /// Python's `v.get_lock()`: the lock that guards the value.
    ///
    /// ```
    /// let v = mp_shared::Value::new(1i64)?;
    /// let _held = v.get_lock().acquire()?;
    /// v.set(v.get() + 1); // the lock is reentrant
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_lock(&self) -> &RLock {
        &self.lock
    }

    /// Takes the lock and gives the value to read and change in place; the
    /// change is written to shared memory when the guard drops, before the
    /// lock is released. If the previous holder died, the error holds the
    /// guard (see [`LockError`]).
    ///
    /// ```
    /// let v = mp_shared::Value::new(10u32)?;
    /// {
    ///     let mut g = v.lock()?;
    ///     *g *= 3;
    /// }
    /// assert_eq!(v.get(), 30);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The guard works on a copy: while it lives, [`get`](Value::get) on the
    /// same thread reads the value as it was before the guard's changes.
    pub fn lock(&self) -> Result<ValueGuard<T>, LockError<ValueGuard<T>>> {
        match self.lock.acquire() {
            Ok(g) => Ok(self.guard(g)),
            Err(LockError::OwnerDied(g)) => Err(LockError::OwnerDied(self.guard(g))),
            Err(LockError::Sync(e)) => Err(LockError::Sync(e)),
        }
    }

    fn guard(&self, held: RLockGuard) -> ValueGuard<T> {
        ValueGuard {
            value: self.mem.read(0),
            dirty: false,
            mem: self.mem.clone(),
            _held: held,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value").field("value", &self.mem.read(0)).finish()
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (MemRef(&self.mem), &self.lock).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (MemOf(mem), lock) = <(MemOf<T, { Kind::Value as u32 }>, RLock)>::deserialize(d)?;
        Ok(Value {
            mem: Arc::new(mem),
            lock,
        })
    }
}

/// The value of a [`Value`] while its lock is held: read and change it
/// through `*guard`; dropping the guard writes a change back and releases
/// the lock.
///
/// ```
/// let v = mp_shared::Value::new(1i32)?;
/// let mut g = v.lock()?;
/// *g = -*g;
/// drop(g);
/// assert_eq!(v.get(), -1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ValueGuard<T: Pod> {
    value: T,
    dirty: bool,
    mem: Arc<Mem<T>>,
    // Declared last: dropped after `drop` has written the value back.
    _held: RLockGuard,
}

impl<T: Pod> Deref for ValueGuard<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Pod> DerefMut for ValueGuard<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.dirty = true;
        &mut self.value
    }
}

impl<T: Pod> Drop for ValueGuard<T> {
    fn drop(&mut self) {
        if self.dirty {
            self.mem.write(0, &self.value);
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&self.value).finish()
    }
}

/// Python's `multiprocessing.RawValue`: a [`Value`] without a lock. Reads and
/// writes are plain copies; a value wider than 8 bytes may be seen half
/// written while another process writes it.
///
/// ```
/// let v = mp_shared::RawValue::new(5u16)?;
/// v.set(6);
/// assert_eq!(v.get(), 6);
/// # Ok::<(), mp_shared::SharedError>(())
/// ```
pub struct RawValue<T> {
    mem: Arc<Mem<T>>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue { mem: self.mem.clone() }
    }
}

impl<T: Pod> RawValue<T> {
    /// Python's `RawValue(typecode, value)`.
    ///
    /// ```
    /// assert_eq!(mp_shared::RawValue::new(1.5f32)?.get(), 1.5);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn new(v: T) -> Result<RawValue<T>, SharedError> {
        let mem = Mem::create(Kind::RawValue, 1)?;
        mem.write(0, &v);
        Ok(RawValue { mem: Arc::new(mem) })
    }

    /// The value.
    ///
    /// ```
    /// assert_eq!(mp_shared::RawValue::new(3u8)?.get(), 3);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn get(&self) -> T {
        self.mem.read(0)
    }

    /// Writes the value.
    ///
    /// ```
    /// let v = mp_shared::RawValue::new(0i64)?;
    /// v.set(-4);
    /// assert_eq!(v.get(), -4);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn set(&self, v: T) {
        self.mem.write(0, &v);
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue").field("value", &self.get()).finish()
    }
}

impl<T: Pod> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.mem.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let MemOf(mem) = MemOf::<T, { Kind::RawValue as u32 }>::deserialize(d)?;
        Ok(RawValue { mem: Arc::new(mem) })
    }
}
