//! Hostile and broken peers: silent or slow clients must not deny service
//! to honest ones (`Listener` runs handshakes side by side, with a cap and a
//! deadline), and every receive has a timeout form whose deadline covers a
//! whole frame (`recv_timeout`, `recv_bytes_timeout`,
//! `recv_bytes_into_timeout`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use mp_codec::HEADER_LEN;
use mp_connection::{Client, Connection, ConnectionError, Listener, pipe};

const PATIENCE: Duration = Duration::from_secs(20);
const KEY: &[u8] = b"hostile-test-key";

/// The generous bound for "served at once" (the goal is well under 100 ms;
/// CI has 2 busy cores).
const AT_ONCE: Duration = Duration::from_secs(1);

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-conn-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// A header as mp-codec writes it.
fn header(len: u32, kind: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(b"mpF1");
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[10] = kind;
    h
}

/// A raw socket that connected and then says nothing.
enum Silent {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Silent {
    fn connect(addr: &str) -> Silent {
        if addr.contains('/') {
            Silent::Unix(UnixStream::connect(addr).unwrap())
        } else {
            Silent::Tcp(TcpStream::connect(addr).unwrap())
        }
    }

    /// Whether the listener closed this socket within `t`: reads (and drops)
    /// the challenge, then waits for the end of file.
    fn closed_within(&mut self, t: Duration) -> bool {
        let deadline = mp_sys::time::Deadline::nap(t);
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let r = match self {
                Silent::Tcp(s) => s.set_read_timeout(Some(left)).and_then(|()| s.read(&mut buf)),
                Silent::Unix(s) => s.set_read_timeout(Some(left)).and_then(|()| s.read(&mut buf)),
            };
            match r {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// `silent` raw connections held open, then an honest client: how long the
/// honest one takes to connect, authenticate and get an echo back.
fn honest_after_silent(addr: &str, silent: usize) -> Duration {
    let l = Listener::bind(addr, Some(KEY)).unwrap();
    let address = l.address();
    thread::scope(|s| {
        let server = s.spawn(|| -> Result<(), ConnectionError> {
            loop {
                match l.accept_timeout(PATIENCE) {
                    Ok(c) => {
                        assert!(c.poll_timeout(PATIENCE)?);
                        let n: u32 = c.recv()?;
                        return c.send(&(n + 1));
                    }
                    // A handshake that failed (the old listener timed out on
                    // a silent client): keep accepting.
                    Err(ConnectionError::Authentication(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
        });
        let held: Vec<Silent> = (0..silent).map(|_| Silent::connect(&address)).collect();
        let t0 = Instant::now();
        let served = Client::connect(&address, Some(KEY)).and_then(|c| {
            c.send(&41u32)?;
            assert!(c.poll_timeout(PATIENCE)?);
            c.recv::<u32>()
        });
        let took = t0.elapsed();
        eprintln!("{addr}: {silent} silent connection(s) held open, then an honest client served in {took:?}");
        drop(held);
        assert_eq!(served.unwrap(), 42, "{addr}, {silent} silent, after {took:?}");
        server.join().unwrap().unwrap();
        took
    })
}

#[test]
fn one_then_fifty_silent_connections_do_not_delay_an_honest_client() {
    let path = temp_path("silent.sock");
    for addr in ["127.0.0.1:0", path.to_str().unwrap()] {
        for silent in [1, 50] {
            let took = honest_after_silent(addr, silent);
            assert!(
                took < AT_ONCE,
                "{addr}: {silent} silent connections delayed an honest client {took:?}"
            );
        }
    }
}

#[test]
fn at_the_cap_the_oldest_pending_handshake_is_dropped() {
    let l = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .max_pending(4)
        .bind()
        .unwrap();
    let address = l.address();
    let mut held: Vec<Silent> = (0..10).map(|_| Silent::connect(&address)).collect();
    thread::scope(|s| {
        let server = s.spawn(|| l.accept_timeout(PATIENCE));
        let c = Client::connect(&address, Some(KEY)).unwrap();
        c.send(&1u8).unwrap();
        let conn = server.join().unwrap().unwrap();
        assert!(conn.poll_timeout(PATIENCE).unwrap());
        assert_eq!(conn.recv::<u8>().unwrap(), 1);
    });
    // Ten silent, a cap of four, one honest: the seven oldest were dropped.
    for (i, s) in held.iter_mut().enumerate().take(7) {
        assert!(s.closed_within(PATIENCE), "silent connection {i} is still open");
    }
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_deadline_without_an_error() {
    let l = Listener::builder("127.0.0.1:0")
        .authkey(KEY)
        .handshake_timeout(Duration::from_millis(200))
        .bind()
        .unwrap();
    let mut silent = Silent::connect(&l.address());
    let t0 = Instant::now();
    thread::scope(|s| {
        let server = s.spawn(|| l.accept_timeout(Duration::from_millis(1500)));
        assert!(silent.closed_within(PATIENCE));
        let took = t0.elapsed();
        eprintln!("a silent client was dropped after {took:?} (deadline 200 ms)");
        assert!(took >= Duration::from_millis(200), "{took:?}");
        // Dropped without an error: accept goes on waiting for a client.
        let r = server.join().unwrap();
        assert!(matches!(r, Err(ConnectionError::Timeout)), "{r:?}");
    });
}

#[test]
fn closing_the_listener_closes_the_handshakes_under_way() {
    let mut l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let mut held: Vec<Silent> = (0..3).map(|_| Silent::connect(&l.address())).collect();
    // The handshakes begin (each got its challenge), then the wait ends.
    let r = l.accept_timeout(Duration::from_millis(100));
    assert!(matches!(r, Err(ConnectionError::Timeout)), "{r:?}");
    l.close().unwrap();
    for s in &mut held {
        assert!(s.closed_within(PATIENCE), "a pending handshake outlived the listener");
    }
    let l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let mut held = Silent::connect(&l.address());
    let _ = l.accept_timeout(Duration::from_millis(50));
    drop(l);
    assert!(
        held.closed_within(PATIENCE),
        "a pending handshake outlived the dropped listener"
    );
}

#[test]
fn accept_timeout_ends_on_time_while_another_thread_accepts() {
    let l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let address = l.address();
    thread::scope(|s| {
        let forever = s.spawn(|| l.accept_timeout(PATIENCE));
        // Let the other thread start waiting first, most of the time.
        thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        let r = l.accept_timeout(Duration::from_millis(100));
        let took = t0.elapsed();
        assert!(matches!(r, Err(ConnectionError::Timeout)), "{r:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let two = [
            s.spawn(|| Client::connect(&address, Some(KEY)).unwrap()),
            s.spawn(|| Client::connect(&address, Some(KEY)).unwrap()),
        ];
        let first = forever.join().unwrap().unwrap();
        let second = l.accept_timeout(PATIENCE).unwrap();
        let clients: Vec<Connection> = two.into_iter().map(|t| t.join().unwrap()).collect();
        for c in &clients {
            c.send(&7u8).unwrap();
        }
        for c in [first, second] {
            assert_eq!(c.recv_timeout::<u8>(PATIENCE).unwrap(), 7);
        }
    });
}

#[test]
fn a_listener_without_a_key_accepts_at_once() {
    let l = Listener::bind("127.0.0.1:0", None).unwrap();
    let _silent = Silent::connect(&l.address());
    // No handshake: the silent client is accepted like any other.
    let c = l.accept_timeout(PATIENCE).unwrap();
    assert!(matches!(
        c.recv_timeout::<u8>(Duration::from_millis(10)),
        Err(ConnectionError::Timeout)
    ));
}

/// A connection whose peer is a raw socket: the listener's end, and the
/// raw stream.
fn raw_pair() -> (Connection, UnixStream) {
    let path = temp_path(&format!("raw-{:?}.sock", thread::current().id()));
    let l = Listener::bind(path.to_str().unwrap(), None).unwrap();
    let raw = UnixStream::connect(&path).unwrap();
    (l.accept_timeout(PATIENCE).unwrap(), raw)
}

#[test]
fn a_half_header_times_out_then_the_connection_is_broken() {
    let (c, mut raw) = raw_pair();
    raw.write_all(&header(4, 1)[..5]).unwrap();
    assert!(
        c.poll_timeout(Duration::from_secs(1)).unwrap(),
        "the half header makes it readable"
    );
    let t0 = Instant::now();
    let r = c.recv_timeout::<u32>(Duration::from_millis(200));
    let took = t0.elapsed();
    eprintln!("recv_timeout(200 ms) on a half header returned {r:?} after {took:?}");
    assert!(matches!(r, Err(ConnectionError::Timeout)), "{r:?}");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Part of a frame was read: the stream is out of step.
    raw.write_all(&header(4, 1)[5..]).unwrap();
    let again = c.recv_bytes_timeout(PATIENCE);
    assert!(matches!(again, Err(ConnectionError::Broken(_))), "{again:?}");
}

#[test]
fn a_half_payload_times_out_in_every_receive_form() {
    for form in 0..3 {
        let (c, mut raw) = raw_pair();
        raw.write_all(&header(8, 1)).unwrap();
        raw.write_all(b"half").unwrap();
        let t = Duration::from_millis(100);
        let t0 = Instant::now();
        let r = match form {
            0 => c.recv_bytes_timeout(t).map(|v| v.len()),
            1 => c.recv_bytes_into_timeout(&mut [0u8; 16], t),
            _ => c.recv_bytes_into_timeout(&mut [0u8; 2], t), // the too-short path
        };
        let took = t0.elapsed();
        assert!(matches!(r, Err(ConnectionError::Timeout)), "form {form}: {r:?}");
        assert!(took >= t && took < Duration::from_secs(5), "form {form}: {took:?}");
        let again = c.recv_bytes_timeout(Duration::ZERO);
        assert!(
            matches!(again, Err(ConnectionError::Broken(_))),
            "form {form}: {again:?}"
        );
    }
}

#[test]
fn a_timeout_with_nothing_read_leaves_the_connection_usable() {
    // A pipe (the shared ring, and the socket for a large message), and a
    // listener's connection (the socket only).
    let (a, b) = pipe().unwrap();
    let l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let address = l.address();
    let client = thread::spawn(move || Client::connect(&address, Some(KEY)).unwrap());
    let server = l.accept_timeout(PATIENCE).unwrap();
    let tcp = client.join().unwrap();
    let big = vec![5u8; 100_000];
    for (name, tx, rx) in [("pipe", &a, &b), ("tcp", &tcp, &server)] {
        let t0 = Instant::now();
        let r = rx.recv_timeout::<String>(Duration::from_millis(100));
        let took = t0.elapsed();
        assert!(matches!(r, Err(ConnectionError::Timeout)), "{name}: {r:?}");
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(5),
            "{name}: {took:?}"
        );
        assert!(matches!(
            rx.recv_bytes_timeout(Duration::ZERO),
            Err(ConnectionError::Timeout)
        ));
        assert!(matches!(
            rx.recv_bytes_into_timeout(&mut [0u8; 4], Duration::from_millis(1)),
            Err(ConnectionError::Timeout)
        ));
        tx.send(&"later").unwrap();
        assert_eq!(rx.recv_timeout::<String>(PATIENCE).unwrap(), "later", "{name}");
        tx.send_bytes(&big).unwrap();
        assert_eq!(rx.recv_bytes_timeout(PATIENCE).unwrap(), big, "{name}");
        tx.send_bytes(b"four").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(rx.recv_bytes_into_timeout(&mut buf, PATIENCE).unwrap(), 4, "{name}");
        // A huge timeout is no deadline, and does not panic.
        tx.send(&1u64).unwrap();
        assert_eq!(rx.recv_timeout::<u64>(Duration::MAX).unwrap(), 1, "{name}");
    }
}

#[test]
fn an_oversized_header_is_refused_at_once() {
    let (c, mut raw) = raw_pair();
    raw.write_all(&header(u32::MAX, 1)).unwrap();
    let r = c.recv_bytes_timeout(PATIENCE);
    assert!(matches!(r, Err(ConnectionError::TooLarge { .. })), "{r:?}");
}
