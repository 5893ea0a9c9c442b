//! CPython's own multiprocessing tests, ported (see docs/conformance.md):
//! the conn part. Its own single-threaded main, because children may be forked;
//! `cargo xtask test` runs it once per `MP_START_METHOD`.
//!
//! Each test is named after the CPython method it ports and keeps its
//! assertions where they have a Rust counterpart; docs/conformance.md
//! says, method by method, what was ported and what does not apply.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mp_testkit::{Harness, PATIENCE, Reaped, check, finish, joined_ok, ok};
use multiprocessing::codec::Fd;
use multiprocessing::connection::{WaitFd, wait};
use multiprocessing::{
    Client, Connection, ConnectionError, Event, Listener, Process, Semaphore, Waitable, pipe, pipe_simplex,
};
use serde::de::DeserializeOwned;

type Check = Result<(), String>;

// ---- helpers -----------------------------------------------------------------

/// Receives one value, waiting at most [`PATIENCE`] for it.
fn recv_within<T: DeserializeOwned>(c: &Connection) -> Result<T, String> {
    check(
        ok(c.poll_timeout(PATIENCE))?,
        "nothing arrived on the connection in time",
    )?;
    ok(c.recv())
}

/// Receives one `send_bytes` message, waiting at most [`PATIENCE`] for it.
fn recv_bytes_within(c: &Connection) -> Result<Vec<u8>, String> {
    check(
        ok(c.poll_timeout(PATIENCE))?,
        "no bytes arrived on the connection in time",
    )?;
    ok(c.recv_bytes())
}

/// A fresh Unix socket path in the temporary directory.
fn unix_address() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir()
        .join(format!("mp-cpython-conn-{}-{n}.sock", std::process::id()))
        .to_string_lossy()
        .into_owned()
}

/// Python's `connection.families` on Linux: a Unix socket and TCP.
fn families() -> [String; 2] {
    [unix_address(), "127.0.0.1:0".to_string()]
}

/// A fresh file path in the temporary directory (Python's `TESTFN`).
fn temp_file() -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("mp-cpython-conn-{}-{n}.txt", std::process::id()))
}

/// A raw socket that `connection::wait` can wait on (Python's `wait`
/// accepts sockets as they are).
struct Sock<T: AsFd>(T);

impl<T: AsFd> Waitable for Sock<T> {
    fn wait_fd(&self) -> Result<WaitFd<'_>, ConnectionError> {
        Ok(WaitFd::Borrowed(self.0.as_fd()))
    }
}

/// A pseudo-random number below `n` (the tests need only jitter).
fn jitter(seed: u64, n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let h = (seed ^ nanos ^ u64::from(std::process::id()))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(31);
    h % n.max(1)
}

// ---- _TestConnection -----------------------------------------------------------

/// CPython's `SENTINEL`: the empty message tells an echo child to stop.
const SENTINEL: &[u8] = b"";

/// `_echo`: sends every `send_bytes` message back until the sentinel.
fn echo(conn: Connection) -> Check {
    loop {
        let msg = recv_bytes_within(&conn)?;
        if msg == SENTINEL {
            return Ok(());
        }
        ok(conn.send_bytes(&msg))?;
    }
}

/// The value `test_connection` sends: Python's `[1, 2.25, None]`.
type Seq = (i32, f64, Option<()>);

/// `_echo` for `test_connection`. Python's echo child reads every message
/// as bytes, pickles included; here a value is read with `recv` (with
/// `recv_bytes` it would be a decode error), so this child knows which of
/// the test's messages are values.
fn echo_connection(conn: Connection) -> Check {
    let seq: Seq = recv_within(&conn)?;
    ok(conn.send(&seq))?;
    // msg, arr, arr, longmsg
    for _ in 0..4 {
        ok(conn.send_bytes(&recv_bytes_within(&conn)?))?;
    }
    let none: Option<()> = recv_within(&conn)?;
    ok(conn.send(&none))?;
    echo(conn)
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

fn bytes_i32(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn test_connection() -> Check {
    let (conn, child_conn) = ok(pipe())?;
    let mut p = Reaped(Process::new(echo_connection, (child_conn,)).daemon(true));
    ok(p.start())?;

    let seq: Seq = (1, 2.25, None);
    let msg = b"hello world".to_vec();
    let longmsg = msg.repeat(10);
    let arr = [0i32, 1, 2, 3];

    check(ok(conn.fileno())? >= 0, "fileno is not a descriptor")?;

    ok(conn.send(&seq))?;
    check(recv_within::<Seq>(&conn)? == seq, "the value did not come back")?;

    ok(conn.send_bytes(&msg))?;
    check(recv_bytes_within(&conn)? == msg, "the bytes did not come back")?;

    // recv_bytes_into a buffer of ten i32.
    let mut buffer = [0u8; 40];
    ok(conn.send_bytes(&i32_bytes(&arr)))?;
    check(ok(conn.poll_timeout(PATIENCE))?, "no echo of arr")?;
    let n = ok(conn.recv_bytes_into(&mut buffer))?;
    check(n == arr.len() * 4, format!("recv_bytes_into returned {n}"))?;
    let mut expected = arr.to_vec();
    expected.resize(10, 0);
    check(
        bytes_i32(&buffer) == expected,
        format!("buffer {:?}", bytes_i32(&buffer)),
    )?;

    // ... at an offset of three items.
    let mut buffer = [0u8; 40];
    ok(conn.send_bytes(&i32_bytes(&arr)))?;
    check(ok(conn.poll_timeout(PATIENCE))?, "no echo of arr")?;
    let n = ok(conn.recv_bytes_into(&mut buffer[3 * 4..]))?;
    check(n == arr.len() * 4, format!("recv_bytes_into at an offset returned {n}"))?;
    let mut expected = vec![0, 0, 0];
    expected.extend(arr);
    expected.resize(10, 0);
    check(
        bytes_i32(&buffer) == expected,
        format!("buffer {:?}", bytes_i32(&buffer)),
    )?;

    // A buffer too short: the whole message comes in the error.
    let mut buffer = [b' '; 40];
    ok(conn.send_bytes(&longmsg))?;
    check(ok(conn.poll_timeout(PATIENCE))?, "no echo of longmsg")?;
    match conn.recv_bytes_into(&mut buffer) {
        Err(ConnectionError::BufferTooShort(whole)) => check(whole == longmsg, "BufferTooShort lost the message")?,
        other => return Err(format!("expected BufferTooShort, got {other:?}")),
    }

    // poll(), poll(-1) (a zero timeout here), poll(TIMEOUT1).
    let t0 = Instant::now();
    check(!ok(conn.poll())?, "poll() found a message")?;
    check(t0.elapsed() < Duration::from_secs(5), "poll() blocked")?;
    let t0 = Instant::now();
    check(!ok(conn.poll_timeout(Duration::ZERO))?, "poll(0) found a message")?;
    check(t0.elapsed() < Duration::from_secs(5), "poll(0) blocked")?;
    let timeout1 = Duration::from_millis(100);
    let t0 = Instant::now();
    check(!ok(conn.poll_timeout(timeout1))?, "poll(TIMEOUT1) found a message")?;
    let e = t0.elapsed();
    check(e >= timeout1 && e < PATIENCE, format!("poll(TIMEOUT1) took {e:?}"))?;

    ok(conn.send(&None::<()>))?;
    check(ok(conn.poll_timeout(PATIENCE))?, "poll found no echo of None")?;
    check(ok(conn.recv::<Option<()>>())?.is_none(), "None did not come back")?;

    let really_big_msg = vec![b'X'; 16 * 1024 * 1024];
    ok(conn.send_bytes(&really_big_msg))?;
    check(
        recv_bytes_within(&conn)? == really_big_msg,
        "the 16 MiB message did not come back",
    )?;

    ok(conn.send_bytes(SENTINEL))?;
    // child_conn was dropped in this process by `start`.

    check(conn.is_readable(), "conn is not readable")?;
    check(conn.is_writable(), "conn is not writable")?;
    check(
        ok(conn.poll_timeout(PATIENCE))?,
        "no end of file after the child closed",
    )?;
    let e = conn.recv::<i32>().err();
    check(
        e.as_ref().is_some_and(ConnectionError::is_eof),
        format!("recv gave {e:?}, not EOF"),
    )?;
    let e = conn.recv_bytes().err();
    check(
        e.as_ref().is_some_and(ConnectionError::is_eof),
        format!("recv_bytes gave {e:?}, not EOF"),
    )?;
    joined_ok(&mut p)
}

fn test_duplex_false() -> Check {
    let (reader, writer) = ok(pipe_simplex())?;
    ok(writer.send(&1i32))?;
    check(recv_within::<i32>(&reader)? == 1, "reader did not get 1")?;
    check(reader.is_readable(), "reader is not readable")?;
    check(!reader.is_writable(), "reader is writable")?;
    check(!writer.is_readable(), "writer is readable")?;
    check(writer.is_writable(), "writer is not writable")?;
    let e = reader.send(&2i32);
    check(
        matches!(e, Err(ConnectionError::ReadOnly)),
        format!("reader.send gave {e:?}"),
    )?;
    let e = writer.recv::<i32>();
    check(
        matches!(e, Err(ConnectionError::WriteOnly)),
        format!("writer.recv gave {e:?}"),
    )?;
    let e = writer.poll();
    check(
        matches!(e, Err(ConnectionError::WriteOnly)),
        format!("writer.poll gave {e:?}"),
    )
}

fn test_spawn_close() -> Check {
    let (mut conn, child_conn) = ok(pipe())?;
    let mut p = Reaped(Process::new(echo, (child_conn,)).daemon(true));
    ok(p.start())?;
    // `start` has dropped this process's child_conn already: the parent
    // closes it "immediately after the child is spawned".
    let msg = b"hello";
    ok(conn.send_bytes(msg))?;
    check(recv_bytes_within(&conn)? == msg, "the echo differs")?;
    ok(conn.send_bytes(SENTINEL))?;
    ok(conn.close())?;
    joined_ok(&mut p)
}

fn test_sendbytes() -> Check {
    let msg = b"abcdefghijklmnopqrstuvwxyz";
    let (a, b) = ok(pipe())?;
    // Python's offset and size arguments are slices here.
    let cases: [&[u8]; 5] = [&msg[..], &msg[5..], &msg[7..7 + 8], &msg[26..], &msg[26..26]];
    for sent in cases {
        ok(a.send_bytes(sent))?;
        let got = recv_bytes_within(&b)?;
        check(got == sent, format!("sent {sent:?}, received {got:?}"))?;
    }
    Ok(())
}

/// `_writefd`: receives a descriptor and writes `data` to it. With
/// `create_dummy_fds`, first fills every descriptor number below 256, so
/// the received one lands above.
fn writefd(conn: Connection, data: Vec<u8>, create_dummy_fds: bool) -> Check {
    let mut dummies = Vec::new();
    if create_dummy_fds {
        loop {
            let f = ok(File::open("/dev/null"))?;
            if f.as_raw_fd() >= 256 {
                break;
            }
            dummies.push(f);
        }
    }
    let Fd(fd) = recv_within(&conn)?;
    if create_dummy_fds {
        check(
            fd.as_raw_fd() >= 256,
            format!("the received descriptor is {}", fd.as_raw_fd()),
        )?;
    }
    let mut f = File::from(fd);
    ok(f.write_all(&data))?;
    drop(dummies);
    Ok(())
}

fn test_fd_transfer() -> Check {
    let (conn, child_conn) = ok(pipe())?;
    let mut p = Reaped(Process::new(writefd, (child_conn, b"foo".to_vec(), false)).daemon(true));
    ok(p.start())?;
    let path = temp_file();
    let r = (|| {
        let f = ok(File::create(&path))?;
        ok(conn.send(&Fd(OwnedFd::from(f))))?;
        joined_ok(&mut p)?;
        let got = ok(std::fs::read(&path))?;
        check(got == b"foo", format!("the file holds {got:?}"))
    })();
    let _ = std::fs::remove_file(&path);
    r
}

fn test_large_fd_transfer() -> Check {
    let (conn, child_conn) = ok(pipe())?;
    let mut p = Reaped(Process::new(writefd, (child_conn, b"bar".to_vec(), true)).daemon(true));
    ok(p.start())?;
    let path = temp_file();
    let r = (|| {
        let f = ok(File::create(&path))?;
        // Duplicate the file until its number is above 256.
        let mut fillers = Vec::new();
        let newfd = loop {
            let d = ok(f.as_fd().try_clone_to_owned())?;
            if d.as_raw_fd() > 256 {
                break d;
            }
            fillers.push(d);
        };
        drop(fillers);
        drop(f);
        ok(conn.send(&Fd(newfd)))?;
        joined_ok(&mut p)?;
        let got = ok(std::fs::read(&path))?;
        check(got == b"bar", format!("the file holds {got:?}"))
    })();
    let _ = std::fs::remove_file(&path);
    r
}

/// `_send_data_without_fd`: sends a message shaped like a descriptor's
/// index, with no descriptor beside it.
fn send_data_without_fd(conn: Connection) -> Check {
    ok(conn.send(&0u32))
}

fn test_missing_fd_transfer() -> Check {
    let (conn, child_conn) = ok(pipe())?;
    let mut p = Reaped(Process::new(send_data_without_fd, (child_conn,)).daemon(true));
    ok(p.start())?;
    check(ok(conn.poll_timeout(PATIENCE))?, "the child sent nothing")?;
    let r = conn.recv::<Fd>();
    check(
        matches!(r, Err(ConnectionError::Decode(_))),
        format!("a message without a descriptor received as one gave {r:?}"),
    )?;
    joined_ok(&mut p)
}

fn test_context() -> Check {
    let (mut a, mut b) = ok(pipe())?;
    {
        ok(a.send(&1729i32))?;
        check(recv_within::<i32>(&b)? == 1729, "b did not get 1729")?;
        check(!a.is_closed() && !b.is_closed(), "closed inside the block")?;
    }
    // The end of Python's `with a, b:` block.
    ok(a.close())?;
    ok(b.close())?;
    check(a.is_closed() && b.is_closed(), "not closed after the block")?;
    let e = a.recv::<i32>();
    check(
        matches!(e, Err(ConnectionError::Closed)),
        format!("a.recv after close gave {e:?}"),
    )?;
    let e = b.recv::<i32>();
    check(
        matches!(e, Err(ConnectionError::Closed)),
        format!("b.recv after close gave {e:?}"),
    )
}

// ---- _TestListener ---------------------------------------------------------------

fn test_multiple_bind() -> Check {
    for family in families() {
        let l = ok(Listener::bind(&family, None))?;
        let again = Listener::bind(&l.address(), None);
        check(
            matches!(again, Err(ConnectionError::Io(_))),
            format!("binding {} twice gave {again:?}", l.address()),
        )?;
    }
    Ok(())
}

fn test_listener_context() -> Check {
    let mut l = ok(Listener::bind(&unix_address(), None))?;
    {
        let c = ok(Client::connect(&l.address(), None))?;
        let d = ok(l.accept())?;
        ok(c.send(&1729i32))?;
        check(recv_within::<i32>(&d)? == 1729, "d did not get 1729")?;
    }
    ok(l.close())?;
    let e = l.accept();
    check(
        matches!(e, Err(ConnectionError::Closed)),
        format!("accept after close gave {e:?}"),
    )
}

fn test_empty_authkey() -> Check {
    let key: &[u8] = b"";
    let mut listener = ok(Listener::bind(&unix_address(), Some(key)))?;
    let address = listener.address();
    std::thread::scope(|s| {
        let client = s.spawn(move || -> Check {
            let c = ok(Client::connect(&address, Some(key)))?;
            ok(c.send(&1729i32))
        });
        let r = (|| {
            let d = ok(listener.accept_timeout(PATIENCE))?;
            check(recv_within::<i32>(&d)? == 1729, "d did not get 1729")
        })();
        let c = client.join().map_err(|_| "the client thread panicked".to_string())?;
        r.and(c)
    })?;
    ok(listener.close())?;
    let e = listener.accept();
    check(
        matches!(e, Err(ConnectionError::Closed)),
        format!("accept after close gave {e:?}"),
    )
}

fn test_abstract_socket() -> Check {
    let mut listener = ok(Listener::bind(
        &format!("\0mp-cpython-conn-{}", std::process::id()),
        None,
    ))?;
    {
        let client = ok(Client::connect(&listener.address(), None))?;
        let d = ok(listener.accept_timeout(PATIENCE))?;
        ok(client.send(&1729i32))?;
        check(recv_within::<i32>(&d)? == 1729, "d did not get 1729")?;
    }
    ok(listener.close())?;
    let e = listener.accept();
    check(
        matches!(e, Err(ConnectionError::Closed)),
        format!("accept after close gave {e:?}"),
    )
}

// ---- _TestListenerClient ---------------------------------------------------------

/// `_test`: connects and says hello.
fn say_hello(address: String) -> Check {
    let mut conn = ok(Client::connect(&address, None))?;
    ok(conn.send(&"hello"))?;
    ok(conn.close())
}

fn test_listener_client() -> Check {
    for family in families() {
        let mut l = ok(Listener::bind(&family, None))?;
        let mut p = Reaped(Process::new(say_hello, (l.address(),)).daemon(true));
        ok(p.start())?;
        let conn = ok(l.accept_timeout(PATIENCE))?;
        check(recv_within::<String>(&conn)? == "hello", "no hello")?;
        joined_ok(&mut p)?;
        ok(l.close())?;
    }
    Ok(())
}

fn test_issue14725() -> Check {
    let mut l = ok(Listener::bind(&unix_address(), None))?;
    let mut p = Reaped(Process::new(say_hello, (l.address(),)).daemon(true));
    ok(p.start())?;
    // Python sleeps a second so that the client has connected, written and
    // closed before the accept: here the client has exited before it.
    joined_ok(&mut p)?;
    let mut conn = ok(l.accept_timeout(PATIENCE))?;
    check(recv_within::<String>(&conn)? == "hello", "no hello")?;
    ok(conn.close())?;
    ok(l.close())
}

fn test_issue16955() -> Check {
    for fam in families() {
        let mut l = ok(Listener::bind(&fam, None))?;
        let mut c = ok(Client::connect(&l.address(), None))?;
        let mut a = ok(l.accept())?;
        ok(a.send_bytes(b"hello"))?;
        check(ok(c.poll_timeout(Duration::from_secs(1)))?, "poll(1) found nothing")?;
        ok(a.close())?;
        ok(c.close())?;
        ok(l.close())?;
    }
    Ok(())
}

// ---- _TestPoll -------------------------------------------------------------------

fn test_empty_string() -> Check {
    let (a, b) = ok(pipe())?;
    check(!ok(a.poll())?, "poll found a message before any")?;
    ok(b.send_bytes(b""))?;
    check(ok(a.poll_timeout(PATIENCE))?, "poll missed the empty message")?;
    check(ok(a.poll())?, "poll consumed the empty message")
}

fn child_strings(mut conn: Connection, strings: Vec<Vec<u8>>) -> Check {
    for s in strings {
        std::thread::sleep(Duration::from_millis(10));
        ok(conn.send_bytes(&s))?;
    }
    ok(conn.close())
}

fn test_strings() -> Check {
    let strings: Vec<Vec<u8>> = [&b"hello"[..], b"", b"a", b"b", b"", b"bye", b"", b"lop"]
        .iter()
        .map(|s| s.to_vec())
        .collect();
    let (a, b) = ok(pipe())?;
    let mut p = Reaped(Process::new(child_strings, (b, strings.clone())));
    ok(p.start())?;
    for s in &strings {
        for _ in 0..200 {
            if ok(a.poll_timeout(Duration::from_millis(10)))? {
                break;
            }
        }
        let x = recv_bytes_within(&a)?;
        check(&x == s, format!("expected {s:?}, got {x:?}"))?;
    }
    joined_ok(&mut p)
}

/// `_child_boundaries`: polls, which must not pull in part of a message.
fn child_boundaries(r: Connection, polling: Event) -> Check {
    polling.set();
    ok(r.poll_timeout(Duration::from_secs(5)).map(drop))
}

fn test_boundaries() -> Check {
    let (r, mut w) = ok(pipe_simplex())?;
    let polling = ok(Event::new())?;
    let mut p = Reaped(Process::new(child_boundaries, (r.clone(), polling.clone())));
    ok(p.start())?;
    // Python sleeps two seconds here so that the child polls first.
    check(polling.wait_timeout(PATIENCE), "the child never began to poll")?;
    let l: [&[u8]; 2] = [b"first", b"second"];
    for obj in l {
        ok(w.send_bytes(obj))?;
    }
    ok(w.close())?;
    joined_ok(&mut p)?;
    let got = recv_bytes_within(&r)?;
    check(l.contains(&got.as_slice()), format!("received {got:?}"))
}

fn child_dont_merge(b: Connection) -> Check {
    ok(b.send_bytes(b"a"))?;
    ok(b.send_bytes(b"b"))?;
    ok(b.send_bytes(b"cd"))
}

fn test_dont_merge() -> Check {
    let (a, b) = ok(pipe())?;
    check(!ok(a.poll_timeout(Duration::ZERO))?, "poll(0.0) found a message")?;
    check(
        !ok(a.poll_timeout(Duration::from_millis(100)))?,
        "poll(0.1) found a message",
    )?;
    let mut p = Reaped(Process::new(child_dont_merge, (b,)));
    ok(p.start())?;
    check(recv_bytes_within(&a)? == b"a", "first message is not 'a'")?;
    check(ok(a.poll_timeout(Duration::from_secs(1)))?, "poll(1.0) before 'b'")?;
    check(
        ok(a.poll_timeout(Duration::from_secs(1)))?,
        "poll(1.0) before 'b', again",
    )?;
    check(ok(a.recv_bytes())? == b"b", "second message is not 'b'")?;
    check(ok(a.poll_timeout(Duration::from_secs(1)))?, "poll(1.0) before 'cd'")?;
    check(
        ok(a.poll_timeout(Duration::from_secs(1)))?,
        "poll(1.0) before 'cd', again",
    )?;
    check(ok(a.poll_timeout(Duration::ZERO))?, "poll(0.0) before 'cd'")?;
    check(ok(a.recv_bytes())? == b"cd", "third message is not 'cd'")?;
    joined_ok(&mut p)
}

// ---- _TestPicklingConnections ----------------------------------------------------

/// `_listener`: for each family, listens, sends the address, accepts and
/// sends the accepted connection back; then the same with a plain TCP
/// socket, sent as a descriptor.
fn pickling_listener(conn: Connection, families: Vec<String>) -> Check {
    for fam in families {
        let mut l = ok(Listener::bind(&fam, None))?;
        ok(conn.send(&l.address()))?;
        let mut new_conn = ok(l.accept_timeout(PATIENCE))?;
        ok(conn.send(&new_conn))?;
        ok(new_conn.close())?;
        ok(l.close())?;
    }
    let l = ok(TcpListener::bind("127.0.0.1:0"))?;
    ok(conn.send(&ok(l.local_addr())?.to_string()))?;
    check(
        !ok(wait(&[&Sock(&l)], Some(PATIENCE)))?.is_empty(),
        "no client came to the plain socket",
    )?;
    let (new_conn, _) = ok(l.accept())?;
    ok(conn.send(&Fd(OwnedFd::from(new_conn))))?;
    drop(l);
    recv_within::<()>(&conn)
}

/// `_remote`: connects to each address it is sent and sends the message
/// in upper case; then the same over a plain TCP socket.
fn pickling_remote(mut conn: Connection) -> Check {
    while let Some((address, msg)) = recv_within::<Option<(String, Vec<u8>)>>(&conn)? {
        let mut client = ok(Client::connect(&address, None))?;
        ok(client.send(&msg.to_ascii_uppercase()))?;
        ok(client.close())?;
    }
    let (address, msg): (String, Vec<u8>) = recv_within(&conn)?;
    let mut client = ok(TcpStream::connect(&address))?;
    ok(client.write_all(&msg.to_ascii_uppercase()))?;
    drop(client);
    ok(conn.close())
}

fn test_pickling() -> Check {
    let families = families();
    let (mut lconn, lconn0) = ok(pipe())?;
    let mut lp = Reaped(Process::new(pickling_listener, (lconn0, families.to_vec())).daemon(true));
    ok(lp.start())?;
    let (mut rconn, rconn0) = ok(pipe())?;
    let mut rp = Reaped(Process::new(pickling_remote, (rconn0,)).daemon(true));
    ok(rp.start())?;

    for fam in &families {
        let msg = format!("a message through a connection over {fam}").into_bytes();
        let address: String = recv_within(&lconn)?;
        ok(rconn.send(&Some((address, msg.clone()))))?;
        let new_conn: Connection = recv_within(&lconn)?;
        let got: Vec<u8> = recv_within(&new_conn)?;
        check(got == msg.to_ascii_uppercase(), format!("over {fam}: {got:?}"))?;
    }
    ok(rconn.send(&None::<(String, Vec<u8>)>))?;

    let msg = b"a message through a plain socket".to_vec();
    let address: String = recv_within(&lconn)?;
    ok(rconn.send(&(address, msg.clone())))?;
    let Fd(fd) = recv_within(&lconn)?;
    let mut new_conn = TcpStream::from(fd);
    ok(new_conn.set_read_timeout(Some(PATIENCE)))?;
    let mut buf = Vec::new();
    ok(new_conn.read_to_end(&mut buf))?;
    check(
        buf == msg.to_ascii_uppercase(),
        format!("over the plain socket: {buf:?}"),
    )?;
    drop(new_conn);

    ok(lconn.send(&()))?;
    ok(rconn.close())?;
    ok(lconn.close())?;
    joined_ok(&mut lp)?;
    joined_ok(&mut rp)
}

fn child_access(mut conn: Connection) -> Check {
    let mut w: Connection = recv_within(&conn)?;
    ok(w.send(&"all is well"))?;
    ok(w.close())?;
    let r: Connection = recv_within(&conn)?;
    let msg: String = recv_within(&r)?;
    ok(conn.send(&msg.repeat(2)))?;
    ok(conn.close())
}

fn test_access() -> Check {
    let (conn, child_conn) = ok(pipe())?;
    let mut p = Reaped(Process::new(child_access, (child_conn,)).daemon(true));
    ok(p.start())?;

    let (mut r, mut w) = ok(pipe_simplex())?;
    ok(conn.send(&w))?;
    ok(w.close())?;
    check(
        recv_within::<String>(&r)? == "all is well",
        "the writer sent through did not write",
    )?;
    ok(r.close())?;

    let (mut r, mut w) = ok(pipe_simplex())?;
    ok(conn.send(&r))?;
    ok(r.close())?;
    ok(w.send(&"foobar"))?;
    ok(w.close())?;
    check(
        recv_within::<String>(&conn)? == "foobarfoobar",
        "the reader sent through did not read",
    )?;
    joined_ok(&mut p)
}

// ---- TestWait --------------------------------------------------------------------

fn child_test_wait(mut w: Connection, slow: bool) -> Check {
    for i in 0..10u32 {
        if slow {
            std::thread::sleep(Duration::from_millis(jitter(u64::from(i), 100)));
        }
        ok(w.send(&(i, std::process::id())))?;
    }
    ok(w.close())
}

fn wait_pipes(slow: bool) -> Check {
    let mut readers = Vec::new();
    let mut procs = Vec::new();
    for _ in 0..4 {
        let (r, w) = ok(pipe_simplex())?;
        let mut p = Reaped(Process::new(child_test_wait, (w, slow)).daemon(true));
        ok(p.start())?;
        readers.push(r);
        procs.push(p);
    }
    let mut messages: Vec<(u32, u32)> = Vec::new();
    let r = (|| {
        while !readers.is_empty() {
            let objs: Vec<&dyn Waitable> = readers.iter().map(|r| r as &dyn Waitable).collect();
            let ready = ok(wait(&objs, Some(PATIENCE)))?;
            check(!ready.is_empty(), "wait timed out")?;
            let mut gone = Vec::new();
            for i in ready {
                match readers[i].recv::<(u32, u32)>() {
                    Ok(m) => messages.push(m),
                    Err(e) if e.is_eof() => gone.push(i),
                    Err(e) => return Err(e.to_string()),
                }
            }
            for i in gone.into_iter().rev() {
                let mut r = readers.remove(i);
                ok(r.close())?;
            }
        }
        Ok(())
    })();
    for p in &mut procs {
        joined_ok(p)?;
    }
    r?;
    messages.sort_unstable();
    let mut expected: Vec<(u32, u32)> = procs
        .iter()
        .flat_map(|p| (0..10).map(move |i| (i, p.pid().unwrap_or(0))))
        .collect();
    expected.sort_unstable();
    check(messages == expected, format!("messages {messages:?}"))
}

fn test_wait() -> Check {
    wait_pipes(false)
}

fn test_wait_slow() -> Check {
    wait_pipes(true)
}

fn child_test_wait_socket(address: String, slow: bool) -> Check {
    let mut s = ok(TcpStream::connect(&address))?;
    for i in 0..10u64 {
        if slow {
            std::thread::sleep(Duration::from_millis(jitter(i, 100)));
        }
        ok(s.write_all(format!("{i}\n").as_bytes()))?;
    }
    Ok(())
}

fn wait_sockets(slow: bool) -> Check {
    let l = ok(TcpListener::bind("127.0.0.1:0"))?;
    let addr = ok(l.local_addr())?.to_string();
    let mut procs = Vec::new();
    for _ in 0..4 {
        let mut p = Reaped(Process::new(child_test_wait_socket, (addr.clone(), slow)).daemon(true));
        ok(p.start())?;
        procs.push(p);
    }
    let r = (|| {
        let mut readers = Vec::new();
        for _ in 0..4 {
            check(
                !ok(wait(&[&Sock(&l)], Some(PATIENCE)))?.is_empty(),
                "a child never connected",
            )?;
            readers.push((Sock(ok(l.accept())?.0), Vec::new()));
        }
        drop(l);
        let mut done = Vec::new();
        while !readers.is_empty() {
            let objs: Vec<&dyn Waitable> = readers.iter().map(|(r, _)| r as &dyn Waitable).collect();
            let ready = ok(wait(&objs, Some(PATIENCE)))?;
            check(!ready.is_empty(), "wait timed out")?;
            let mut gone = Vec::new();
            for i in ready {
                let mut buf = [0u8; 32];
                let n = ok(readers[i].0.0.read(&mut buf))?;
                if n == 0 {
                    gone.push(i);
                } else {
                    readers[i].1.extend_from_slice(&buf[..n]);
                }
            }
            for i in gone.into_iter().rev() {
                done.push(readers.remove(i).1);
            }
        }
        let expected: String = (0..10).map(|i| format!("{i}\n")).collect();
        for v in done {
            check(
                v == expected.as_bytes(),
                format!("a socket carried {:?}", String::from_utf8_lossy(&v)),
            )?;
        }
        Ok(())
    })();
    for p in &mut procs {
        joined_ok(p)?;
    }
    r
}

fn test_wait_socket() -> Check {
    wait_sockets(false)
}

fn test_wait_socket_slow() -> Check {
    wait_sockets(true)
}

fn test_wait_timeout() -> Check {
    // CPython waits 5 s; a shorter wait shows the same.
    let timeout = Duration::from_millis(500);
    let (a, b) = ok(pipe())?;
    let start = Instant::now();
    let res = ok(wait(&[&a, &b], Some(timeout)))?;
    let delta = start.elapsed();
    check(res.is_empty(), format!("wait returned {res:?}"))?;
    check(delta >= timeout, format!("wait returned after {delta:?}"))?;
    ok(b.send(&()))?;
    let res = ok(wait(&[&a, &b], Some(Duration::from_secs(20))))?;
    check(res == [0], format!("wait returned {res:?}, not [a]"))
}

fn signal_and_sleep(sem: Semaphore, period: Duration) -> Check {
    ok(sem.release())?;
    std::thread::sleep(period);
    Ok(())
}

fn test_wait_integer() -> Check {
    // CPython's child sleeps 3 s; one second is plenty here.
    let expected = Duration::from_secs(1);
    let sem = ok(Semaphore::new(0))?;
    let (a, b) = ok(pipe())?;
    let mut p = Reaped(Process::new(signal_and_sleep, (sem.clone(), expected)));
    ok(p.start())?;
    let r = (|| {
        check(
            ok(sem.acquire_timeout(Duration::from_secs(20)))?,
            "the child never released",
        )?;

        let start = Instant::now();
        let res = ok(wait(&[&a, &*p, &b], Some(expected + Duration::from_secs(20))))?;
        let delta = start.elapsed();
        check(res == [1], format!("wait returned {res:?}, not [p]"))?;
        check(
            delta > expected / 2 && delta < expected + Duration::from_secs(20),
            format!("the process was ready after {delta:?}"),
        )?;

        ok(a.send(&()))?;
        let start = Instant::now();
        let res = ok(wait(&[&a, &*p, &b], Some(Duration::from_secs(20))))?;
        let delta = start.elapsed();
        check(res == [1, 2], format!("wait returned {res:?}, not [p, b]"))?;
        check(delta < Duration::from_secs(5), format!("wait took {delta:?}"))?;

        ok(b.send(&()))?;
        let start = Instant::now();
        let res = ok(wait(&[&a, &*p, &b], Some(Duration::from_secs(20))))?;
        let delta = start.elapsed();
        check(res == [0, 1, 2], format!("wait returned {res:?}, not [a, p, b]"))?;
        check(delta < Duration::from_secs(5), format!("wait took {delta:?}"))
    })();
    let _ = p.terminate();
    finish(&mut p)?;
    r
}

fn test_neg_timeout() -> Check {
    // A negative timeout is Python's way to poll; here it is a zero one.
    let (mut a, mut b) = ok(pipe())?;
    let t = Instant::now();
    let res = ok(wait(&[&a], Some(Duration::ZERO)))?;
    let t = t.elapsed();
    check(res.is_empty(), format!("wait returned {res:?}"))?;
    check(t < Duration::from_secs(1), format!("wait took {t:?}"))?;
    ok(a.close())?;
    ok(b.close())
}

// ---- OtherTest and ChallengeResponseTest -----------------------------------------

fn test_deliver_challenge_auth_failure() -> Check {
    let listener = ok(Listener::bind(&unix_address(), Some(b"abc")))?;
    // A peer that answers the challenge with something bogus.
    let fake = ok(Client::connect(&listener.address(), None))?;
    ok(fake.send_bytes(b"something bogus"))?;
    let r = listener.accept();
    check(
        matches!(r, Err(ConnectionError::Authentication(_))),
        format!("accept from a bogus peer gave {r:?}"),
    )
}

fn test_answer_challenge_auth_failure() -> Check {
    // A server without an authkey that plays the authenticating one: it
    // sends a challenge, then something bogus.
    let fake = ok(Listener::bind(&unix_address(), None))?;
    let address = fake.address();
    std::thread::scope(|s| {
        let server = s.spawn(|| -> Check {
            let c = ok(fake.accept_timeout(PATIENCE))?;
            // The wire form of the library's challenge.
            let mut challenge = b"#MP-CHALLENGE/1#".to_vec();
            challenge.extend([7u8; 32]);
            ok(c.send_bytes(&challenge))?;
            let _answer = recv_bytes_within(&c)?;
            ok(c.send_bytes(b"something bogus"))?;
            // Wait for the client to hang up.
            let _ = c.poll_timeout(PATIENCE);
            Ok(())
        });
        let r = Client::connect(&address, Some(b"abc"));
        let srv = server.join().map_err(|_| "the fake server panicked".to_string())?;
        check(
            matches!(r, Err(ConnectionError::Authentication(_))),
            format!("connect to a bogus server gave {r:?}"),
        )?;
        srv
    })
}

fn test_challengeresponse() -> Check {
    let authkey: &[u8] = b"supadupasecretkey";
    for fam in families() {
        let listener = ok(Listener::bind(&fam, Some(authkey)))?;
        let address = listener.address();
        std::thread::scope(|s| {
            let client = s.spawn(move || -> Check {
                let c = ok(Client::connect(&address, Some(authkey)))?;
                ok(c.send(&"is-twenty-bytes-long"))
            });
            let r = (|| {
                let d = ok(listener.accept_timeout(PATIENCE))?;
                check(
                    recv_within::<String>(&d)? == "is-twenty-bytes-long",
                    "the message differs",
                )
            })();
            let c = client.join().map_err(|_| "the client thread panicked".to_string())?;
            r.and(c)
        })?;
    }
    Ok(())
}

fn no_zombie_children_left() -> Check {
    let z = mp_testkit::zombie_children();
    check(z == 0, format!("{z} zombie children left"))
}

fn main() -> ExitCode {
    let tests: &[(&str, mp_testkit::Test)] = &[
        ("_TestConnection::test_connection", test_connection),
        ("_TestConnection::test_duplex_false", test_duplex_false),
        ("_TestConnection::test_spawn_close", test_spawn_close),
        ("_TestConnection::test_sendbytes", test_sendbytes),
        ("_TestConnection::test_fd_transfer", test_fd_transfer),
        ("_TestConnection::test_large_fd_transfer", test_large_fd_transfer),
        ("_TestConnection::test_missing_fd_transfer", test_missing_fd_transfer),
        ("_TestConnection::test_context", test_context),
        ("_TestListener::test_multiple_bind", test_multiple_bind),
        ("_TestListener::test_context", test_listener_context),
        ("_TestListener::test_empty_authkey", test_empty_authkey),
        ("_TestListener::test_abstract_socket", test_abstract_socket),
        ("_TestListenerClient::test_listener_client", test_listener_client),
        ("_TestListenerClient::test_issue14725", test_issue14725),
        ("_TestListenerClient::test_issue16955", test_issue16955),
        ("_TestPoll::test_empty_string", test_empty_string),
        ("_TestPoll::test_strings", test_strings),
        ("_TestPoll::test_boundaries", test_boundaries),
        ("_TestPoll::test_dont_merge", test_dont_merge),
        ("_TestPicklingConnections::test_pickling", test_pickling),
        ("_TestPicklingConnections::test_access", test_access),
        ("TestWait::test_wait", test_wait),
        ("TestWait::test_wait_socket", test_wait_socket),
        ("TestWait::test_wait_slow", test_wait_slow),
        ("TestWait::test_wait_socket_slow", test_wait_socket_slow),
        ("TestWait::test_wait_timeout", test_wait_timeout),
        ("TestWait::test_wait_integer", test_wait_integer),
        ("TestWait::test_neg_timeout", test_neg_timeout),
        (
            "OtherTest::test_deliver_challenge_auth_failure",
            test_deliver_challenge_auth_failure,
        ),
        (
            "OtherTest::test_answer_challenge_auth_failure",
            test_answer_challenge_auth_failure,
        ),
        ("ChallengeResponseTest::test_challengeresponse", test_challengeresponse),
    ];
    let mut h = Harness::new(tests.len() + 1);
    for &(name, f) in tests {
        h.run(name, f);
    }
    h.run("zombie_children", no_zombie_children_left);
    h.finish()
}
