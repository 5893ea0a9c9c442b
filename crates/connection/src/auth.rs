//! The authkey handshake of `Listener::accept` and `Client::connect`:
//! HMAC-SHA256 challenge and response, in both directions.
//!
//! Every message is an mp-codec raw-bytes frame of at most [`MAX_MESSAGE`]
//! bytes, so a peer that sends garbage, too much, or nothing cannot make
//! either side allocate, hang or panic. The client reads with a deadline of
//! [`CLIENT_TIMEOUT`] for its whole handshake; the server's side is a
//! [`ServerHandshake`] that never blocks: the listener drives many of them
//! at once from one poll set, each with its own deadline.
//!
//! ```text
//! server -> client   "#MP-CHALLENGE/1#" ++ Ns        (Ns: 32 random bytes)
//! client -> server   "#MP-ANSWER/1#" ++ HMAC(key, "client" ++ Ns) ++ Nc
//! server -> client   "#MP-WELCOME/1#" ++ HMAC(key, "server" ++ Nc ++ Ns)
//!                    or "#MP-REFUSED#" (the client's MAC was wrong)
//! client -> server   "#MP-OK#"  or "#MP-REFUSED#" (the server's MAC was wrong)
//! ```
//!
//! Both MACs are checked in constant time (`hmac`'s `verify_slice`). The
//! labels "client" and "server" keep one side's answer from being replayed as
//! the other's; the server's MAC covers both nonces. Either side that finds
//! a wrong MAC says so to the other before it fails, so a wrong key is an
//! [`Authentication`](ConnectionError::Authentication) error on both sides.
//!
//! Python's handshake (`deliver_challenge`/`answer_challenge`) has the same
//! shape, as two one-way challenges; this one saves a round trip by sending
//! the client's challenge with its answer.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use hmac::{Hmac, Mac};
use mp_codec::{FrameKind, HEADER_LEN, Header, Incoming, Limits, Wait};
use mp_sys::time::Deadline;
use sha2::Sha256;

use crate::error::ConnectionError;

/// The longest handshake message accepted.
pub(crate) const MAX_MESSAGE: usize = 256;

/// How long a client's whole handshake may take. It begins when the
/// client connects, and the server sends its challenge only once it is in
/// `accept`, which may come later: so this is generous.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

const NONCE: usize = 32;
const MAC: usize = 32;
const CHALLENGE: &[u8] = b"#MP-CHALLENGE/1#";
const ANSWER: &[u8] = b"#MP-ANSWER/1#";
const WELCOME: &[u8] = b"#MP-WELCOME/1#";
const REFUSED: &[u8] = b"#MP-REFUSED#";
const OK: &[u8] = b"#MP-OK#";

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes a key of any length; the error case cannot happen.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key"));
    for p in parts {
        m.update(p);
    }
    m
}

fn nonce() -> Result<[u8; NONCE], ConnectionError> {
    let mut n = [0u8; NONCE];
    mp_sys::random::fill(&mut n)?;
    Ok(n)
}

fn fail(msg: impl Into<String>) -> ConnectionError {
    ConnectionError::Authentication(msg.into())
}

fn send(sock: BorrowedFd<'_>, parts: &[&[u8]]) -> Result<(), ConnectionError> {
    let msg = parts.concat();
    mp_codec::send_bytes(sock, &msg, &Limits::default()).map_err(|e| fail(format!("cannot send: {e}")))
}

/// The limits of a handshake message.
const LIMITS: Limits = Limits {
    max_frame_len: MAX_MESSAGE,
};

/// Receives one handshake message before `deadline` (the client's side).
fn recv(sock: BorrowedFd<'_>, deadline: Deadline, expecting: &str) -> Result<Vec<u8>, ConnectionError> {
    let wait = Wait {
        spin: Duration::ZERO,
        deadline: deadline.instant(),
    };
    let bad = |e: mp_codec::CodecError| {
        let why = match e {
            mp_codec::CodecError::Timeout | mp_codec::CodecError::Stalled { .. } => {
                format!("no {expecting} from the peer within {CLIENT_TIMEOUT:?} (does it use an authkey too?)")
            }
            e if e.is_eof() => format!("the peer closed the connection while we waited for its {expecting}"),
            e => format!("the peer sent something other than a {expecting}: {e}"),
        };
        fail(why)
    };
    let Incoming { header, fds } = mp_codec::recv_header(sock, &LIMITS, wait).map_err(bad)?;
    if header.kind != FrameKind::Bytes || !fds.is_empty() {
        return Err(fail(format!("the peer sent a value where a {expecting} belongs")));
    }
    let mut buf = vec![0u8; header.len];
    mp_codec::recv_payload_into(sock, &mut buf, deadline.instant()).map_err(bad)?;
    Ok(buf)
}

/// What the server waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The client's answer to the challenge.
    Answer,
    /// The client's verdict on the server's answer.
    Verdict,
}

impl Stage {
    fn expecting(self) -> &'static str {
        match self {
            Stage::Answer => "answer to our challenge",
            Stage::Verdict => "verdict on our answer",
        }
    }
}

/// Whether a server's handshake is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// It waits for more bytes from the client.
    Waiting,
    /// The client proved it holds the key, and accepted the server's proof.
    Done,
}

/// The server's side of one handshake, driven without blocking: [`start`]
/// sends the challenge, then [`step`] reads whatever the client sent so far
/// (never past the message it waits for, so what the client sends after the
/// handshake stays in the socket) and answers when a message is whole.
///
/// Its memory is a fixed buffer of one message: a header that announces
/// more than [`MAX_MESSAGE`] bytes is refused before anything is read past
/// it.
///
/// [`start`]: ServerHandshake::start
/// [`step`]: ServerHandshake::step
pub(crate) struct ServerHandshake {
    ns: [u8; NONCE],
    stage: Stage,
    buf: [u8; HEADER_LEN + MAX_MESSAGE],
    /// Bytes of the current message in `buf`.
    have: usize,
    /// The current message's payload length, once its header is in.
    len: Option<usize>,
}

impl std::fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("stage", &self.stage)
            .field("have", &self.have)
            .finish_non_exhaustive()
    }
}

/// Sends one handshake message on a socket the listener made non-blocking
/// for the handshake: a client that does not read cannot stall the server
/// (a message this small always fits an empty socket buffer, so
/// `WouldBlock` means a hostile peer).
fn try_send(sock: BorrowedFd<'_>, parts: &[&[u8]]) -> Result<(), ConnectionError> {
    send(sock, parts)
}

impl ServerHandshake {
    /// Begins the handshake on a newly accepted connection: sends the
    /// challenge.
    pub(crate) fn start(sock: BorrowedFd<'_>) -> Result<ServerHandshake, ConnectionError> {
        let ns = nonce()?;
        try_send(sock, &[CHALLENGE, &ns])?;
        Ok(ServerHandshake {
            ns,
            stage: Stage::Answer,
            buf: [0; HEADER_LEN + MAX_MESSAGE],
            have: 0,
            len: None,
        })
    }

    /// Reads what has arrived, without blocking, and goes as far as it can.
    /// An error ends the handshake: the client has another key, sent
    /// something else, or closed.
    pub(crate) fn step(&mut self, sock: BorrowedFd<'_>, key: &[u8]) -> Result<Progress, ConnectionError> {
        loop {
            let need = HEADER_LEN + self.len.unwrap_or(0);
            if self.have == need && self.len.is_some() {
                let msg = self.buf[HEADER_LEN..need].to_vec();
                self.have = 0;
                self.len = None;
                match self.stage {
                    Stage::Answer => {
                        self.answered(sock, key, &msg)?;
                        self.stage = Stage::Verdict;
                        continue;
                    }
                    Stage::Verdict => return verdict(&msg).map(|()| Progress::Done),
                }
            }
            let mut fds = Vec::new();
            let got = match mp_sys::socket::try_recv_with_fds(sock, &mut self.buf[self.have..need], &mut fds) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Waiting),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => mp_sys::socket::Received {
                    bytes: 0,
                    fds_truncated: false,
                },
                Err(e) => return Err(fail(format!("cannot receive: {e}"))),
            };
            let expecting = self.stage.expecting();
            if !fds.is_empty() || got.fds_truncated {
                return Err(fail(format!("the peer sent descriptors where a {expecting} belongs")));
            }
            if got.bytes == 0 {
                return Err(fail(format!(
                    "the peer closed the connection while we waited for its {expecting}"
                )));
            }
            self.have += got.bytes;
            if self.have == HEADER_LEN && self.len.is_none() {
                self.len = Some(check_header(&self.buf[..HEADER_LEN], expecting)?);
            }
        }
    }

    /// The client's answer is whole: check it, and prove our own key.
    fn answered(&self, sock: BorrowedFd<'_>, key: &[u8], answer: &[u8]) -> Result<(), ConnectionError> {
        let Some(rest) = answer.strip_prefix(ANSWER).filter(|r| r.len() == MAC + NONCE) else {
            return Err(fail(
                "the client's answer is malformed (not an mp-connection client with an authkey?)",
            ));
        };
        let (client_mac, nc) = rest.split_at(MAC);
        if mac(key, &[b"client", &self.ns]).verify_slice(client_mac).is_err() {
            let _ = try_send(sock, &[REFUSED]);
            return Err(fail("the client's answer does not match our authkey: the keys differ"));
        }
        let server_mac = mac(key, &[b"server", nc, &self.ns]).finalize().into_bytes();
        try_send(sock, &[WELCOME, &server_mac])
    }
}

/// Checks a handshake message's header: raw bytes, no descriptors, within
/// [`MAX_MESSAGE`]; returns its payload's length.
fn check_header(head: &[u8], expecting: &str) -> Result<usize, ConnectionError> {
    let header = Header::parse(head, &LIMITS)
        .map_err(|e| fail(format!("the peer sent something other than a {expecting}: {e}")))?;
    if header.kind != FrameKind::Bytes || header.nfds != 0 {
        return Err(fail(format!("the peer sent a value where a {expecting} belongs")));
    }
    Ok(header.len)
}

fn verdict(msg: &[u8]) -> Result<(), ConnectionError> {
    if msg == OK {
        Ok(())
    } else if msg == REFUSED {
        Err(fail("the client refused our answer: the keys differ"))
    } else {
        Err(fail("the client's verdict is malformed"))
    }
}

/// The server's side, blocking until done or `deadline` (for tests).
#[cfg(test)]
pub(crate) fn serve(sock: BorrowedFd<'_>, key: &[u8], deadline: Deadline) -> Result<(), ConnectionError> {
    let mut hs = ServerHandshake::start(sock)?;
    loop {
        if hs.step(sock, key)? == Progress::Done {
            return Ok(());
        }
        let mut set = [mp_sys::fd::PollFd::readable(sock)];
        if mp_sys::fd::poll(&mut set, deadline.remaining())? == 0 {
            return Err(fail("the client went silent"));
        }
    }
}

/// The client's side, run by `connect` on a new connection.
pub(crate) fn answer(sock: BorrowedFd<'_>, key: &[u8]) -> Result<(), ConnectionError> {
    let deadline = Deadline::after(CLIENT_TIMEOUT);
    let challenge = recv(sock, deadline, "challenge")?;
    let Some(ns) = challenge.strip_prefix(CHALLENGE).filter(|n| n.len() == NONCE) else {
        return Err(fail(
            "the server's challenge is malformed (not an mp-connection listener with an authkey?)",
        ));
    };
    let nc = nonce()?;
    let client_mac = mac(key, &[b"client", ns]).finalize().into_bytes();
    send(sock, &[ANSWER, &client_mac, &nc])?;
    let reply = recv(sock, deadline, "reply to our answer")?;
    if reply == REFUSED {
        return Err(fail("the server refused our answer: the keys differ"));
    }
    let Some(server_mac) = reply.strip_prefix(WELCOME).filter(|m| m.len() == MAC) else {
        return Err(fail("the server's reply is malformed"));
    };
    if mac(key, &[b"server", &nc, ns]).verify_slice(server_mac).is_err() {
        let _ = send(sock, &[REFUSED]);
        return Err(fail("the server's answer does not match our authkey: the keys differ"));
    }
    send(sock, &[OK])
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp_sys::socket::{SocketKind, socketpair};
    use std::os::fd::AsFd;

    fn run(
        server_key: &'static [u8],
        client_key: &'static [u8],
    ) -> (Result<(), ConnectionError>, Result<(), ConnectionError>) {
        let (a, b) = socketpair(SocketKind::Stream).unwrap();
        let t = std::thread::spawn(move || answer(b.as_fd(), client_key));
        let s = serve(a.as_fd(), server_key, Deadline::after(Duration::from_secs(20)));
        (s, t.join().unwrap())
    }

    #[test]
    fn same_keys_pass_both_ways() {
        let (s, c) = run(b"secret", b"secret");
        assert!(s.is_ok() && c.is_ok(), "{s:?} {c:?}");
        let (s, c) = run(b"", b"");
        assert!(s.is_ok() && c.is_ok(), "the empty key is a key: {s:?} {c:?}");
    }

    #[test]
    fn different_keys_fail_both_sides() {
        for (sk, ck) in [(&b"secret"[..], &b"Secret"[..]), (b"", b"x"), (b"x", b"")] {
            let (s, c) = run(sk, ck);
            assert!(matches!(s, Err(ConnectionError::Authentication(_))), "{s:?}");
            assert!(matches!(c, Err(ConnectionError::Authentication(_))), "{c:?}");
        }
    }

    #[test]
    fn a_client_mac_is_not_a_server_mac() {
        let ns = [1u8; NONCE];
        let nc = [1u8; NONCE];
        let c = mac(b"k", &[b"client", &ns]).finalize().into_bytes();
        let s = mac(b"k", &[b"server", &nc, &ns]).finalize().into_bytes();
        assert_ne!(c, s);
    }
}
