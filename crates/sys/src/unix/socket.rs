//! Unix socket pairs and `SCM_RIGHTS`: bytes and file descriptors in one
//! message.
//!
//! On a stream socket the descriptors ride with the first byte of the
//! `sendmsg` that carried them, and the kernel never merges that byte into a
//! read that started before it. A receiver that reads a message's header on its
//! own therefore gets exactly that message's descriptors (see `mp-codec`).
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self as nix_socket, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, sockopt,
};

use super::{invalid_input, retry};

/// The most descriptors one message can carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// The kind of socket [`socketpair`] makes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SocketKind {
    /// `SOCK_STREAM`: a byte stream, any message size, boundaries are the
    /// caller's business.
    Stream,
    /// `SOCK_SEQPACKET`: message boundaries kept, size bounded by the socket
    /// buffer.
    SeqPacket,
}

/// A connected pair of Unix sockets, both close-on-exec.
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// # drop((a, b));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn socketpair(kind: SocketKind) -> io::Result<(OwnedFd, OwnedFd)> {
    let ty = match kind {
        SocketKind::Stream => SockType::Stream,
        SocketKind::SeqPacket => SockType::SeqPacket,
    };
    Ok(nix_socket::socketpair(
        AddressFamily::Unix,
        ty,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Space for the control message of [`MAX_FDS_PER_MESSAGE`] descriptors
/// (`CMSG_SPACE`: the header, then the data, each padded to 8 bytes).
const CMSG_SPACE: usize = {
    let align = size_of::<usize>();
    let hdr = size_of::<libc::cmsghdr>().div_ceil(align) * align;
    hdr + (MAX_FDS_PER_MESSAGE * size_of::<RawFd>()).div_ceil(align) * align
};

/// Sends the bytes of `bufs` with `fds` attached (`sendmsg` with
/// `SCM_RIGHTS`), retried on `EINTR`. Returns how many bytes were sent: a
/// stream socket may take fewer than all, and the descriptors went with the
/// first byte. Never raises `SIGPIPE`: a closed peer is `BrokenPipe`.
///
/// ```
/// use mp_sys::socket::{recv_with_fds, send_with_fds, socketpair, SocketKind};
/// use std::io::IoSlice;
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// let (r, _w) = mp_sys::fd::pipe()?;
/// send_with_fds(a.as_fd(), &[IoSlice::new(b"hi")], &[r.as_fd()])?;
/// let (mut buf, mut fds) = ([0u8; 2], Vec::new());
/// let got = recv_with_fds(b.as_fd(), &mut buf, &mut fds)?;
/// assert_eq!((got.bytes, fds.len()), (2, 1));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn send_with_fds(sock: BorrowedFd<'_>, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    send_with_flags(sock, bufs, fds, MsgFlags::MSG_NOSIGNAL)
}

/// [`send_with_fds`] that never blocks (`MSG_DONTWAIT`): when the socket's
/// buffer is full it fails at once with [`io::ErrorKind::WouldBlock`] and
/// nothing is sent.
///
/// ```
/// use mp_sys::socket::{socketpair, try_send_with_fds, SocketKind};
/// use std::io::IoSlice;
/// use std::os::fd::AsFd;
/// let (a, _b) = socketpair(SocketKind::Stream)?;
/// let big = vec![0u8; 1 << 16];
/// let full = loop {
///     match try_send_with_fds(a.as_fd(), &[IoSlice::new(&big)], &[]) {
///         Ok(_) => continue,
///         Err(e) => break e,
///     }
/// };
/// assert_eq!(full.kind(), std::io::ErrorKind::WouldBlock);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn try_send_with_fds(sock: BorrowedFd<'_>, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    send_with_flags(sock, bufs, fds, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT)
}

fn send_with_flags(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: MsgFlags,
) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(invalid_input(format!(
            "{} descriptors in one message; the kernel carries at most {MAX_FDS_PER_MESSAGE}",
            fds.len()
        )));
    }
    let mut raw = [0 as RawFd; MAX_FDS_PER_MESSAGE];
    for (slot, fd) in raw.iter_mut().zip(fds) {
        *slot = fd.as_raw_fd();
    }
    let rights = [ControlMessage::ScmRights(&raw[..fds.len()])];
    // With no descriptors, no control message: nix then allocates nothing.
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    retry(|| nix_socket::sendmsg::<()>(sock.as_raw_fd(), bufs, cmsgs, flags, None))
}

/// What [`recv_with_fds`] received.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Received {
    /// Bytes written into the buffer; 0 means the peer closed the socket.
    pub bytes: usize,
    /// The sender attached more descriptors than fit: some were lost
    /// (`MSG_CTRUNC`). The message cannot be trusted.
    pub fds_truncated: bool,
}

/// Receives bytes into `buf` and appends the descriptors that came with them
/// to `fds` (close-on-exec), retried on `EINTR`.
///
/// ```
/// use mp_sys::socket::{recv_with_fds, socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// drop(a);
/// let (mut buf, mut fds) = ([0u8; 8], Vec::new());
/// assert_eq!(recv_with_fds(b.as_fd(), &mut buf, &mut fds)?.bytes, 0); // peer closed
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<Received> {
    recv_with_flags(sock, buf, fds, MsgFlags::MSG_CMSG_CLOEXEC)
}

/// [`recv_with_fds`] that never blocks (`MSG_DONTWAIT`): when nothing is
/// queued it fails at once with [`io::ErrorKind::WouldBlock`]. For a short
/// spin before a blocking receive.
///
/// ```
/// use mp_sys::socket::{socketpair, try_recv_with_fds, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// let (mut buf, mut fds) = ([0u8; 8], Vec::new());
/// let err = try_recv_with_fds(b.as_fd(), &mut buf, &mut fds).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
/// mp_sys::fd::write(a.as_fd(), b"x")?;
/// assert_eq!(try_recv_with_fds(b.as_fd(), &mut buf, &mut fds)?.bytes, 1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn try_recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<Received> {
    recv_with_flags(sock, buf, fds, MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT)
}

/// Copies the bytes at the front of `sock`'s queue into `buf` without
/// taking them off (`MSG_PEEK`) and without blocking (`MSG_DONTWAIT`):
/// how many were copied, 0 when the peer closed, and
/// [`io::ErrorKind::WouldBlock`] when nothing is queued. Descriptors sent with
/// the bytes stay queued with them.
///
/// ```
/// use mp_sys::socket::{socketpair, try_peek, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// let mut buf = [0u8; 8];
/// assert_eq!(try_peek(b.as_fd(), &mut buf).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
/// mp_sys::fd::write(a.as_fd(), b"xyz")?;
/// assert_eq!(try_peek(b.as_fd(), &mut buf)?, 3);
/// assert_eq!(try_peek(b.as_fd(), &mut buf)?, 3); // still there
/// drop(a);
/// assert_eq!(mp_sys::fd::read(b.as_fd(), &mut buf)?, 3);
/// assert_eq!(try_peek(b.as_fd(), &mut buf)?, 0); // end of file
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn try_peek(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| nix_socket::recv(sock.as_raw_fd(), buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT))
}

fn recv_with_flags(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    flags: MsgFlags,
) -> io::Result<Received> {
    // Room for the most descriptors a message can carry, so the kernel never
    // truncates an `SCM_RIGHTS` message and every descriptor it installed
    // reaches `fds` (and is closed if the caller drops it).
    let mut cmsg = [0u8; CMSG_SPACE];
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match nix_socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg[..]), flags) {
            Err(Errno::EINTR) => {}
            other => break other?,
        }
    };
    let fds_truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(raw.into_iter().map(|fd| {
                    // SAFETY: the kernel installed each descriptor of an
                    // `SCM_RIGHTS` message in this process for this
                    // receive; nothing else knows of it, so it is ours.
                    unsafe { OwnedFd::from_raw_fd(fd) }
                }));
            }
        }
    }
    Ok(Received {
        bytes: msg.bytes,
        fds_truncated,
    })
}

/// The peer's process id, as the kernel saw it when the socket was connected
/// (`SO_PEERCRED`).
///
/// ```
/// use mp_sys::socket::{peer_pid, socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, _b) = socketpair(SocketKind::Stream)?;
/// assert_eq!(peer_pid(a.as_fd())?, std::process::id());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn peer_pid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let cred = nix_socket::getsockopt(&sock, sockopt::PeerCredentials)?;
    Ok(cred.pid().unsigned_abs())
}
