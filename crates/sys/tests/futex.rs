//! Tests of `mp_sys::futex`: timeouts, and wake-ups across threads and
//! across processes through a shared region.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{PATIENCE, fork_child, fork_lock, reap};
use mp_sys::futex::{self, WaitResult};
use mp_sys::process::ExitStatus;
use mp_sys::region::Region;

#[test]
fn a_wait_times_out_after_its_timeout() {
    let a = AtomicU32::new(0);
    for ms in [10u64, 200] {
        let t = Duration::from_millis(ms);
        let t0 = Instant::now();
        assert_eq!(futex::wait(&a, 0, Some(t)), WaitResult::TimedOut);
        let took = t0.elapsed();
        assert!(took >= t, "woke after {took:?}, asked {t:?}");
        assert!(
            took < t + Duration::from_millis(1500),
            "woke after {took:?}, asked {t:?}"
        );
    }
}

#[test]
fn a_changed_value_does_not_sleep() {
    let a = AtomicU32::new(5);
    let t0 = Instant::now();
    assert_eq!(futex::wait(&a, 4, None), WaitResult::ValueChanged);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(futex::wait_until(&a, 5, Some(Instant::now())), WaitResult::TimedOut);
}

/// Wakes one waiter on `word` as soon as one sleeps there (`wake` returns 1
/// only then); false if none did within [`PATIENCE`].
fn wake_a_sleeper(word: &AtomicU32) -> bool {
    let deadline = mp_sys::time::Deadline::nap(PATIENCE);
    while futex::wake(word, 1) == 0 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

#[test]
fn a_thread_wakes_a_waiting_thread() {
    let a = Arc::new(AtomicU32::new(0));
    let b = Arc::clone(&a);
    let t = std::thread::spawn(move || {
        while b.load(Ordering::Acquire) == 0 {
            if futex::wait(&b, 0, Some(PATIENCE)) == WaitResult::TimedOut {
                return false;
            }
        }
        true
    });
    // The waiter is asleep once a wake reaches it; it then re-checks, sees 0
    // and sleeps again until the store below.
    assert!(wake_a_sleeper(&a), "the thread never slept on the futex");
    a.store(1, Ordering::Release);
    futex::wake_all(&a);
    assert!(t.join().unwrap());
}

#[test]
fn a_parent_wakes_a_child_sleeping_on_shared_memory() {
    let _g = fork_lock();
    let r = Region::create("futex", 64).unwrap();
    let mut c = fork_child(|| {
        let word = r.atomic_u32(0).unwrap();
        // One wait, expected to end by the parent's wake, not by time.
        match futex::wait(word, 0, Some(PATIENCE)) {
            WaitResult::Woken => 0,
            WaitResult::TimedOut => 1,
            WaitResult::ValueChanged => 2,
        }
    });
    let word = r.atomic_u32(0).unwrap();
    assert!(wake_a_sleeper(word), "the child never slept on the futex");
    assert_eq!(reap(&mut c), ExitStatus::Exited(0));
}

#[test]
fn a_child_wakes_its_parent() {
    let _g = fork_lock();
    let r = Region::create("futex2", 64).unwrap();
    let mut c = fork_child(|| {
        let word = r.atomic_u32(8).unwrap();
        // Wait until the parent sleeps on the word, so the wake below is a
        // real cross-process wake-up.
        if !wake_a_sleeper(word) {
            return 1;
        }
        word.store(7, Ordering::Release);
        futex::wake_all(word);
        0
    });
    let word = r.atomic_u32(8).unwrap();
    let deadline = mp_sys::time::Deadline::nap(PATIENCE);
    while word.load(Ordering::Acquire) == 0 {
        assert_ne!(futex::wait_until(word, 0, Some(deadline)), WaitResult::TimedOut);
    }
    assert_eq!(word.load(Ordering::Acquire), 7);
    assert_eq!(reap(&mut c), ExitStatus::Exited(0));
}
