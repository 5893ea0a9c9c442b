//! `Condition`: waiters that release a [`Lock`], sleep until notified, and
//! take the lock back.
//!
//! Layout (after the region header, see [`shm`](crate::shm)): word 0 is a
//! sequence number (the futex word: every notify that
//! hands out wake-ups bumps it, so a waiter that is about to sleep when a
//! notify comes does not sleep), and 64-bit word 1 counts waiters (high
//! half) and the wake-ups handed out but not yet taken (low half).
//! `notify(n)` hands out up to `n` wake-ups, never more than there are
//! waiters without one.
//!
//! A waiter notes the sequence number as it begins to wait (under the lock)
//! and may take a wake-up only once a later notify has moved the number on:
//! the wake-ups pending when it arrived belong to the waiters that were
//! already there, as in Python, where a notify wakes only threads already
//! waiting. Every waiter that may take one may take any, so the `n` taken are
//! `n` of the waiters present at the notify. A waiter whose timeout passes
//! either takes a wake-up it may take (and reports being notified) or leaves
//! the count, atomically.
//!
//! `notify` requires the lock: the lock word names its holder's process, so
//! checking that the caller's process holds it is one load.
//!
//! A waiter process that dies while waiting (killed, say) swallows no
//! notify: the live waiters that were there may take any pending wake-up,
//! including one handed out for the dead waiter. The dead waiter stays
//! counted, though: `n_waiting` includes it until a notify hands it a
//! wake-up, and that wake-up, which it never takes, goes to one of the
//! waiters present at a later notify, which then wakes one waiter more than
//! asked (after which the dead waiter counts again). Telling a dead waiter
//! from a slow one would take a system call per waiter in `notify`. Waiting
//! code re-checks its predicate ([`Condition::wait_for`]), as with every
//! condition variable.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_sys::futex;
use mp_sys::time::Deadline;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{LockError, SyncError};
use crate::lock::{self, Acquired, Lock};
use crate::shm::{self, Kind, Shm};

const SEQ: usize = 0;
const STATE: usize = 1;
const ONE_WAITER: u64 = 1 << 32;

/// Python's `multiprocessing.Condition`: processes wait on it, holding its
/// lock, until another process notifies them.
///
/// ```
/// use mp_sync::{Condition, Event};
/// use std::time::Duration;
/// let cond = Condition::new(None)?;
/// let ready = Event::new()?;
/// let (c, r) = (cond.clone(), ready.clone());
/// let waiter = std::thread::spawn(move || -> Result<bool, mp_sync::SyncError> {
///     let mut g = c.acquire().map_err(|_| mp_sync::SyncError::OwnerDied)?;
///     r.set();
///     c.wait_timeout(&mut g, Duration::from_secs(10))
/// });
/// ready.wait();
/// let _g = cond.acquire()?; // the waiter released the lock while it waits
/// cond.notify(1)?;
/// drop(_g);
/// assert!(waiter.join().unwrap()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python
///
/// - The lock is a [`Lock`] (Python's default is an `RLock`), and holding it
///   is proven by the [`ConditionGuard`] that `wait` takes, so waiting
///   without the lock cannot compile.
/// - `notify` without the lock fails, as in Python, but the check is by
///   process: the lock records which process holds it, not which thread, so
///   a thread may notify while another thread of its process holds the lock.
/// - After a waiter process was killed while waiting, `n_waiting` may count
///   it, and now and then a `notify(n)` may wake `n + 1` waiters (Python's
///   documentation allows waking more than `n`). Python's
///   `multiprocessing.Condition` instead waits in `notify` for every waiter
///   it woke to confirm, so a notify that picks the dead waiter can hang.
#[derive(Clone)]
pub struct Condition {
    lock: Lock,
    shm: Arc<Shm>,
}

impl Condition {
    /// Python's `Condition(lock=None)`: a condition on `lock`, or on a new
    /// [`Lock`].
    ///
    /// ```
    /// let lock = mp_sync::Lock::new()?;
    /// let cond = mp_sync::Condition::new(Some(lock.clone()))?;
    /// let g = cond.acquire()?;
    /// assert!(lock.is_locked());
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(lock: Option<Lock>) -> Result<Condition, SyncError> {
        let lock = match lock {
            Some(l) => l,
            None => Lock::new()?,
        };
        Ok(Condition {
            lock,
            shm: Arc::new(Shm::create(Kind::Condition)?),
        })
    }

    /// The condition's lock.
    ///
    /// ```
    /// let cond = mp_sync::Condition::new(None)?;
    /// assert!(!cond.lock().is_locked());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    fn seq(&self) -> &AtomicU32 {
        self.shm.word(SEQ)
    }

    fn state(&self) -> &AtomicU64 {
        self.shm.dword(STATE)
    }

    fn guard(&self, how: Acquired) -> Result<ConditionGuard, LockError<ConditionGuard>> {
        let guard = ConditionGuard { cond: self.clone() };
        match how {
            Acquired::Clean => Ok(guard),
            Acquired::OwnerDied => Err(LockError::OwnerDied(guard)),
        }
    }

    /// Python's `cond.acquire()`: takes the lock.
    ///
    /// ```
    /// let cond = mp_sync::Condition::new(None)?;
    /// let g = cond.acquire()?;
    /// assert!(cond.lock().is_locked());
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) -> Result<ConditionGuard, LockError<ConditionGuard>> {
        let how = lock::lock(self.lock.word(), shm::me(), None).unwrap_or(Acquired::Clean);
        self.guard(how)
    }

    /// Takes the lock, waiting at most `t`; `Ok(None)` if it stayed held.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = mp_sync::Condition::new(None)?;
    /// let g = cond.acquire()?;
    /// assert!(cond.acquire_timeout(Duration::from_millis(5))?.is_none());
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, t: Duration) -> Result<Option<ConditionGuard>, LockError<ConditionGuard>> {
        match lock::lock(self.lock.word(), shm::me(), shm::deadline(t)) {
            None => Ok(None),
            Some(how) => self.guard(how).map(Some),
        }
    }

    /// Takes the lock if it is free, without waiting.
    ///
    /// ```
    /// let cond = mp_sync::Condition::new(None)?;
    /// assert!(cond.try_acquire()?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<ConditionGuard>, LockError<ConditionGuard>> {
        match lock::try_lock_or_recover(self.lock.word(), shm::me()) {
            None => Ok(None),
            Some(how) => self.guard(how).map(Some),
        }
    }

    /// Python's `cond.wait()`: releases the lock, sleeps until notified, and
    /// takes the lock again before returning.
    ///
    /// Fails with [`SyncError::WrongGuard`] for another condition's guard,
    /// and with [`SyncError::OwnerDied`] when a process died holding the lock
    /// while this one waited (the guard holds the lock again all the same).
    ///
    /// ```
    /// let cond = mp_sync::Condition::new(None)?;
    /// let mut g = cond.acquire()?;
    /// let c = cond.clone();
    /// // The notifier gets the lock only once `wait` has released it.
    /// let notifier = std::thread::spawn(move || c.acquire().map(|_held| c.notify(1).is_ok()).unwrap_or(false));
    /// cond.wait(&mut g)?;
    /// drop(g);
    /// assert!(notifier.join().unwrap());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self, guard: &mut ConditionGuard) -> Result<(), SyncError> {
        self.wait_until(guard, None).map(drop)
    }

    /// Python's `cond.wait(timeout=t)`: false if `t` passed without a notify.
    /// The lock is held again on return either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = mp_sync::Condition::new(None)?;
    /// let mut g = cond.acquire()?;
    /// assert!(!cond.wait_timeout(&mut g, Duration::from_millis(10))?);
    /// assert!(cond.lock().is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(&self, guard: &mut ConditionGuard, t: Duration) -> Result<bool, SyncError> {
        self.wait_until(guard, shm::deadline(t))
    }

    /// Python's `cond.wait_for(predicate, timeout)`: waits until `pred`
    /// returns true, checking it (with the lock held) first and after every
    /// wake-up. A wake-up that finds it false waits again, for what is left
    /// of `timeout`: the timeout bounds the whole call, not each wait. `None`,
    /// or a timeout too large for the clock (`Duration::MAX`), waits as long
    /// as it takes. Returns `pred`'s last value: false when `timeout` passed
    /// first.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = mp_sync::Condition::new(None)?;
    /// let mut g = cond.acquire()?;
    /// assert!(cond.wait_for(&mut g, || true, None)?);
    /// assert!(cond.wait_for(&mut g, || true, Some(Duration::MAX))?);
    /// assert!(!cond.wait_for(&mut g, || false, Some(Duration::from_millis(10)))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_for(
        &self,
        guard: &mut ConditionGuard,
        mut pred: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool, SyncError> {
        let deadline = Deadline::from_timeout(timeout).instant();
        loop {
            if pred() {
                return Ok(true);
            }
            if shm::expired(deadline) {
                return Ok(false);
            }
            self.wait_until(guard, deadline)?;
        }
    }

    fn owns(&self, guard: &ConditionGuard) -> bool {
        Arc::ptr_eq(&self.shm, &guard.cond.shm) || self.shm.same(&guard.cond.shm)
    }

    fn wait_until(&self, guard: &mut ConditionGuard, deadline: Option<Instant>) -> Result<bool, SyncError> {
        if !self.owns(guard) {
            return Err(SyncError::WrongGuard);
        }
        let (seq, state) = (self.seq(), self.state());
        // The wake-ups pending now belong to the waiters already here: this
        // one may take one only after a notify that comes later moves `seq`
        // on. Read before counting in, so a notify that counts this waiter
        // also moves `seq` past `mine`.
        let mine = seq.load(Ordering::SeqCst);
        state.fetch_add(ONE_WAITER, Ordering::SeqCst);
        lock::unlock(self.lock.word());
        let mut spun = false;
        let notified = loop {
            let s = seq.load(Ordering::SeqCst);
            let st = state.load(Ordering::SeqCst);
            if s != mine && st as u32 > 0 {
                // Take a wake-up and leave.
                if state
                    .compare_exchange(st, st - ONE_WAITER - 1, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    break true;
                }
                continue;
            }
            if shm::expired(deadline) {
                if state
                    .compare_exchange(st, st - ONE_WAITER, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    break false;
                }
                continue;
            }
            if !spun {
                spun = true;
                if shm::spin(|| seq.load(Ordering::Relaxed) != mine && state.load(Ordering::Relaxed) as u32 > 0) {
                    continue;
                }
            }
            futex::wait_until(seq, s, deadline);
        };
        match lock::lock(self.lock.word(), shm::me(), None) {
            Some(Acquired::OwnerDied) => Err(SyncError::OwnerDied),
            _ => Ok(notified),
        }
    }

    /// Python's `cond.notify(n)`: wakes up to `n` of the processes and
    /// threads waiting now (a wait that begins later is not woken by this
    /// notify). Call it holding the lock, so that a waiter cannot check its
    /// predicate, miss the change, and sleep through the notify.
    ///
    /// Fails with [`SyncError::NotifyWithoutLock`], notifying nobody, when
    /// the calling process does not hold the condition's lock (where
    /// `threading.Condition` raises `RuntimeError: cannot notify on
    /// un-acquired lock` and `multiprocessing.Condition` fails an assertion,
    /// "lock is not owned"): acquire the condition first.
    ///
    /// ```
    /// use mp_sync::{Condition, SyncError};
    /// let cond = Condition::new(None)?;
    /// assert!(matches!(cond.notify(1), Err(SyncError::NotifyWithoutLock { .. })));
    /// let g = cond.acquire()?;
    /// cond.notify(1)?; // nobody waits: nothing happens
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify(&self, n: usize) -> Result<(), SyncError> {
        let held = self.lock.word().load(Ordering::Relaxed);
        if held & lock::OWNER != shm::me() {
            return Err(SyncError::NotifyWithoutLock {
                holder: lock::describe_holder(held),
            });
        }
        let state = self.state();
        let mut st = state.load(Ordering::SeqCst);
        let handed = loop {
            let waiters = (st >> 32) as u32;
            let pending = st as u32;
            let k = waiters
                .saturating_sub(pending)
                .min(u32::try_from(n).unwrap_or(u32::MAX));
            if k == 0 {
                return Ok(());
            }
            match state.compare_exchange(st, st + u64::from(k), Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break k,
                Err(now) => st = now,
            }
        };
        self.seq().fetch_add(1, Ordering::SeqCst);
        futex::wake(self.seq(), handed);
        Ok(())
    }

    /// Python's `cond.notify_all()`: wakes every process and thread waiting
    /// now. Fails like [`notify`](Condition::notify) without the lock.
    ///
    /// ```
    /// let cond = mp_sync::Condition::new(None)?;
    /// assert!(cond.notify_all().is_err()); // the lock is not held
    /// let g = cond.acquire()?;
    /// cond.notify_all()?;
    /// # drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "notifyAll")]
    pub fn notify_all(&self) -> Result<(), SyncError> {
        self.notify(usize::MAX)
    }

    /// How many processes and threads wait right now without a wake-up
    /// handed to them (a waiter process killed while waiting may stay counted).
    ///
    /// ```
    /// assert_eq!(mp_sync::Condition::new(None)?.n_waiting(), 0);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn n_waiting(&self) -> usize {
        let st = self.state().load(Ordering::Relaxed);
        ((st >> 32) as u32).saturating_sub(st as u32) as usize
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .field("n_waiting", &self.n_waiting())
            .finish()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Shared<'a>(&'a Shm);
        impl Serialize for Shared<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }
        (&self.lock, Shared(&self.shm)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shared(Shm);
        impl<'de> Deserialize<'de> for Shared {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Shm::deserialize(d, Kind::Condition).map(Shared)
            }
        }
        let (lock, Shared(shm)) = <(Lock, Shared)>::deserialize(d)?;
        Ok(Condition {
            lock,
            shm: Arc::new(shm),
        })
    }
}

/// The held lock of a [`Condition`]; `wait` takes it by `&mut` and holds the
/// lock again when it returns. Dropping it releases the lock.
///
/// ```
/// let cond = mp_sync::Condition::new(None)?;
/// let g = cond.acquire()?;
/// drop(g);
/// assert!(!cond.lock().is_locked());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ConditionGuard {
    cond: Condition,
}

impl ConditionGuard {
    /// Python's `cond.release()`: the same as dropping the guard.
    ///
    /// ```
    /// let cond = mp_sync::Condition::new(None)?;
    /// cond.acquire()?.release();
    /// assert!(!cond.lock().is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(self) {}
}

impl Drop for ConditionGuard {
    fn drop(&mut self) {
        lock::unlock(self.cond.lock.word());
    }
}

impl fmt::Debug for ConditionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").finish_non_exhaustive()
    }
}
