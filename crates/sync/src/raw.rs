//! The lock word and the spin policy of this crate's locks, for primitives
//! built in other crates on their own shared memory (the queue's ring lock,
//! say).
//!
//! A lock word is an `AtomicU32` in shared memory: 0 when free, the holder's
//! process id (with a waiters bit) when held. [`lock`] takes it, spinning
//! briefly and then sleeping on a futex, and takes it over from a holder that
//! died, reporting [`Acquired::OwnerDied`] so the caller can repair what the
//! holder left half done. The caller must never hold it across anything that
//! can block on another process.
//!
//! ```
//! use std::sync::atomic::AtomicU32;
//! use mp_sync::raw::{self, Acquired};
//!
//! let word = AtomicU32::new(0); // in real use, a word of a shared region
//! assert_eq!(raw::lock(&word, None), Some(Acquired::Clean));
//! assert_eq!(raw::try_lock(&word), None); // held (by this process)
//! raw::unlock(&word);
//! assert_eq!(raw::try_lock(&word), Some(Acquired::Clean));
//! # raw::unlock(&word);
//! ```

use std::sync::atomic::AtomicU32;
use std::time::Instant;

pub use crate::lock::Acquired;

/// Takes the lock word, waiting until `deadline` (`None`: forever); `None`
/// when the deadline passed first. A holder that died is detected within
/// about 64 ms of sleeping and its word taken over ([`Acquired::OwnerDied`]).
#[inline]
pub fn lock(word: &AtomicU32, deadline: Option<Instant>) -> Option<Acquired> {
    crate::lock::lock(word, crate::shm::me(), deadline)
}

/// Takes the lock word if it is free, or if its holder died; `None` when a
/// live holder has it.
#[inline]
pub fn try_lock(word: &AtomicU32) -> Option<Acquired> {
    crate::lock::try_lock_or_recover(word, crate::shm::me())
}

/// Releases a lock word taken by [`lock`] or [`try_lock`], waking one
/// sleeper if there may be one.
#[inline]
pub fn unlock(word: &AtomicU32) {
    crate::lock::unlock(word)
}

/// Calls `ready` up to the process's spin limit (see
/// [`set_spin_limit`](crate::set_spin_limit)) with a CPU pause between calls;
/// true as soon as it returns true. What a waiter does before it sleeps.
///
/// ```
/// let mut n = 0;
/// mp_sync::set_spin_limit(10);
/// assert!(mp_sync::raw::spin(|| { n += 1; n == 3 }));
/// # mp_sync::set_spin_limit(200);
/// ```
#[inline]
pub fn spin(ready: impl FnMut() -> bool) -> bool {
    crate::shm::spin(ready)
}
