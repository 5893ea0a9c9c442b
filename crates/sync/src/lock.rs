//! `Lock`: a non-reentrant lock shared between processes, and the lock word
//! that Lock, RLock and Condition share.
//!
//! The lock word is 0 when the lock is free and the holder's process id when
//! it is held, with bit 31 ([`WAITERS`]) set once someone sleeps on it, so a
//! release makes a `futex` wake call only when there may be a sleeper. An
//! uncontended acquire is one compare-and-swap, a release one swap.
//!
//! Because the word names the holder's process, a waiter that has slept a
//! while without the word changing asks the kernel whether that process still
//! runs (through a pidfd, so a killed holder that is a zombie counts as dead).
//! If it does not, the waiter takes the lock over with a compare-and-swap and
//! reports [`LockError::OwnerDied`]. Sleeps start at 2 ms and double to
//! 64 ms, so a dead holder is noticed within 64 ms of a waiter's sleep.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mp_sys::futex::{self, WaitResult};

use crate::error::{LockError, SyncError};
use crate::shm::{self, Kind, Shm, handle_serde};
use mp_sys::time::Deadline;

/// Set in a held lock word when a waiter sleeps (or may sleep) on it.
pub(crate) const WAITERS: u32 = 1 << 31;
/// The holder's process id in a lock word.
pub(crate) const OWNER: u32 = !WAITERS;

const FIRST_SLEEP: Duration = Duration::from_millis(2);
const LONGEST_SLEEP: Duration = Duration::from_millis(64);

/// How an acquisition of a lock word ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Acquired {
    /// Taken from a free word or from a live holder's release.
    Clean,
    /// Taken over from a holder that died.
    OwnerDied,
}

/// Takes a free lock word: one compare-and-swap.
#[inline]
pub(crate) fn try_lock(word: &AtomicU32, me: u32) -> bool {
    word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// Takes the lock word unless it is held; takes it over if its holder died.
pub(crate) fn try_lock_or_recover(word: &AtomicU32, me: u32) -> Option<Acquired> {
    if try_lock(word, me) {
        return Some(Acquired::Clean);
    }
    let v = word.load(Ordering::Relaxed);
    if v != 0
        && holder_is_dead(v, me)
        && word
            .compare_exchange(v, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        return Some(Acquired::OwnerDied);
    }
    None
}

/// Takes the lock word, waiting until `deadline` (`None`: forever). `None`
/// when the deadline passed first.
#[inline]
pub(crate) fn lock(word: &AtomicU32, me: u32, deadline: Option<Instant>) -> Option<Acquired> {
    if try_lock(word, me) {
        return Some(Acquired::Clean);
    }
    lock_contended(word, me, deadline)
}

#[cold]
fn lock_contended(word: &AtomicU32, me: u32, deadline: Option<Instant>) -> Option<Acquired> {
    if shm::spin(|| word.load(Ordering::Relaxed) == 0 && try_lock(word, me)) {
        return Some(Acquired::Clean);
    }
    let mut sleep = FIRST_SLEEP;
    loop {
        let v = word.load(Ordering::Relaxed);
        if v & OWNER == 0 {
            // Free. Take it with the waiter bit set: other sleepers may exist,
            // and the release must wake one of them.
            if word
                .compare_exchange(v, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Acquired::Clean);
            }
            continue;
        }
        if v & WAITERS == 0
            && word
                .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        let v = v | WAITERS;
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return None;
        }
        let until = Deadline::from(deadline).sleep_until(sleep);
        if futex::wait_until(word, v, Some(until)) == WaitResult::TimedOut && word.load(Ordering::Relaxed) == v {
            // A whole sleep without a change: is the holder still there?
            if holder_is_dead(v, me) {
                if word
                    .compare_exchange(v, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(Acquired::OwnerDied);
                }
            } else {
                sleep = (sleep * 2).min(LONGEST_SLEEP);
            }
        }
    }
}

/// Whether the process named by held lock word `v` has exited. A holder in
/// this process is alive; when the kernel cannot tell, the holder is
/// presumed alive (a lock is never taken from a live holder).
fn holder_is_dead(v: u32, me: u32) -> bool {
    let holder = v & OWNER;
    holder != me && holder != 0 && matches!(mp_sys::process::is_alive(holder), Ok(false))
}

/// Releases the lock word, waking one sleeper if there may be one.
#[inline]
pub(crate) fn unlock(word: &AtomicU32) {
    if word.swap(0, Ordering::Release) & WAITERS != 0 {
        futex::wake(word, 1);
    }
}

/// Who holds lock word value `v`, in words.
pub(crate) fn describe_holder(v: u32) -> String {
    match v & OWNER {
        0 => "nobody".to_owned(),
        pid => format!("process {pid}"),
    }
}

/// Python's `multiprocessing.Lock`: a lock shared between processes, not
/// reentrant.
///
/// [`acquire`](Lock::acquire) returns a [`LockGuard`]; dropping the guard
/// releases the lock. A Lock is a handle: clone it, or pass it to a
/// [`Process`](../mp_process/struct.Process.html) or a pool task, and every copy is
/// the same lock.
///
/// ```
/// use mp_sync::Lock;
/// let lock = Lock::new()?;
/// {
///     let _guard = lock.acquire()?;
///     assert!(lock.try_acquire()?.is_none()); // not reentrant
/// }
/// assert!(lock.try_acquire()?.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python
///
/// - A holder that dies (killed, say) does not leave the lock held forever:
///   the next acquirer gets [`LockError::OwnerDied`] with the guard.
/// - The release is the guard's drop (or [`LockGuard::release`]), so a lock
///   cannot be released twice or by someone who never acquired it.
#[derive(Clone)]
pub struct Lock {
    pub(crate) shm: Arc<Shm>,
}

handle_serde!(Lock);

/// Word 0 after the header of a Lock's region: the lock word.
const WORD: usize = 0;

impl Lock {
    /// Python's `Lock()`: a new, unlocked lock.
    ///
    /// ```
    /// let lock = mp_sync::Lock::new()?;
    /// assert!(!lock.is_locked());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn new() -> Result<Lock, SyncError> {
        Ok(Lock {
            shm: Arc::new(Shm::create(Kind::Lock)?),
        })
    }

    #[inline]
    pub(crate) fn word(&self) -> &AtomicU32 {
        self.shm.word(WORD)
    }

    fn guard(&self, how: Acquired) -> Result<LockGuard, LockError<LockGuard>> {
        let guard = LockGuard { lock: self.clone() };
        match how {
            Acquired::Clean => Ok(guard),
            Acquired::OwnerDied => Err(LockError::OwnerDied(guard)),
        }
    }

    /// Python's `lock.acquire()`: waits until the lock is free and takes it.
    ///
    /// A second `acquire` by the holder waits forever (the lock is not
    /// reentrant): use [`acquire_timeout`](Lock::acquire_timeout) or an
    /// [`RLock`](crate::RLock) where that could happen.
    ///
    /// ```
    /// let lock = mp_sync::Lock::new()?;
    /// let guard = lock.acquire()?;
    /// assert!(lock.is_locked());
    /// drop(guard);
    /// assert!(!lock.is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn acquire(&self) -> Result<LockGuard, LockError<LockGuard>> {
        let how = lock(self.word(), shm::me(), None).unwrap_or(Acquired::Clean);
        self.guard(how)
    }

    /// Python's `lock.acquire(timeout=t)`: `Ok(None)` if the lock is still
    /// held after `t`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = mp_sync::Lock::new()?;
    /// let _g = lock.acquire()?;
    /// assert!(lock.acquire_timeout(Duration::from_millis(10))?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, t: Duration) -> Result<Option<LockGuard>, LockError<LockGuard>> {
        match lock(self.word(), shm::me(), shm::deadline(t)) {
            None => Ok(None),
            Some(how) => self.guard(how).map(Some),
        }
    }

    /// Python's `lock.acquire(block=False)`: takes the lock if it is free (or
    /// its holder died), and returns `Ok(None)` at once otherwise.
    ///
    /// ```
    /// let lock = mp_sync::Lock::new()?;
    /// let g = lock.try_acquire()?.expect("free");
    /// assert!(lock.try_acquire()?.is_none());
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<LockGuard>, LockError<LockGuard>> {
        match try_lock_or_recover(self.word(), shm::me()) {
            None => Ok(None),
            Some(how) => self.guard(how).map(Some),
        }
    }

    /// Whether some process holds the lock right now (Python 3.14's
    /// `locked()`). Another process may change it at any moment.
    ///
    /// ```
    /// let lock = mp_sync::Lock::new()?;
    /// assert!(!lock.is_locked());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    #[doc(alias = "locked")]
    pub fn is_locked(&self) -> bool {
        self.word().load(Ordering::Relaxed) & OWNER != 0
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("held_by", &describe_holder(self.word().load(Ordering::Relaxed)))
            .finish()
    }
}

/// A held [`Lock`]; dropping it releases the lock. It owns a handle to the
/// lock (no lifetime), so it can be stored or sent to another thread.
///
/// ```
/// let lock = mp_sync::Lock::new()?;
/// let guard = lock.acquire()?;
/// std::thread::spawn(move || drop(guard)).join().unwrap(); // released there
/// assert!(!lock.is_locked());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LockGuard {
    lock: Lock,
}

impl LockGuard {
    /// Python's `lock.release()`: the same as dropping the guard.
    ///
    /// ```
    /// let lock = mp_sync::Lock::new()?;
    /// lock.acquire()?.release();
    /// assert!(!lock.is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(self) {}

    /// The lock this guard holds.
    ///
    /// ```
    /// let lock = mp_sync::Lock::new()?;
    /// let g = lock.acquire()?;
    /// assert!(g.lock().is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> &Lock {
        &self.lock
    }
}

impl Drop for LockGuard {
    #[inline]
    fn drop(&mut self) {
        unlock(self.lock.word());
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_protocol() {
        let w = AtomicU32::new(0);
        assert!(try_lock(&w, 42));
        assert_eq!(w.load(Ordering::Relaxed), 42);
        assert!(!try_lock(&w, 43));
        // A lock held by this process is never taken over.
        w.store(shm::me(), Ordering::Relaxed);
        assert_eq!(try_lock_or_recover(&w, shm::me()), None);
        unlock(&w);
        assert_eq!(w.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn dead_holder_is_taken_over() {
        // A pid above pid_max names no process.
        let dead = (1 << 30) - 1;
        let w = AtomicU32::new(dead | WAITERS);
        assert_eq!(
            lock(
                &w,
                shm::me(),
                mp_sys::time::Deadline::after(Duration::from_secs(5)).instant()
            ),
            Some(Acquired::OwnerDied)
        );
        assert_eq!(w.load(Ordering::Relaxed) & OWNER, shm::me());
        w.store(dead, Ordering::Relaxed);
        assert_eq!(try_lock_or_recover(&w, shm::me()), Some(Acquired::OwnerDied));
    }

    #[test]
    fn timeout_on_a_live_holder() {
        let w = AtomicU32::new(shm::me());
        let t0 = Instant::now();
        assert_eq!(lock(&w, 7, Some(t0 + Duration::from_millis(30))), None);
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert_eq!(w.load(Ordering::Relaxed), shm::me() | WAITERS);
    }
}
