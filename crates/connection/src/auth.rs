//! The authkey handshake of `Listener::accept` and `Client::connect`:
//! HMAC-SHA256 challenge and response, in both directions.
//!
//! Every message is an mp-codec raw-bytes frame of at most [`MAX_MESSAGE`]
//! bytes, read with a deadline of [`HANDSHAKE_TIMEOUT`] for the whole
//! handshake, so a peer that sends garbage, too much, or nothing cannot make
//! either side allocate, hang or panic.
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

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use mp_codec::{FrameKind, Incoming, Limits, Wait};
use sha2::Sha256;

use crate::error::ConnectionError;

/// The longest handshake message accepted.
pub(crate) const MAX_MESSAGE: usize = 256;

/// How long a whole handshake may take before the side waiting gives up.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Receives one handshake message before `deadline`.
fn recv(sock: BorrowedFd<'_>, deadline: Instant, expecting: &str) -> Result<Vec<u8>, ConnectionError> {
    let limits = Limits {
        max_frame_len: MAX_MESSAGE,
    };
    let wait = Wait {
        spin: Duration::ZERO,
        deadline: Some(deadline),
    };
    let bad = |e: mp_codec::CodecError| {
        let why = match e {
            mp_codec::CodecError::Timeout | mp_codec::CodecError::Stalled { .. } => {
                format!("no {expecting} from the peer within {HANDSHAKE_TIMEOUT:?} (does it use an authkey too?)")
            }
            e if e.is_eof() => format!("the peer closed the connection while we waited for its {expecting}"),
            e => format!("the peer sent something other than a {expecting}: {e}"),
        };
        fail(why)
    };
    let Incoming { header, fds } = mp_codec::recv_header(sock, &limits, wait).map_err(bad)?;
    if header.kind != FrameKind::Bytes || !fds.is_empty() {
        return Err(fail(format!("the peer sent a value where a {expecting} belongs")));
    }
    let mut buf = vec![0u8; header.len];
    mp_codec::recv_payload_into(sock, &mut buf, Some(deadline)).map_err(bad)?;
    Ok(buf)
}

/// The server's side, run by `accept` on a new connection.
pub(crate) fn serve(sock: BorrowedFd<'_>, key: &[u8]) -> Result<(), ConnectionError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let ns = nonce()?;
    send(sock, &[CHALLENGE, &ns])?;
    let answer = recv(sock, deadline, "answer to our challenge")?;
    let Some(rest) = answer.strip_prefix(ANSWER).filter(|r| r.len() == MAC + NONCE) else {
        return Err(fail(
            "the client's answer is malformed (not an mp-connection client with an authkey?)",
        ));
    };
    let (client_mac, nc) = rest.split_at(MAC);
    if mac(key, &[b"client", &ns]).verify_slice(client_mac).is_err() {
        let _ = send(sock, &[REFUSED]);
        return Err(fail("the client's answer does not match our authkey: the keys differ"));
    }
    let server_mac = mac(key, &[b"server", nc, &ns]).finalize().into_bytes();
    send(sock, &[WELCOME, &server_mac])?;
    let verdict = recv(sock, deadline, "verdict on our answer")?;
    if verdict == OK {
        Ok(())
    } else if verdict == REFUSED {
        Err(fail("the client refused our answer: the keys differ"))
    } else {
        Err(fail("the client's verdict is malformed"))
    }
}

/// The client's side, run by `connect` on a new connection.
pub(crate) fn answer(sock: BorrowedFd<'_>, key: &[u8]) -> Result<(), ConnectionError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
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
        let s = serve(a.as_fd(), server_key);
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
