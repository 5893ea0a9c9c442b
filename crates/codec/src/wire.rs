//! Frames over a Unix stream socket: the header, the payload, and the
//! descriptors with `SCM_RIGHTS` on the header's first byte.
//!
//! One frame must be written by one thread at a time, and read by one thread
//! at a time; the layers above (connections, queues) hold a lock around
//! these calls.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use mp_sys::fd::{self, PollFd};
use mp_sys::socket;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;
use crate::frame::{self, Frame, HEADER_LEN, Header, Limits};

/// Writes `frame` to the stream socket `sock`: all its bytes, with its
/// descriptors attached to the first. Waits for room if the socket is
/// non-blocking.
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// mp_codec::send_frame(a.as_fd(), &mp_codec::encode(&"ping")?)?;
/// let f = mp_codec::recv_frame(b.as_fd(), &Default::default())?;
/// assert_eq!(mp_codec::decode::<String>(f)?, "ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send_frame(sock: BorrowedFd<'_>, frame: &Frame) -> Result<(), CodecError> {
    let bytes = frame.as_bytes();
    let fds: Vec<BorrowedFd<'_>> = frame.fds().iter().map(AsFd::as_fd).collect();
    let mut sent = 0;
    while sent < bytes.len() {
        // The descriptors go with the first byte, and only once.
        let attach: &[BorrowedFd<'_>] = if sent == 0 { &fds } else { &[] };
        match socket::send_with_fds(sock, &[IoSlice::new(&bytes[sent..])], attach) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                fd::poll(&mut [PollFd::writable(sock)], None)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads one frame from `sock`, blocking until it arrives.
///
/// Returns [`CodecError::Eof`] when the peer closed the socket before the
/// frame began, and [`CodecError::Truncated`] when it closed in the middle.
/// The descriptors must come with the header, as [`send_frame`] sends them.
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// drop(a);
/// let err = mp_codec::recv_frame(b.as_fd(), &Default::default()).unwrap_err();
/// assert!(err.is_eof());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn recv_frame(sock: BorrowedFd<'_>, limits: &Limits) -> Result<Frame, CodecError> {
    let mut head = [0u8; HEADER_LEN];
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut got = 0;
    let mut truncated_fds = false;
    while got < HEADER_LEN {
        let r = match socket::recv_with_fds(sock, &mut head[got..], &mut fds) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                fd::poll(&mut [PollFd::readable(sock)], None)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        truncated_fds |= r.fds_truncated;
        if r.bytes == 0 {
            return Err(if got == 0 {
                CodecError::Eof
            } else {
                CodecError::Truncated {
                    expected: HEADER_LEN,
                    got,
                }
            });
        }
        got += r.bytes;
    }
    let h = Header::parse(&head, limits)?;
    let mut buf = vec![0u8; HEADER_LEN + h.len];
    buf[..HEADER_LEN].copy_from_slice(&head);
    read_exact(sock, &mut buf, HEADER_LEN)?;
    if truncated_fds {
        return Err(CodecError::FdCount {
            announced: h.nfds,
            received: fds.len(),
        });
    }
    Frame::from_wire(buf, fds, limits)
}

/// Like [`recv_frame`], but fails with [`CodecError::Timeout`] when no frame
/// begins to arrive within `timeout` (nothing is consumed then). Once a frame
/// has begun, the rest of it is awaited.
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// use std::time::Duration;
/// let (_a, b) = socketpair(SocketKind::Stream)?;
/// let err = mp_codec::recv_frame_timeout(b.as_fd(), &Default::default(), Duration::from_millis(10));
/// assert!(matches!(err, Err(mp_codec::CodecError::Timeout)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn recv_frame_timeout(sock: BorrowedFd<'_>, limits: &Limits, timeout: Duration) -> Result<Frame, CodecError> {
    if fd::poll(&mut [PollFd::readable(sock)], Some(timeout))? == 0 {
        return Err(CodecError::Timeout);
    }
    recv_frame(sock, limits)
}

fn read_exact(sock: BorrowedFd<'_>, buf: &mut [u8], mut at: usize) -> Result<(), CodecError> {
    while at < buf.len() {
        match fd::read(sock, &mut buf[at..]) {
            Ok(0) => {
                return Err(CodecError::Truncated {
                    expected: buf.len(),
                    got: at,
                });
            }
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                fd::poll(&mut [PollFd::readable(sock)], None)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Encodes `value` and sends it on `sock`: [`encode`](crate::encode) then
/// [`send_frame`].
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// mp_codec::send(a.as_fd(), &(1u8, "two", [3.0f64]))?;
/// let v: (u8, String, [f64; 1]) = mp_codec::recv(b.as_fd())?;
/// assert_eq!(v.1, "two");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send<T: Serialize + ?Sized>(sock: BorrowedFd<'_>, value: &T) -> Result<(), CodecError> {
    send_frame(sock, &frame::encode(value)?)
}

/// Receives one frame from `sock` and decodes it as a `T`, with the default
/// [`Limits`].
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// mp_codec::send(a.as_fd(), &-5i64)?;
/// assert_eq!(mp_codec::recv::<i64>(b.as_fd())?, -5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn recv<T: DeserializeOwned>(sock: BorrowedFd<'_>) -> Result<T, CodecError> {
    frame::decode(recv_frame(sock, &Limits::default())?)
}
