//! The lock of a shared value or array, as a type parameter: [`RLock`] for
//! `Value`/`Array`, [`NoLock`] for `RawValue`/`RawArray`. One generic type
//! ([`SharedValue`](crate::SharedValue), [`SharedArray`](crate::SharedArray))
//! holds the methods both forms share, instead of two copies of each, as
//! `lock_api` builds its mutexes on a raw lock; the lock-only methods
//! (`get_lock`, `lock`) exist for `RLock` alone.

use std::fmt;

use mp_sync::{LockError, RLock, RLockGuard};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::SharedError;
use crate::mem::Kind;

mod sealed {
    pub trait Sealed {}
    impl Sealed for mp_sync::RLock {}
    impl Sealed for super::NoLock {}
}

/// What guards a shared value or array: [`RLock`] (Python's `Value` and
/// `Array`, `lock=True`) or [`NoLock`] (`RawValue` and `RawArray`). Sealed:
/// these two are the only ones.
pub trait Locking: sealed::Sealed + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Whether this is the lock-less (raw) form.
    #[doc(hidden)]
    const RAW: bool;

    /// A new lock for a new value or array.
    #[doc(hidden)]
    fn new_lock() -> Result<Self, SharedError>;

    /// Takes the lock for one access (a dead holder's lock is taken over);
    /// `None` without a lock, or if the lock cannot be taken (the access
    /// then goes ahead unlocked, as a raw access would).
    #[doc(hidden)]
    fn hold(&self) -> Option<RLockGuard>;
}

impl Locking for RLock {
    const RAW: bool = false;

    fn new_lock() -> Result<Self, SharedError> {
        Ok(RLock::new()?)
    }

    #[inline]
    fn hold(&self) -> Option<RLockGuard> {
        self.acquire().map_or_else(LockError::into_guard, Some)
    }
}

/// No lock: the lock of [`RawValue`](crate::RawValue) and
/// [`RawArray`](crate::RawArray), whose accesses are plain copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoLock;

impl Locking for NoLock {
    const RAW: bool = true;

    fn new_lock() -> Result<Self, SharedError> {
        Ok(NoLock)
    }

    #[inline]
    fn hold(&self) -> Option<RLockGuard> {
        None
    }
}

/// The region kind of a value (`array` false) or array guarded by `L`.
pub(crate) fn kind<L: Locking>(array: bool) -> Kind {
    match (array, L::RAW) {
        (false, false) => Kind::Value,
        (false, true) => Kind::RawValue,
        (true, false) => Kind::Array,
        (true, true) => Kind::RawArray,
    }
}

/// A region handle inside a tuple, opened by the caller with its kind.
pub(crate) struct RegionOf(pub(crate) mp_sys::region::Region);

impl<'de> Deserialize<'de> for RegionOf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        mp_codec::handle::region::deserialize(d).map(RegionOf)
    }
}
