//! `Value` (with its RLock) and `RawValue`: one plain-data value in shared
//! memory, both the one generic [`SharedValue`] with a [`Locking`] kind.

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
///   [`lock`](SharedValue::lock) gives one: `*v.lock()? += 1`.
pub type Value<T> = SharedValue<T, RLock>;

/// Python's `multiprocessing.RawValue`: a [`Value`] without a lock. Reads and
/// writes are plain copies; a value wider than 8 bytes may be seen half
/// written while another process writes it. There is no guard to change it
/// in place, since nothing keeps other writers out: for that, use a
/// [`Value`] and its [`lock`](SharedValue::lock).
///
/// ```
/// let v = mp_shared::RawValue::new(5u16)?;
/// v.set(6);
/// assert_eq!(v.get(), 6);
/// # Ok::<(), mp_shared::SharedError>(())
/// ```
pub type RawValue<T> = SharedValue<T, NoLock>;

/// One plain-data value in shared memory, guarded by `L`: [`Value`] (`L` =
/// [`RLock`]) and [`RawValue`] (`L` = [`NoLock`]) are this type, so their
/// shared methods are written once. Name it through those aliases.
pub struct SharedValue<T, L: Locking = RLock> {
    mem: Arc<Mem<T>>,
    lock: L,
    spare: Arc<Spare>,
}

impl<T, L: Locking> Clone for SharedValue<T, L> {
    fn clone(&self) -> Self {
        SharedValue {
            mem: self.mem.clone(),
            lock: self.lock.clone(),
            spare: self.spare.clone(),
        }
    }
}

impl<T: Pod, L: Locking> SharedValue<T, L> {
    /// Python's `Value(typecode, value)` (a new shared value with its own
    /// lock) or `RawValue(typecode, value)`.
    ///
    /// ```
    /// assert_eq!(mp_shared::Value::new(7u64)?.get(), 7);
    /// assert_eq!(mp_shared::RawValue::new(1.5f32)?.get(), 1.5);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn new(v: T) -> Result<Self, SharedError> {
        let mem = Mem::create(kind::<L>(false), 1)?;
        mem.write(0, &v);
        Ok(SharedValue {
            mem: Arc::new(mem),
            lock: L::new_lock()?,
            spare: Arc::default(),
        })
    }

    /// Python's `v.value`: the value (read under the lock, for a [`Value`]).
    ///
    /// ```
    /// assert_eq!(mp_shared::Value::new(-2i32)?.get(), -2);
    /// assert_eq!(mp_shared::RawValue::new(3u8)?.get(), 3);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn get(&self) -> T {
        let _g = self.lock.hold();
        self.mem.read(0)
    }

    /// Python's `v.value = x`: writes the value (under the lock, for a
    /// [`Value`]).
    ///
    /// ```
    /// let v = mp_shared::Value::new(0u8)?;
    /// v.set(9);
    /// assert_eq!(v.get(), 9);
    /// let r = mp_shared::RawValue::new(0i64)?;
    /// r.set(-4);
    /// assert_eq!(r.get(), -4);
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn set(&self, v: T) {
        let _g = self.lock.hold();
        self.mem.write(0, &v);
    }
}

impl<T: Pod> SharedValue<T, RLock> {
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

    /// Takes the lock and gives the value in shared memory itself, to read
    /// and change in place: no copy in or out, and a write through the guard
    /// is in the shared memory at once. If the previous holder died, the
    /// error holds the guard (see [`LockError`]), which shows what the dead
    /// holder wrote.
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
    /// While the guard lives, [`get`](SharedValue::get) on the same thread
    /// (the lock is reentrant) reads what the guard wrote:
    ///
    /// ```
    /// let v = mp_shared::Value::new(1u8)?;
    /// let mut g = v.lock()?;
    /// *g = 2;
    /// assert_eq!(v.get(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A process that writes the value without its lock while a guard lives
    /// races with the guard, as it does in CPython.
    pub fn lock(&self) -> Result<ValueGuard<T>, LockError<ValueGuard<T>>> {
        match self.lock.acquire() {
            Ok(g) => self.guard(g).map_err(LockError::Sync),
            Err(LockError::OwnerDied(g)) => Err(match self.guard(g) {
                Ok(g) => LockError::OwnerDied(g),
                Err(e) => LockError::Sync(e),
            }),
            Err(LockError::Sync(e)) => Err(LockError::Sync(e)),
        }
    }

    fn guard(&self, held: RLockGuard) -> Result<ValueGuard<T>, SyncError> {
        let view = self.spare.view(&self.mem, "view of a shared Value")?;
        Ok(ValueGuard(Held::new(view, self.spare.clone(), held)))
    }
}

impl<T: Pod + fmt::Debug, L: Locking> fmt::Debug for SharedValue<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(if L::RAW { "RawValue" } else { "Value" })
            .field("value", &self.mem.read(0))
            .finish()
    }
}

impl<T: Pod, L: Locking> Serialize for SharedValue<T, L> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (MemRef(&self.mem), &self.lock).serialize(s)
    }
}

impl<'de, T: Pod, L: Locking> Deserialize<'de> for SharedValue<T, L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (RegionOf(region), lock) = <(RegionOf, L)>::deserialize(d)?;
        let mem = Mem::open(region, kind::<L>(false)).map_err(mp_codec::handle::invalid)?;
        Ok(SharedValue {
            mem: Arc::new(mem),
            lock,
            spare: Arc::default(),
        })
    }
}

/// The value of a [`Value`] in shared memory while its lock is held: read
/// and change it in place through `*guard`; dropping the guard releases the
/// lock. Nothing is copied: a holder that dies leaves what it wrote, and the
/// next holder sees it.
///
/// ```
/// let v = mp_shared::Value::new(1i32)?;
/// let mut g = v.lock()?;
/// *g = -*g;
/// drop(g);
/// assert_eq!(v.get(), -1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ValueGuard<T: Pod>(Held<T>);

impl<T: Pod> Deref for ValueGuard<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // A Value's view holds exactly one element while the guard lives.
        &self.0.slice()[0]
    }
}

impl<T: Pod> DerefMut for ValueGuard<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0.slice_mut()[0]
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}
