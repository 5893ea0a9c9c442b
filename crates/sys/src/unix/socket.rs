//! Unix socket pairs and `SCM_RIGHTS`: bytes and file descriptors in one
//! message.
//!
//! On a stream socket the descriptors ride with the first byte of the
//! `sendmsg` that carried them, and the kernel never merges that byte into a
//! read that started before it. A receiver that reads a message's header on its
//! own therefore gets exactly that message's descriptors (see `mp-codec`).
#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use super::{cvt, cvt_r, invalid_input};

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
        SocketKind::Stream => libc::SOCK_STREAM,
        SocketKind::SeqPacket => libc::SOCK_SEQPACKET,
    };
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: socketpair succeeded: both descriptors are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Space for the control message of [`MAX_FDS_PER_MESSAGE`] descriptors,
/// aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; cmsg_space(MAX_FDS_PER_MESSAGE)]);

const fn cmsg_space(nfds: usize) -> usize {
    // CMSG_SPACE for `nfds` ints: header, then data, each padded to 8 bytes.
    let align = mem::size_of::<usize>();
    let hdr = mem::size_of::<libc::cmsghdr>().div_ceil(align) * align;
    hdr + (nfds * mem::size_of::<RawFd>()).div_ceil(align) * align
}

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
    send_with_flags(sock, bufs, fds, libc::MSG_NOSIGNAL)
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
    send_with_flags(sock, bufs, fds, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
}

fn send_with_flags(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(invalid_input(format!(
            "{} descriptors in one message; the kernel carries at most {MAX_FDS_PER_MESSAGE}",
            fds.len()
        )));
    }
    let mut cmsg = CmsgBuf([0; cmsg_space(MAX_FDS_PER_MESSAGE)]);
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len();
    if !fds.is_empty() {
        let data_len = fds.len() * mem::size_of::<RawFd>();
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(fds.len());
        // SAFETY: msg_control points at a buffer of msg_controllen bytes that
        // is aligned for cmsghdr, so the first header is inside it.
        let hdr = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // SAFETY: `hdr` is non-null (controllen >= one header) and points into
        // `cmsg`; CMSG_LEN/CMSG_DATA only compute offsets inside that buffer,
        // which has room for `fds.len()` descriptors.
        unsafe {
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(u32::try_from(data_len).unwrap_or(u32::MAX)) as usize;
            let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                ptr::write_unaligned(data.add(i), fd.as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` points at live iovecs (IoSlice is ABI-compatible with
    // iovec) and a control buffer, both valid for the call.
    let n = cvt_r(|| unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) })?;
    Ok(n.unsigned_abs())
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
    recv_with_flags(sock, buf, fds, libc::MSG_CMSG_CLOEXEC)
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
    recv_with_flags(sock, buf, fds, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT)
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
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call.
    let n = cvt_r(|| unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    })?;
    Ok(n.unsigned_abs())
}

fn recv_with_flags(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    flags: libc::c_int,
) -> io::Result<Received> {
    let mut cmsg = CmsgBuf([0; cmsg_space(MAX_FDS_PER_MESSAGE)]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len();
    // SAFETY: `msg` points at one iovec over `buf` and at `cmsg`, both valid
    // for writes for the call.
    let n = cvt_r(|| unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, flags) })?;
    // SAFETY: after recvmsg, msg_control/msg_controllen describe the control
    // messages the kernel wrote into `cmsg`; CMSG_FIRSTHDR/CMSG_NXTHDR walk
    // them without leaving that buffer.
    let mut hdr = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !hdr.is_null() {
        // SAFETY: `hdr` is a header inside `cmsg` (checked non-null above).
        let (level, ty, len) = unsafe { ((*hdr).cmsg_level, (*hdr).cmsg_type, (*hdr).cmsg_len) };
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a constant computation.
            let base = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = len.saturating_sub(base) / mem::size_of::<RawFd>();
            // SAFETY: the kernel wrote `count` descriptors after the header;
            // each is a new descriptor installed for us that nothing else owns.
            unsafe {
                let data = libc::CMSG_DATA(hdr).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(ptr::read_unaligned(data.add(i))));
                }
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR above.
        hdr = unsafe { libc::CMSG_NXTHDR(&msg, hdr) };
    }
    Ok(Received {
        bytes: n.unsigned_abs(),
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
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
    let mut cred = MaybeUninit::<libc::ucred>::zeroed();
    let mut len = libc::socklen_t::try_from(mem::size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: `cred` is a valid out-buffer of `len` bytes for SO_PEERCRED.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            cred.as_mut_ptr().cast(),
            &raw mut len,
        )
    })?;
    // SAFETY: getsockopt filled the struct (it was zeroed before in any case).
    let cred = unsafe { cred.assume_init() };
    Ok(cred.pid.unsigned_abs())
}
