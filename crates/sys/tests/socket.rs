//! Tests of `mp_sys::socket`: bytes and descriptors in one message, to a
//! forked child and back, and the errors at the edges.

mod common;

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};

use common::{fork_child, fork_lock, reap};
use mp_sys::fd;
use mp_sys::process::ExitStatus;
use mp_sys::socket::{self, MAX_FDS_PER_MESSAGE, SocketKind};

fn recv(sock: std::os::fd::BorrowedFd<'_>, n: usize) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut buf = vec![0u8; n];
    let mut fds = Vec::new();
    let got = socket::recv_with_fds(sock, &mut buf, &mut fds).unwrap();
    assert!(!got.fds_truncated);
    buf.truncate(got.bytes);
    (buf, fds)
}

#[test]
fn descriptors_arrive_in_order_and_close_on_exec() {
    let (a, b) = socket::socketpair(SocketKind::Stream).unwrap();
    let pipes: Vec<_> = (0..3).map(|_| fd::pipe().unwrap()).collect();
    let ws: Vec<_> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
    let n = socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"ab"), IoSlice::new(b"cd")], &ws).unwrap();
    assert_eq!(n, 4);
    let (bytes, fds) = recv(b.as_fd(), 16);
    assert_eq!(bytes, b"abcd");
    assert_eq!(fds.len(), 3);
    for (i, (f, (r, _))) in fds.iter().zip(&pipes).enumerate() {
        assert!(fd::is_cloexec(f.as_fd()).unwrap());
        fd::write(f.as_fd(), &[i as u8]).unwrap();
        let mut x = [9u8];
        fd::read(r.as_fd(), &mut x).unwrap();
        assert_eq!(x, [i as u8], "descriptor {i} is not the {i}th pipe");
    }
}

#[test]
fn too_many_descriptors_is_an_error_not_a_truncation() {
    let (a, _b) = socket::socketpair(SocketKind::Stream).unwrap();
    let (r, _w) = fd::pipe().unwrap();
    let many = vec![r.as_fd(); MAX_FDS_PER_MESSAGE + 1];
    let err = socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"x")], &many).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let exactly = vec![r.as_fd(); MAX_FDS_PER_MESSAGE];
    socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"x")], &exactly).unwrap();
    let (_, fds) = recv(_b.as_fd(), 1);
    assert_eq!(fds.len(), MAX_FDS_PER_MESSAGE);
}

#[test]
fn a_closed_peer_is_eof_and_broken_pipe_without_sigpipe() {
    // A fork by another test while `b` is open would give the child a copy,
    // and the peer would not be closed.
    let _g = fork_lock();
    let (a, b) = socket::socketpair(SocketKind::Stream).unwrap();
    drop(b);
    let err = socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"x")], &[]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    let (c, d) = socket::socketpair(SocketKind::SeqPacket).unwrap();
    drop(c);
    assert_eq!(recv(d.as_fd(), 8).0, b"");
}

#[test]
fn seqpacket_keeps_message_boundaries() {
    let (a, b) = socket::socketpair(SocketKind::SeqPacket).unwrap();
    socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"one")], &[]).unwrap();
    socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"two!")], &[]).unwrap();
    assert_eq!(recv(b.as_fd(), 64).0, b"one");
    assert_eq!(recv(b.as_fd(), 64).0, b"two!");
}

#[test]
fn a_forked_child_writes_through_a_received_descriptor() {
    let _g = fork_lock();
    let (a, b) = socket::socketpair(SocketKind::Stream).unwrap();
    let mut c = fork_child(move || {
        let (bytes, fds) = recv(b.as_fd(), 16);
        let Some(w) = fds.first() else { return 1 };
        fd::write_all(w.as_fd(), &bytes).unwrap();
        i32::try_from(socket::peer_pid(b.as_fd()).unwrap() % 100).unwrap()
    });
    // The pipe is made after the fork: the child can only get it by message.
    let (r, w) = fd::pipe().unwrap();
    socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"relay")], &[w.as_fd()]).unwrap();
    drop(w);
    let expected_pid = i32::try_from(mp_sys::process::pid() % 100).unwrap();
    assert_eq!(reap(&mut c), ExitStatus::Exited(expected_pid));
    let mut got = [0u8; 8];
    let n = fd::read(r.as_fd(), &mut got).unwrap();
    assert_eq!(&got[..n], b"relay");
}
