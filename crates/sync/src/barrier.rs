//! `Barrier`: a fixed number of parties wait until all have arrived.
//!
//! Layout (after the region header, see [`shm`](crate::shm)): word 0 is a
//! sequence number (the futex word, bumped on every change that waiters must
//! see), word 1 the number of parties, and 64-bit word 1 the state: the generation (bits 0-31), the parties waiting in it
//! (bits 32-47), a broken flag (bit 48) and, in bits 49-63, how each of the
//! last 15 generations ended (1: reset, 0: released), newest in bit 49.
//!
//! The last party to arrive moves the barrier to the next generation, which
//! releases the others; `reset` does the same but records a reset, so the
//! parties of the old generation return [`BarrierError::Broken`]. A waiter
//! that wakes after newer generations came and went reads its own
//! generation's outcome from the history. Unlike Python's barrier there is no
//! draining phase that waits for every released party to leave, so a party
//! that dies just after release cannot wedge the next round.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_sys::futex;

use crate::error::{BarrierError, SyncError};
use crate::shm::{self, Kind, Shm, handle_serde};

const SEQ: usize = 0;
const PARTIES: usize = 1;
const STATE: usize = 1;

const COUNT_SHIFT: u32 = 32;
const COUNT_MASK: u64 = 0xffff << COUNT_SHIFT;
const BROKEN: u64 = 1 << 48;
const HIST_SHIFT: u32 = 49;
const HIST_LEN: u32 = 15;
const MAX_PARTIES: usize = 0xffff;

/// The state word, unpacked.
#[derive(Clone, Copy, Debug)]
struct State(u64);

impl State {
    fn generation(self) -> u32 {
        self.0 as u32
    }

    fn count(self) -> usize {
        ((self.0 & COUNT_MASK) >> COUNT_SHIFT) as usize
    }

    fn broken(self) -> bool {
        self.0 & BROKEN != 0
    }

    /// The next generation, empty and whole, with this one's outcome recorded.
    fn next(self, reset: bool) -> State {
        let hist = ((self.0 >> HIST_SHIFT) << 1 | u64::from(reset)) & ((1 << HIST_LEN) - 1);
        State(u64::from(self.generation().wrapping_add(1)) | hist << HIST_SHIFT)
    }

    /// Whether generation `g` (older than this state's) ended in a reset.
    fn was_reset(self, g: u32) -> bool {
        let age = self.generation().wrapping_sub(g);
        // A waiter more than 15 generations behind missed its own outcome;
        // a generation far more often ends by release, so report that.
        (1..=HIST_LEN).contains(&age) && (self.0 >> (HIST_SHIFT + age - 1)) & 1 == 1
    }
}

/// Python's `multiprocessing.Barrier`: `parties` processes (or threads) call
/// [`wait`](Barrier::wait), and all return once the last has arrived, each
/// with its own index `0..parties`.
///
/// ```
/// use mp_sync::Barrier;
/// let b = Barrier::new(2)?;
/// let other = b.clone();
/// let t = std::thread::spawn(move || other.wait());
/// let mine = b.wait()?;
/// let theirs = t.join().unwrap()?;
/// assert_eq!(mine + theirs, 1); // indexes 0 and 1
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python
///
/// No `action` argument (a closure cannot run in another process) and no
/// default timeout: use [`wait_timeout`](Barrier::wait_timeout). At most
/// 65,535 parties.
#[derive(Clone)]
pub struct Barrier {
    shm: Arc<Shm>,
}

handle_serde!(Barrier);

impl Barrier {
    /// Python's `Barrier(parties)`. Fails for 0 parties or more than 65,535.
    ///
    /// ```
    /// assert_eq!(mp_sync::Barrier::new(3)?.parties(), 3);
    /// assert!(mp_sync::Barrier::new(0).is_err());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn new(parties: usize) -> Result<Barrier, SyncError> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(SyncError::InvalidArgument(format!(
                "a Barrier needs at least one party and at most {MAX_PARTIES}, not {parties}"
            )));
        }
        let shm = Shm::create(Kind::Barrier)?;
        shm.word(PARTIES).store(parties as u32, Ordering::Release);
        Ok(Barrier { shm: Arc::new(shm) })
    }

    fn seq(&self) -> &AtomicU32 {
        self.shm.word(SEQ)
    }

    fn state(&self) -> &AtomicU64 {
        self.shm.dword(STATE)
    }

    /// Wakes every waiter after a state change.
    fn announce(&self) {
        self.seq().fetch_add(1, Ordering::SeqCst);
        futex::wake_all(self.seq());
    }

    /// Python's `barrier.parties`.
    ///
    /// ```
    /// assert_eq!(mp_sync::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn parties(&self) -> usize {
        self.shm.word(PARTIES).load(Ordering::Relaxed) as usize
    }

    /// Python's `barrier.n_waiting`: parties waiting now (0 when broken).
    ///
    /// ```
    /// assert_eq!(mp_sync::Barrier::new(2)?.n_waiting(), 0);
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn n_waiting(&self) -> usize {
        let st = State(self.state().load(Ordering::Acquire));
        if st.broken() { 0 } else { st.count() }
    }

    /// Python's `barrier.broken`.
    ///
    /// ```
    /// let b = mp_sync::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.is_broken());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn is_broken(&self) -> bool {
        State(self.state().load(Ordering::Acquire)).broken()
    }

    /// Python's `barrier.wait()`: waits until all parties have arrived and
    /// returns this party's index (the first to arrive gets 0, the last
    /// `parties - 1`). [`BarrierError::Broken`] if the barrier is or gets
    /// broken first.
    ///
    /// ```
    /// let b = mp_sync::Barrier::new(1)?;
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), mp_sync::BarrierError>(())
    /// ```
    pub fn wait(&self) -> Result<usize, BarrierError> {
        self.wait_until(None)
    }

    /// Python's `barrier.wait(timeout=t)`: as [`wait`](Barrier::wait), and if
    /// `t` passes first the barrier breaks (every waiting party gets
    /// `Broken`) and this one gets [`BarrierError::Timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = mp_sync::Barrier::new(2)?;
    /// assert!(matches!(b.wait_timeout(Duration::from_millis(10)), Err(mp_sync::BarrierError::Timeout)));
    /// assert!(b.is_broken());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn wait_timeout(&self, t: Duration) -> Result<usize, BarrierError> {
        self.wait_until(shm::deadline(t))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<usize, BarrierError> {
        let state = self.state();
        let parties = self.parties();
        // Arrive.
        let mut st = State(state.load(Ordering::Acquire));
        let (generation, index) = loop {
            if st.broken() {
                return Err(BarrierError::Broken);
            }
            let index = st.count();
            if index + 1 >= parties {
                match state.compare_exchange(st.0, st.next(false).0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        self.announce();
                        return Ok(index);
                    }
                    Err(now) => st = State(now),
                }
            } else {
                match state.compare_exchange(st.0, st.0 + (1 << COUNT_SHIFT), Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break (st.generation(), index),
                    Err(now) => st = State(now),
                }
            }
        };
        // Wait for the generation to end.
        let seq = self.seq();
        let mut spun = false;
        loop {
            let s = seq.load(Ordering::SeqCst);
            let st = State(state.load(Ordering::SeqCst));
            if st.generation() != generation {
                return if st.was_reset(generation) {
                    Err(BarrierError::Broken)
                } else {
                    Ok(index)
                };
            }
            if st.broken() {
                return Err(BarrierError::Broken);
            }
            if shm::expired(deadline) {
                if state
                    .compare_exchange(st.0, st.0 | BROKEN, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.announce();
                    return Err(BarrierError::Timeout);
                }
                continue;
            }
            if !spun {
                spun = true;
                if shm::spin(|| State(state.load(Ordering::Relaxed)).0 != st.0) {
                    continue;
                }
            }
            futex::wait_until(seq, s, deadline);
        }
    }

    /// Python's `barrier.abort()`: breaks the barrier; every waiting party
    /// and every later `wait` gets [`BarrierError::Broken`] until
    /// [`reset`](Barrier::reset).
    ///
    /// ```
    /// let b = mp_sync::Barrier::new(3)?;
    /// b.abort();
    /// assert!(b.wait().is_err());
    /// # Ok::<(), mp_sync::SyncError>(())
    /// ```
    pub fn abort(&self) {
        self.state().fetch_or(BROKEN, Ordering::AcqRel);
        self.announce();
    }

    /// Python's `barrier.reset()`: back to the empty, unbroken state; parties
    /// waiting now get [`BarrierError::Broken`].
    ///
    /// ```
    /// let b = mp_sync::Barrier::new(1)?;
    /// b.abort();
    /// b.reset();
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), mp_sync::BarrierError>(())
    /// ```
    pub fn reset(&self) {
        let state = self.state();
        let mut st = State(state.load(Ordering::Acquire));
        while let Err(now) = state.compare_exchange(st.0, st.next(true).0, Ordering::AcqRel, Ordering::Acquire) {
            st = State(now);
        }
        self.announce();
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_records_each_generation() {
        let mut st = State(0);
        st = st.next(false); // generation 0 released
        st = st.next(true); // generation 1 reset
        st = st.next(false); // generation 2 released
        assert_eq!(st.generation(), 3);
        assert!(!st.was_reset(0));
        assert!(st.was_reset(1));
        assert!(!st.was_reset(2));
        assert_eq!(st.count(), 0);
        assert!(!st.broken());
    }

    #[test]
    fn history_survives_wrapping_generations() {
        let mut st = State(u64::from(u32::MAX));
        st = st.next(true);
        assert_eq!(st.generation(), 0);
        assert!(st.was_reset(u32::MAX));
    }
}
