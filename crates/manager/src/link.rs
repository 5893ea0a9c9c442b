//! One client's line to the server: requests one way, replies the other,
//! strictly taking turns.
//!
//! A local line is a shared page plus a socket pair. A message without
//! descriptors that fits the page is copied into it, and a sequence word
//! says whose turn it is. Bigger messages, and those carrying descriptors,
//! go over the socket as codec frames, announced through the same word. A
//! waiter yields the CPU for a moment (a call usually comes back within
//! it), then sleeps on the word's futex in slices, checking between slices
//! whether the socket hung up: that is how a dead peer is noticed, never by
//! hanging.
//!
//! A remote line (TCP) carries every message as a frame over the socket.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mp_codec::{Frame, HEADER_LEN, Limits};
use mp_connection::Connection;
use mp_sys::fd::{PollFd, poll};
use mp_sys::futex::{self, Spun};
use mp_sys::region::Region;
use mp_sys::socket::{SocketKind, socketpair};
use mp_sys::time::Deadline;

/// The sequence word: odd while a request waits for the server, even while
/// a reply waits for the client (or nothing is under way).
const SEQ: usize = 0;
/// Non-zero while the client sleeps on the futex (its sleeper count).
const CLIENT_SLEEPS: usize = 64;
/// Non-zero while the server sleeps on the futex (its sleeper count).
const SERVER_SLEEPS: usize = 128;
/// The current message's length, or `ON_SOCKET`.
const LEN: usize = 192;
/// Where a message's bytes start.
const DATA: usize = 256;
/// The page's size.
pub(crate) const PAGE_LEN: usize = 64 * 1024;
/// The largest message the page carries.
const CAPACITY: usize = PAGE_LEN - DATA;
/// The message is a frame on the socket.
const ON_SOCKET: u32 = u32::MAX;

/// A message from a remote peer that has begun must arrive whole within
/// this: a peer that stops in the middle of one ends the line instead of
/// holding it (and its thread) forever.
pub(crate) const REMOTE_MESSAGE: Duration = Duration::from_secs(60);

/// How long a waiter yields before it sleeps.
const YIELD_FOR: Duration = Duration::from_micros(50);

/// Which end of the line this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// A message received: its payload and the descriptors that came with it.
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    buf: Vec<u8>,
    start: usize,
    pub(crate) fds: Vec<OwnedFd>,
}

impl Incoming {
    pub(crate) fn payload(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Why a receive did not produce a message.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// The peer hung up (or died).
    Gone(String),
    /// A frame on the socket was corrupt, or the page announced a length
    /// over its capacity.
    Corrupt(String),
}

impl LinkError {
    /// `Gone` when the peer's end closed, else `Corrupt`.
    fn classify(eof: bool, e: impl std::fmt::Display) -> LinkError {
        if eof {
            LinkError::Gone(e.to_string())
        } else {
            LinkError::Corrupt(e.to_string())
        }
    }
}

impl From<mp_codec::CodecError> for LinkError {
    fn from(e: mp_codec::CodecError) -> Self {
        LinkError::classify(e.is_eof(), e)
    }
}

impl From<mp_connection::ConnectionError> for LinkError {
    fn from(e: mp_connection::ConnectionError) -> Self {
        LinkError::classify(e.is_eof(), e)
    }
}

impl From<LinkError> for crate::ManagerError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Gone(m) => crate::ManagerError::ServerGone(m),
            LinkError::Corrupt(m) => crate::ManagerError::Codec(m),
        }
    }
}

/// One end of a line.
#[derive(Debug)]
pub(crate) enum Link {
    Local(LocalLink),
    Remote(Connection),
}

/// One end of a local line: the shared page and the socket.
#[derive(Debug)]
pub(crate) struct LocalLink {
    page: Region,
    sock: OwnedFd,
    side: Side,
    /// The sequence value this end last wrote or saw.
    seq: Cell<u32>,
}

/// The server's end of a new local line, to send over the connector.
#[derive(Debug)]
pub(crate) struct LocalParts {
    pub(crate) page: OwnedFd,
    pub(crate) sock: OwnedFd,
}

impl LocalLink {
    /// A new line: the client's end, and the parts of the server's.
    pub(crate) fn pair() -> io::Result<(LocalLink, LocalParts)> {
        let page = Region::create("mp-manager-line", PAGE_LEN)?;
        let (mine, theirs) = socketpair(SocketKind::Stream)?;
        let parts = LocalParts {
            page: page.try_clone_fd()?,
            sock: theirs,
        };
        let link = LocalLink {
            page,
            sock: mine,
            side: Side::Client,
            seq: Cell::new(0),
        };
        Ok((link, parts))
    }

    /// The server's end, from the parts a client sent.
    pub(crate) fn from_parts(parts: LocalParts) -> io::Result<LocalLink> {
        let page = Region::from_fd(parts.page)?;
        if page.len() < PAGE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the line's page is too small",
            ));
        }
        let link = LocalLink {
            page,
            sock: parts.sock,
            side: Side::Server,
            seq: Cell::new(0),
        };
        link.seq.set(link.word(SEQ).load(Ordering::Acquire) & !1);
        Ok(link)
    }

    #[inline]
    fn word(&self, offset: usize) -> &AtomicU32 {
        // The offsets are constants inside a page whose length was checked.
        self.page.atomic_u32(offset).expect("line page layout")
    }

    /// Sends a message and hands the turn to the peer.
    pub(crate) fn send(&self, frame: &Frame) -> Result<(), LinkError> {
        let payload = frame.payload();
        let seq = self.seq.get().wrapping_add(1);
        let on_socket = !frame.fds().is_empty() || payload.len() > CAPACITY;
        if on_socket {
            self.word(LEN).store(ON_SOCKET, Ordering::Relaxed);
        } else {
            self.page.write(DATA, payload).map_err(gone)?;
            self.word(LEN).store(payload.len() as u32, Ordering::Relaxed);
        }
        self.seq.set(seq);
        self.word(SEQ).store(seq, Ordering::SeqCst);
        let peer_sleeps = match self.side {
            Side::Client => SERVER_SLEEPS,
            Side::Server => CLIENT_SLEEPS,
        };
        if self.word(peer_sleeps).load(Ordering::SeqCst) != 0 {
            futex::wake_all(self.word(SEQ));
        }
        // The frame follows the announcement: a big frame fills the socket
        // while the peer is already reading it.
        if on_socket {
            mp_codec::send_frame(self.sock.as_fd(), frame).map_err(LinkError::from)?;
        }
        Ok(())
    }

    /// Waits for the peer's next message (the client: its reply; the
    /// server: the next request), checking every `slice` of sleep whether
    /// the peer hung up.
    pub(crate) fn recv(&self, into: &mut Incoming, slice: Duration) -> Result<(), LinkError> {
        let want = self.seq.get().wrapping_add(1);
        let seq = self.word(SEQ);
        if seq.load(Ordering::Acquire) != want {
            self.sleep_until(want, slice)?;
        }
        self.seq.set(want);
        let len = self.word(LEN).load(Ordering::Relaxed);
        into.fds.clear();
        if len == ON_SOCKET {
            let frame = mp_codec::recv_frame(self.sock.as_fd(), &Limits::default()).map_err(LinkError::from)?;
            let (buf, fds) = frame.into_parts();
            into.buf = buf;
            into.start = HEADER_LEN;
            into.fds = fds;
        } else {
            let len = len as usize;
            if len > CAPACITY {
                return Err(LinkError::Corrupt(format!(
                    "a message of {len} bytes announced in the page"
                )));
            }
            into.buf.resize(len, 0);
            into.start = 0;
            self.page.read(DATA, &mut into.buf).map_err(gone)?;
        }
        Ok(())
    }

    fn sleep_until(&self, want: u32, slice: Duration) -> Result<(), LinkError> {
        let seq = self.word(SEQ);
        let sleeps = self.word(match self.side {
            Side::Client => CLIENT_SLEEPS,
            Side::Server => SERVER_SLEEPS,
        });
        // Spin once, then sleep in slices; the peer wakes this side when its
        // sleeper count is non-zero (one thread per side: 0 or 1).
        let mut spin = YIELD_FOR;
        loop {
            let r = futex::spin_then_wait(
                spin,
                || seq.load(Ordering::Acquire) == want,
                seq,
                || seq.load(Ordering::SeqCst),
                sleeps,
                Deadline::after(slice),
            );
            spin = Duration::ZERO;
            if r == Spun::Ready || seq.load(Ordering::Acquire) == want {
                return Ok(());
            }
            if r == Spun::TimedOut && hung_up(self.sock.as_fd()) {
                return Err(LinkError::Gone(match self.side {
                    Side::Client => "the server hung up".into(),
                    Side::Server => "the client hung up".into(),
                }));
            }
        }
    }

    /// Whether the peer hung up (or died).
    pub(crate) fn peer_gone(&self) -> bool {
        hung_up(self.sock.as_fd())
    }
}

/// Whether the peer of `sock` hung up, without waiting.
pub(crate) fn hung_up(sock: BorrowedFd<'_>) -> bool {
    let mut set = [PollFd::hangup(sock)];
    matches!(poll(&mut set, Some(Duration::ZERO)), Ok(1)) && set[0].is_ready()
}

fn gone(e: io::Error) -> LinkError {
    LinkError::Gone(e.to_string())
}

impl Link {
    pub(crate) fn send(&self, frame: &Frame) -> Result<(), LinkError> {
        match self {
            Link::Local(l) => l.send(frame),
            Link::Remote(c) => {
                if !frame.fds().is_empty() {
                    return Err(LinkError::Corrupt(
                        "a message holding handles (file descriptors) cannot travel to a remote manager over TCP"
                            .into(),
                    ));
                }
                c.send_bytes(frame.payload()).map_err(LinkError::from)
            }
        }
    }

    pub(crate) fn recv(&self, into: &mut Incoming, slice: Duration) -> Result<(), LinkError> {
        self.recv_until(into, slice, Deadline::NEVER)
    }

    /// [`recv`](Link::recv) that gives up at `deadline` on a remote line
    /// (the peer is alive but says nothing); a local line's peer is a
    /// server this program started, and the deadline does not apply.
    ///
    /// A remote message may be long in coming (the reply to a call that
    /// blocks), so its start is awaited in slices until `deadline`; once it
    /// has begun, the whole of it must come within [`REMOTE_MESSAGE`] (and
    /// `deadline`), or the line is gone.
    pub(crate) fn recv_until(&self, into: &mut Incoming, slice: Duration, deadline: Deadline) -> Result<(), LinkError> {
        match self {
            Link::Local(l) => l.recv(into, slice),
            Link::Remote(c) => {
                into.fds.clear();
                into.start = 0;
                loop {
                    let wait = deadline.remaining().map_or(slice, |left| left.min(slice));
                    if c.poll_timeout(wait).map_err(LinkError::from)? {
                        break;
                    }
                    if deadline.has_passed() {
                        return Err(LinkError::Gone(
                            "the peer is connected but sent nothing in time (is it a manager server of this program?)"
                                .into(),
                        ));
                    }
                }
                let whole = deadline
                    .remaining()
                    .map_or(REMOTE_MESSAGE, |left| left.min(REMOTE_MESSAGE));
                into.buf = c.recv_bytes_timeout(whole).map_err(|e| match e {
                    mp_connection::ConnectionError::Timeout => LinkError::Gone(format!(
                        "the peer stopped sending in the middle of a message (it had {whole:?})"
                    )),
                    e => LinkError::from(e),
                })?;
                Ok(())
            }
        }
    }

    /// Whether the peer hung up (or died), without waiting. A remote peer
    /// that sent something out of turn counts as gone too: it broke the
    /// protocol.
    pub(crate) fn peer_gone(&self) -> bool {
        match self {
            Link::Local(l) => l.peer_gone(),
            Link::Remote(c) => c.poll_timeout(Duration::ZERO).unwrap_or(true),
        }
    }
}
