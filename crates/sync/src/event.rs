//! `Event`: a flag shared between processes that waiters sleep on.
//!
//! Layout (after the region header, see [`shm`](crate::shm)): word 0 is the
//! flag (0 or 1; the futex word), word 1 the number of
//! sleepers, so `set` calls `futex` wake only when someone may sleep.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mp_sys::futex;

use crate::error::SyncError;
use crate::shm::{self, Kind, Shm, handle_serde};

const FLAG: usize = 0;
const SLEEPERS: usize = 1;

/// Python's `multiprocessing.Event`: `set` raises a flag and wakes every
/// waiter, `clear` lowers it, `wait` sleeps until it is raised.
///
/// ```
/// use mp_sync::Event;
/// use std::time::Duration;
/// let e = Event::new()?;
/// assert!(!e.wait_timeout(Duration::from_millis(1)));
/// e.set();
/// e.wait();
/// assert!(e.is_set());
/// # Ok::<(), mp_sync::SyncError>(())
/// ```
#[derive(Clone)]
pub struct Event {
    shm: Arc<Shm>,
}

handle_serde!(Event);

impl Event {
    /// Python's `Event()`: a new event, not set.
    ///
    /// ```
    /// assert!(!mp_sync::Event::new()?.is_set());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn new() -> Result<Event, SyncError> {
        Ok(Event {
            shm: Arc::new(Shm::create(Kind::Event)?),
        })
    }

    fn flag(&self) -> &AtomicU32 {
        self.shm.word(FLAG)
    }

    /// Python's `event.is_set()`.
    ///
    /// ```
    /// let e = mp_sync::Event::new()?;
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::Acquire) != 0
    }

    /// Python's `event.set()`: raises the flag and wakes every waiter.
    ///
    /// ```
    /// let e = mp_sync::Event::new()?;
    /// e.set();
    /// e.set(); // already set: nothing happens
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn set(&self) {
        // SeqCst pairs with the sleeper count in `wait_until`: either the
        // setter sees the sleeper, or the sleeper sees the flag.
        if self.flag().swap(1, Ordering::SeqCst) == 0 && self.shm.word(SLEEPERS).load(Ordering::SeqCst) > 0 {
            futex::wake_all(self.flag());
        }
    }

    /// Python's `event.clear()`: lowers the flag.
    ///
    /// ```
    /// let e = mp_sync::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn clear(&self) {
        self.flag().store(0, Ordering::Release);
    }

    /// Python's `event.wait()`: sleeps until the flag is raised.
    ///
    /// ```
    /// let e = mp_sync::Event::new()?;
    /// let setter = e.clone();
    /// std::thread::spawn(move || setter.set());
    /// e.wait();
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Python's `event.wait(timeout=t)`: whether the flag was raised before
    /// `t` passed.
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = mp_sync::Event::new()?;
    /// assert!(!e.wait_timeout(Duration::from_millis(5)));
    /// e.set();
    /// assert!(e.wait_timeout(Duration::from_millis(5)));
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn wait_timeout(&self, t: Duration) -> bool {
        self.wait_until(shm::deadline(t))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let flag = self.flag();
        if flag.load(Ordering::Acquire) != 0 || shm::spin(|| flag.load(Ordering::Acquire) != 0) {
            return true;
        }
        let sleepers = self.shm.word(SLEEPERS);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let set = loop {
            if flag.load(Ordering::SeqCst) != 0 {
                break true;
            }
            if shm::expired(deadline) {
                break false;
            }
            futex::wait_until(flag, 0, deadline);
        };
        sleepers.fetch_sub(1, Ordering::Relaxed);
        set
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("is_set", &self.is_set()).finish()
    }
}
