//! Tests of `mp_sys::fd`: close-on-exec, poll timeouts, descriptor counts.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mp_sys::fd::{self, PollFd};

#[test]
fn cloexec_round_trip() {
    let (r, _w) = fd::pipe().unwrap();
    assert!(fd::is_cloexec(r.as_fd()).unwrap());
    fd::set_cloexec(r.as_fd(), false).unwrap();
    assert!(!fd::is_cloexec(r.as_fd()).unwrap());
    fd::set_cloexec(r.as_fd(), true).unwrap();
    assert!(fd::is_cloexec(r.as_fd()).unwrap());
}

#[test]
fn poll_waits_for_its_timeout_then_sees_data_and_hangup() {
    let (r, w) = fd::pipe().unwrap();
    let t = Duration::from_millis(100);
    let t0 = Instant::now();
    let mut set = [PollFd::readable(r.as_fd())];
    assert_eq!(fd::poll(&mut set, Some(t)).unwrap(), 0);
    assert!(t0.elapsed() >= t);
    assert!(!set[0].is_ready());
    drop(w);
    assert_eq!(fd::poll(&mut set, Some(t)).unwrap(), 1);
    assert!(set[0].is_ready() && set[0].is_hup());
}

#[test]
fn open_fds_lists_new_descriptors() {
    let before = fd::open_fds().unwrap();
    let (r, w) = fd::pipe().unwrap();
    let after = fd::open_fds().unwrap();
    use std::os::fd::AsRawFd;
    assert!(after.contains(&r.as_raw_fd()) && after.contains(&w.as_raw_fd()));
    assert!(!before.contains(&r.as_raw_fd()) || !before.contains(&w.as_raw_fd()));
    assert!(fd::is_valid(r.as_raw_fd()));
}
