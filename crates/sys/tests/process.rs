//! Tests of `mp_sys::process`: fork, reaping with timeouts, signals through
//! the pidfd, re-executing the current binary.

mod common;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use common::{PATIENCE, fork_child, fork_lock, reap};
use mp_sys::fd::{self, PollFd};
use mp_sys::process::{self, Child, ExitStatus, SpawnOptions};
use mp_sys::signal::{self, Signal};

#[test]
fn exit_code_reaches_the_parent() {
    let _g = fork_lock();
    for code in [0, 1, 42, 255] {
        let mut child = fork_child(move || code);
        assert_eq!(reap(&mut child), ExitStatus::Exited(code));
        assert_eq!(child.status(), Some(ExitStatus::Exited(code)));
    }
}

#[test]
fn wait_timeout_returns_none_while_running_and_waits_at_least_the_timeout() {
    let _g = fork_lock();
    let (r, w) = fd::pipe().unwrap();
    let mut child = fork_child(move || {
        // Block until the parent writes.
        let mut b = [0u8; 1];
        let _ = fd::read(r.as_fd(), &mut b);
        i32::from(b[0])
    });
    let t0 = Instant::now();
    assert_eq!(child.wait_timeout(Duration::from_millis(300)).unwrap(), None);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(290), "returned after {waited:?}");
    assert!(
        waited < Duration::from_millis(300) + Duration::from_millis(1500),
        "returned after {waited:?}"
    );
    assert_eq!(child.try_wait().unwrap(), None);
    fd::write(w.as_fd(), &[9]).unwrap();
    assert_eq!(reap(&mut child), ExitStatus::Exited(9));
}

fn sleeping_child() -> Child {
    fork_child(|| {
        loop {
            std::thread::park();
        }
    })
}

#[test]
fn terminate_and_kill_give_python_exit_codes() {
    let _g = fork_lock();
    let mut c = sleeping_child();
    c.signal(Signal::TERM).unwrap();
    let s = reap(&mut c);
    assert_eq!((s.signal(), s.exitcode()), (Some(Signal::TERM), -15));

    let mut c = sleeping_child();
    signal::kill(c.pid(), Signal::KILL).unwrap();
    let s = reap(&mut c);
    assert_eq!((s, s.exitcode()), (ExitStatus::Signaled(Signal::KILL), -9));
    assert_eq!(s.to_string(), "killed by SIGKILL");
}

#[test]
fn signal_after_reap_is_an_error() {
    let _g = fork_lock();
    let mut c = fork_child(|| 0);
    reap(&mut c);
    let err = c.signal(Signal::TERM).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn pidfd_turns_readable_when_the_child_exits() {
    let _g = fork_lock();
    let (r, w) = fd::pipe().unwrap();
    let mut c = fork_child(move || {
        let mut b = [0u8; 1];
        let _ = fd::read(r.as_fd(), &mut b);
        0
    });
    let mut set = [PollFd::readable(c.pidfd())];
    assert_eq!(fd::poll(&mut set, Some(Duration::from_millis(50))).unwrap(), 0);
    fd::write(w.as_fd(), &[0]).unwrap(); // The child reads it and exits.
    let mut set = [PollFd::readable(c.pidfd())];
    assert_eq!(fd::poll(&mut set, Some(PATIENCE)).unwrap(), 1);
    assert_eq!(reap(&mut c), ExitStatus::Exited(0));
}

#[test]
fn dropping_an_exited_child_reaps_it() {
    let _g = fork_lock();
    let c = fork_child(|| 0);
    let pid = c.pid();
    let mut set = [PollFd::readable(c.pidfd())];
    fd::poll(&mut set, Some(PATIENCE)).unwrap();
    drop(c);
    // A zombie would still have a /proc entry.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} left as a zombie"
    );
}

#[test]
fn from_pid_refuses_what_is_not_a_process() {
    assert!(Child::from_pid(0).is_err());
    assert!(Child::from_pid(u32::MAX).is_err());
}

#[test]
fn thread_count_sees_new_threads() {
    let before = process::thread_count().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    assert!(process::thread_count().unwrap() > before.min(1));
    tx.send(()).unwrap();
    t.join().unwrap().unwrap();
}

/// `fork_run` is safe, so it must not fork where `fork`'s contract forbids
/// the child to run arbitrary code: with another thread running (a libtest
/// binary always has one, and this test holds a second), it refuses and says
/// what to do instead, and no child is made.
#[test]
fn fork_run_refuses_in_a_threaded_process() {
    let _g = common::fork_lock();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || rx.recv());
    let before = process::thread_count().unwrap();
    let got = process::fork_run(|| 0);
    let _ = tx.send(());
    let _ = helper.join();
    assert!(before >= 2, "the test runs {before} threads");
    match got {
        Ok(mut child) => {
            let _ = common::reap(&mut child);
            panic!("fork_run forked a process that runs {before} threads");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("threads"), "{msg}");
            assert!(
                msg.contains("spawn"),
                "the error does not say what to use instead: {msg}"
            );
        }
    }
}

#[test]
fn parent_pid_in_a_forked_child_is_the_parent() {
    let _g = fork_lock();
    let me = process::pid();
    let mut c = fork_child(move || i32::from(process::parent_pid() != me));
    assert_eq!(reap(&mut c), ExitStatus::Exited(0));
}

/// The environment variable that turns this test binary, re-executed by
/// `spawn_self`, into a child that runs one scenario.
const CHILD_ENV: &str = "MP_SYS_TEST_SPAWN_CHILD";

/// Runs in the re-executed binary (selected with `--exact`): writes its pid to
/// the inherited fd named by the environment, or sleeps until killed, as asked.
#[test]
fn spawn_child_entry() {
    let Ok(what) = std::env::var(CHILD_ENV) else { return };
    let fd: i32 = std::env::var("MP_SYS_TEST_FD").unwrap().parse().unwrap();
    // SAFETY: the parent made this descriptor inheritable on purpose and
    // named it in the environment; this process never closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    match what.as_str() {
        "write" => {
            let msg = format!("hello from {}", process::pid());
            fd::write_all(fd, msg.as_bytes()).unwrap();
            process::exit_now(3)
        }
        "block" => {
            // Sleep until a signal ends this process.
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn spawn_scenario(what: &str, extra: impl FnOnce(SpawnOptions) -> SpawnOptions) -> (Child, std::os::fd::OwnedFd) {
    let (r, w) = fd::pipe().unwrap();
    assert!(fd::is_cloexec(w.as_fd()).unwrap());
    let opts = SpawnOptions::new()
        .arg("spawn_child_entry")
        .arg("--exact")
        .arg("--quiet")
        .arg("--test-threads=1")
        .env(CHILD_ENV, what)
        .env("MP_SYS_TEST_FD", w.as_raw_fd().to_string())
        .inherit_fd(w.as_fd());
    let child = process::spawn_self(&extra(opts)).unwrap();
    // The parent's copy stays close-on-exec: only the child's was cleared.
    assert!(fd::is_cloexec(w.as_fd()).unwrap());
    drop(w);
    (child, r)
}

fn read_to_end(r: BorrowedFd<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let mut set = [PollFd::readable(r)];
        assert_eq!(
            fd::poll(&mut set, Some(PATIENCE)).unwrap(),
            1,
            "child wrote nothing in time"
        );
        match fd::read(r, &mut buf).unwrap() {
            0 => return out,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn spawn_self_runs_this_binary_with_an_inherited_fd() {
    let (mut child, r) = spawn_scenario("write", |o| o);
    let got = String::from_utf8(read_to_end(r.as_fd())).unwrap();
    assert_eq!(got, format!("hello from {}", child.pid()));
    assert_eq!(reap(&mut child), ExitStatus::Exited(3));
}

#[test]
fn spawn_self_child_dies_with_its_spawning_thread_when_asked() {
    // PR_SET_PDEATHSIG fires when the *thread* that spawned the child ends.
    let (mut child, r) = std::thread::spawn(|| spawn_scenario("block", |o| o.parent_death_signal(Signal::KILL)))
        .join()
        .unwrap();
    let t0 = Instant::now();
    let s = reap(&mut child);
    assert_eq!(s, ExitStatus::Signaled(Signal::KILL), "after {:?}", t0.elapsed());
    // The child never wrote: the write end is closed now that it is dead.
    assert_eq!(read_to_end(r.as_fd()), b"");
}

#[test]
fn spawn_self_refuses_a_nul_in_an_argument() {
    let err = process::spawn_self(&SpawnOptions::new().arg("a\0b")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
