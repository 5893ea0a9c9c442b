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
    std::thread::sleep(Duration::from_millis(20));
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
    let deadline = Instant::now() + PATIENCE;
    // wake returns 1 only once the child is asleep on this very word.
    while futex::wake(word, 1) == 0 {
        assert!(Instant::now() < deadline, "the child never slept on the futex");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(reap(&mut c), ExitStatus::Exited(0));
}

#[test]
fn a_child_wakes_its_parent() {
    let _g = fork_lock();
    let r = Region::create("futex2", 64).unwrap();
    let mut c = fork_child(|| {
        let word = r.atomic_u32(8).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        word.store(7, Ordering::Release);
        futex::wake_all(word);
        0
    });
    let word = r.atomic_u32(8).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while word.load(Ordering::Acquire) == 0 {
        assert_ne!(futex::wait_until(word, 0, Some(deadline)), WaitResult::TimedOut);
    }
    assert_eq!(word.load(Ordering::Acquire), 7);
    assert_eq!(reap(&mut c), ExitStatus::Exited(0));
}
