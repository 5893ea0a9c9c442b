//! Helpers shared by mp-sys's test binaries: forking a child that runs a
//! closure, and a lock that keeps forks of parallel tests apart.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different part of this module"
)]

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mp_sys::process::{self, Child, ExitStatus, Fork};

/// How long any test waits for a child before it calls the test failed.
pub const PATIENCE: Duration = Duration::from_secs(20);

static FORKS: Mutex<()> = Mutex::new(());

/// Serializes the tests of one binary that fork, so that one test's child
/// never inherits another test's pipe ends and holds them open.
pub fn fork_lock() -> MutexGuard<'static, ()> {
    FORKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forks a child that runs `f` and exits with the code it returns (101 if it
/// panics). The child never returns into the test harness.
pub fn fork_child(f: impl FnOnce() -> i32) -> Child {
    // SAFETY: the tests that fork hold `fork_lock`, and their closures use only
    // the calls mp-sys documents as safe after a fork (raw reads and writes,
    // atomics, futexes, socket messages); the child ends with `exit_now`.
    match unsafe { process::fork() }.expect("fork") {
        Fork::Child => {
            // A child never outlives the test thread that forked it, even when
            // the test fails before it reaps the child.
            if mp_sys::signal::set_parent_death_signal(Some(mp_sys::signal::Signal::KILL)).is_err() {
                process::exit_now(102);
            }
            let code = panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
            process::exit_now(code)
        }
        Fork::Parent(child) => child,
    }
}

/// Waits for `child` with [`PATIENCE`], failing the test if it is still
/// running then (after killing it).
pub fn reap(child: &mut Child) -> ExitStatus {
    match child.wait_timeout(PATIENCE).expect("wait") {
        Some(status) => status,
        None => {
            let _ = child.signal(mp_sys::signal::Signal::KILL);
            let _ = child.wait_timeout(PATIENCE);
            panic!("child {} still running after {PATIENCE:?}", child.pid());
        }
    }
}
