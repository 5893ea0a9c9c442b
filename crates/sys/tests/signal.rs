//! Tests of `mp_sys::signal`: `kill`, and the parent-death signal of a child
//! whose parent dies.

mod common;

use std::os::fd::AsFd;

use common::{PATIENCE, fork_child, fork_lock, reap};
use mp_sys::fd::{self, PollFd};
use mp_sys::process::{self, Child, ExitStatus};
use mp_sys::signal::{self, Signal};

#[test]
fn kill_refuses_groups_and_reaches_one_process() {
    assert!(signal::kill(0, Signal::TERM).is_err());
    assert!(signal::kill(u32::MAX, Signal::TERM).is_err());
    let _g = fork_lock();
    let mut c = fork_child(|| {
        loop {
            std::thread::park();
        }
    });
    signal::kill(c.pid(), Signal::TERM).unwrap();
    assert_eq!(reap(&mut c).exitcode(), -15);
}

#[test]
fn names_and_numbers() {
    assert_eq!(Signal::from_raw(15), Some(Signal::TERM));
    assert_eq!(Signal::from_raw(-1), None);
    assert_eq!(format!("{:?}", Signal::KILL), "SIGKILL(9)");
    assert_eq!(Signal::from_raw(40).map(Signal::name), Some("SIG?"));
}

#[test]
fn a_grandchild_with_a_death_signal_dies_with_its_parent() {
    let _g = fork_lock();
    let (r, w) = fd::pipe().unwrap();
    // The child forks a grandchild that asks for SIGKILL at its parent's
    // death, reports the grandchild's pid, and exits.
    let mut c = fork_child(move || {
        let (ready_r, ready_w) = fd::pipe().unwrap();
        let gc = fork_child(|| {
            signal::set_parent_death_signal(Some(Signal::KILL)).unwrap();
            fd::write_all(ready_w.as_fd(), b"k").unwrap();
            loop {
                std::thread::park();
            }
        });
        // Exit only once the grandchild has its death signal set.
        let mut b = [0u8; 1];
        let mut set = [PollFd::readable(ready_r.as_fd())];
        if fd::poll(&mut set, Some(PATIENCE)).unwrap() != 1 || fd::read(ready_r.as_fd(), &mut b).unwrap() != 1 {
            return 3;
        }
        fd::write_all(w.as_fd(), &gc.pid().to_ne_bytes()).unwrap();
        std::mem::forget(gc);
        0
    });
    let mut pid = [0u8; 4];
    let mut set = [PollFd::readable(r.as_fd())];
    assert_eq!(fd::poll(&mut set, Some(PATIENCE)).unwrap(), 1);
    assert_eq!(fd::read(r.as_fd(), &mut pid).unwrap(), 4);
    let gc_pid = u32::from_ne_bytes(pid);
    assert_eq!(reap(&mut c), ExitStatus::Exited(0));
    // Not our child, so it cannot be reaped here; its pidfd still turns
    // readable when it dies. If it is gone already, pidfd_open fails.
    if let Ok(gc) = Child::from_pid(gc_pid) {
        let mut set = [PollFd::readable(gc.pidfd())];
        assert_eq!(
            fd::poll(&mut set, Some(PATIENCE)).unwrap(),
            1,
            "grandchild {gc_pid} outlived its parent"
        );
    }
    assert_ne!(process::pid(), gc_pid);
}
