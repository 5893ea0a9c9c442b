//! `Connection`, `pipe` and `pipe_simplex`: Python's `multiprocessing.Pipe`
//! and `multiprocessing.connection.Connection`.

use std::fmt;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use mp_codec::handle::FdRef;
use mp_codec::{CodecError, Frame, FrameKind, Incoming, Limits, Wait};
use mp_sys::fd::{self, PollFd};
use mp_sys::futex;
use mp_sys::region::Region;
use mp_sys::socket::{SocketKind, socketpair};
use mp_sys::time::Deadline;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ConnectionError;
use crate::ring::{self, Front, Lane, Pushed, Rec};

/// A receive polls without sleeping for this long (yielding the CPU between
/// polls) before it sleeps in the kernel. Measured on the project's 2-vCPU
/// VM (`cargo xtask bench connection`, 8-byte ping-pong between two
/// processes, medians): 6-11 µs with it, 33-46 µs without it unpinned (a
/// wake-up of an idle CPU costs ~35 µs each way); pinned to one CPU, 10.4
/// µs with it and 12.4 µs without (the yield hands the CPU straight to the
/// peer). A busy-wait without the yield was a trap: when the scheduler put
/// both processes on one CPU, each spin delayed the very peer it waited
/// for, and round trips became twice the spin. The cost is at most this
/// much CPU time per receive that waits longer. `MP_CONNECTION_SPIN_US`
/// overrides it (0 turns spinning off).
const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// A buffer of a reader or writer larger than this is released after use,
/// so one large message does not pin its memory for the connection's life.
const KEEP_BUFFER: usize = 1 << 20;

/// The spin of every receive: [`DEFAULT_SPIN`], or the environment's.
/// Read once per process.
fn spin() -> Duration {
    static SPIN: OnceLock<Duration> = OnceLock::new();
    *SPIN.get_or_init(|| {
        if let Some(us) = std::env::var("MP_CONNECTION_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Duration::from_micros(us);
        }
        DEFAULT_SPIN
    })
}

/// One end of a connection, shared by the clones of a [`Connection`].
struct End {
    fd: OwnedFd,
    readable: bool,
    writable: bool,
    /// Whether the socket can carry descriptors (a Unix socket, not TCP).
    unix: bool,
    /// A pipe's shared ring ([`ring`]); `None` for a listener's or a
    /// client's connection.
    ring: Option<Ring>,
    /// Tells this process's ends apart as ring writers.
    serial: u32,
    reader: Mutex<Reader>,
    /// The encode buffer, reused by every `send`; its lock also keeps the
    /// frames of concurrent senders apart.
    writer: Mutex<Frame>,
}

/// A pipe end's view of the pipe's slot of a shared region.
struct Ring {
    region: Arc<Region>,
    slot: usize,
    /// The lane this end writes; it reads the other one.
    side: usize,
}

impl End {
    /// The lane this end sends through, if it has a ring and can send.
    fn out_lane(&self) -> Option<Lane<'_>> {
        let r = self.ring.as_ref()?;
        self.writable.then(|| Lane::new(&r.region, r.slot, r.side))
    }

    /// The lane this end receives from, if it has a ring and can receive.
    fn in_lane(&self) -> Option<Lane<'_>> {
        let r = self.ring.as_ref()?;
        self.readable.then(|| Lane::new(&r.region, r.slot, 1 - r.side))
    }

    /// Turns the ring off for the messages sent to this end from now on:
    /// its descriptor is watched by code that cannot see the ring.
    fn ring_off(&self) {
        if let Some(lane) = self.in_lane() {
            lane.socket_only();
        }
    }

    /// Sends one message through the ring when it can; `false` when it must
    /// go on the socket, in which case it has been counted there and must be
    /// sent next.
    fn try_ring(&self, kind: FrameKind, payload: &[u8], with_fds: bool) -> Result<bool, ConnectionError> {
        let Some(lane) = self.out_lane() else {
            return Ok(false);
        };
        if !with_fds {
            let me = ring::writer_token(self.serial);
            if let Pushed::Done = lane.push(self.fd.as_fd(), me, kind, payload)? {
                return Ok(true);
            }
        }
        lane.count_socket();
        Ok(false)
    }
}

#[derive(Default)]
struct Reader {
    /// The payload of the last value received, reused.
    buf: Vec<u8>,
    /// Why the stream is out of step, once it is.
    broken: Option<String>,
}

/// The codec's limits for every connection: 1 GiB per message.
const LIMITS: Limits = Limits {
    max_frame_len: mp_codec::DEFAULT_MAX_FRAME_LEN,
};

/// One end of a pipe or of a listener/client connection (Python's
/// `multiprocessing.connection.Connection`): sends and receives whole
/// messages, serde values or raw bytes.
///
/// ```
/// use mp_connection::pipe;
///
/// let (a, b) = pipe()?;
/// a.send(&("job", 42u32))?;
/// let (name, n): (String, u32) = b.recv()?;
/// assert_eq!((name.as_str(), n), ("job", 42));
/// b.send_bytes(b"done")?;
/// assert_eq!(a.recv_bytes()?, b"done");
/// # Ok::<(), mp_connection::ConnectionError>(())
/// ```
///
/// A `Connection` is a *handle*: `Clone + Send + Sync`, and serde
/// `Serialize + Deserialize` through the codec, so it can be a
/// [`Process`](../mp_process/struct.Process.html) argument under every start
/// method, or travel inside a message on another connection (its descriptor
/// rides beside the bytes with `SCM_RIGHTS`). A clone is the same end: the
/// clones share one descriptor, and their messages never interleave (each
/// send and each receive holds a lock for the whole message). A copy that
/// travelled to another process holds its own descriptor: closing one side's
/// copy does not close the other's.
///
/// # Message format and limits
///
/// Every message is an mp-codec frame: a 12-byte header (its length, its
/// kind, the number of descriptors), then the payload. `send` writes a serde
/// value (postcard), `send_bytes` raw bytes, each in one `sendmsg`;
/// boundaries are kept, and a zero-length message is a message. The limit is
/// 1 GiB ([`mp_codec::DEFAULT_MAX_FRAME_LEN`]): a larger send fails before
/// writing; a header announcing more is refused before anything is
/// allocated, and a payload's memory grows only as its bytes arrive.
///
/// # Pipes: the shared ring
///
/// The ends made by [`pipe`] and [`pipe_simplex`] also share a ring in
/// shared memory, 32 KiB each way. A message of up to 8 KiB without handles
/// is copied into it: receiving it takes no system call, sending it one (a
/// zero-byte send, which fails at once when the peer is gone, as a send on
/// the socket would). The socket carries the rest (larger messages, those
/// holding handles, and every message while the ring is full or earlier
/// ones still wait on the socket), and the order of the messages is kept
/// across the two. A receive that finds nothing yields the CPU for up to 50
/// µs, then sleeps on the socket; a sender that finds the receiver asleep
/// sends it a wake-up frame. On this project's VM an 8-byte round trip
/// between two processes takes 4.4 µs with both pinned to one CPU (CPython
/// 16.4 µs) instead of 10.6 µs over the socket alone.
///
/// - **Several receiving processes** (copies of one end): each message in
///   the ring goes to exactly one of them. Messages that take the socket are
///   safe with one receiving process at a time only, as with Python's pipes
///   (threads of one process are always safe: they take turns).
/// - **Several sending processes**: the first process to send on an end
///   writes its ring; the others send on the socket. Each sender's messages
///   arrive in the order it sent them.
/// - **A descriptor of one's own**: [`fileno`](Connection::fileno) turns the
///   ring off for the messages sent to that end afterwards, so the
///   descriptor shows them; [`wait`](crate::wait) looks at the ring itself.
/// - **A corrupt ring** (another process wrote over the shared memory) is a
///   [`Decode`](ConnectionError::Decode) error, and the connection is broken
///   for receiving.
///
/// # Bad input
///
/// A receive never panics or hangs on garbage: see [`ConnectionError`] for
/// which errors leave the connection *in sync* (the next message can be
/// read) and which leave it *broken*. A peer that is alive but stops in the
/// middle of a message blocks `recv` (as in Python); the `_timeout` forms
/// ([`recv_timeout`](Connection::recv_timeout),
/// [`recv_bytes_timeout`](Connection::recv_bytes_timeout),
/// [`recv_bytes_into_timeout`](Connection::recv_bytes_into_timeout)) bound
/// the whole message, header and payload.
///
/// # Differences from Python
///
/// - `recv` of a value sent with `send_bytes` (or `recv_bytes` of one sent
///   with `send`) is a [`Decode`](ConnectionError::Decode) error (the message
///   is consumed), where Python unpickles the bytes or hands back the pickle.
/// - Python's `recv_bytes(maxlength)` closes the connection on a longer
///   message; here the limit is the codec's and the connection stays open
///   (broken for reading).
/// - `close` releases this handle; the descriptor is closed when the last
///   clone in this process is closed or dropped.
/// - A receive polls (yielding the CPU) for up to 50 µs before it sleeps:
///   ping-pong round trips of a few µs instead of tens. Set
///   `MP_CONNECTION_SPIN_US` to change it (0: sleep at once).
/// - A pipe's small messages travel in shared memory beside the socket (see
///   above); Python's always cross the kernel.
pub struct Connection {
    end: Option<Arc<End>>,
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        Connection { end: self.end.clone() }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.end {
            None => f.write_str("Connection(closed)"),
            Some(e) => f
                .debug_struct("Connection")
                .field("fd", &e.fd.as_raw_fd())
                .field("readable", &e.readable)
                .field("writable", &e.writable)
                .field("shared_ring", &e.ring.is_some())
                .finish(),
        }
    }
}

/// Python's `multiprocessing.Pipe()` (duplex): two connected ends, each of
/// which sends and receives.
///
/// ```
/// let (parent, child) = mp_connection::pipe()?;
/// child.send(&"ping")?;
/// assert_eq!(parent.recv::<String>()?, "ping");
/// parent.send(&"pong")?;
/// assert_eq!(child.recv::<String>()?, "pong");
/// # Ok::<(), mp_connection::ConnectionError>(())
/// ```
///
/// A Unix stream socket pair (close-on-exec), so the ends can carry
/// handles, and a shared ring that carries small messages without the
/// kernel (see [`Connection`]).
pub fn pipe() -> Result<(Connection, Connection), ConnectionError> {
    let (a, b) = socketpair(SocketKind::Stream)?;
    let (region, slot) = ring::allocate()?;
    Ok((
        Connection::pipe_end(a, true, true, &region, slot, 0),
        Connection::pipe_end(b, true, true, &region, slot, 1),
    ))
}

/// Python's `multiprocessing.Pipe(duplex=False)`: `(reader, writer)`; the
/// reader only receives, the writer only sends.
///
/// ```
/// let (reader, writer) = mp_connection::pipe_simplex()?;
/// writer.send(&[1u8, 2, 3])?;
/// assert_eq!(reader.recv::<[u8; 3]>()?, [1, 2, 3]);
/// assert!(matches!(reader.send(&0), Err(mp_connection::ConnectionError::ReadOnly)));
/// assert!(matches!(writer.poll(), Err(mp_connection::ConnectionError::WriteOnly)));
/// # Ok::<(), mp_connection::ConnectionError>(())
/// ```
///
/// # Differences from Python
///
/// Python uses `os.pipe()`. This is a Unix socket pair with the unused
/// directions shut down (`shutdown(2)`): the kernel refuses the wrong
/// direction as well as the handle does, and unlike a pipe it can carry
/// handles (descriptors) in messages.
pub fn pipe_simplex() -> Result<(Connection, Connection), ConnectionError> {
    let (r, w) = socketpair(SocketKind::Stream)?;
    let r = UnixStream::from(r);
    let w = UnixStream::from(w);
    r.shutdown(Shutdown::Write)?;
    w.shutdown(Shutdown::Read)?;
    let (region, slot) = ring::allocate()?;
    Ok((
        Connection::pipe_end(r.into(), true, false, &region, slot, 1),
        Connection::pipe_end(w.into(), false, true, &region, slot, 0),
    ))
}

impl Connection {
    /// Wraps a connected stream socket. `unix`: whether it can carry
    /// descriptors.
    pub(crate) fn from_fd(fd: OwnedFd, readable: bool, writable: bool, unix: bool) -> Connection {
        Connection::new(fd, readable, writable, unix, None)
    }

    /// One end of a new pipe: `side` is the lane of the slot it writes.
    fn pipe_end(
        fd: OwnedFd,
        readable: bool,
        writable: bool,
        region: &Arc<Region>,
        slot: usize,
        side: usize,
    ) -> Connection {
        let ring = Ring {
            region: region.clone(),
            slot,
            side,
        };
        Connection::new(fd, readable, writable, true, Some(ring))
    }

    fn new(fd: OwnedFd, readable: bool, writable: bool, unix: bool, ring: Option<Ring>) -> Connection {
        static SERIAL: AtomicU32 = AtomicU32::new(1);
        Connection {
            end: Some(Arc::new(End {
                fd,
                readable,
                writable,
                unix,
                ring,
                serial: SERIAL.fetch_add(1, Ordering::Relaxed),
                reader: Mutex::new(Reader::default()),
                writer: Mutex::new(Frame::new()),
            })),
        }
    }

    fn end(&self) -> Result<&End, ConnectionError> {
        self.end.as_deref().ok_or(ConnectionError::Closed)
    }

    fn reading(&self) -> Result<&End, ConnectionError> {
        let end = self.end()?;
        if !end.readable {
            return Err(ConnectionError::WriteOnly);
        }
        Ok(end)
    }

    fn writing(&self) -> Result<&End, ConnectionError> {
        let end = self.end()?;
        if !end.writable {
            return Err(ConnectionError::ReadOnly);
        }
        Ok(end)
    }

    /// Python's `Connection.send(obj)`: sends a serde value as one message.
    /// Handles inside it (connections, shared regions) travel with it over a
    /// Unix socket.
    ///
    /// ```
    /// let (a, b) = mp_connection::pipe()?;
    /// a.send(&vec![Some(1.5f64), None])?;
    /// assert_eq!(b.recv::<Vec<Option<f64>>>()?, vec![Some(1.5), None]);
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    ///
    /// Errors: [`ReadOnly`](ConnectionError::ReadOnly) on a simplex reader,
    /// [`Encode`](ConnectionError::Encode) when the value cannot be encoded
    /// (nothing sent), [`TooLarge`](ConnectionError::TooLarge) over 1 GiB
    /// (nothing sent), an error with `is_eof()` when the peer is gone.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), ConnectionError> {
        let end = self.writing()?;
        let mut frame = lock(&end.writer);
        mp_codec::encode_into(value, &mut frame).map_err(encode_error)?;
        let len = frame.payload().len();
        if len > LIMITS.max_frame_len {
            *frame = Frame::new();
            return Err(ConnectionError::TooLarge {
                len,
                max: LIMITS.max_frame_len,
            });
        }
        if !end.unix && !frame.fds().is_empty() {
            *frame = Frame::new();
            return Err(ConnectionError::Encode(
                "the value holds a handle (a descriptor), which a TCP connection cannot carry: \
                 use a Unix socket address or a pipe"
                    .into(),
            ));
        }
        if end.try_ring(FrameKind::Value, frame.payload(), !frame.fds().is_empty())? {
            return Ok(());
        }
        let r = mp_codec::send_frame(end.fd.as_fd(), &frame);
        if frame.as_bytes().len() > KEEP_BUFFER || !frame.fds().is_empty() {
            // Release a large buffer, and the duplicated descriptors at once.
            *frame = Frame::new();
        }
        r.map_err(send_error)
    }

    /// Python's `Connection.recv()`: receives one message sent with
    /// [`send`](Connection::send) and decodes it as a `T`. Blocks until a
    /// message arrives whole ([`recv_timeout`](Connection::recv_timeout)
    /// waits a bounded time, and also bounds a peer that stops in the
    /// middle of a message).
    ///
    /// ```
    /// let (a, b) = mp_connection::pipe()?;
    /// a.send(&"text")?;
    /// let err = b.recv::<u64>().unwrap_err(); // another type: consumed, in sync
    /// assert!(matches!(err, mp_connection::ConnectionError::Decode(_)));
    /// a.send(&7u64)?;
    /// assert_eq!(b.recv::<u64>()?, 7);
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    ///
    /// Errors: [`Eof`](ConnectionError::Eof) when the peer closed or died
    /// (`is_eof()`), [`Decode`](ConnectionError::Decode) for another type or
    /// a `send_bytes` message (in sync) or a corrupt frame (broken),
    /// [`WriteOnly`](ConnectionError::WriteOnly) on a simplex writer.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T, ConnectionError> {
        self.recv_until(Deadline::NEVER)
    }

    /// [`recv`](Connection::recv) with a deadline `t` from now that covers
    /// the whole message, its header and its payload:
    /// [`Timeout`](ConnectionError::Timeout) when it has not arrived whole by
    /// then.
    ///
    /// ```
    /// use mp_connection::ConnectionError;
    /// use std::time::Duration;
    /// let (a, b) = mp_connection::pipe()?;
    /// let err = b.recv_timeout::<u8>(Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(err, ConnectionError::Timeout)); // nothing read: in sync
    /// a.send(&3u8)?;
    /// assert_eq!(b.recv_timeout::<u8>(Duration::from_secs(5))?, 3);
    /// # Ok::<(), ConnectionError>(())
    /// ```
    ///
    /// After a timeout the connection is *in sync* when nothing of the
    /// message had arrived (the next receive reads it when it comes), and
    /// *broken* when part of it had (a peer that stalled in the middle of a
    /// frame: every later receive fails with
    /// [`Broken`](ConnectionError::Broken)). A message in a pipe's shared
    /// ring arrives whole or not at all. `Duration::MAX` waits forever.
    ///
    /// # Differences from Python
    ///
    /// Python's `recv` has no timeout (`poll(t)` then `recv()` blocks if the
    /// peer stops in the middle of a message); this one is bounded.
    pub fn recv_timeout<T: DeserializeOwned>(&self, t: Duration) -> Result<T, ConnectionError> {
        self.recv_until(Deadline::after(t))
    }

    fn recv_until<T: DeserializeOwned>(&self, deadline: Deadline) -> Result<T, ConnectionError> {
        let end = self.reading()?;
        let mut reader = lock(&end.reader);
        let (kind, fds) = loop {
            match next_message(end, &mut reader, deadline)? {
                Next::Ring(lane, rec) => {
                    reader.buf.clear();
                    reader.buf.resize(rec.len, 0);
                    lane.copy(&rec, &mut reader.buf)?;
                    if lane.commit(&rec) {
                        break (rec.kind, Vec::new());
                    }
                }
                Next::Socket(Incoming { header, fds }) => {
                    reader.buf.clear();
                    let r = mp_codec::recv_payload(end.fd.as_fd(), header.len, &mut reader.buf, deadline.instant());
                    check_payload(&mut reader, r)?;
                    break (header.kind, fds);
                }
            }
        };
        let result = match kind {
            FrameKind::Value => mp_codec::decode_payload(&reader.buf, fds).map_err(|e| match e {
                CodecError::Decode(m) => ConnectionError::Decode(m),
                other => ConnectionError::Decode(other.to_string()),
            }),
            _ => Err(bytes_not_a_value(reader.buf.len())),
        };
        if reader.buf.capacity() > KEEP_BUFFER {
            reader.buf = Vec::new();
        }
        result
    }

    /// Python's `Connection.send_bytes(buf)`: sends `buf` as one message,
    /// without copying it (header and bytes go out in one `sendmsg`).
    ///
    /// ```
    /// let (a, b) = mp_connection::pipe()?;
    /// a.send_bytes(b"")?; // a zero-length message is a message
    /// a.send_bytes(b"abc")?;
    /// assert_eq!(b.recv_bytes()?, b"");
    /// assert_eq!(b.recv_bytes()?, b"abc");
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    ///
    /// # Differences from Python
    ///
    /// Python's `offset` and `size` arguments are a slice: `send_bytes(&buf[o..o + n])`.
    pub fn send_bytes(&self, buf: &[u8]) -> Result<(), ConnectionError> {
        let end = self.writing()?;
        let _writer = lock(&end.writer);
        if buf.len() > LIMITS.max_frame_len {
            return Err(ConnectionError::TooLarge {
                len: buf.len(),
                max: LIMITS.max_frame_len,
            });
        }
        if end.try_ring(FrameKind::Bytes, buf, false)? {
            return Ok(());
        }
        mp_codec::send_bytes(end.fd.as_fd(), buf, &LIMITS).map_err(send_error)
    }

    /// Python's `Connection.recv_bytes()`: receives one message sent with
    /// [`send_bytes`](Connection::send_bytes), as a new vector. Blocks until
    /// one arrives.
    ///
    /// ```
    /// let (a, b) = mp_connection::pipe()?;
    /// a.send_bytes(&[0xff; 3])?;
    /// assert_eq!(b.recv_bytes()?, vec![0xff; 3]);
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    ///
    /// Errors as [`recv`](Connection::recv); a message sent with `send` is a
    /// [`Decode`](ConnectionError::Decode) error (consumed, in sync).
    pub fn recv_bytes(&self) -> Result<Vec<u8>, ConnectionError> {
        self.recv_bytes_until(Deadline::NEVER)
    }

    /// [`recv_bytes`](Connection::recv_bytes) with a deadline `t` from now
    /// for the whole message: [`Timeout`](ConnectionError::Timeout) when it
    /// has not arrived whole by then (in sync if nothing of it had, broken
    /// if part had: see [`recv_timeout`](Connection::recv_timeout)).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = mp_connection::pipe()?;
    /// a.send_bytes(b"xy")?;
    /// assert_eq!(b.recv_bytes_timeout(Duration::from_secs(5))?, b"xy");
    /// assert!(b.recv_bytes_timeout(Duration::ZERO).is_err());
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn recv_bytes_timeout(&self, t: Duration) -> Result<Vec<u8>, ConnectionError> {
        self.recv_bytes_until(Deadline::after(t))
    }

    fn recv_bytes_until(&self, deadline: Deadline) -> Result<Vec<u8>, ConnectionError> {
        let end = self.reading()?;
        let mut reader = lock(&end.reader);
        loop {
            match next_message(end, &mut reader, deadline)? {
                Next::Ring(lane, rec) if rec.kind != FrameKind::Bytes => {
                    if lane.commit(&rec) {
                        return Err(a_value_not_bytes(rec.len));
                    }
                }
                Next::Ring(lane, rec) => {
                    let mut out = vec![0; rec.len];
                    lane.copy(&rec, &mut out)?;
                    if lane.commit(&rec) {
                        return Ok(out);
                    }
                }
                Next::Socket(Incoming { header, fds }) => {
                    if header.kind != FrameKind::Bytes {
                        return Err(skip_value(end, &mut reader, header.len, fds, deadline));
                    }
                    let mut out = Vec::new();
                    let r = mp_codec::recv_payload(end.fd.as_fd(), header.len, &mut out, deadline.instant());
                    check_payload(&mut reader, r)?;
                    return Ok(out);
                }
            }
        }
    }

    /// Python's `Connection.recv_bytes_into(buffer)`: receives one
    /// `send_bytes` message into `buf` and returns its length. The bytes go
    /// straight from the socket into `buf`.
    ///
    /// A message longer than `buf` is not lost: it comes whole in
    /// [`ConnectionError::BufferTooShort`], consumed from the connection (in
    /// sync), and `buf` is left untouched.
    ///
    /// ```
    /// use mp_connection::ConnectionError;
    /// let (a, b) = mp_connection::pipe()?;
    /// a.send_bytes(b"four")?;
    /// a.send_bytes(b"seven!!")?;
    /// let mut buf = [0u8; 5];
    /// assert_eq!(b.recv_bytes_into(&mut buf)?, 4);
    /// assert_eq!(&buf[..4], b"four");
    /// match b.recv_bytes_into(&mut buf) {
    ///     Err(ConnectionError::BufferTooShort(whole)) => assert_eq!(whole, b"seven!!"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), ConnectionError>(())
    /// ```
    ///
    /// # Differences from Python
    ///
    /// Python's `offset` argument is a slice: `recv_bytes_into(&mut buf[o..])`.
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, ConnectionError> {
        self.recv_bytes_into_until(buf, Deadline::NEVER)
    }

    /// [`recv_bytes_into`](Connection::recv_bytes_into) with a deadline `t`
    /// from now for the whole message: [`Timeout`](ConnectionError::Timeout)
    /// when it has not arrived whole by then (in sync if nothing of it had,
    /// broken if part had: see [`recv_timeout`](Connection::recv_timeout)).
    /// After a timeout, what `buf` holds is unspecified.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = mp_connection::pipe()?;
    /// let mut buf = [0u8; 8];
    /// assert!(b.recv_bytes_into_timeout(&mut buf, Duration::from_millis(5)).is_err());
    /// a.send_bytes(b"abc")?;
    /// assert_eq!(b.recv_bytes_into_timeout(&mut buf, Duration::from_secs(5))?, 3);
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn recv_bytes_into_timeout(&self, buf: &mut [u8], t: Duration) -> Result<usize, ConnectionError> {
        self.recv_bytes_into_until(buf, Deadline::after(t))
    }

    fn recv_bytes_into_until(&self, buf: &mut [u8], deadline: Deadline) -> Result<usize, ConnectionError> {
        let end = self.reading()?;
        let mut reader = lock(&end.reader);
        let Incoming { header, fds } = loop {
            match next_message(end, &mut reader, deadline)? {
                Next::Ring(lane, rec) if rec.kind != FrameKind::Bytes => {
                    if lane.commit(&rec) {
                        return Err(a_value_not_bytes(rec.len));
                    }
                }
                Next::Ring(lane, rec) => {
                    if let Some(dst) = buf.get_mut(..rec.len) {
                        lane.copy(&rec, dst)?;
                        if lane.commit(&rec) {
                            return Ok(rec.len);
                        }
                    } else {
                        let mut whole = vec![0; rec.len];
                        lane.copy(&rec, &mut whole)?;
                        if lane.commit(&rec) {
                            return Err(ConnectionError::BufferTooShort(whole));
                        }
                    }
                }
                Next::Socket(incoming) => break incoming,
            }
        };
        if header.kind != FrameKind::Bytes {
            return Err(skip_value(end, &mut reader, header.len, fds, deadline));
        }
        if let Some(dst) = buf.get_mut(..header.len) {
            let r = mp_codec::recv_payload_into(end.fd.as_fd(), dst, deadline.instant());
            check_payload(&mut reader, r)?;
            return Ok(header.len);
        }
        let mut whole = Vec::new();
        let r = mp_codec::recv_payload(end.fd.as_fd(), header.len, &mut whole, deadline.instant());
        check_payload(&mut reader, r)?;
        Err(ConnectionError::BufferTooShort(whole))
    }

    /// Python's `Connection.poll()`: whether a receive would not block now —
    /// a message has begun to arrive, or the peer is gone (a receive then
    /// reports the end). Never consumes anything.
    ///
    /// ```
    /// let (a, b) = mp_connection::pipe()?;
    /// assert!(!b.poll()?);
    /// a.send(&1u8)?;
    /// assert!(b.poll()?);
    /// assert!(b.poll()?); // still there
    /// assert_eq!(b.recv::<u8>()?, 1);
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn poll(&self) -> Result<bool, ConnectionError> {
        self.poll_timeout(Duration::ZERO)
    }

    /// Python's `Connection.poll(timeout)`: waits at most `t` for a receive
    /// not to block; `false` if nothing came. Never consumes anything.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let (_a, b) = mp_connection::pipe()?;
    /// let t0 = Instant::now();
    /// assert!(!b.poll_timeout(Duration::from_millis(20))?);
    /// assert!(t0.elapsed() >= Duration::from_millis(20));
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    ///
    /// # Differences from Python
    ///
    /// Python's `poll(None)` (wait forever) is [`wait`](crate::wait) with no
    /// timeout.
    pub fn poll_timeout(&self, t: Duration) -> Result<bool, ConnectionError> {
        let end = self.reading()?;
        let Some(lane) = end.in_lane() else {
            let mut set = [PollFd::readable(end.fd.as_fd())];
            return Ok(fd::poll(&mut set, Some(t))? > 0);
        };
        let deadline = Deadline::after(t).instant();
        let far = deadline.is_none();
        loop {
            // A deadline past `Instant`'s range waits in long steps.
            let until = Some(Deadline::from(deadline).sleep_until(Duration::from_secs(3600)));
            if wait_ready(end, &lane, until, Drain::Try(&end.reader))?.is_some() {
                return Ok(true);
            }
            if !far {
                return Ok(false);
            }
        }
    }

    /// Python's `Connection.close()`: releases this handle. Every later call
    /// on it fails with [`ConnectionError::Closed`]; a second `close` is
    /// `Ok`. The socket closes when the last clone in this process is closed
    /// or dropped; copies sent to other processes are theirs.
    ///
    /// ```
    /// let (mut a, b) = mp_connection::pipe()?;
    /// a.close()?;
    /// a.close()?;
    /// assert!(matches!(a.send(&1), Err(mp_connection::ConnectionError::Closed)));
    /// assert!(b.recv::<i32>().unwrap_err().is_eof());
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn close(&mut self) -> Result<(), ConnectionError> {
        self.end = None;
        Ok(())
    }

    /// Python's `Connection.closed`: whether [`close`](Connection::close) was
    /// called on this handle.
    ///
    /// ```
    /// let (mut a, _b) = mp_connection::pipe()?;
    /// assert!(!a.is_closed());
    /// a.close()?;
    /// assert!(a.is_closed());
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.end.is_none()
    }

    /// Python's `Connection.readable`: whether this end can receive (false
    /// for the writer of a simplex pipe, and once closed).
    ///
    /// ```
    /// let (r, w) = mp_connection::pipe_simplex()?;
    /// assert!(r.is_readable() && !w.is_readable());
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn is_readable(&self) -> bool {
        self.end.as_ref().is_some_and(|e| e.readable)
    }

    /// Python's `Connection.writable`: whether this end can send (false for
    /// the reader of a simplex pipe, and once closed).
    ///
    /// ```
    /// let (r, w) = mp_connection::pipe_simplex()?;
    /// assert!(w.is_writable() && !r.is_writable());
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn is_writable(&self) -> bool {
        self.end.as_ref().is_some_and(|e| e.writable)
    }

    /// Python's `Connection.fileno()`: the socket's descriptor, for an
    /// event loop of one's own. Reading or writing it directly breaks the
    /// message framing.
    ///
    /// ```
    /// let (a, _b) = mp_connection::pipe()?;
    /// assert!(a.fileno()? >= 0);
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    ///
    /// # Differences from Python
    ///
    /// The descriptor of a pipe's end turns readable only for messages that
    /// travel on the socket, not for those in the pipe's shared ring. So the
    /// first `fileno` on a readable end turns the ring off for the messages
    /// sent to it afterwards (they all take the socket), and what code of
    /// one's own polls is then true. A message sent before the call may still
    /// sit in the ring: check with [`poll`](Connection::poll) once before
    /// watching the descriptor.
    pub fn fileno(&self) -> Result<RawFd, ConnectionError> {
        let end = self.end()?;
        end.ring_off();
        Ok(end.fd.as_raw_fd())
    }

    /// The descriptor to poll for readability, for [`wait`](crate::wait),
    /// which looks into the ring itself ([`ready_or_arm`](Self::ready_or_arm)).
    pub(crate) fn read_fd(&self) -> Result<BorrowedFd<'_>, ConnectionError> {
        Ok(self.reading()?.fd.as_fd())
    }

    /// For [`wait`](crate::wait), before it sleeps: whether a receive would
    /// not block now; if not, a writer that puts a message in the ring will
    /// make the descriptor readable. `false` without a ring (the descriptor
    /// tells).
    pub(crate) fn ready_or_arm(&self) -> Result<bool, ConnectionError> {
        let end = self.reading()?;
        let Some(lane) = end.in_lane() else {
            return Ok(false);
        };
        if look(end, &lane, &Drain::Try(&end.reader))?.is_some() {
            return Ok(true);
        }
        lane.want_wake();
        Ok(lane.next() != ring::Next::Nothing)
    }

    /// For [`wait`](crate::wait), after the descriptor turned readable:
    /// whether a receive would not block (not when only wake-ups came,
    /// which this drops).
    pub(crate) fn confirm_ready(&self) -> Result<bool, ConnectionError> {
        let end = self.reading()?;
        match end.in_lane() {
            None => Ok(true),
            Some(lane) => Ok(look(end, &lane, &Drain::Try(&end.reader))?.is_some()),
        }
    }

    /// For a `Waitable` that only hands out the descriptor: the ring is
    /// turned off, as by [`fileno`](Connection::fileno).
    pub(crate) fn fd_for_others(&self) -> Result<BorrowedFd<'_>, ConnectionError> {
        let end = self.reading()?;
        end.ring_off();
        Ok(end.fd.as_fd())
    }
}

/// Where the next message is, for a receive.
enum Next<'a> {
    /// At the front of the ring, not yet taken: copy it, then commit (and
    /// start over if another reader took it first).
    Ring(Lane<'a>, Rec),
    /// On the socket: its header was read.
    Socket(Incoming),
}

/// What a wait found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ready {
    /// A record in the ring.
    Ring,
    /// A frame on the socket (claimed, for a receive).
    Socket,
    /// Bytes on the socket that no sender counted (a raw peer's frame, or
    /// wake-ups another thread drops): nothing was claimed.
    Raw,
    /// The peer is gone and nothing is left.
    Eof,
}

/// Whether a waiter may drop the wake-ups at the front of the socket: a
/// receive holds the reader lock; a poll takes it if it is free.
enum Drain<'a> {
    Held,
    Try(&'a Mutex<Reader>),
}

/// Waits for the next message until `deadline`: a record in the ring, or
/// a frame on the socket whose header it reads. [`ConnectionError::Timeout`]
/// when the deadline passes; the connection is in sync then if nothing of
/// the frame was read, broken if part of its header was.
fn next_message<'a>(end: &'a End, reader: &mut Reader, deadline: Deadline) -> Result<Next<'a>, ConnectionError> {
    if let Some(why) = &reader.broken {
        return Err(ConnectionError::Broken(why.clone()));
    }
    let Some(lane) = end.in_lane() else {
        return read_header(end, reader, deadline).map(Next::Socket);
    };
    loop {
        match wait_ready(end, &lane, deadline.instant(), Drain::Held)? {
            Some(Ready::Ring) => match lane.peek() {
                Ok(Some(rec)) => return Ok(Next::Ring(lane, rec)),
                Ok(None) => continue,
                Err(why) => {
                    reader.broken = Some(why.clone());
                    return Err(ConnectionError::Decode(why));
                }
            },
            Some(Ready::Socket) => {
                return match read_header(end, reader, deadline) {
                    Err(ConnectionError::Timeout) if reader.broken.is_none() => {
                        // The sender counted the frame but none of it came
                        // in time: give the claim back, so that the next
                        // receive waits for it in its turn.
                        lane.unclaim_socket();
                        Err(ConnectionError::Timeout)
                    }
                    r => r.map(Next::Socket),
                };
            }
            Some(Ready::Raw) => return read_header(end, reader, deadline).map(Next::Socket),
            Some(Ready::Eof) => return Err(ConnectionError::Eof),
            None if deadline.has_passed() => return Err(ConnectionError::Timeout),
            None => continue,
        }
    }
}

/// Looks once, without sleeping, for something to receive: the ring, a
/// counted socket frame, then the front of the socket (dropping wake-ups
/// when `drain` allows). A receive (`Drain::Held`) claims the frame it
/// reports.
fn look(end: &End, lane: &Lane<'_>, drain: &Drain<'_>) -> Result<Option<Ready>, ConnectionError> {
    loop {
        if let Some(r) = fast_look(lane, drain) {
            return Ok(Some(r));
        }
        let guard = match drain {
            Drain::Held => None,
            Drain::Try(m) => match m.try_lock() {
                Ok(g) => Some(g),
                Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            },
        };
        let consume = matches!(drain, Drain::Held) || guard.is_some();
        let front = ring::drain_wakes(end.fd.as_fd(), consume)?;
        drop(guard);
        let nothing = lane.next() == ring::Next::Nothing;
        return Ok(match front {
            Front::Empty => None,
            // Wake-ups another thread of this process will drop: maybe
            // ready (a poll may answer true early).
            Front::Wakes => Some(Ready::Raw),
            // A frame nobody counted (a raw peer's): read it as it comes.
            Front::Data if nothing => Some(Ready::Raw),
            Front::Eof if nothing => Some(Ready::Eof),
            Front::Data | Front::Eof => continue,
        });
    }
}

/// Waits until something can be received from a pipe's end, or `deadline`
/// passes (`None`). Spins first (yielding the CPU), then sleeps in `poll`
/// on the socket after asking writers for a wake-up.
fn wait_ready(
    end: &End,
    lane: &Lane<'_>,
    deadline: Option<Instant>,
    drain: Drain<'_>,
) -> Result<Option<Ready>, ConnectionError> {
    if let Some(r) = fast_look(lane, &drain) {
        return Ok(Some(r));
    }
    let left = |now: Instant| deadline.map(|d| d.saturating_duration_since(now));
    let s = left(Instant::now()).map_or(spin(), |l| l.min(spin()));
    if !s.is_zero() && futex::yield_until(s, || lane.next() != ring::Next::Nothing) {
        if let Some(r) = fast_look(lane, &drain) {
            return Ok(Some(r));
        }
    }
    loop {
        if let Some(r) = look(end, lane, &drain)? {
            return Ok(Some(r));
        }
        let wait = left(Instant::now());
        if wait == Some(Duration::ZERO) {
            return Ok(None);
        }
        lane.want_wake();
        if lane.next() != ring::Next::Nothing {
            continue;
        }
        fd::poll(&mut [PollFd::readable(end.fd.as_fd())], wait)?;
    }
}

/// [`look`] at the ring and the counts only: no system call.
fn fast_look(lane: &Lane<'_>, drain: &Drain<'_>) -> Option<Ready> {
    loop {
        return match lane.next() {
            ring::Next::Ring => Some(Ready::Ring),
            ring::Next::Socket => match drain {
                Drain::Held if !lane.claim_socket() => continue,
                _ => Some(Ready::Socket),
            },
            ring::Next::Nothing => None,
        };
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock (in a user's Serialize impl, say)
    // leaves nothing half-done that matters: the buffers are rewritten.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads the next header before `deadline`, spinning first when that pays;
/// records a broken stream.
fn read_header(end: &End, reader: &mut Reader, deadline: Deadline) -> Result<Incoming, ConnectionError> {
    if let Some(why) = &reader.broken {
        return Err(ConnectionError::Broken(why.clone()));
    }
    let wait = Wait {
        spin: spin(),
        deadline: deadline.instant(),
    };
    loop {
        let incoming = mp_codec::recv_header(end.fd.as_fd(), &LIMITS, wait).map_err(|e| receive_error(reader, e))?;
        if incoming.header.kind != FrameKind::Wake {
            return Ok(incoming);
        }
    }
}

/// Turns a codec error of a receive into the connection's, marking the
/// stream broken when it is out of step. A deadline that passed in the
/// middle of a frame is a [`ConnectionError::Timeout`] that leaves the
/// stream broken.
fn receive_error(reader: &mut Reader, e: CodecError) -> ConnectionError {
    let out_of_step = matches!(
        e,
        CodecError::Corrupt(_)
            | CodecError::TooLarge { .. }
            | CodecError::Truncated { .. }
            | CodecError::Stalled { .. }
    );
    if out_of_step {
        reader.broken = Some(e.to_string());
    }
    match e {
        CodecError::Stalled { .. } => ConnectionError::Timeout,
        e => ConnectionError::from(e),
    }
}

fn check_payload(reader: &mut Reader, r: Result<(), CodecError>) -> Result<(), ConnectionError> {
    r.map_err(|e| {
        // Any failure inside a payload leaves the stream out of step.
        reader.broken = Some(e.to_string());
        match e {
            CodecError::Stalled { .. } | CodecError::Timeout => ConnectionError::Timeout,
            e => ConnectionError::from(e),
        }
    })
}

/// Consumes the payload of a value message that a bytes receive met, and
/// says so.
fn skip_value(end: &End, reader: &mut Reader, len: usize, fds: Vec<OwnedFd>, deadline: Deadline) -> ConnectionError {
    drop(fds);
    reader.buf.clear();
    let r = mp_codec::recv_payload(end.fd.as_fd(), len, &mut reader.buf, deadline.instant());
    if reader.buf.capacity() > KEEP_BUFFER {
        reader.buf = Vec::new();
    }
    if let Err(e) = check_payload(reader, r) {
        return e;
    }
    a_value_not_bytes(len)
}

fn a_value_not_bytes(len: usize) -> ConnectionError {
    ConnectionError::Decode(format!(
        "the message is a value of {len} bytes sent with send, not raw bytes: receive it with recv"
    ))
}

fn bytes_not_a_value(len: usize) -> ConnectionError {
    ConnectionError::Decode(format!(
        "the message is {len} raw bytes sent with send_bytes, not a value: receive it with recv_bytes"
    ))
}

fn encode_error(e: CodecError) -> ConnectionError {
    match e {
        CodecError::TooLarge { len, max } => ConnectionError::TooLarge { len, max },
        // The codec's own text already says "cannot encode the value".
        CodecError::Encode(why) => ConnectionError::Encode(why),
        other => ConnectionError::Encode(other.to_string()),
    }
}

fn send_error(e: CodecError) -> ConnectionError {
    match e {
        CodecError::Io(e) => ConnectionError::Io(e),
        CodecError::TooLarge { len, max } => ConnectionError::TooLarge { len, max },
        CodecError::Encode(why) => ConnectionError::Encode(why),
        other => ConnectionError::Encode(other.to_string()),
    }
}

/// What travels for a Connection: its descriptor (as a handle), its
/// directions, and a pipe's region (as a handle) with its slot and the lane
/// this end writes.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Connection")]
struct Wire {
    fd: mp_codec::Fd,
    readable: bool,
    writable: bool,
    unix: bool,
    ring: Option<(mp_codec::Fd, u32, u8)>,
}

#[derive(Serialize)]
#[serde(rename = "Connection")]
struct WireRef<'a> {
    #[serde(serialize_with = "ser_fd")]
    fd: BorrowedFd<'a>,
    readable: bool,
    writable: bool,
    unix: bool,
    ring: Option<(FdRef<'a>, u32, u8)>,
}

fn ser_fd<S: Serializer>(fd: &BorrowedFd<'_>, s: S) -> Result<S::Ok, S::Error> {
    mp_codec::handle::serialize_fd(*fd, s)
}

/// A connection travels as a handle: its descriptors beside the message.
/// Only mp-codec can encode it; a closed connection cannot be sent.
impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(end) = &self.end else {
            return Err(serde::ser::Error::custom("a closed Connection cannot be sent"));
        };
        WireRef {
            fd: end.fd.as_fd(),
            readable: end.readable,
            writable: end.writable,
            unix: end.unix,
            ring: end
                .ring
                .as_ref()
                .map(|r| (FdRef(r.region.as_fd()), r.slot as u32, r.side as u8)),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let ring = match w.ring {
            None => None,
            Some((fd, slot, side)) => {
                let bad = |e: String| mp_codec::handle::invalid::<D::Error>(format!("a pipe's end: {e}"));
                let region = Region::from_fd(fd.0).map_err(|e| bad(e.to_string()))?;
                let slot = slot as usize;
                ring::check(&region, slot).map_err(bad)?;
                if side > 1 {
                    return Err(bad(format!("lane {side} of 2")));
                }
                Some(Ring {
                    region: Arc::new(region),
                    slot,
                    side: usize::from(side),
                })
            }
        };
        Ok(Connection::new(w.fd.0, w.readable, w.writable, w.unix, ring))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_gives_back_a_counted_socket_frame_so_order_is_kept() {
        let (a, b) = pipe().unwrap();
        let end = a.end().unwrap();
        // A sender counted a socket frame and has not sent it yet.
        end.out_lane().unwrap().count_socket();
        let r = b.recv_timeout::<String>(Duration::from_millis(50));
        assert!(matches!(r, Err(ConnectionError::Timeout)), "{r:?}");
        // Now it comes, then another message.
        let frame = mp_codec::encode(&"first").unwrap();
        mp_codec::send_frame(end.fd.as_fd(), &frame).unwrap();
        a.send(&"second").unwrap();
        let t = Duration::from_secs(20);
        assert_eq!(b.recv_timeout::<String>(t).unwrap(), "first");
        assert_eq!(b.recv_timeout::<String>(t).unwrap(), "second");
    }
}
