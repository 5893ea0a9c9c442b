//! Futex wait and wake on an `AtomicU32` that may live in memory shared
//! between processes (a [`Region`](crate::region::Region)).
//!
//! The operations are the shared (not `FUTEX_PRIVATE_FLAG`) forms, so a waiter
//! in one process is woken by a waker in another as long as both map the same
//! memory. Waits take an optional timeout; every wait can return spuriously, so
//! callers re-check their condition in a loop.
//!
//! nix has no futex wrapper, so the two system calls go through
//! `libc::syscall`, each in one documented `unsafe` block.
#![allow(unsafe_code)]

use crate::time::Deadline;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How a [`wait`] ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WaitResult {
    /// Woken by [`wake`], by a signal, or spuriously: re-check the condition.
    Woken,
    /// The value was not `expected` when the call began: it did not sleep.
    ValueChanged,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `*atom == expected`, for at most `timeout` (`None`: forever).
///
/// ```
/// use mp_sys::futex::{wait, WaitResult};
/// use std::sync::atomic::AtomicU32;
/// use std::time::Duration;
/// let a = AtomicU32::new(1);
/// assert_eq!(wait(&a, 0, None), WaitResult::ValueChanged);
/// assert_eq!(wait(&a, 1, Some(Duration::from_millis(5))), WaitResult::TimedOut);
/// ```
pub fn wait(atom: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitResult {
    wait_until(atom, expected, Deadline::from_timeout(timeout).instant())
}

/// Sleeps while `*atom == expected`, until `deadline` at the latest.
///
/// ```
/// use mp_sys::futex::{wait_until, WaitResult};
/// use std::sync::atomic::AtomicU32;
/// use std::time::{Duration, Instant};
/// let a = AtomicU32::new(7);
/// let r = wait_until(&a, 7, mp_sys::time::Deadline::after(Duration::from_millis(5)).instant());
/// assert_eq!(r, WaitResult::TimedOut);
/// ```
pub fn wait_until(atom: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitResult {
    // FUTEX_WAIT takes a relative timeout; it is recomputed from the deadline
    // on every call, so a wait interrupted by a signal never overshoots.
    let ts = match deadline {
        None => None,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return WaitResult::TimedOut;
            }
            Some(libc::timespec {
                tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(left.subsec_nanos().cast_signed()),
            })
        }
    };
    let ts_ptr = ts.as_ref().map_or(ptr::null(), ptr::from_ref);
    // SAFETY: `atom` is a valid, aligned u32 for the call (an AtomicU32 has the
    // layout of u32), and `ts_ptr` is null or points to a live timespec. The
    // kernel only reads both.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            atom.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            ptr::null::<u32>(),
            0u32,
        )
    };
    if r == 0 {
        return WaitResult::Woken;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => WaitResult::ValueChanged,
        Some(libc::ETIMEDOUT) => WaitResult::TimedOut,
        // EINTR, and anything unexpected: report a wake-up, so the caller
        // re-checks its condition and its deadline.
        _ => WaitResult::Woken,
    }
}

/// Wakes at most `n` waiters sleeping on `atom`, in any process. Returns how
/// many were woken.
///
/// ```
/// use std::sync::atomic::AtomicU32;
/// let a = AtomicU32::new(0);
/// assert_eq!(mp_sys::futex::wake(&a, 1), 0); // nobody waits
/// ```
pub fn wake(atom: &AtomicU32, n: u32) -> usize {
    let n = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: `atom` is a valid, aligned u32; FUTEX_WAKE does not read through
    // the remaining (unused) arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            atom.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            ptr::null::<u8>(),
            ptr::null::<u32>(),
            0u32,
        )
    };
    usize::try_from(r).unwrap_or(0)
}

/// Wakes every waiter sleeping on `atom`.
///
/// ```
/// use std::sync::atomic::AtomicU32;
/// let a = AtomicU32::new(0);
/// assert_eq!(mp_sys::futex::wake_all(&a), 0);
/// ```
pub fn wake_all(atom: &AtomicU32) -> usize {
    wake(atom, u32::MAX)
}

/// Gives the CPU away (`sched_yield`) until `ready` holds, for at most
/// `limit`; whether it held. What a waiter does before its futex sleep:
/// when the other side shares this CPU (both pinned, or put together by the
/// scheduler), yielding lets it run and make progress in one stretch
/// instead of waking this side once per step; when it runs on another CPU,
/// this is a short poll that sees its write within a microsecond. A
/// pause-loop spin first measured no faster here and burns the time slice
/// the other side needs when both share a CPU.
///
/// ```
/// use std::time::Duration;
/// assert!(mp_sys::futex::yield_until(Duration::from_micros(50), || true));
/// assert!(!mp_sys::futex::yield_until(Duration::from_micros(50), || false));
/// ```
pub fn yield_until(limit: Duration, ready: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        std::thread::yield_now();
        if ready() {
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
    }
}

/// How [`spin_then_wait`] ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Spun {
    /// `ready` held, while spinning or just before sleeping.
    Ready,
    /// The futex wait returned (woken, spurious, or the word had moved):
    /// re-check the condition.
    Woken,
    /// The deadline passed while asleep.
    TimedOut,
}

/// The one waiter of the shared-memory channels (the queue ring, the
/// manager's link page): yield the CPU for up to `spin` while `ready` does
/// not hold, then announce a sleeper in `sleepers` and sleep on `word` until
/// it moves from the value `expected` returns, or until `deadline`.
///
/// The protocol with the waker, which changes `word` and then reads
/// `sleepers` (both `SeqCst`) and wakes when it is non-zero: the sleeper
/// counts itself in `sleepers` (`SeqCst`) before `expected` is read and
/// before the last `ready` check, so either the waker sees the sleeper and
/// wakes it, or its change came first and the wait returns at once.
/// `expected` is a closure so that a caller can pass a value read before it
/// last found itself not ready (so a change in between is never missed), or
/// read it afresh after the announcement.
///
/// ```
/// use mp_sys::futex::{Spun, spin_then_wait};
/// use mp_sys::time::Deadline;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// let (word, sleepers) = (AtomicU32::new(0), AtomicU32::new(0));
/// let soon = Deadline::after(Duration::from_millis(5));
/// let r = spin_then_wait(Duration::from_micros(20), || false, &word, || 0, &sleepers, soon);
/// assert_eq!(r, Spun::TimedOut);
/// assert_eq!(sleepers.load(Ordering::Relaxed), 0);
/// let r = spin_then_wait(Duration::ZERO, || true, &word, || 0, &sleepers, Deadline::NEVER);
/// assert_eq!(r, Spun::Ready);
/// ```
pub fn spin_then_wait(
    spin: Duration,
    ready: impl Fn() -> bool,
    word: &AtomicU32,
    expected: impl FnOnce() -> u32,
    sleepers: &AtomicU32,
    deadline: Deadline,
) -> Spun {
    if !spin.is_zero() && yield_until(spin, &ready) {
        return Spun::Ready;
    }
    sleepers.fetch_add(1, Ordering::SeqCst);
    let seen = expected();
    let r = if ready() {
        Spun::Ready
    } else {
        match wait_until(word, seen, deadline.instant()) {
            WaitResult::TimedOut => Spun::TimedOut,
            WaitResult::Woken | WaitResult::ValueChanged => Spun::Woken,
        }
    };
    sleepers.fetch_sub(1, Ordering::Relaxed);
    r
}
