//! Frames over a Unix stream socket: the header, the payload, and the
//! descriptors with `SCM_RIGHTS` on the header's first byte.
//!
//! One frame must be written by one thread at a time, and read by one thread
//! at a time; the layers above (connections, queues) hold a lock around
//! these calls.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use mp_sys::fd::{self, PollFd};
use mp_sys::socket;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;
use crate::frame::{self, Frame, FrameKind, HEADER_LEN, Header, Limits};
use mp_sys::time::Deadline;

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

/// Writes a raw-bytes frame ([`FrameKind::Bytes`], Python's `send_bytes`)
/// holding `data` to `sock`: the header and `data` go out in one `sendmsg`
/// from where they are, without copying `data` into a frame first.
///
/// Fails with [`CodecError::TooLarge`] before writing anything when `data`
/// is longer than `limits.max_frame_len` (a receiver with the same limits
/// would refuse it).
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// mp_codec::send_bytes(a.as_fd(), b"raw", &Default::default())?;
/// let f = mp_codec::recv_frame(b.as_fd(), &Default::default())?;
/// assert_eq!((f.kind(), f.payload()), (mp_codec::FrameKind::Bytes, &b"raw"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send_bytes(sock: BorrowedFd<'_>, data: &[u8], limits: &Limits) -> Result<(), CodecError> {
    if data.len() > limits.max_frame_len.min(u32::MAX as usize) {
        return Err(CodecError::TooLarge {
            len: data.len(),
            max: limits.max_frame_len.min(u32::MAX as usize),
        });
    }
    let mut head = [0u8; HEADER_LEN];
    Header {
        len: data.len(),
        nfds: 0,
        kind: FrameKind::Bytes,
    }
    .write(&mut head);
    let total = HEADER_LEN + data.len();
    let mut sent = 0;
    while sent < total {
        let r = if sent < HEADER_LEN {
            socket::send_with_fds(sock, &[IoSlice::new(&head[sent..]), IoSlice::new(data)], &[])
        } else {
            socket::send_with_fds(sock, &[IoSlice::new(&data[sent - HEADER_LEN..])], &[])
        };
        match r {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                fd::poll(&mut [PollFd::writable(sock)], None)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// How [`recv_header`] waits for a frame to begin.
///
/// ```
/// use std::time::{Duration, Instant};
/// let forever = mp_codec::Wait::default();
/// let bounded = mp_codec::Wait { deadline: mp_sys::time::Deadline::after(Duration::from_secs(1)).instant(), ..forever };
/// # drop(bounded);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wait {
    /// Before sleeping in the kernel, poll the socket without blocking for
    /// up to this long, yielding the CPU (`sched_yield`) between polls. When
    /// the peer answers within it, this saves the kernel's wake-up (tens of
    /// microseconds between idle CPUs); when it does not, the time is spent
    /// on a CPU. Zero: sleep at once.
    pub spin: Duration,
    /// Give up at this instant: [`CodecError::Timeout`] if no byte of the
    /// frame has arrived (nothing consumed, in sync), [`CodecError::Stalled`]
    /// if the header began but did not complete. `None`: wait forever.
    pub deadline: Option<Instant>,
}

/// The header of the next frame and the descriptors that came with it, as
/// [`recv_header`] returns them; the payload is still in the socket.
#[derive(Debug)]
pub struct Incoming {
    /// The parsed and checked header.
    pub header: Header,
    /// The descriptors, as many as the header announced.
    pub fds: Vec<OwnedFd>,
}

/// Reads the next frame's header from the stream socket `sock`, with the
/// descriptors sent beside it, and checks it against `limits`. The payload,
/// `header.len` bytes, is left to [`recv_payload`] or
/// [`recv_payload_into`]: a caller can choose where it goes once it knows
/// the length and kind.
///
/// Errors: [`CodecError::Eof`] when the peer closed between frames,
/// [`CodecError::Truncated`] in the middle of the header,
/// [`CodecError::Corrupt`] / [`CodecError::TooLarge`] for a bad header (the
/// stream is out of step then: nothing after it can be trusted, and nothing
/// of the announced size was allocated), [`CodecError::FdCount`] when the
/// descriptors do not match the header (the payload was read and dropped: in
/// sync), [`CodecError::Timeout`] / [`CodecError::Stalled`] per
/// [`Wait::deadline`].
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// mp_codec::send_bytes(a.as_fd(), b"12345", &Default::default())?;
/// let head = mp_codec::recv_header(b.as_fd(), &Default::default(), mp_codec::Wait::default())?;
/// assert_eq!(head.header.len, 5);
/// let mut payload = [0u8; 5];
/// mp_codec::recv_payload_into(b.as_fd(), &mut payload, None)?;
/// assert_eq!(&payload, b"12345");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn recv_header(sock: BorrowedFd<'_>, limits: &Limits, wait: Wait) -> Result<Incoming, CodecError> {
    let mut head = [0u8; HEADER_LEN];
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut got = 0;
    let mut truncated_fds = false;
    let mut spin_until: Option<Instant> = None;
    while got < HEADER_LEN {
        let spinning = got == 0
            && !wait.spin.is_zero()
            && match spin_until {
                None => {
                    spin_until = Deadline::after(wait.spin).instant();
                    true
                }
                Some(until) => Instant::now() < until,
            };
        let r = if spinning {
            socket::try_recv_with_fds(sock, &mut head[got..], &mut fds)
        } else if let Some(deadline) = wait.deadline {
            wait_readable(sock, deadline, got, HEADER_LEN)?;
            socket::try_recv_with_fds(sock, &mut head[got..], &mut fds)
        } else {
            socket::recv_with_fds(sock, &mut head[got..], &mut fds)
        };
        let closed = socket::Received {
            bytes: 0,
            fds_truncated: false,
        };
        let r = match reset_is_end(r, closed) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if spinning {
                    // Yield rather than busy-wait: when the peer shares
                    // this CPU (pinned, or placed together by the
                    // scheduler), it gets to run and answer at once.
                    std::thread::yield_now();
                } else if wait.deadline.is_none() {
                    // A non-blocking socket: sleep until it is readable.
                    fd::poll(&mut [PollFd::readable(sock)], None)?;
                }
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
    let header = Header::parse(&head, limits)?;
    if truncated_fds || fds.len() != header.nfds {
        // Stay in step: the payload is read and dropped, with the descriptors.
        let received = fds.len();
        drop(fds);
        skip(sock, header.len, wait.deadline)?;
        return Err(CodecError::FdCount {
            announced: header.nfds,
            received,
        });
    }
    Ok(Incoming { header, fds })
}

/// A Unix socket whose peer closed with bytes it had not read reports
/// `ECONNRESET` once, after everything queued for this side was read: the
/// end of the stream, as the read of 0 bytes it returns next says. So a
/// reset reads as `end`, the result that means the end.
fn reset_is_end<T>(r: io::Result<T>, end: T) -> io::Result<T> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(end),
        other => other,
    }
}

/// Waits until `sock` is readable or `deadline` passes: then `Timeout` if
/// nothing of the frame was read (`got == 0`), else `Stalled`.
fn wait_readable(sock: BorrowedFd<'_>, deadline: Instant, got: usize, expected: usize) -> Result<(), CodecError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if fd::poll(&mut [PollFd::readable(sock)], Some(left))? == 0 {
        return Err(if got == 0 {
            CodecError::Timeout
        } else {
            CodecError::Stalled { expected, got }
        });
    }
    Ok(())
}

/// Reads and drops `len` payload bytes.
fn skip(sock: BorrowedFd<'_>, len: usize, deadline: Option<Instant>) -> Result<(), CodecError> {
    let mut scratch = [0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(scratch.len());
        let done = len - left;
        // Errors count the whole payload, not this chunk.
        recv_payload_into(sock, &mut scratch[..n], deadline).map_err(|e| match e {
            CodecError::Truncated { got, .. } => CodecError::Truncated {
                expected: HEADER_LEN + len,
                got: done + got,
            },
            other => other,
        })?;
        left -= n;
    }
    Ok(())
}

/// Reads exactly `buf.len()` payload bytes from `sock` into `buf` (after
/// [`recv_header`]). [`CodecError::Truncated`] if the peer closes first
/// (`expected`/`got` count the payload and a header); with a `deadline`,
/// [`CodecError::Stalled`] if the bytes stop coming before it.
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// mp_sys::fd::write(a.as_fd(), b"ab")?;
/// drop(a);
/// let mut buf = [0u8; 3];
/// let err = mp_codec::recv_payload_into(b.as_fd(), &mut buf, None).unwrap_err();
/// assert!(err.is_eof());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn recv_payload_into(sock: BorrowedFd<'_>, buf: &mut [u8], deadline: Option<Instant>) -> Result<(), CodecError> {
    let mut at = 0;
    while at < buf.len() {
        if let Some(d) = deadline {
            wait_readable(sock, d, HEADER_LEN + at, HEADER_LEN + buf.len())?;
        }
        match reset_is_end(fd::read(sock, &mut buf[at..]), 0) {
            Ok(0) => {
                return Err(CodecError::Truncated {
                    expected: HEADER_LEN + buf.len(),
                    got: HEADER_LEN + at,
                });
            }
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if deadline.is_none() {
                    fd::poll(&mut [PollFd::readable(sock)], None)?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The most address space [`recv_payload`] reserves for a payload before
/// its bytes arrive; a larger payload's buffer doubles as they come.
const FIRST_CHUNK: usize = 256 << 20;

/// Appends `len` payload bytes from `sock` to `out` (after [`recv_header`]).
///
/// Memory follows the data: the buffer's capacity is reserved up front
/// (at most 256 MiB of it; beyond that it doubles as bytes arrive), but a
/// reservation is only address space: the kernel commits pages as the
/// bytes land in them, so a peer that announces a large frame (within the
/// limits) and sends less costs only what it sent. The new space is not
/// zero-filled, and large buffers are advised onto huge pages (a fresh
/// 64 MiB payload lands 2.5x faster on this project's VM). A reservation
/// the allocator refuses is an [`io::ErrorKind::OutOfMemory`] error, never
/// an abort. Other errors as [`recv_payload_into`].
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// let (a, b) = socketpair(SocketKind::Stream)?;
/// mp_codec::send_bytes(a.as_fd(), &[7u8; 3000], &Default::default())?;
/// let head = mp_codec::recv_header(b.as_fd(), &Default::default(), Default::default())?;
/// let mut v = Vec::new();
/// mp_codec::recv_payload(b.as_fd(), head.header.len, &mut v, None)?;
/// assert_eq!(v, vec![7u8; 3000]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn recv_payload(
    sock: BorrowedFd<'_>,
    len: usize,
    out: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> Result<(), CodecError> {
    let start = out.len();
    let end = start.saturating_add(len);
    while out.len() < end {
        let want = end - out.len();
        if out.capacity() == out.len() {
            let grow = (out.len() - start).max(FIRST_CHUNK).min(want);
            out.try_reserve_exact(grow).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("cannot reserve {grow} bytes for a {len}-byte payload: {e}"),
                )
            })?;
            // Fresh memory for a large payload: huge pages make its page
            // faults 5x cheaper (the advice is only a hint: ignore failure).
            let _ = mp_sys::mem::advise_huge_pages(out);
        }
        if let Some(d) = deadline {
            wait_readable(sock, d, HEADER_LEN + out.len() - start, HEADER_LEN + len)?;
        }
        match reset_is_end(fd::read_spare(sock, out, want), 0) {
            Ok(0) => {
                return Err(CodecError::Truncated {
                    expected: HEADER_LEN + len,
                    got: HEADER_LEN + out.len() - start,
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if deadline.is_none() {
                    fd::poll(&mut [PollFd::readable(sock)], None)?;
                }
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
    let Incoming { header, fds } = recv_header(sock, limits, Wait::default())?;
    let mut buf = Vec::new();
    header.write_into(&mut buf);
    recv_payload(sock, header.len, &mut buf, None)?;
    Frame::from_wire(buf, fds, limits)
}

/// Like [`recv_frame`], but fails with [`CodecError::Timeout`] when no frame
/// begins to arrive within `timeout` (nothing is consumed then).
///
/// The timeout covers only the start of a frame: once its first byte has
/// arrived, the rest is awaited without a limit (a peer that stops in the
/// middle of a frame blocks this call). For a limit on the whole frame, use
/// [`recv_header`] with a [`Wait::deadline`] and [`recv_payload`] with the
/// same deadline.
///
/// ```
/// use mp_sys::socket::{socketpair, SocketKind};
/// use std::os::fd::AsFd;
/// use std::time::{Duration, Instant};
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
