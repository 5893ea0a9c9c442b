//! `Semaphore` and `BoundedSemaphore`: a counter shared between processes.
//!
//! Layout (after the region header, see [`shm`](crate::shm)): word 0 is the
//! value (the futex word), word 1 the number of
//! sleepers (so a release calls `futex` wake only when someone may sleep),
//! word 2 a bounded semaphore's limit. A sleeper that dies leaves the sleeper
//! count one too high, which costs later releases a wake call, nothing more.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mp_sys::futex;

use crate::error::SyncError;
use crate::shm::{self, Kind, Shm, handle_serde};

const VALUE: usize = 0;
const SLEEPERS: usize = 1;
const LIMIT: usize = 2;

/// The largest value a semaphore holds.
const MAX: u32 = u32::MAX;

fn value_word(shm: &Shm) -> &AtomicU32 {
    shm.word(VALUE)
}

fn initial(kind: Kind, n: usize) -> Result<Shm, SyncError> {
    let n = u32::try_from(n)
        .map_err(|_| SyncError::InvalidArgument(format!("a {} value must be at most {MAX}, not {n}", kind.name())))?;
    let shm = Shm::create(kind)?;
    shm.word(LIMIT).store(n, Ordering::Relaxed);
    shm.word(VALUE).store(n, Ordering::Release);
    Ok(shm)
}

/// Takes one unit if the value is above zero.
#[inline]
fn try_down(value: &AtomicU32) -> bool {
    let mut v = value.load(Ordering::Relaxed);
    while v > 0 {
        match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => v = now,
        }
    }
    false
}

/// Takes one unit, waiting until `deadline`; false when it passed first.
fn down(shm: &Shm, deadline: Option<Instant>) -> bool {
    let value = value_word(shm);
    if try_down(value) || shm::spin(|| try_down(value)) {
        return true;
    }
    let sleepers = shm.word(SLEEPERS);
    sleepers.fetch_add(1, Ordering::SeqCst);
    let got = loop {
        // SeqCst pairs with `up`: either it sees this sleeper, or this load
        // sees its new value.
        if value.load(Ordering::SeqCst) > 0 {
            if try_down(value) {
                break true;
            }
            continue;
        }
        if shm::expired(deadline) {
            break false;
        }
        futex::wait_until(value, 0, deadline);
    };
    sleepers.fetch_sub(1, Ordering::Relaxed);
    got
}

/// Adds one unit unless the value is at `limit`; `Err(value)` then.
fn up(shm: &Shm, limit: u32) -> Result<(), u32> {
    let value = value_word(shm);
    let mut v = value.load(Ordering::Relaxed);
    loop {
        if v >= limit {
            return Err(v);
        }
        match value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => v = now,
        }
    }
    if shm.word(SLEEPERS).load(Ordering::SeqCst) > 0 {
        futex::wake(value, 1);
    }
    Ok(())
}

fn get_value(shm: &Shm) -> usize {
    value_word(shm).load(Ordering::Relaxed) as usize
}

/// Python's `multiprocessing.Semaphore`: a counter that `acquire` takes one
/// from, waiting while it is zero, and `release` adds one to, without limit.
///
/// ```
/// use mp_sync::Semaphore;
/// let s = Semaphore::new(2)?;
/// s.acquire()?;
/// s.acquire()?;
/// assert!(!s.try_acquire()?);
/// s.release()?;
/// assert_eq!(s.get_value(), 1);
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    shm: Arc<Shm>,
}

handle_serde!(Semaphore);

impl Semaphore {
    /// Python's `Semaphore(value)`. Fails when `value` is above `u32::MAX`.
    ///
    /// ```
    /// assert_eq!(mp_sync::Semaphore::new(3)?.get_value(), 3);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn new(value: usize) -> Result<Semaphore, SyncError> {
        Ok(Semaphore {
            shm: Arc::new(initial(Kind::Semaphore, value)?),
        })
    }

    /// Python's `sem.acquire()`: waits until the value is above zero and
    /// takes one.
    ///
    /// ```
    /// let s = mp_sync::Semaphore::new(1)?;
    /// s.acquire()?;
    /// assert_eq!(s.get_value(), 0);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn acquire(&self) -> Result<(), SyncError> {
        down(&self.shm, None);
        Ok(())
    }

    /// Python's `sem.acquire(timeout=t)`: false if the value stayed zero for
    /// `t`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let s = mp_sync::Semaphore::new(0)?;
    /// assert!(!s.acquire_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn acquire_timeout(&self, t: Duration) -> Result<bool, SyncError> {
        Ok(down(&self.shm, shm::deadline(t)))
    }

    /// Python's `sem.acquire(block=False)`.
    ///
    /// ```
    /// let s = mp_sync::Semaphore::new(1)?;
    /// assert!(s.try_acquire()?);
    /// assert!(!s.try_acquire()?);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool, SyncError> {
        Ok(try_down(value_word(&self.shm)))
    }

    /// Python's `sem.release()`: adds one and wakes a waiter. Fails only when
    /// the value is already `u32::MAX`.
    ///
    /// ```
    /// let s = mp_sync::Semaphore::new(0)?;
    /// s.release()?;
    /// s.release()?; // no limit
    /// assert_eq!(s.get_value(), 2);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn release(&self) -> Result<(), SyncError> {
        up(&self.shm, MAX).map_err(|_| SyncError::Overflow { max: MAX as usize })
    }

    /// Python's `sem.get_value()`: the value right now.
    ///
    /// ```
    /// assert_eq!(mp_sync::Semaphore::new(5)?.get_value(), 5);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn get_value(&self) -> usize {
        get_value(&self.shm)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore").field("value", &self.get_value()).finish()
    }
}

/// Python's `multiprocessing.BoundedSemaphore`: a [`Semaphore`] whose value
/// may not rise above its initial value; a release past it is an error that
/// leaves the value unchanged.
///
/// ```
/// use mp_sync::{BoundedSemaphore, SyncError};
/// let s = BoundedSemaphore::new(1)?;
/// assert!(matches!(s.release(), Err(SyncError::OverRelease { limit: 1 })));
/// assert_eq!(s.get_value(), 1);
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    shm: Arc<Shm>,
}

handle_serde!(BoundedSemaphore);

impl BoundedSemaphore {
    /// Python's `BoundedSemaphore(value)`: `value` is also the limit.
    ///
    /// ```
    /// assert_eq!(mp_sync::BoundedSemaphore::new(2)?.get_value(), 2);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn new(value: usize) -> Result<BoundedSemaphore, SyncError> {
        Ok(BoundedSemaphore {
            shm: Arc::new(initial(Kind::BoundedSemaphore, value)?),
        })
    }

    fn limit(&self) -> u32 {
        self.shm.word(LIMIT).load(Ordering::Relaxed)
    }

    /// Waits until the value is above zero and takes one.
    ///
    /// ```
    /// let s = mp_sync::BoundedSemaphore::new(1)?;
    /// s.acquire()?;
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn acquire(&self) -> Result<(), SyncError> {
        down(&self.shm, None);
        Ok(())
    }

    /// Takes one, waiting at most `t`; false if the value stayed zero.
    ///
    /// ```
    /// use std::time::Duration;
    /// let s = mp_sync::BoundedSemaphore::new(0)?;
    /// assert!(!s.acquire_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn acquire_timeout(&self, t: Duration) -> Result<bool, SyncError> {
        Ok(down(&self.shm, shm::deadline(t)))
    }

    /// Takes one if the value is above zero, without waiting.
    ///
    /// ```
    /// let s = mp_sync::BoundedSemaphore::new(1)?;
    /// assert!(s.try_acquire()?);
    /// assert!(!s.try_acquire()?);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn try_acquire(&self) -> Result<bool, SyncError> {
        Ok(try_down(value_word(&self.shm)))
    }

    /// Adds one and wakes a waiter; [`SyncError::OverRelease`] (value
    /// unchanged) when the value is already at its initial value.
    ///
    /// ```
    /// let s = mp_sync::BoundedSemaphore::new(1)?;
    /// s.acquire()?;
    /// s.release()?;
    /// assert!(s.release().is_err());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn release(&self) -> Result<(), SyncError> {
        let limit = self.limit();
        up(&self.shm, limit).map_err(|_| SyncError::OverRelease { limit: limit as usize })
    }

    /// The value right now.
    ///
    /// ```
    /// assert_eq!(mp_sync::BoundedSemaphore::new(4)?.get_value(), 4);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn get_value(&self) -> usize {
        get_value(&self.shm)
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.get_value())
            .field("limit", &self.limit())
            .finish()
    }
}
