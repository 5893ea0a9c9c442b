//! Connections within one process: message boundaries, directions, every
//! receive form, closing, the end of file, bad input written by a raw peer,
//! listeners and clients with and without a key, and `wait`. (Tests with
//! child processes are in `tests/processes.rs`.)

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use mp_codec::HEADER_LEN;
use mp_connection::{Client, Connection, ConnectionError, Listener, pipe, pipe_simplex, wait};
use mp_sys::fd::PollFd;
use mp_sys::socket::{self, SocketKind, socketpair};

const PATIENCE: Duration = Duration::from_secs(20);

/// Receives after checking, with a timeout, that something is there.
fn recv_within<T: serde::de::DeserializeOwned>(c: &Connection) -> Result<T, ConnectionError> {
    assert!(c.poll_timeout(PATIENCE)?, "nothing arrived within {PATIENCE:?}");
    c.recv()
}

fn bytes_within(c: &Connection) -> Result<Vec<u8>, ConnectionError> {
    assert!(c.poll_timeout(PATIENCE)?, "nothing arrived within {PATIENCE:?}");
    c.recv_bytes()
}

/// A header as mp-codec writes it.
fn header(len: u32, nfds: u16, kind: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(b"mpF1");
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..10].copy_from_slice(&nfds.to_le_bytes());
    h[10] = kind;
    h
}

/// A Connection over one end of a socket pair, and the raw other end.
fn raw_peer() -> (Connection, OwnedFd) {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    (connection_from(a), b)
}

/// What a Connection travels as: its socket, directions, and a pipe's
/// region with the slot and the lane it writes.
#[derive(serde::Serialize)]
#[serde(rename = "Connection")]
struct Wire {
    fd: mp_codec::Fd,
    readable: bool,
    writable: bool,
    unix: bool,
    ring: Option<(mp_codec::Fd, u32, u8)>,
}

/// Builds a Connection around a socket the way a receiving process does:
/// by decoding one that was sent.
fn connection_from(fd: OwnedFd) -> Connection {
    let frame = mp_codec::encode(&Wire {
        fd: mp_codec::Fd(fd),
        readable: true,
        writable: true,
        unix: true,
        ring: None,
    })
    .unwrap();
    mp_codec::decode(frame).unwrap()
}

fn write_raw(fd: BorrowedFd<'_>, parts: &[&[u8]]) {
    let bufs: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    assert_eq!(socket::send_with_fds(fd, &bufs, &[]).unwrap(), total);
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-conn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn messages_keep_their_boundaries_and_empty_ones_count() {
    let (a, b) = pipe().unwrap();
    for n in [0usize, 1, 7, 0, 4096, 100_000, 0] {
        a.send_bytes(&vec![n as u8; n]).unwrap();
    }
    a.send(&"").unwrap();
    a.send(&()).unwrap();
    a.send(&vec![1u8, 2, 3]).unwrap();
    for n in [0usize, 1, 7, 0, 4096, 100_000, 0] {
        assert_eq!(bytes_within(&b).unwrap(), vec![n as u8; n], "message of {n} bytes");
    }
    assert_eq!(recv_within::<String>(&b).unwrap(), "");
    recv_within::<()>(&b).unwrap();
    assert_eq!(recv_within::<Vec<u8>>(&b).unwrap(), vec![1, 2, 3]);
    assert!(!b.poll().unwrap(), "nothing left over");
    // And the other way.
    b.send(&u64::MAX).unwrap();
    assert_eq!(recv_within::<u64>(&a).unwrap(), u64::MAX);
}

#[test]
fn simplex_ends_refuse_the_wrong_direction() {
    let (r, w) = pipe_simplex().unwrap();
    assert!(matches!(r.send(&1), Err(ConnectionError::ReadOnly)));
    assert!(matches!(r.send_bytes(b"x"), Err(ConnectionError::ReadOnly)));
    assert!(matches!(w.recv::<i32>(), Err(ConnectionError::WriteOnly)));
    assert!(matches!(w.recv_bytes(), Err(ConnectionError::WriteOnly)));
    assert!(matches!(
        w.recv_bytes_into(&mut [0; 4]),
        Err(ConnectionError::WriteOnly)
    ));
    assert!(matches!(w.poll(), Err(ConnectionError::WriteOnly)));
    assert!(matches!(
        wait(&[&w], Some(Duration::ZERO)),
        Err(ConnectionError::WriteOnly)
    ));
    // The kernel refuses too: a raw write on (a duplicate of) the reader's
    // socket fails.
    // The socket's descriptor travels first, the pipe's region second.
    let (_, fds) = mp_codec::encode(&r).unwrap().into_parts();
    let dup = fds.into_iter().next().unwrap();
    assert!(
        mp_sys::fd::write(dup.as_fd(), b"x").is_err(),
        "the reader's socket accepted a write"
    );
    w.send(&"one way").unwrap();
    assert_eq!(recv_within::<String>(&r).unwrap(), "one way");
    assert!(r.is_readable() && !r.is_writable() && w.is_writable() && !w.is_readable());
}

#[test]
fn recv_bytes_into_fills_or_hands_back_the_whole_message() {
    let (a, b) = pipe().unwrap();
    a.send_bytes(b"exact").unwrap();
    a.send_bytes(b"much too long").unwrap();
    a.send_bytes(b"").unwrap();
    a.send_bytes(b"next").unwrap();
    let mut buf = [b'.'; 5];
    assert!(b.poll_timeout(PATIENCE).unwrap());
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 5);
    assert_eq!(&buf, b"exact");
    let mut buf = [b'.'; 5];
    match b.recv_bytes_into(&mut buf) {
        Err(ConnectionError::BufferTooShort(whole)) => assert_eq!(whole, b"much too long"),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    assert_eq!(&buf, b".....", "the buffer is untouched");
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 0, "an empty message");
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 4, "in sync after BufferTooShort");
    assert_eq!(&buf[..4], b"next");
}

#[test]
fn the_wrong_kind_or_type_is_a_decode_error_in_sync() {
    let (a, b) = pipe().unwrap();
    a.send_bytes(b"raw").unwrap();
    a.send(&"value").unwrap();
    a.send(&"value").unwrap();
    a.send(&"text").unwrap();
    a.send(&42u32).unwrap();
    let e = b.recv::<String>().unwrap_err();
    assert!(
        matches!(e, ConnectionError::Decode(ref m) if m.contains("recv_bytes")),
        "{e}"
    );
    let e = b.recv_bytes().unwrap_err();
    assert!(matches!(e, ConnectionError::Decode(ref m) if m.contains("recv")), "{e}");
    let e = b.recv_bytes_into(&mut [0u8; 64]).unwrap_err();
    assert!(matches!(e, ConnectionError::Decode(_)), "{e}");
    let e = b.recv::<bool>().unwrap_err();
    assert!(matches!(e, ConnectionError::Decode(_)), "wrong type: {e}");
    assert!(!e.is_eof());
    assert_eq!(recv_within::<u32>(&b).unwrap(), 42, "in sync afterwards");
}

#[test]
fn poll_never_consumes_and_poll_timeout_waits() {
    let (a, b) = pipe().unwrap();
    assert!(!b.poll().unwrap());
    let t0 = Instant::now();
    assert!(
        !b.poll_timeout(Duration::from_millis(500)).unwrap(),
        "idle pipe polled true"
    );
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(400), "returned after {took:?}");
    assert!(took < Duration::from_secs(10), "returned after {took:?}");
    a.send(&1u8).unwrap();
    for _ in 0..3 {
        assert!(b.poll_timeout(PATIENCE).unwrap());
    }
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    assert!(!b.poll().unwrap());
}

#[test]
fn close_releases_one_handle_and_the_peer_sees_eof_after_the_last() {
    let (mut a, b) = pipe().unwrap();
    let mut a2 = a.clone();
    a.close().unwrap();
    a.close().unwrap();
    assert!(a.is_closed());
    for e in [
        a.send(&1).unwrap_err(),
        a.recv::<i32>().unwrap_err(),
        a.poll().unwrap_err(),
        a.send_bytes(b"").unwrap_err(),
        a.fileno().unwrap_err(),
    ] {
        assert!(matches!(e, ConnectionError::Closed), "{e}");
    }
    assert!(mp_codec::encode(&a).is_err(), "a closed connection cannot be sent");
    // The clone still works.
    a2.send(&"still here").unwrap();
    assert_eq!(recv_within::<String>(&b).unwrap(), "still here");
    a2.close().unwrap();
    assert!(b.poll_timeout(PATIENCE).unwrap(), "end of file is ready");
    let e = b.recv::<String>().unwrap_err();
    assert!(e.is_eof() && matches!(e, ConnectionError::Eof), "{e}");
    let e = b.recv_bytes().unwrap_err();
    assert!(e.is_eof(), "still the end: {e}");
    let e = b.send(&1).unwrap_err();
    assert!(e.is_eof(), "send to a closed peer: {e}");
}

#[test]
fn clones_in_threads_never_interleave_messages() {
    let (a, b) = pipe().unwrap();
    // Messages larger than the socket's buffer, so that a send takes many
    // writes and unlocked senders would interleave their bytes; small ones
    // between them.
    let senders: Vec<_> = (0..4u8)
        .map(|i| {
            let a = a.clone();
            thread::spawn(move || {
                for _ in 0..5 {
                    a.send_bytes(&vec![i; 3 << 20]).unwrap();
                    a.send_bytes(&[i + 10; 1000]).unwrap();
                }
            })
        })
        .collect();
    let mut counts = [0; 14];
    for _ in 0..40 {
        let m = bytes_within(&b).unwrap();
        assert!(m.iter().all(|&x| x == m[0]), "bytes of two messages mixed");
        let expected_len = if m[0] < 10 { 3 << 20 } else { 1000 };
        assert_eq!(m.len(), expected_len);
        counts[usize::from(m[0])] += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(counts, [5, 5, 5, 5, 0, 0, 0, 0, 0, 0, 5, 5, 5, 5]);
}

#[test]
fn sixty_four_mib_messages_cross_whole() {
    let (a, b) = pipe().unwrap();
    let sender = thread::spawn(move || {
        let data: Vec<u8> = (0..64usize << 20).map(|i| (i % 251) as u8).collect();
        a.send_bytes(&data).unwrap();
        a.send(&serde_bytes::ByteBuf::from(data)).unwrap();
        a
    });
    let got = bytes_within(&b).unwrap();
    assert_eq!(got.len(), 64 << 20);
    assert!(got.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
    let mut into = vec![0u8; 64 << 20];
    let v: serde_bytes::ByteBuf = recv_within(&b).unwrap();
    into.copy_from_slice(&v);
    assert_eq!(into, got);
    drop(sender.join().unwrap());
}

#[test]
fn a_message_over_the_limit_is_refused_before_sending() {
    let (a, b) = pipe().unwrap();
    // Lazily zeroed memory: the check comes before anything touches it.
    let huge = vec![0u8; mp_codec::DEFAULT_MAX_FRAME_LEN + 1];
    let e = a.send_bytes(&huge).unwrap_err();
    assert!(matches!(e, ConnectionError::TooLarge { .. }), "{e}");
    drop(huge);
    assert!(!b.poll().unwrap(), "nothing was sent");
    a.send(&1u8).unwrap();
    assert_eq!(recv_within::<u8>(&b).unwrap(), 1);
}

#[test]
fn a_corrupt_header_is_an_error_and_the_connection_is_broken() {
    let (c, peer) = raw_peer();
    write_raw(peer.as_fd(), &[b"GARBAGE!!!!!", b"more"]);
    assert!(c.poll_timeout(PATIENCE).unwrap());
    let e = c.recv::<i32>().unwrap_err();
    assert!(
        matches!(e, ConnectionError::Decode(ref m) if m.contains("corrupt")),
        "{e}"
    );
    let e = c.recv::<i32>().unwrap_err();
    assert!(matches!(e, ConnectionError::Broken(_)), "then broken: {e}");
    let e = c.recv_bytes().unwrap_err();
    assert!(matches!(e, ConnectionError::Broken(_)), "{e}");
    // Sending still works.
    c.send(&5u8).unwrap();
}

#[test]
fn a_truncated_frame_is_an_end_of_file_error() {
    let (c, peer) = raw_peer();
    write_raw(peer.as_fd(), &[&header(100, 0, 1), &[1u8; 10]]);
    drop(peer);
    assert!(c.poll_timeout(PATIENCE).unwrap());
    let e = c.recv_bytes().unwrap_err();
    assert!(
        matches!(e, ConnectionError::Truncated { expected: 112, got: 22 }),
        "{e:?}"
    );
    assert!(e.is_eof());
    // A header cut short.
    let (c, peer) = raw_peer();
    write_raw(peer.as_fd(), &[&header(100, 0, 0)[..5]]);
    drop(peer);
    let e = c.recv::<u8>().unwrap_err();
    assert!(matches!(e, ConnectionError::Truncated { .. }) && e.is_eof(), "{e:?}");
}

/// Peak resident memory of this process, from `/proc/self/status`.
fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn an_oversized_length_prefix_is_refused_without_allocating_it() {
    let (c, peer) = raw_peer();
    write_raw(peer.as_fd(), &[&header(u32::MAX, 0, 1), b"tail"]);
    assert!(c.poll_timeout(PATIENCE).unwrap());
    let before = peak_rss_kib();
    let e = c.recv_bytes().unwrap_err();
    assert!(
        matches!(e, ConnectionError::TooLarge { len, max } if len == u32::MAX as usize && max == 1 << 30),
        "{e:?}"
    );
    assert!(matches!(c.recv_bytes().unwrap_err(), ConnectionError::Broken(_)));
    // Within the limit, memory follows the bytes that actually come: a
    // 1000 MB announcement followed by 10 bytes and a close costs ~1 MiB.
    let (c, peer) = raw_peer();
    write_raw(peer.as_fd(), &[&header(1_000_000_000, 0, 1), &[0u8; 10]]);
    drop(peer);
    let e = c.recv_bytes().unwrap_err();
    assert!(e.is_eof(), "{e:?}");
    let grew = peak_rss_kib().saturating_sub(before);
    assert!(grew < 64 * 1024, "peak memory grew by {grew} KiB");
}

#[test]
fn descriptors_that_do_not_match_the_header_are_an_error_in_sync() {
    let (c, peer) = raw_peer();
    // A value frame announcing one descriptor, sent without it.
    let payload = [3u8];
    write_raw(peer.as_fd(), &[&header(1, 1, 0), &payload]);
    mp_codec::send(peer.as_fd(), &9u8).unwrap();
    assert!(c.poll_timeout(PATIENCE).unwrap());
    let e = c.recv::<u8>().unwrap_err();
    assert!(matches!(e, ConnectionError::Decode(_)), "{e:?}");
    assert_eq!(recv_within::<u8>(&c).unwrap(), 9, "in sync");
}

#[test]
fn a_connection_travels_through_another() {
    let (a, b) = pipe().unwrap();
    let (x, y) = pipe().unwrap();
    a.send(&(String::from("here is x"), x)).unwrap();
    let (label, x2): (String, Connection) = recv_within(&b).unwrap();
    assert_eq!(label, "here is x");
    x2.send(&"through the sent end").unwrap();
    assert_eq!(recv_within::<String>(&y).unwrap(), "through the sent end");
    // A simplex end keeps its direction.
    let (r, w) = pipe_simplex().unwrap();
    a.send(&r).unwrap();
    let r2: Connection = recv_within(&b).unwrap();
    assert!(r2.is_readable() && !r2.is_writable());
    w.send(&3u8).unwrap();
    assert_eq!(recv_within::<u8>(&r2).unwrap(), 3);
    // Other serde formats cannot carry it.
    let e = serde_json::to_string(&a).unwrap_err();
    assert!(e.to_string().contains("mp-codec"), "{e}");
}

#[test]
fn wait_returns_the_ready_subset_and_counts_eof() {
    let (a1, b1) = pipe().unwrap();
    let (a2, b2) = pipe().unwrap();
    let (mut a3, b3) = pipe().unwrap();
    assert!(
        wait(&[&b1, &b2, &b3], Some(Duration::from_millis(10)))
            .unwrap()
            .is_empty()
    );
    a2.send(&2).unwrap();
    assert_eq!(wait(&[&b1, &b2, &b3], Some(PATIENCE)).unwrap(), vec![1]);
    a3.close().unwrap();
    assert_eq!(wait(&[&b1, &b2, &b3], Some(PATIENCE)).unwrap(), vec![1, 2]);
    a1.send_bytes(b"").unwrap();
    assert_eq!(wait(&[&b1, &b2, &b3], None).unwrap(), vec![0, 1, 2]);
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    assert!(wait(&[&l], Some(Duration::ZERO)).unwrap().is_empty());
    let _c = Client::connect(&l.address(), None).unwrap();
    assert_eq!(wait(&[&b3, &l], Some(PATIENCE)).unwrap(), vec![0, 1]);
    let mut closed = b1.clone();
    closed.close().unwrap();
    assert!(matches!(wait(&[&b2, &closed], None), Err(ConnectionError::Closed)));
}

fn echo_server(l: Listener, n: usize) -> thread::JoinHandle<Result<(), ConnectionError>> {
    thread::spawn(move || {
        for _ in 0..n {
            let c = l.accept_timeout(PATIENCE)?;
            let s: String = recv_within(&c)?;
            c.send(&s.to_uppercase())?;
        }
        Ok(())
    })
}

#[test]
fn listener_and_client_over_unix_paths_and_tcp_with_and_without_keys() {
    let path = temp_path("echo.sock");
    let unix_addr = path.to_str().unwrap().to_string();
    for (addr, key) in [
        (unix_addr.as_str(), None),
        (unix_addr.as_str(), Some(&b"secret"[..])),
        (unix_addr.as_str(), Some(&b""[..])),
        ("127.0.0.1:0", None),
        ("127.0.0.1:0", Some(&b"k"[..])),
        ("localhost:0", Some(&[0u8, 255, 1][..])),
    ] {
        let l = Listener::bind(addr, key).unwrap();
        let address = l.address();
        let server = echo_server(l, 2);
        for word in ["hello", "again"] {
            let c = Client::connect(&address, key).unwrap();
            c.send(&word).unwrap();
            assert_eq!(
                recv_within::<String>(&c).unwrap(),
                word.to_uppercase(),
                "{addr} {key:?}"
            );
        }
        server.join().unwrap().unwrap();
        assert!(
            !path.exists() || addr != unix_addr,
            "the socket file is removed on drop"
        );
    }
}

#[test]
fn a_wrong_key_is_an_authentication_error_on_both_sides() {
    for addr in [
        temp_path("auth.sock").to_str().unwrap().to_string(),
        "127.0.0.1:0".into(),
    ] {
        for (server_key, client_key) in [(&b"right"[..], &b"wrong"[..]), (b"", b" "), (b"key", b"")] {
            let l = Listener::bind(&addr, Some(server_key)).unwrap();
            let address = l.address();
            let server = thread::spawn(move || (l.accept_timeout(PATIENCE), l));
            let c = Client::connect(&address, Some(client_key));
            let (s, l) = server.join().unwrap();
            assert!(matches!(c, Err(ConnectionError::Authentication(_))), "client: {c:?}");
            assert!(matches!(s, Err(ConnectionError::Authentication(_))), "server: {s:?}");
            // The listener keeps listening.
            let t = thread::spawn(move || Client::connect(&address, Some(server_key)).map(|c| c.send(&1u8)));
            let ok = l.accept_timeout(PATIENCE).unwrap();
            assert_eq!(recv_within::<u8>(&ok).unwrap(), 1);
            t.join().unwrap().unwrap().unwrap();
        }
    }
}

#[test]
fn a_client_without_a_key_or_a_server_without_one_fails_the_handshake() {
    // The server has a key, the client none: its first message is no answer.
    let l = Listener::bind("127.0.0.1:0", Some(b"key")).unwrap();
    let address = l.address();
    let server = thread::spawn(move || l.accept_timeout(PATIENCE));
    let c = Client::connect(&address, None).unwrap();
    c.send(&"hello").unwrap();
    assert!(matches!(
        server.join().unwrap(),
        Err(ConnectionError::Authentication(_))
    ));
    // The client has a key, the server none: its first message is no challenge.
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    let address = l.address();
    let server = thread::spawn(move || {
        let c = l.accept_timeout(PATIENCE)?;
        c.send(&"welcome")?;
        Ok::<_, ConnectionError>(c)
    });
    let c = Client::connect(&address, Some(b"key"));
    assert!(
        matches!(c, Err(ConnectionError::Authentication(ref m)) if m.contains("challenge")),
        "{c:?}"
    );
    drop(server.join().unwrap().unwrap());
}

#[test]
fn garbage_during_the_handshake_is_an_error_not_a_hang_or_an_allocation() {
    // A raw client that sends garbage, then one that announces a huge
    // message: the listener refuses both.
    let path = temp_path("garbage.sock");
    let l = Listener::bind(path.to_str().unwrap(), Some(b"key")).unwrap();
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &header(1 << 30, 0, 1)[..],
        &header(8, 0, 0)[..],
    ] {
        let mut raw = UnixStream::connect(&path).unwrap();
        std::io::Write::write_all(&mut raw, junk).unwrap();
        if junk.len() == HEADER_LEN && junk[10] == 0 {
            std::io::Write::write_all(&mut raw, &[0u8; 8]).unwrap();
        }
        let e = l.accept_timeout(PATIENCE).unwrap_err();
        assert!(matches!(e, ConnectionError::Authentication(_)), "{e:?}");
    }
    // A raw server that answers a client with garbage.
    let path = temp_path("raw-server.sock");
    let raw = UnixListener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = raw.accept().unwrap();
        std::io::Write::write_all(&mut s, &[0xAB; 64]).unwrap();
        // Keep the socket open until the client gave up.
        let mut set = [PollFd::readable(s.as_fd())];
        mp_sys::fd::poll(&mut set, Some(PATIENCE)).unwrap();
    });
    let c = Client::connect(path.to_str().unwrap(), Some(b"key"));
    assert!(matches!(c, Err(ConnectionError::Authentication(_))), "{c:?}");
    server.join().unwrap();
}

#[test]
fn a_second_bind_is_an_error_and_close_frees_the_address() {
    let path = temp_path("twice.sock");
    let addr = path.to_str().unwrap();
    let mut l = Listener::bind(addr, None).unwrap();
    let e = Listener::bind(addr, None).unwrap_err();
    assert!(
        matches!(e, ConnectionError::Io(ref io) if io.kind() == std::io::ErrorKind::AddrInUse),
        "{e:?}"
    );
    l.close().unwrap();
    l.close().unwrap();
    assert!(matches!(l.accept(), Err(ConnectionError::Closed)));
    assert!(!path.exists());
    let _again = Listener::bind(addr, None).unwrap();
    let t = Listener::bind("127.0.0.1:0", None).unwrap();
    assert!(Listener::bind(&t.address(), None).is_err());
    assert!(matches!(
        t.accept_timeout(Duration::from_millis(5)),
        Err(ConnectionError::Timeout)
    ));
}

#[test]
fn tcp_connections_cannot_carry_handles() {
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    let c = Client::connect(&l.address(), None).unwrap();
    let s = l.accept_timeout(PATIENCE).unwrap();
    let (x, _y) = pipe().unwrap();
    let e = c.send(&x).unwrap_err();
    assert!(
        matches!(e, ConnectionError::Encode(ref m) if m.contains("TCP")),
        "{e:?}"
    );
    c.send(&"plain data is fine").unwrap();
    assert_eq!(recv_within::<String>(&s).unwrap(), "plain data is fine");
}

#[test]
fn handles_are_send_sync_clone_and_errors_are_std_errors() {
    fn handle<T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned>() {}
    fn shared<T: Send + Sync>() {}
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    handle::<Connection>();
    shared::<Listener>();
    error::<ConnectionError>();
    let e = ConnectionError::BufferTooShort(vec![0; 3]);
    assert!(e.to_string().contains("3 bytes"));
}

// ---- The shared ring of a pipe -------------------------------------------

/// The region under a pipe's end, mapped again as a peer could, and the
/// offset of the end's slot in it.
fn slot_of(c: &Connection) -> (mp_sys::region::Region, usize) {
    #[derive(serde::Deserialize)]
    #[serde(rename = "Connection")]
    struct Wire {
        _fd: mp_codec::Fd,
        _readable: bool,
        _writable: bool,
        _unix: bool,
        ring: Option<(mp_codec::Fd, u32, u8)>,
    }
    let w: Wire = mp_codec::decode(mp_codec::encode(c).unwrap()).unwrap();
    let (fd, slot, _) = w.ring.expect("a pipe end carries its region");
    // The layout of ring.rs: a 4 KiB header, then slots of a 4 KiB page of
    // control words and two 32 KiB lanes.
    let offset = 4096 + slot as usize * (4096 + 2 * 32 * 1024);
    (mp_sys::region::Region::from_fd(fd.0).unwrap(), offset)
}

/// Waits a little without sleeping on a clock: a timed poll of an idle pipe.
fn pause(d: Duration) {
    let (_idle, idle) = pipe().unwrap();
    assert!(!idle.poll_timeout(d).unwrap());
}

#[test]
fn order_holds_across_the_ring_and_the_socket() {
    // Small values (ring), big ones (socket), handles (socket), and more
    // small ones than the ring holds while nobody reads (they spill onto
    // the socket): all arrive in the order sent.
    let (a, b) = pipe().unwrap();
    let reader = thread::spawn(move || {
        let mut n = 0u32;
        while n < 6000 {
            let (k, blob, conn): (u32, Vec<u8>, Option<Connection>) = recv_within(&b).unwrap();
            assert_eq!(k, n, "message {n} arrived as {k}");
            match k % 1000 {
                500 => assert_eq!(blob.len(), 20_000),
                700 => assert!(conn.is_some(), "the handle of message {k}"),
                _ => assert!(blob.is_empty() && conn.is_none()),
            }
            n += 1;
        }
        b
    });
    let (x, _y) = pipe().unwrap();
    for k in 0..6000u32 {
        let blob = if k % 1000 == 500 { vec![7; 20_000] } else { Vec::new() };
        let conn = (k % 1000 == 700).then(|| x.clone());
        a.send(&(k, blob, conn)).unwrap();
    }
    let b = reader.join().unwrap();
    assert!(!b.poll().unwrap());
}

#[test]
fn a_sleeping_receiver_is_woken_by_a_message_in_the_ring() {
    let (a, b) = pipe().unwrap();
    let echo = thread::spawn(move || {
        for _ in 0..5 {
            // Blocks well past the spin: sleeps in poll until woken.
            let s: String = b.recv().unwrap();
            b.send(&s.to_uppercase()).unwrap();
        }
    });
    for word in ["one", "two", "three", "four", "five"] {
        pause(Duration::from_millis(5));
        a.send(&word).unwrap();
        assert_eq!(recv_within::<String>(&a).unwrap(), word.to_uppercase());
    }
    echo.join().unwrap();
    // wait() sleeps the same way.
    let (a, b) = pipe().unwrap();
    let late = thread::spawn(move || {
        pause(Duration::from_millis(5));
        a.send(&1u8).unwrap();
        a
    });
    assert_eq!(wait(&[&b], Some(PATIENCE)).unwrap(), vec![0]);
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    // After the wake-up, an idle end is not ready (the wake-up was dropped).
    assert!(wait(&[&b], Some(Duration::from_millis(20))).unwrap().is_empty());
    assert!(!b.poll_timeout(Duration::from_millis(20)).unwrap());
    drop(late.join().unwrap());
    assert_eq!(wait(&[&b], Some(PATIENCE)).unwrap(), vec![0], "end of file");
}

#[test]
fn fileno_and_a_waitable_of_ones_own_see_every_later_message() {
    let (a, b) = pipe().unwrap();
    a.send(&0u8).unwrap(); // in the ring: poll sees it, the descriptor may not
    assert!(b.fileno().unwrap() >= 0);
    assert!(b.poll().unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 0);
    a.send(&1u8).unwrap();
    // A duplicate of the socket, as an event loop of one's own would watch.
    let (_, fds) = mp_codec::encode(&b).unwrap().into_parts();
    let sock = fds.into_iter().next().unwrap();
    let mut set = [PollFd::readable(sock.as_fd())];
    assert_eq!(
        mp_sys::fd::poll(&mut set, Some(PATIENCE)).unwrap(),
        1,
        "the descriptor shows a message sent after fileno"
    );
    assert_eq!(b.recv::<u8>().unwrap(), 1);

    // A type of one's own that hands out the descriptor.
    struct Mine(Connection);
    impl mp_connection::Waitable for Mine {
        fn wait_fd(&self) -> Result<mp_connection::WaitFd<'_>, ConnectionError> {
            self.0.wait_fd()
        }
    }
    let (a, b) = pipe().unwrap();
    let mine = Mine(b);
    assert!(wait(&[&mine], Some(Duration::ZERO)).unwrap().is_empty());
    a.send(&2u8).unwrap();
    assert_eq!(wait(&[&mine], Some(PATIENCE)).unwrap(), vec![0]);
    assert_eq!(mine.0.recv::<u8>().unwrap(), 2);
}

#[test]
fn two_handles_of_one_end_in_one_process_keep_their_messages_whole() {
    // A copy of `a` decoded in this process is another handle of the same
    // end: both send from threads at once; one writes the ring, the other
    // the socket, and nothing mixes.
    let (a, b) = pipe().unwrap();
    let a2: Connection = mp_codec::decode(mp_codec::encode(&a).unwrap()).unwrap();
    let senders: Vec<_> = [a, a2]
        .into_iter()
        .enumerate()
        .map(|(id, c)| {
            thread::spawn(move || {
                for k in 0..3000u32 {
                    c.send(&(id as u32, k, vec![id as u8; (k % 50) as usize])).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u32; 2];
    for _ in 0..6000 {
        let (id, k, v): (u32, u32, Vec<u8>) = recv_within(&b).unwrap();
        assert_eq!(k, next[id as usize], "sender {id} out of order");
        assert!(v.len() == (k % 50) as usize && v.iter().all(|&x| x == id as u8));
        next[id as usize] += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
}

#[test]
fn a_corrupt_ring_is_an_error_then_the_connection_is_broken() {
    use std::sync::atomic::Ordering;
    let (a, b) = pipe().unwrap();
    a.send(&"fine").unwrap();
    assert_eq!(recv_within::<String>(&b).unwrap(), "fine");
    // A peer scribbles a head far past the tail of a's lane (lane 0, whose
    // words start 64 bytes into the slot).
    let (region, slot) = slot_of(&a);
    region.atomic_u64(slot + 64).unwrap().store(1 << 40, Ordering::SeqCst);
    let e = b.recv::<String>().unwrap_err();
    assert!(matches!(&e, ConnectionError::Decode(m) if m.contains("corrupt")), "{e}");
    assert!(matches!(b.recv::<String>(), Err(ConnectionError::Broken(_))));
    // The other direction still works.
    b.send(&"back").unwrap();
    assert_eq!(recv_within::<String>(&a).unwrap(), "back");
    // A region that is not a pipe's is refused when a connection arrives.
    let other = mp_sys::region::Region::create("not-a-pipe", 2 << 20).unwrap();
    let (s1, _s2) = socketpair(SocketKind::Stream).unwrap();
    let frame = mp_codec::encode(&Wire {
        fd: mp_codec::Fd(s1),
        readable: true,
        writable: true,
        unix: true,
        ring: Some((mp_codec::Fd(other.try_clone_fd().unwrap()), 0, 0)),
    })
    .unwrap();
    let e = mp_codec::decode::<Connection>(frame).unwrap_err();
    assert!(e.to_string().contains("not a pipe's"), "{e}");
}
