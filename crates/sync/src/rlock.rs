//! `RLock`: a lock that its owning thread may acquire again.
//!
//! Layout (after the region header, see [`shm`](crate::shm)): word 0 is a
//! lock word as in [`lock`](crate::lock) (the owner's process id), word 1 the
//! recursion count, 64-bit word 1 the owning thread's
//! number. Only the owner writes the count and the thread number; it clears
//! the thread number before it frees the lock word, so a thread that finds its
//! own process in the lock word and its own number beside it is the owner.

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{LockError, SyncError};
use crate::lock::{self, Acquired, OWNER};
use crate::shm::{self, Kind, Shm, handle_serde};

const WORD: usize = 0;
const COUNT: usize = 1;
const THREAD: usize = 1;

/// Python's `multiprocessing.RLock`: a lock shared between processes that
/// the thread holding it may acquire again; it is released when every
/// acquisition has been released.
///
/// ```
/// use mp_sync::RLock;
/// let lock = RLock::new()?;
/// let outer = lock.acquire()?;
/// let inner = lock.acquire()?; // the same thread: no deadlock
/// assert_eq!(lock.count(), 2);
/// drop(inner);
/// drop(outer);
/// assert_eq!(lock.count(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python
///
/// - A holder process that dies leaves the lock recoverable: the next
///   acquirer gets [`LockError::OwnerDied`] with the guard.
/// - A guard released (or dropped) on a thread that does not own the lock is
///   an error, as in Python, and the lock stays held; a dropped guard reports
///   it on stderr, since `drop` cannot return it.
#[derive(Clone)]
pub struct RLock {
    pub(crate) shm: Arc<Shm>,
}

handle_serde!(RLock);

impl RLock {
    /// Python's `RLock()`: a new, unlocked reentrant lock.
    ///
    /// ```
    /// let lock = mp_sync::RLock::new()?;
    /// assert!(!lock.is_locked());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn new() -> Result<RLock, SyncError> {
        Ok(RLock {
            shm: Arc::new(Shm::create(Kind::RLock)?),
        })
    }

    #[inline]
    fn word(&self) -> &AtomicU32 {
        self.shm.word(WORD)
    }

    #[inline]
    fn count_word(&self) -> &AtomicU32 {
        self.shm.word(COUNT)
    }

    #[inline]
    fn thread(&self) -> &AtomicU64 {
        self.shm.dword(THREAD)
    }

    /// Whether the calling thread holds the lock.
    ///
    /// ```
    /// let lock = mp_sync::RLock::new()?;
    /// let g = lock.acquire()?;
    /// assert!(lock.is_owned());
    /// let other = lock.clone();
    /// assert!(!std::thread::spawn(move || other.is_owned()).join().unwrap());
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "_is_owned")]
    #[inline]
    pub fn is_owned(&self) -> bool {
        self.word().load(Ordering::Acquire) & OWNER == shm::me()
            && self.thread().load(Ordering::Relaxed) == shm::thread_id()
    }

    /// How many times the owner has acquired the lock without releasing it
    /// (0 when free).
    ///
    /// ```
    /// let lock = mp_sync::RLock::new()?;
    /// assert_eq!(lock.count(), 0);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn count(&self) -> u32 {
        if self.word().load(Ordering::Acquire) & OWNER == 0 {
            0
        } else {
            self.count_word().load(Ordering::Relaxed)
        }
    }

    /// Whether some thread of some process holds the lock right now.
    ///
    /// ```
    /// let lock = mp_sync::RLock::new()?;
    /// let g = lock.acquire()?;
    /// assert!(lock.is_locked());
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.word().load(Ordering::Relaxed) & OWNER != 0
    }

    /// The calling thread owns the lock: one more level.
    fn reenter(&self) -> Result<RLockGuard, LockError<RLockGuard>> {
        let c = self.count_word().load(Ordering::Relaxed);
        let next = c.checked_add(1).ok_or(SyncError::RecursionLimit(c))?;
        self.count_word().store(next, Ordering::Relaxed);
        Ok(RLockGuard {
            lock: self.clone(),
            armed: true,
        })
    }

    /// The lock word was just taken: become the owner.
    fn enter(&self, how: Acquired) -> Result<RLockGuard, LockError<RLockGuard>> {
        self.thread().store(shm::thread_id(), Ordering::Relaxed);
        self.count_word().store(1, Ordering::Relaxed);
        let guard = RLockGuard {
            lock: self.clone(),
            armed: true,
        };
        match how {
            Acquired::Clean => Ok(guard),
            Acquired::OwnerDied => Err(LockError::OwnerDied(guard)),
        }
    }

    /// Python's `rlock.acquire()`: waits until the lock is free or owned by
    /// the calling thread, and takes one level of it.
    ///
    /// ```
    /// let lock = mp_sync::RLock::new()?;
    /// let a = lock.acquire()?;
    /// let b = lock.acquire()?;
    /// assert_eq!(lock.count(), 2);
    /// # drop((a, b));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) -> Result<RLockGuard, LockError<RLockGuard>> {
        self.acquire_until(None).map(|g| g.expect("no deadline"))
    }

    /// Python's `rlock.acquire(timeout=t)`: `Ok(None)` if another thread still
    /// holds the lock after `t`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = mp_sync::RLock::new()?;
    /// let g = lock.acquire()?;
    /// let other = lock.clone();
    /// let got = std::thread::spawn(move || other.acquire_timeout(Duration::from_millis(10)).map(|g| g.is_some()))
    ///     .join().unwrap()?;
    /// assert!(!got);
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, t: Duration) -> Result<Option<RLockGuard>, LockError<RLockGuard>> {
        self.acquire_until(shm::deadline(t))
    }

    fn acquire_until(&self, deadline: Option<std::time::Instant>) -> Result<Option<RLockGuard>, LockError<RLockGuard>> {
        if self.is_owned() {
            return self.reenter().map(Some);
        }
        match lock::lock(self.word(), shm::me(), deadline) {
            None => Ok(None),
            Some(how) => self.enter(how).map(Some),
        }
    }

    /// Python's `rlock.acquire(block=False)`.
    ///
    /// ```
    /// let lock = mp_sync::RLock::new()?;
    /// let a = lock.try_acquire()?.expect("free");
    /// let b = lock.try_acquire()?.expect("owned by this thread");
    /// # drop((a, b));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<RLockGuard>, LockError<RLockGuard>> {
        if self.is_owned() {
            return self.reenter().map(Some);
        }
        match lock::try_lock_or_recover(self.word(), shm::me()) {
            None => Ok(None),
            Some(how) => self.enter(how).map(Some),
        }
    }

    fn release_level(&self) -> Result<(), SyncError> {
        if !self.is_owned() {
            let v = self.word().load(Ordering::Relaxed);
            let owner = if v & OWNER == shm::me() {
                format!("another thread of this process ({})", v & OWNER)
            } else {
                lock::describe_holder(v)
            };
            return Err(SyncError::NotOwner {
                pid: shm::me(),
                thread: shm::thread_id(),
                owner,
            });
        }
        let c = self.count_word().load(Ordering::Relaxed).saturating_sub(1);
        self.count_word().store(c, Ordering::Relaxed);
        if c == 0 {
            self.thread().store(0, Ordering::Relaxed);
            lock::unlock(self.word());
        }
        Ok(())
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("held_by", &lock::describe_holder(self.word().load(Ordering::Relaxed)))
            .field("count", &self.count())
            .finish()
    }
}

/// One level of a held [`RLock`]; dropping it releases that level.
///
/// Release it on the thread that acquired it: elsewhere the release is an
/// error and the lock stays held.
///
/// ```
/// let lock = mp_sync::RLock::new()?;
/// let g = lock.acquire()?;
/// g.release()?;
/// assert!(!lock.is_locked());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RLockGuard {
    lock: RLock,
    /// False once `release` has run, so the drop does nothing more.
    armed: bool,
}

impl RLockGuard {
    /// Python's `rlock.release()`: releases this level, and the lock when it
    /// was the last. On a thread that does not own the lock it fails with
    /// [`SyncError::NotOwner`] and changes nothing.
    ///
    /// ```
    /// let lock = mp_sync::RLock::new()?;
    /// let g = lock.acquire()?;
    /// let err = std::thread::spawn(move || g.release()).join().unwrap().unwrap_err();
    /// assert!(matches!(err, mp_sync::SyncError::NotOwner { .. }));
    /// assert!(lock.is_locked()); // still held by this thread
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(mut self) -> Result<(), SyncError> {
        self.armed = false;
        self.lock.release_level()
    }

    /// The lock this guard holds a level of.
    ///
    /// ```
    /// let lock = mp_sync::RLock::new()?;
    /// let g = lock.acquire()?;
    /// assert_eq!(g.lock().count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> &RLock {
        &self.lock
    }
}

impl Drop for RLockGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = self.lock.release_level() {
            let _ = writeln!(
                std::io::stderr(),
                "mp-sync: RLockGuard dropped on the wrong thread: {e}"
            );
        }
    }
}

impl fmt::Debug for RLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").finish_non_exhaustive()
    }
}
