//! A remote manager (BaseManager over TCP with an authkey) under hostile
//! clients: connections that open and say nothing must not keep an honest
//! client from connecting, and a client that stops in the middle of a
//! request costs only its own line.
//!
//! No process is started here (the server runs on a thread of this test),
//! so this binary keeps libtest's threads.

use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use mp_manager::{BaseManager, ObjectProxy};

const KEY: &[u8] = b"remote manager key";

/// The generous bound for "served at once" (the goal is well under 100 ms;
/// CI has 2 busy cores).
const AT_ONCE: Duration = Duration::from_secs(1);

#[test]
fn silent_connections_do_not_shut_clients_out_of_a_remote_manager() {
    let server = BaseManager::builder()
        .share("jobs", VecDeque::<String>::new())
        .listen("127.0.0.1:0", KEY)
        .unwrap();
    let addr = server.address();
    // Serves until this test process exits.
    thread::spawn(move || server.serve_forever());
    for silent in [1, 50] {
        let held: Vec<TcpStream> = (0..silent).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        // One more that sends half a frame header and stalls.
        let mut stalled = TcpStream::connect(&addr).unwrap();
        stalled.write_all(b"mpF1\x08").unwrap();
        let t0 = Instant::now();
        let served = BaseManager::connect(&addr, KEY).and_then(|m| {
            let jobs: ObjectProxy<VecDeque<String>> = m.get("jobs")?;
            jobs.call(VecDeque::push_back, (format!("after {silent} silent"),))?;
            jobs.call(VecDeque::pop_front, ())
        });
        let took = t0.elapsed();
        eprintln!("{silent} silent connection(s) held open: an honest BaseManager client was served in {took:?}");
        drop(held);
        assert_eq!(
            served.as_ref().ok().cloned().flatten(),
            Some(format!("after {silent} silent")),
            "after {silent} silent connections: {served:?} ({took:?})"
        );
        assert!(took < AT_ONCE, "{silent} silent connections delayed a client {took:?}");
    }
}

/// A fake remote server: it authenticates the client and reads its hello,
/// then says nothing (holding the connection open).
fn silent_server() -> (String, thread::JoinHandle<()>) {
    let l = mp_connection::Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let addr = l.address();
    let t = thread::spawn(move || {
        let Ok(c) = l.accept_timeout(Duration::from_secs(30)) else {
            return;
        };
        let _hello = c.recv_bytes_timeout(Duration::from_secs(30));
        // Hold the connection until the client gave up.
        let _ = c.recv_bytes_timeout(Duration::from_secs(30));
    });
    (addr, t)
}

#[test]
fn a_remote_server_that_says_nothing_fails_connect_instead_of_hanging() {
    let (addr, server) = silent_server();
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(BaseManager::connect(&addr, KEY).map(drop));
    });
    let r = rx.recv_timeout(Duration::from_secs(30));
    let took = t0.elapsed();
    eprintln!("connect to a silent server: {r:?} after {took:?}");
    assert!(
        matches!(r, Ok(Err(mp_manager::ManagerError::ServerGone(_)))),
        "{r:?} after {took:?}"
    );
    server.join().unwrap();
}
