//! Python's `multiprocessing` synchronization primitives for Rust: `Lock`,
//! `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`, `Condition` and
//! `Barrier`, shared between processes.
//!
//! ```
//! use mp_sync::{Lock, Semaphore};
//!
//! let lock = Lock::new()?;
//! {
//!     let _guard = lock.acquire()?; // released when the guard drops
//! }
//! let slots = Semaphore::new(2)?;
//! slots.acquire()?;
//! assert_eq!(slots.get_value(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - Locks: [`Lock`] and [`RLock`] with owned guards ([`LockGuard`],
//!   [`RLockGuard`]); a holder that dies hands the next acquirer
//!   [`LockError::OwnerDied`] with the guard instead of a hang.
//! - Counters and flags: [`Semaphore`], [`BoundedSemaphore`], [`Event`].
//! - Waiting for others: [`Condition`] (with [`ConditionGuard`]) and
//!   [`Barrier`].
//! - Errors: [`SyncError`], [`LockError`], [`BarrierError`].
//! - [`raw`]: the lock word and spin policy, for primitives that other crates
//!   build on their own shared memory.
//!
//! Each primitive lives in its own small memfd region: nothing appears in
//! `/dev/shm`, and the kernel frees the memory when the last process holding
//! the primitive exits, killed or not. Every primitive is a *handle*: clone it
//! within a process, or pass it to a child process or pool task (it
//! serializes through `mp-codec`, its descriptor travelling beside the bytes),
//! and every copy is the same primitive. Waits spin briefly, then sleep on a
//! futex; every wait has a timeout form.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
pub mod raw;
mod rlock;
mod semaphore;
mod shm;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use error::{BarrierError, LockError, SyncError};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};
pub use shm::set_spin_limit;
