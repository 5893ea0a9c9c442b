//! The errors of mp-sync: [`SyncError`] for everything, [`LockError`] for an
//! acquisition that may hand back a lock whose holder died, and
//! [`BarrierError`] for a barrier wait.

use std::fmt;
use std::io;

/// What went wrong with a synchronization primitive.
///
/// ```
/// let e = mp_sync::Barrier::new(0).unwrap_err();
/// assert!(e.to_string().contains("at least one party"), "{e}");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The shared memory of a new primitive could not be made (out of
    /// memory or of file descriptors).
    #[error("cannot create the shared memory of a {what}: {source}")]
    Create {
        /// The primitive.
        what: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// An argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// A handle received from another process is not the kind of primitive
    /// the receiver expected.
    #[error("expected a {expected} handle, got {found}: the sender and receiver disagree on the type")]
    WrongKind {
        /// The type that was being decoded.
        expected: &'static str,
        /// What the handle held.
        found: String,
    },
    /// An RLock was released by a thread that does not own it (Python's
    /// `RuntimeError: cannot release un-acquired lock`). The lock stays held.
    #[error(
        "an RLock was released by thread {thread} of process {pid}, but it is held by {owner}; \
         release an RLock on the thread that acquired it (the lock stays held)"
    )]
    NotOwner {
        /// The releasing process.
        pid: u32,
        /// The releasing thread (a number unique in its process).
        thread: u64,
        /// Who holds it, in words.
        owner: String,
    },
    /// A BoundedSemaphore was released more times than it was acquired
    /// (Python's `ValueError: Semaphore released too many times`). Its value
    /// is unchanged.
    #[error("BoundedSemaphore released too many times: its value is already {limit}, its initial value")]
    OverRelease {
        /// The initial (and maximal) value.
        limit: usize,
    },
    /// A Semaphore's value would pass the largest value it can hold.
    #[error("Semaphore released too many times: its value would pass {max}")]
    Overflow {
        /// The largest value.
        max: usize,
    },
    /// An RLock was acquired again by its owner more times than it can count.
    #[error("RLock acquired {0} times by its owner without a release: the recursion count is full")]
    RecursionLimit(u32),
    /// A Condition was notified by a process that does not hold its lock
    /// (Python's `threading.Condition` raises `RuntimeError: cannot notify
    /// on un-acquired lock`, `multiprocessing.Condition` fails an assertion).
    /// Nothing was notified.
    #[error(
        "cannot notify on un-acquired lock: the Condition's lock is held by {holder}, not by this process; \
         acquire the condition first and notify while holding its guard (nothing was notified)"
    )]
    NotifyWithoutLock {
        /// Who holds the lock, in words ("nobody", or a process).
        holder: String,
    },
    /// A Condition was given a guard of another Condition.
    #[error("this guard belongs to another Condition (or its lock): wait on the Condition that gave it")]
    WrongGuard,
    /// While a Condition waited, a process died holding its lock; the waiter
    /// holds the lock again now, and the data it protects may be half-updated.
    #[error(
        "a process died holding the Condition's lock while this one waited; the waiter holds the lock now \
         and should check the state the lock protects"
    )]
    OwnerDied,
}

/// Why an acquisition of a [`Lock`](crate::Lock), [`RLock`](crate::RLock) or
/// [`Condition`](crate::Condition) did not simply succeed.
///
/// `OwnerDied` is std's `PoisonError` for processes: the previous holder died
/// (killed, say) without releasing, and the caller holds the lock now. Take
/// the guard with [`into_inner`](LockError::into_inner), check the data the
/// lock protects, and go on.
///
/// ```
/// use mp_sync::{Lock, LockError};
/// let lock = Lock::new()?;
/// let guard = match lock.acquire() {
///     Ok(g) => g,
///     Err(e) if e.owner_died() => e.into_inner(), // repair what the dead holder left
///     Err(e) => return Err(e.into()),
/// };
/// drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub enum LockError<G> {
    /// The holder died; the caller holds the lock now, in `G`.
    OwnerDied(G),
    /// Another failure; the lock is not held.
    Sync(SyncError),
}

impl<G> LockError<G> {
    /// Whether the previous holder died holding the lock (and the caller
    /// holds it now).
    ///
    /// ```
    /// let e = mp_sync::LockError::<()>::OwnerDied(());
    /// assert!(e.owner_died());
    /// ```
    pub fn owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    /// The guard of a lock whose holder died.
    ///
    /// # Panics
    ///
    /// If the error is [`Sync`](LockError::Sync), which holds no guard: check
    /// [`owner_died`](LockError::owner_died) first, or use
    /// [`into_guard`](LockError::into_guard).
    ///
    /// ```
    /// let e = mp_sync::LockError::OwnerDied(7);
    /// assert_eq!(e.into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> G {
        match self {
            LockError::OwnerDied(g) => g,
            LockError::Sync(e) => panic!("LockError::into_inner on an error without a guard: {e}"),
        }
    }

    /// The guard of a lock whose holder died, or `None` for any other error.
    ///
    /// ```
    /// use mp_sync::{LockError, SyncError};
    /// let e = LockError::<()>::Sync(SyncError::WrongGuard);
    /// assert!(e.into_guard().is_none());
    /// ```
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            LockError::Sync(_) => None,
        }
    }
}

impl<G> From<SyncError> for LockError<G> {
    fn from(e: SyncError) -> Self {
        LockError::Sync(e)
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Sync(e) => f.debug_tuple("Sync").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str(
                "the process holding the lock died without releasing it; the caller holds it now \
                 (take the guard with into_inner) and should check the state the lock protects",
            ),
            LockError::Sync(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> std::error::Error for LockError<G> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::OwnerDied(_) => None,
            LockError::Sync(e) => Some(e),
        }
    }
}

/// Why a [`Barrier`](crate::Barrier) wait failed (Python's
/// `BrokenBarrierError`).
///
/// ```
/// let b = mp_sync::Barrier::new(2)?;
/// b.abort();
/// assert!(matches!(b.wait(), Err(mp_sync::BarrierError::Broken)));
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// The barrier was broken (aborted, reset while this party waited, or a
    /// party timed out) before all parties arrived. `reset` makes it usable
    /// again.
    #[error("the barrier is broken (aborted, reset, or a party timed out); reset() makes it usable again")]
    Broken,
    /// This party's timeout passed; the barrier is broken for the others too.
    #[error("timed out waiting at the barrier; the barrier is now broken for every party")]
    Timeout,
    /// Another failure.
    #[error(transparent)]
    Sync(#[from] SyncError),
}
