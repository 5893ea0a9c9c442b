//! Property tests of what a hostile peer can send: random bytes, truncated
//! frames, oversized and corrupt headers, fed to the listener's handshake,
//! the client's handshake and a connection's frame parser. For every input:
//! no panic, no hang (every call is bounded by a deadline), and no
//! allocation beyond what a header within the limits announced (an
//! oversized header is refused before anything is allocated for it).
//!
//! The normal test run tries a modest number of inputs per property; a
//! longer run:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test -p mp-connection --release --test fuzz -- --nocapture
//! ```

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mp_codec::{DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
use mp_connection::{Client, ConnectionError, Listener};
use mp_sys::mem::LargestAllocation;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

#[global_allocator]
static ALLOC: LargestAllocation = LargestAllocation;

const KEY: &[u8] = b"fuzz key";
/// A bound no call may exceed, far above every deadline used here.
const HANG: Duration = Duration::from_secs(10);
/// Allocations this small are the test's and the library's bookkeeping (and
/// serde's cautious preallocation, at most 1 MiB); a frame's payload
/// announced beyond this must have been announced within the limit.
const SMALL: usize = 2 << 20;

/// Inputs per property: `PROPTEST_CASES`, else 64.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(64)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-conn-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// One frame as a peer might write it: a header (valid or not) and part or
/// all of the payload it announces.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![
        0u32..64,
        Just(DEFAULT_MAX_FRAME_LEN as u32),
        (DEFAULT_MAX_FRAME_LEN as u32 + 1)..=u32::MAX,
        any::<u32>(),
    ];
    let magic = prop_oneof![4 => Just(*b"mpF1"), 1 => any::<[u8; 4]>()];
    let kind = prop_oneof![4 => 0u8..3, 1 => any::<u8>()];
    let nfds = prop_oneof![4 => Just(0u16), 1 => any::<u16>()];
    let reserved = prop_oneof![4 => Just(0u8), 1 => any::<u8>()];
    let payload = proptest::collection::vec(any::<u8>(), 0..96);
    // Half the frames announce exactly the payload that follows.
    let exact = any::<bool>();
    (magic, len, nfds, kind, reserved, payload, exact).prop_map(|(magic, len, nfds, kind, reserved, payload, exact)| {
        let len = if exact { payload.len() as u32 } else { len };
        let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
        f.extend_from_slice(&magic);
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&nfds.to_le_bytes());
        f.push(kind);
        f.push(reserved);
        let n = payload.len().min(len as usize);
        f.extend_from_slice(&payload[..n]);
        f
    })
}

/// What a peer writes: random bytes, or a few frames cut at any point, and
/// whether it then stays connected (silent) or closes.
fn input() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        (
            proptest::collection::vec(frame(), 1..4),
            any::<proptest::sample::Index>()
        )
            .prop_map(|(frames, cut)| {
                let all = frames.concat();
                let at = cut.index(all.len() + 1);
                let mut all = all;
                if at < all.len() && at % 3 == 0 {
                    all.truncate(at);
                }
                all
            }),
    ];
    (bytes, prop_oneof![3 => Just(false), 1 => Just(true)])
}

/// The largest payload any header in `bytes` announces within the limit:
/// the most a receive of them may allocate (beyond [`SMALL`]).
fn allowed(bytes: &[u8]) -> usize {
    let mut most = SMALL;
    for at in 0..bytes.len().saturating_sub(HEADER_LEN - 1) {
        if &bytes[at..at + 4] == b"mpF1" {
            let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
            if len <= DEFAULT_MAX_FRAME_LEN {
                most = most.max(len);
            }
        }
    }
    most
}

/// `prefix ++ bytes`, raw, or as the payload of one handshake frame (when
/// its first byte is even): garbage at both levels.
fn maybe_framed(prefix: Vec<u8>, bytes: &[u8]) -> Vec<u8> {
    let mut msg = prefix;
    msg.extend_from_slice(bytes);
    if msg.first().is_some_and(|b| b & 1 == 0) {
        let mut f = b"mpF1".to_vec();
        f.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        f.extend_from_slice(&[0, 0, 1, 0]);
        f.extend_from_slice(&msg);
        msg = f;
    }
    msg
}

fn bounded(what: &str, t0: Instant) -> Result<(), TestCaseError> {
    let took = t0.elapsed();
    prop_assert!(took < HANG, "{what} took {took:?}");
    Ok(())
}

/// Accepts by outcome: ended at their deadline (no handshake completed or
/// failed in time: peers that stay connected and send part of a message),
/// or an authentication error (this input's, or that of an earlier input
/// whose peer has closed since).
static HANDSHAKES: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
/// Receives by outcome: a message, an error in sync, an error that ended
/// the connection.
static OUTCOMES: [AtomicUsize; 3] = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];

#[test]
fn the_frame_parser_survives_any_input() {
    let path = temp_path("frames.sock");
    let l = Listener::bind(path.to_str().unwrap(), None).unwrap();
    let mut runner = runner();
    let r = runner.run(&(input(), any::<bool>()), |((bytes, stay), as_value)| {
        let mut raw = UnixStream::connect(&path).unwrap();
        let c = l.accept_timeout(HANG).unwrap();
        raw.write_all(&bytes).unwrap();
        // A peer that stays connected, or one that closed after writing.
        let raw = stay.then_some(raw);
        let wait = if stay { Duration::from_millis(2) } else { HANG };
        LargestAllocation::largest_since();
        // Each message takes at least a header: a bounded number of them.
        for _ in 0..=bytes.len() / HEADER_LEN {
            let t0 = Instant::now();
            let r = if as_value {
                c.recv_timeout::<Vec<u8>>(wait).map(drop)
            } else {
                c.recv_bytes_timeout(wait).map(drop)
            };
            bounded("a receive", t0)?;
            match r {
                Ok(()) => OUTCOMES[0].fetch_add(1, Ordering::Relaxed),
                Err(ConnectionError::Decode(_) | ConnectionError::BufferTooShort(_)) => {
                    OUTCOMES[1].fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => {
                    OUTCOMES[2].fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
        }
        let largest = LargestAllocation::largest_since();
        prop_assert!(
            largest <= allowed(&bytes),
            "{largest} bytes allocated for {} bytes of input",
            bytes.len()
        );
        drop(raw);
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
    let [ok, in_sync, ended] = OUTCOMES.each_ref().map(|n| n.load(Ordering::Relaxed));
    eprintln!(
        "frame parser: {} inputs, no panic, no hang ({ok} messages, {in_sync} errors in sync, {ended} ending errors)",
        cases()
    );
}

#[test]
fn an_oversized_header_allocates_nothing_for_its_payload() {
    let path = temp_path("oversized.sock");
    let l = Listener::bind(path.to_str().unwrap(), None).unwrap();
    for len in [DEFAULT_MAX_FRAME_LEN as u32 + 1, u32::MAX] {
        let mut raw = UnixStream::connect(&path).unwrap();
        let c = l.accept_timeout(HANG).unwrap();
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(b"mpF1");
        h[4..8].copy_from_slice(&len.to_le_bytes());
        h[10] = 1;
        raw.write_all(&h).unwrap();
        LargestAllocation::largest_since();
        let r = c.recv_bytes_timeout(HANG);
        let largest = LargestAllocation::largest_since();
        assert!(matches!(r, Err(ConnectionError::TooLarge { .. })), "{r:?}");
        assert!(largest < 64 << 10, "{largest} bytes allocated for a refused header");
    }
    // The allocator does count: a header within the limits reserves its payload.
    let mut raw = UnixStream::connect(&path).unwrap();
    let c = l.accept_timeout(HANG).unwrap();
    raw.write_all(b"mpF1").unwrap();
    raw.write_all(&(1u32 << 20).to_le_bytes()).unwrap();
    raw.write_all(&[0, 0, 1, 0]).unwrap();
    LargestAllocation::largest_since();
    let r = c.recv_bytes_timeout(Duration::from_millis(20));
    assert!(matches!(r, Err(ConnectionError::Timeout)), "{r:?}");
    assert!(LargestAllocation::largest_since() >= 1 << 20);
}

#[test]
fn the_listener_handshake_survives_any_input() {
    let path = temp_path("server.sock");
    let l = Listener::builder(path.to_str().unwrap())
        .authkey(KEY)
        .handshake_timeout(Duration::from_millis(50))
        .bind()
        .unwrap();
    let mut runner = runner();
    let answer = prop_oneof![Just(Vec::new()), Just(b"#MP-ANSWER/1#".to_vec())];
    let cut = any::<proptest::sample::Index>();
    let kept = std::cell::RefCell::new(std::collections::VecDeque::new());
    let r = runner.run(&(input(), answer, cut), |((bytes, stay), prefix, cut)| {
        let mut raw = UnixStream::connect(&path).unwrap();
        let mut msg = maybe_framed(prefix, &bytes);
        if stay {
            // A peer that stays connected sends part of its message.
            msg.truncate(cut.index(msg.len() + 1));
        }
        raw.write_all(&msg).unwrap();
        if stay {
            // Peers that stay connected stay so for a while (the last 32),
            // so that their handshakes end at the deadline, not at a close.
            let mut kept = kept.borrow_mut();
            kept.push_back(raw.try_clone().unwrap());
            if kept.len() > 32 {
                kept.pop_front();
            }
        } else {
            raw.shutdown(Shutdown::Write).unwrap();
        }
        LargestAllocation::largest_since();
        let t0 = Instant::now();
        let r = l.accept_timeout(Duration::from_millis(if stay { 5 } else { 2000 }));
        bounded("accept", t0)?;
        let largest = LargestAllocation::largest_since();
        prop_assert!(
            matches!(r, Err(ConnectionError::Authentication(_) | ConnectionError::Timeout)),
            "{r:?}"
        );
        let n = if matches!(r, Err(ConnectionError::Timeout)) {
            0
        } else {
            1
        };
        HANDSHAKES[n].fetch_add(1, Ordering::Relaxed);
        prop_assert!(largest < 64 << 10, "{largest} bytes allocated in a handshake");
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
    let [timeouts, refused] = HANDSHAKES.each_ref().map(|n| n.load(Ordering::Relaxed));
    eprintln!(
        "listener handshake: {} inputs, no panic, no hang ({timeouts} accepts timed out, {refused} refused a client)",
        cases()
    );
}

#[test]
fn the_client_handshake_survives_any_input() {
    let path = temp_path("client.sock");
    let raw = UnixListener::bind(&path).unwrap();
    let mut runner = runner();
    let challenge = prop_oneof![Just(Vec::new()), Just(b"#MP-CHALLENGE/1#".to_vec())];
    let r = runner.run(&(input(), challenge), |((bytes, _), prefix)| {
        let msg = maybe_framed(prefix, &bytes);
        thread::scope(|s| {
            let server = s.spawn(|| {
                let (mut peer, _) = raw.accept().unwrap();
                let _ = peer.write_all(&msg);
                let _ = peer.shutdown(Shutdown::Write);
                // Read until the client is done, so it sees no reset.
                let _ = peer.set_read_timeout(Some(HANG));
                let _ = peer.read_to_end(&mut Vec::new());
            });
            let t0 = Instant::now();
            let c = Client::connect(path.to_str().unwrap(), Some(KEY));
            bounded("connect", t0)?;
            prop_assert!(matches!(c, Err(ConnectionError::Authentication(_))), "{c:?}");
            drop(c);
            server.join().unwrap();
            Ok(())
        })
    });
    if let Err(e) = r {
        panic!("{e}");
    }
    eprintln!("client handshake: {} inputs, no panic, no hang", cases());
}
