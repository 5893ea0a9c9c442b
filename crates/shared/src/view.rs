//! In-place views for `Value`/`Array` guards: the elements as `[T]` over the
//! shared memory itself, lent while the lock is held.
//!
//! A guard borrows a second mapping of the region, kept per handle family in
//! this process (the clones of one `Value` or `Array`), and turns it into a
//! [`RegionSlice`] (mp-sys's one place that makes references into shared
//! bytes; its module docs give the soundness argument). The copies of
//! `get`/`set` go through the handle's first mapping, so a view and a copy
//! never share an address in this process: a copy made while a view lives
//! (the same thread's `get()` under its reentrant lock) reaches the memory as
//! another process would, and sees what the guard wrote, since both map the
//! same pages. The mapping (and its descriptor, a `dup` of the region's) is
//! made on the first `lock()` of a handle family and kept until its last
//! clone drops; from then on `lock()` is the RLock's acquire and a take from
//! this slot, whatever the size: nothing is copied or mapped.

use std::sync::{Mutex, PoisonError};

use bytemuck::Pod;
use mp_sync::SyncError;
use mp_sys::region::{Region, RegionSlice};

use crate::mem::{DATA, Mem};

/// The spare mapping a guard borrows, shared by the clones of one handle in
/// this process.
#[derive(Debug, Default)]
pub(crate) struct Spare(Mutex<Option<Region>>);

impl Spare {
    /// The elements of `mem` in place, over the spare mapping (or a new one,
    /// if a guard of this thread already holds it: the lock is reentrant).
    /// The caller holds the lock.
    pub(crate) fn view<T: Pod>(&self, mem: &Mem<T>, what: &'static str) -> Result<RegionSlice<T>, SyncError> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        let region = match kept {
            Some(r) => r,
            None => mem
                .region()
                .try_clone()
                .map_err(|source| SyncError::Create { what, source })?,
        };
        region
            .into_slice_of(DATA, mem.len())
            .map_err(|source| SyncError::Create { what, source })
    }

    /// Takes the mapping of a dropped view back for the next guard.
    pub(crate) fn put_back<T>(&self, view: RegionSlice<T>) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(view.into_region());
        }
    }
}

/// A view lent to a guard with the lock that makes it safe; dropping it
/// returns the mapping, then releases the lock.
#[derive(Debug)]
pub(crate) struct Held<T> {
    view: Option<RegionSlice<T>>,
    spare: std::sync::Arc<Spare>,
    // Declared last: released after the view is given back.
    _lock: mp_sync::RLockGuard,
}

impl<T: Pod> Held<T> {
    pub(crate) fn new(view: RegionSlice<T>, spare: std::sync::Arc<Spare>, lock: mp_sync::RLockGuard) -> Held<T> {
        Held {
            view: Some(view),
            spare,
            _lock: lock,
        }
    }

    /// The elements; empty only once dropped.
    #[inline]
    pub(crate) fn slice(&self) -> &[T] {
        self.view.as_deref().unwrap_or_default()
    }

    #[inline]
    pub(crate) fn slice_mut(&mut self) -> &mut [T] {
        self.view.as_deref_mut().unwrap_or_default()
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        if let Some(v) = self.view.take() {
            self.spare.put_back(v);
        }
    }
}
