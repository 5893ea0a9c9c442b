//! Fuzz-style robustness: 10,000 random and mutated frames fed to the
//! decoder, in memory and through a socket, must each give a result (an
//! error, or a value when the mutation kept the bytes valid) and never a
//! panic or a hang.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mp_codec::{CodecError, Frame, HEADER_LEN, Limits};
use mp_sys::socket::{SocketKind, socketpair};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Msg {
    Ping(u64),
    Text(String),
    Batch(Vec<(i32, Option<f32>)>),
    Map(BTreeMap<String, Vec<u8>>),
    Nested(Box<Option<Msg>>),
}

fn random_msg(rng: &mut fastrand::Rng, depth: u32) -> Msg {
    match rng.u8(0..if depth > 2 { 4 } else { 5 }) {
        0 => Msg::Ping(rng.u64(..)),
        1 => Msg::Text((0..rng.usize(0..40)).map(|_| rng.char(..)).collect()),
        2 => Msg::Batch(
            (0..rng.usize(0..20))
                .map(|_| (rng.i32(..), rng.bool().then(|| rng.f32())))
                .collect(),
        ),
        3 => Msg::Map(
            (0..rng.usize(0..5))
                .map(|i| (format!("k{i}"), (0..rng.usize(0..16)).map(|_| rng.u8(..)).collect()))
                .collect(),
        ),
        _ => Msg::Nested(Box::new(rng.bool().then(|| random_msg(rng, depth + 1)))),
    }
}

fn mutate(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.usize(1..4) {
        match rng.u8(0..6) {
            // Flip bits anywhere, header included.
            0 if !bytes.is_empty() => {
                let i = rng.usize(..bytes.len());
                bytes[i] ^= 1 << rng.u8(0..8);
            }
            // Overwrite a byte with an extreme value.
            1 if !bytes.is_empty() => {
                let i = rng.usize(..bytes.len());
                bytes[i] = *rng.choice(&[0x00u8, 0x7f, 0x80, 0xff]).unwrap_or(&0);
            }
            // Truncate.
            2 => bytes.truncate(rng.usize(..=bytes.len())),
            // Append junk.
            3 => bytes.extend((0..rng.usize(1..16)).map(|_| rng.u8(..))),
            // Corrupt the payload length field.
            4 if bytes.len() >= 8 => bytes[4..8].copy_from_slice(&rng.u32(..).to_le_bytes()),
            // Insert a byte in the payload.
            _ => {
                let i = rng.usize(..=bytes.len());
                bytes.insert(i, rng.u8(..));
            }
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    errors: BTreeMap<&'static str, usize>,
}

impl Tally {
    fn add(&mut self, r: Result<Msg, CodecError>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(e) => {
                let kind = match e {
                    CodecError::Corrupt(_) => "corrupt",
                    CodecError::Truncated { .. } => "truncated",
                    CodecError::TooLarge { .. } => "too large",
                    CodecError::Decode(_) => "decode",
                    CodecError::FdCount { .. } => "fd count",
                    CodecError::Handle(_) => "handle",
                    CodecError::Eof => "eof",
                    _ => "other",
                };
                *self.errors.entry(kind).or_default() += 1;
            }
        }
    }

    fn total(&self) -> usize {
        self.ok + self.errors.values().sum::<usize>()
    }
}

fn decode_in_memory(bytes: Vec<u8>) -> Result<Msg, CodecError> {
    let limits = Limits { max_frame_len: 1 << 20 };
    mp_codec::decode(Frame::from_wire(bytes, Vec::new(), &limits)?)
}

#[test]
fn ten_thousand_random_and_mutated_frames_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x6d70_2d63_6f64_6563);
    let mut tally = Tally::default();
    let mut random_ok = 0;
    let t0 = Instant::now();
    for i in 0..10_000 {
        let bytes = if i % 5 == 0 {
            // Pure noise, sometimes behind a valid magic number.
            let mut b: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            if rng.bool() && b.len() >= 4 {
                b[..4].copy_from_slice(b"mpF1");
            }
            b
        } else {
            let msg = random_msg(&mut rng, 0);
            let (mut b, _) = mp_codec::encode(&msg).unwrap().into_parts();
            mutate(&mut rng, &mut b);
            b
        };
        let noise = i % 5 == 0;
        let r = decode_in_memory(bytes);
        if noise && r.is_ok() {
            random_ok += 1;
        }
        tally.add(r);
    }
    println!("10,000 frames in {:?}: {tally:?}", t0.elapsed());
    assert_eq!(tally.total(), 10_000);
    assert_eq!(random_ok, 0, "pure noise decoded as a frame");
    assert!(tally.errors.values().sum::<usize>() > 8_000, "{tally:?}");
    assert!(
        tally.errors.len() >= 4,
        "mutations should reach several error kinds: {tally:?}"
    );
}

#[test]
fn mutated_streams_through_a_socket_end_in_errors_not_hangs() {
    let mut rng = fastrand::Rng::with_seed(42);
    let limits = Limits { max_frame_len: 1 << 20 };
    let mut tally = Tally::default();
    for _ in 0..500 {
        let (a, b) = socketpair(SocketKind::Stream).unwrap();
        let mut stream = Vec::new();
        for _ in 0..rng.usize(1..4) {
            stream.extend_from_slice(mp_codec::encode(&random_msg(&mut rng, 0)).unwrap().as_bytes());
        }
        mutate(&mut rng, &mut stream);
        // The writer sends everything and closes, so every read ends.
        let writer = std::thread::spawn(move || {
            let _ = mp_sys::fd::write_all(a.as_fd(), &stream);
        });
        let deadline = mp_sys::time::Deadline::nap(Duration::from_secs(10));
        loop {
            let r = mp_codec::recv_frame_timeout(b.as_fd(), &limits, Duration::from_secs(10))
                .and_then(mp_codec::decode::<Msg>);
            let stop = matches!(
                r,
                Err(CodecError::Eof
                    | CodecError::Truncated { .. }
                    | CodecError::Corrupt(_)
                    | CodecError::TooLarge { .. }
                    | CodecError::Timeout)
            );
            assert!(!matches!(r, Err(CodecError::Timeout)), "a read hung until its timeout");
            tally.add(r);
            assert!(Instant::now() < deadline);
            if stop {
                break;
            }
        }
        writer.join().unwrap();
    }
    println!("500 streams: {tally:?}");
    assert!(tally.total() >= 500);
    let _ = HEADER_LEN;
}
