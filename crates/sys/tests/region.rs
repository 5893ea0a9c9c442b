//! Tests of `mp_sys::region`: memfd regions shared with forked children, by
//! inheritance and by passing the descriptor, grown, and never left behind.

mod common;

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use common::{fork_child, fork_lock, reap};
use mp_sys::process::ExitStatus;
use mp_sys::region::Region;
use mp_sys::socket::{self, SocketKind};

#[test]
fn a_forked_child_writes_and_the_parent_reads() {
    let _g = fork_lock();
    let r = Region::create("t", 4096).unwrap();
    let mut c = fork_child(|| {
        r.write(100, b"from the child").unwrap();
        r.atomic_u64(8).unwrap().store(0xfeed, Ordering::Release);
        0
    });
    assert_eq!(reap(&mut c), ExitStatus::Exited(0));
    let mut b = [0u8; 14];
    r.read(100, &mut b).unwrap();
    assert_eq!(&b, b"from the child");
    assert_eq!(r.atomic_u64(8).unwrap().load(Ordering::Acquire), 0xfeed);
}

#[test]
fn a_region_made_after_the_fork_reaches_the_child_by_its_fd() {
    let _g = fork_lock();
    let (a, b) = socket::socketpair(SocketKind::Stream).unwrap();
    let mut c = fork_child(move || {
        let mut buf = [0u8; 1];
        let mut fds = Vec::new();
        socket::recv_with_fds(b.as_fd(), &mut buf, &mut fds).unwrap();
        let r = Region::from_fd(fds.pop().unwrap()).unwrap();
        r.write(0, b"seen").unwrap();
        r.atomic_u32(4096).unwrap().fetch_add(1, Ordering::AcqRel);
        i32::try_from(r.len() / 4096).unwrap()
    });
    let r = Region::create("late", 3 * 4096).unwrap();
    socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"r")], &[r.as_fd()]).unwrap();
    assert_eq!(reap(&mut c), ExitStatus::Exited(3));
    let mut got = [0u8; 4];
    r.read(0, &mut got).unwrap();
    assert_eq!(&got, b"seen");
    assert_eq!(r.atomic_u32(4096).unwrap().load(Ordering::Acquire), 1);
}

#[test]
fn growth_is_seen_after_refresh_in_another_process() {
    let _g = fork_lock();
    let mut r = Region::create("grow", 64).unwrap();
    let mut c = fork_child(|| {
        let mut mine = r.try_clone().unwrap();
        mine.grow(1 << 20).unwrap();
        mine.write((1 << 20) - 4, b"tail").unwrap();
        0
    });
    assert_eq!(reap(&mut c), ExitStatus::Exited(0));
    assert_eq!(r.len(), 64);
    assert_eq!(r.refresh().unwrap(), 1 << 20);
    let mut b = [0u8; 4];
    r.read((1 << 20) - 4, &mut b).unwrap();
    assert_eq!(&b, b"tail");
}

#[test]
fn bad_sizes_offsets_and_descriptors_are_errors() {
    // Holds the lock so its pipe never shows in another test's fd count.
    let _g = fork_lock();
    assert!(Region::create("zero", 0).is_err());
    assert!(Region::create("nul\0", 8).is_err());
    let r = Region::create("small", 16).unwrap();
    assert!(r.write(15, b"ab").is_err());
    assert!(r.write(usize::MAX, b"a").is_err());
    assert!(r.atomic_u32(14).is_err());
    assert!(r.atomic_u32(1).is_err());
    assert!(r.atomic_u64(4).is_err());
    let (p, _w) = mp_sys::fd::pipe().unwrap();
    let err = Region::from_fd(p).unwrap_err();
    assert!(err.to_string().contains("not a shared region"), "{err}");
}

fn dev_shm_entries() -> usize {
    std::fs::read_dir("/dev/shm").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_thousand_regions_leave_no_fd_and_nothing_in_dev_shm() {
    let _g = fork_lock(); // Keeps the fd count free of other tests' forks.
    let shm = dev_shm_entries();
    let fds = mp_sys::fd::count_open_fds().unwrap();
    let regions: Vec<Region> = (0..1000)
        .map(|i| Region::create(&format!("r{i}"), 4096).unwrap())
        .collect();
    assert_eq!(mp_sys::fd::count_open_fds().unwrap(), fds + 1000);
    assert_eq!(dev_shm_entries(), shm);
    drop(regions);
    assert_eq!(mp_sys::fd::count_open_fds().unwrap(), fds);
}

#[test]
fn memory_outlives_the_creator_while_another_holder_lives() {
    let _g = fork_lock();
    let (a, b) = socket::socketpair(SocketKind::Stream).unwrap();
    let r = Region::create("kept", 4096).unwrap();
    r.write(0, b"alive").unwrap();
    socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"r")], &[r.as_fd()]).unwrap();
    drop(r);
    // The only reference is now the descriptor in flight in the socket.
    let mut buf = [0u8; 1];
    let mut fds = Vec::new();
    socket::recv_with_fds(b.as_fd(), &mut buf, &mut fds).unwrap();
    let r = Region::from_fd(fds.pop().unwrap()).unwrap();
    let mut got = [0u8; 5];
    r.read(0, &mut got).unwrap();
    assert_eq!(&got, b"alive");
}
