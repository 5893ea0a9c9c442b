//! Frames over socket pairs: round trips, large messages, limits, and every
//! kind of bad input a peer can send.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use mp_codec::{CodecError, Fd, Frame, HEADER_LEN, Limits};
use mp_sys::fd;
use mp_sys::socket::{SocketKind, socketpair};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Unit,
    Point(i32, i32),
    Named { name: String, tags: Vec<String> },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Everything {
    a: u8,
    b: i64,
    c: f64,
    d: Option<String>,
    e: Vec<Shape>,
    f: BTreeMap<String, (u16, bool)>,
    g: [u32; 3],
    h: char,
}

fn sample() -> Everything {
    Everything {
        a: 255,
        b: i64::MIN,
        c: -1.5e300,
        d: Some("ünïcødé".into()),
        e: vec![
            Shape::Unit,
            Shape::Point(-1, 2),
            Shape::Named {
                name: "n".into(),
                tags: vec!["x".into(); 3],
            },
        ],
        f: [("k".to_string(), (7u16, true))].into_iter().collect(),
        g: [1, 2, u32::MAX],
        h: '🦀',
    }
}

#[test]
fn values_round_trip_through_a_socket() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    mp_codec::send(a.as_fd(), &sample()).unwrap();
    mp_codec::send(a.as_fd(), &()).unwrap();
    mp_codec::send(a.as_fd(), &Vec::<u8>::new()).unwrap();
    assert_eq!(mp_codec::recv::<Everything>(b.as_fd()).unwrap(), sample());
    mp_codec::recv::<()>(b.as_fd()).unwrap();
    assert_eq!(mp_codec::recv::<Vec<u8>>(b.as_fd()).unwrap(), Vec::<u8>::new());
}

#[test]
fn a_value_of_the_wrong_type_is_a_decode_error_and_the_stream_stays_in_sync() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    mp_codec::send(a.as_fd(), &sample()).unwrap();
    mp_codec::send(a.as_fd(), &"next").unwrap();
    let err = mp_codec::recv::<Vec<Shape>>(b.as_fd()).unwrap_err();
    assert!(matches!(err, CodecError::Decode(_)), "{err:?}");
    assert_eq!(mp_codec::recv::<String>(b.as_fd()).unwrap(), "next");
    let err = mp_codec::decode::<u8>(mp_codec::encode(&300u16).unwrap()).unwrap_err();
    assert!(
        err.to_string().contains("left over") || matches!(err, CodecError::Decode(_)),
        "{err}"
    );
}

#[test]
fn raw_bytes_frames_are_not_values() {
    let f = Frame::from_bytes(b"\x01\x02").unwrap();
    let err = mp_codec::decode::<u16>(f).unwrap_err();
    assert!(err.to_string().contains("send_bytes"), "{err}");
}

#[test]
fn sixty_four_mib_crosses_a_socket() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    let expected = big.clone();
    let t = std::thread::spawn(move || {
        mp_codec::send_frame(a.as_fd(), &Frame::from_bytes(&big).unwrap()).unwrap();
        mp_codec::send(
            a.as_fd(),
            &big.iter().map(|&x| u64::from(x)).take(1 << 20).collect::<Vec<_>>(),
        )
        .unwrap();
    });
    let f = mp_codec::recv_frame(b.as_fd(), &Limits::default()).unwrap();
    assert_eq!(f.payload().len(), 64 << 20);
    assert!(f.into_payload() == expected);
    let v: Vec<u64> = mp_codec::recv(b.as_fd()).unwrap();
    assert_eq!(v.len(), 1 << 20);
    assert_eq!(v[1000], 1000 % 251);
    t.join().unwrap();
}

#[test]
fn non_blocking_sockets_carry_large_frames() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    fd::set_nonblocking(a.as_fd(), true).unwrap();
    fd::set_nonblocking(b.as_fd(), true).unwrap();
    let data = vec![3u8; 8 << 20];
    let t = std::thread::spawn(move || mp_codec::send_frame(a.as_fd(), &Frame::from_bytes(&data).unwrap()));
    let f = mp_codec::recv_frame(b.as_fd(), &Limits::default()).unwrap();
    assert_eq!(f.payload().len(), 8 << 20);
    t.join().unwrap().unwrap();
}

#[test]
fn a_frame_over_the_limit_is_refused_before_allocation() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    mp_codec::send_frame(a.as_fd(), &Frame::from_bytes(&[0u8; 2048]).unwrap()).unwrap();
    let err = mp_codec::recv_frame(b.as_fd(), &Limits { max_frame_len: 1024 }).unwrap_err();
    assert!(matches!(err, CodecError::TooLarge { len: 2048, max: 1024 }), "{err:?}");
    // A header announcing 4 GiB with nothing behind it.
    let mut head = mp_codec::encode(&0u8).unwrap().as_bytes()[..HEADER_LEN].to_vec();
    head[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let (c, d) = socketpair(SocketKind::Stream).unwrap();
    fd::write_all(c.as_fd(), &head).unwrap();
    let err = mp_codec::recv_frame(d.as_fd(), &Limits::default()).unwrap_err();
    assert!(matches!(err, CodecError::TooLarge { .. }), "{err:?}");
}

#[test]
fn garbage_and_truncation_are_errors() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    fd::write_all(a.as_fd(), b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let err = mp_codec::recv_frame(b.as_fd(), &Limits::default()).unwrap_err();
    assert!(matches!(err, CodecError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("not an mp-codec frame"), "{err}");

    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    let f = mp_codec::encode(&"a long enough string").unwrap();
    fd::write_all(a.as_fd(), &f.as_bytes()[..HEADER_LEN + 3]).unwrap();
    drop(a);
    let err = mp_codec::recv_frame(b.as_fd(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, CodecError::Truncated { got, .. } if got == HEADER_LEN + 3),
        "{err:?}"
    );
    assert!(err.is_eof());

    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    fd::write_all(a.as_fd(), &f.as_bytes()[..5]).unwrap();
    drop(a);
    let err = mp_codec::recv_frame(b.as_fd(), &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::Truncated {
                expected: HEADER_LEN,
                got: 5
            }
        ),
        "{err:?}"
    );

    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    drop(a);
    assert!(matches!(
        mp_codec::recv_frame(b.as_fd(), &Limits::default()),
        Err(CodecError::Eof)
    ));
}

#[test]
fn a_descriptor_count_that_does_not_match_is_an_error_in_sync() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    // A frame whose header announces one descriptor, sent without any.
    let (r, _w) = fd::pipe().unwrap();
    let f = mp_codec::encode(&Fd(r)).unwrap();
    fd::write_all(a.as_fd(), f.as_bytes()).unwrap();
    mp_codec::send(a.as_fd(), &11u32).unwrap();
    let err = mp_codec::recv_frame(b.as_fd(), &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::FdCount {
                announced: 1,
                received: 0
            }
        ),
        "{err:?}"
    );
    assert_eq!(mp_codec::recv::<u32>(b.as_fd()).unwrap(), 11);
}

fn pipe_fd() -> OwnedFd {
    fd::pipe().unwrap().0
}

#[test]
fn handles_claimed_twice_or_never_are_errors() {
    // Claimed twice: the second handle reads the u32 0 as descriptor #0 again.
    let f = mp_codec::encode(&(Fd(pipe_fd()), 0u32)).unwrap();
    let err = mp_codec::decode::<(Fd, Fd)>(f).unwrap_err();
    assert!(
        matches!(&err, CodecError::Handle(m) if m.contains("claimed by two")),
        "{err:?}"
    );
    // Never claimed: the index is read as a plain number.
    let f = mp_codec::encode(&(Fd(pipe_fd()), 0u32)).unwrap();
    let err = mp_codec::decode::<(u32, u32)>(f).unwrap_err();
    assert!(
        matches!(&err, CodecError::Handle(m) if m.contains("claimed 0")),
        "{err:?}"
    );
    // An index past the end.
    let f = mp_codec::encode(&(5u32,)).unwrap();
    let err = mp_codec::decode::<(Fd,)>(f).unwrap_err();
    assert!(
        matches!(&err, CodecError::Handle(m) if m.contains("carries only 0")),
        "{err:?}"
    );
}

#[test]
fn a_handle_outside_the_codec_is_a_clear_error() {
    let err = serde_json::to_string(&Fd(pipe_fd())).unwrap_err();
    assert!(
        err.to_string().contains("can only be encoded and decoded by mp-codec"),
        "{err}"
    );
    let err = serde_json::from_str::<Fd>("0").unwrap_err();
    assert!(
        err.to_string().contains("can only be encoded and decoded by mp-codec"),
        "{err}"
    );
    // A region received through the codec that is not a region.
    let f = mp_codec::encode(&Fd(pipe_fd())).unwrap();
    #[derive(Deserialize)]
    struct R(
        #[serde(with = "mp_codec::handle::region")]
        #[allow(dead_code)]
        mp_sys::region::Region,
    );
    let err = mp_codec::decode::<R>(f).err().expect("a pipe is not a region");
    assert!(err.to_string().contains("cannot map a region"), "{err}");
}

#[test]
fn more_handles_than_a_message_carries_is_an_encode_error() {
    let fds: Vec<Fd> = (0..254).map(|_| Fd(pipe_fd())).collect();
    let err = mp_codec::encode(&fds).unwrap_err();
    assert!(
        matches!(err, CodecError::TooManyFds { count: 254, max: 253 }),
        "{err:?}"
    );
    let fds: Vec<Fd> = fds.into_iter().take(253).collect();
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    mp_codec::send(a.as_fd(), &fds).unwrap();
    assert_eq!(mp_codec::recv::<Vec<Fd>>(b.as_fd()).unwrap().len(), 253);
}

#[test]
fn recv_timeout_waits_then_reports_timeout_without_consuming() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    let t = Duration::from_millis(200);
    let t0 = Instant::now();
    let err = mp_codec::recv_frame_timeout(b.as_fd(), &Limits::default(), t).unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(err, CodecError::Timeout));
    assert!(took >= t && took < t + Duration::from_millis(1500), "{took:?}");
    mp_codec::send(a.as_fd(), &1u8).unwrap();
    let f = mp_codec::recv_frame_timeout(b.as_fd(), &Limits::default(), t).unwrap();
    assert_eq!(mp_codec::decode::<u8>(f).unwrap(), 1);
}

#[test]
fn errors_are_send_sync_and_std_errors() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<CodecError>();
    is_error::<mp_codec::handle::HandleError>();
    fn is_send<T: Send>() {}
    is_send::<Frame>();
}

#[test]
fn header_and_payload_read_apart_with_deadlines() {
    use mp_codec::{FrameKind, Wait};
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    // A bytes frame without a copy, then a value frame; each split read.
    mp_codec::send_bytes(a.as_fd(), b"raw bytes", &Limits::default()).unwrap();
    mp_codec::send(a.as_fd(), &(5u8, "v")).unwrap();
    let spin = Wait {
        spin: Duration::from_micros(200),
        deadline: None,
    };
    let head = mp_codec::recv_header(b.as_fd(), &Limits::default(), spin).unwrap();
    assert_eq!((head.header.kind, head.header.len), (FrameKind::Bytes, 9));
    let mut buf = [0u8; 9];
    mp_codec::recv_payload_into(b.as_fd(), &mut buf, None).unwrap();
    assert_eq!(&buf, b"raw bytes");
    let head = mp_codec::recv_header(b.as_fd(), &Limits::default(), Wait::default()).unwrap();
    let mut payload = Vec::new();
    mp_codec::recv_payload(b.as_fd(), head.header.len, &mut payload, None).unwrap();
    let v: (u8, String) = mp_codec::decode_payload(&payload, head.fds).unwrap();
    assert_eq!(v, (5, "v".to_string()));

    // Nothing comes: Timeout, nothing consumed; spinning first changes nothing.
    let soon = Wait {
        spin: Duration::from_micros(100),
        deadline: mp_sys::time::Deadline::after(Duration::from_millis(20)).instant(),
    };
    assert!(matches!(
        mp_codec::recv_header(b.as_fd(), &Limits::default(), soon),
        Err(CodecError::Timeout)
    ));
    // Half a header, then silence: Stalled.
    fd::write(a.as_fd(), &mp_codec::encode(&1u8).unwrap().as_bytes()[..5]).unwrap();
    let soon = Wait {
        spin: Duration::ZERO,
        deadline: mp_sys::time::Deadline::after(Duration::from_millis(20)).instant(),
    };
    let e = mp_codec::recv_header(b.as_fd(), &Limits::default(), soon).unwrap_err();
    assert!(matches!(e, CodecError::Stalled { expected: 12, got: 5 }), "{e:?}");
    // A payload that stops: Stalled too.
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    let frame = Frame::from_bytes(&[1u8; 100]).unwrap();
    fd::write(a.as_fd(), &frame.as_bytes()[..50]).unwrap();
    let head = mp_codec::recv_header(b.as_fd(), &Limits::default(), Wait::default()).unwrap();
    let mut v = Vec::new();
    let e = mp_codec::recv_payload(
        b.as_fd(),
        head.header.len,
        &mut v,
        mp_sys::time::Deadline::after(Duration::from_millis(20)).instant(),
    )
    .unwrap_err();
    assert!(matches!(e, CodecError::Stalled { .. }), "{e:?}");
}

#[test]
fn send_bytes_refuses_over_the_limit_before_writing() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    let small = Limits { max_frame_len: 4 };
    let e = mp_codec::send_bytes(a.as_fd(), b"12345", &small).unwrap_err();
    assert!(matches!(e, CodecError::TooLarge { len: 5, max: 4 }), "{e:?}");
    let mut set = [fd::PollFd::readable(b.as_fd())];
    assert_eq!(
        fd::poll(&mut set, Some(Duration::ZERO)).unwrap(),
        0,
        "nothing was written"
    );
}

#[test]
fn a_descriptor_count_mismatch_after_a_split_header_read_stays_in_sync() {
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    let f = mp_codec::encode(&7u32).unwrap();
    let mut bytes = f.as_bytes().to_vec();
    bytes[8] = 2; // announces two descriptors, sends none
    fd::write(a.as_fd(), &bytes).unwrap();
    mp_codec::send(a.as_fd(), &8u32).unwrap();
    let e = mp_codec::recv_header(b.as_fd(), &Limits::default(), Default::default()).unwrap_err();
    assert!(
        matches!(
            e,
            CodecError::FdCount {
                announced: 2,
                received: 0
            }
        ),
        "{e:?}"
    );
    assert_eq!(mp_codec::recv::<u32>(b.as_fd()).unwrap(), 8);
}

#[test]
fn a_peer_that_closes_with_bytes_unread_ends_the_stream_after_its_frames() {
    // Closing a Unix socket with unread bytes resets the peer (ECONNRESET),
    // reported once everything queued for the peer was read: it reads as
    // the end, after the frames that were sent.
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    mp_codec::send(b.as_fd(), &7u32).unwrap();
    mp_codec::send_bytes(a.as_fd(), b"never read", &Limits::default()).unwrap();
    drop(b);
    assert_eq!(mp_codec::recv::<u32>(a.as_fd()).unwrap(), 7);
    assert!(matches!(mp_codec::recv::<u32>(a.as_fd()), Err(CodecError::Eof)));
    assert!(matches!(mp_codec::recv::<u32>(a.as_fd()), Err(CodecError::Eof)));
    // Mid-frame: truncated, not an i/o error.
    let (a, b) = socketpair(SocketKind::Stream).unwrap();
    let frame = mp_codec::encode(&vec![1u8; 100]).unwrap();
    fd::write_all(b.as_fd(), &frame.as_bytes()[..50]).unwrap();
    mp_codec::send_bytes(a.as_fd(), b"never read", &Limits::default()).unwrap();
    drop(b);
    let e = mp_codec::recv_frame(a.as_fd(), &Limits::default()).unwrap_err();
    assert!(matches!(e, CodecError::Truncated { got: 50, .. }), "{e:?}");
}

/// Serializes as a `u32`, but refuses 13 with its own message.
#[derive(Debug, PartialEq, Deserialize)]
struct Unlucky(u32);

impl Serialize for Unlucky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("13 is unlucky"));
        }
        s.serialize_u32(self.0)
    }
}

/// Deserializes from a `u32`, but refuses 7 with its own message.
#[derive(Debug, PartialEq, Serialize)]
struct Picky(u32);

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n == 7 {
            return Err(serde::de::Error::custom("7 is not welcome"));
        }
        Ok(Picky(n))
    }
}

/// Refuses odd numbers through `try_from`: serde reports the `TryFrom`
/// error as a custom one.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "u64")]
struct Even(u64);

impl TryFrom<u64> for Even {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        if n.is_multiple_of(2) {
            Ok(Even(n))
        } else {
            Err(format!("{n} is odd"))
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Holder<T> {
    Plain(T),
    Boxed { inner: Option<Box<T>> },
}

fn encode_error(r: Result<Frame, CodecError>) -> String {
    match r {
        Err(CodecError::Encode(m)) => m,
        other => panic!("not an encode error: {other:?}"),
    }
}

#[test]
fn a_serialize_impls_message_is_kept_at_every_depth() {
    let msg = encode_error(mp_codec::encode(&Unlucky(13)));
    assert!(msg.contains("13 is unlucky"), "{msg}");
    // Nested in an option, a tuple, a map, an enum variant.
    let nested = (1u8, Some(vec![Unlucky(1), Unlucky(13)]));
    assert!(encode_error(mp_codec::encode(&nested)).contains("13 is unlucky"));
    let map: BTreeMap<String, Holder<Unlucky>> = [
        ("a".to_string(), Holder::Plain(Unlucky(1))),
        (
            "b".to_string(),
            Holder::Boxed {
                inner: Some(Box::new(Unlucky(13))),
            },
        ),
    ]
    .into();
    assert!(encode_error(mp_codec::encode(&map)).contains("13 is unlucky"));
    // A value too big for one pass fails in the measuring pass.
    let big: Vec<Unlucky> = (0..1000).map(|i| Unlucky(if i == 999 { 13 } else { 1 })).collect();
    assert!(encode_error(mp_codec::encode(&big)).contains("13 is unlucky"));
    // Into a reused frame as well; the frame works afterwards.
    let mut f = Frame::new();
    let e = mp_codec::encode_into(&[Unlucky(13)], &mut f).unwrap_err();
    assert!(e.to_string().contains("cannot encode the value: 13 is unlucky"), "{e}");
    mp_codec::encode_into(&[Unlucky(2)], &mut f).unwrap();
    assert_eq!(mp_codec::decode::<[Unlucky; 1]>(f).unwrap(), [Unlucky(2)]);
}

#[test]
fn a_deserialize_impls_message_is_kept_at_every_depth() {
    let decode_error = |f: Frame| -> String {
        match mp_codec::decode::<(String, Vec<Holder<Picky>>)>(f) {
            Err(CodecError::Decode(m)) => m,
            other => panic!("not a decode error: {other:?}"),
        }
    };
    let f = mp_codec::encode(&Picky(7)).unwrap();
    let e = mp_codec::decode::<Picky>(f).unwrap_err();
    assert!(
        matches!(&e, CodecError::Decode(m) if m.contains("7 is not welcome")),
        "{e}"
    );
    let v = (
        "x".to_string(),
        vec![
            Holder::Plain(Picky(1)),
            Holder::Boxed {
                inner: Some(Box::new(Picky(7))),
            },
        ],
    );
    let m = decode_error(mp_codec::encode(&v).unwrap());
    assert!(m.contains("7 is not welcome"), "{m}");
    // serde's own messages: a TryFrom refusal, an unknown variant index.
    let e = mp_codec::decode::<Vec<Even>>(mp_codec::encode(&vec![2u64, 3]).unwrap()).unwrap_err();
    assert!(e.to_string().contains("3 is odd"), "{e}");
    let e = mp_codec::decode::<Holder<u8>>(mp_codec::encode(&(5u32, 1u8)).unwrap()).unwrap_err();
    assert!(e.to_string().contains("expected variant index"), "{e}");
    // Postcard's own errors keep their words and hints.
    let e = mp_codec::decode::<(u32, u32)>(mp_codec::encode(&1u8).unwrap()).unwrap_err();
    assert!(e.to_string().contains("ended early"), "{e}");
    // Values that decode are untouched: borrowed-looking types, options,
    // maps, enums, and the sample.
    let s = sample();
    assert_eq!(
        mp_codec::decode::<Everything>(mp_codec::encode(&s).unwrap()).unwrap(),
        s
    );
    let e = vec![Even(2), Even(4)];
    assert_eq!(
        mp_codec::decode::<Vec<Even>>(mp_codec::encode(&vec![2u64, 4]).unwrap()).unwrap(),
        e
    );
}

#[test]
fn a_serialize_impls_message_crosses_a_socket_send() {
    let (a, _b) = socketpair(SocketKind::Stream).unwrap();
    let e = mp_codec::send(a.as_fd(), &vec![Unlucky(13)]).unwrap_err();
    assert!(e.to_string().contains("13 is unlucky"), "{e}");
}

#[test]
fn frames_with_handles_keep_deserialize_messages_and_decode_every_shape() {
    // A frame carrying descriptors decodes through the message-keeping
    // adapter at once: every shape must come through it unchanged.
    let s = sample();
    let f = mp_codec::encode(&(Fd(pipe_fd()), s.clone(), Some(Fd(pipe_fd())))).unwrap();
    assert_eq!(f.fds().len(), 2);
    let (_a, back, b): (Fd, Everything, Option<Fd>) = mp_codec::decode(f).unwrap();
    assert_eq!(back, s);
    assert!(b.is_some());
    let f = mp_codec::encode(&(Fd(pipe_fd()), vec![Picky(2), Picky(7)])).unwrap();
    let e = mp_codec::decode::<(Fd, Vec<Picky>)>(f).unwrap_err();
    assert!(
        matches!(&e, CodecError::Decode(m) if m.contains("7 is not welcome")),
        "{e}"
    );
    // Handle errors stay handle errors.
    let f = mp_codec::encode(&(Fd(pipe_fd()), 1u8)).unwrap();
    let e = mp_codec::decode::<(Fd, Fd)>(f).unwrap_err();
    assert!(matches!(e, CodecError::Handle(_)), "{e}");
}
