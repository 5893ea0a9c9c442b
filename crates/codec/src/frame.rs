//! Frames: a 12-byte header, then the payload; file descriptors beside them.
//!
//! ```text
//! offset  size  field
//! 0       4     magic b"mpF1" (format version 1)
//! 4       4     payload length, little-endian u32
//! 8       2     number of file descriptors sent with the frame, little-endian u16
//! 10      1     kind: 0 = a serde value (postcard), 1 = raw bytes, 2 = a wake-up
//! 11      1     reserved, 0
//! ```

use std::os::fd::OwnedFd;

use serde::Serialize;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, DeserializeSeed};

use crate::capture;
use crate::error::CodecError;
use crate::{handle, reader, writer};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 12;

const MAGIC: [u8; 4] = *b"mpF1";

/// The default for [`Limits::max_frame_len`]: 1 GiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 30;

/// Bounds on what a receiver accepts from a peer.
///
/// ```
/// let small = mp_codec::Limits { max_frame_len: 1024 };
/// assert_eq!(mp_codec::Limits::default().max_frame_len, 1 << 30);
/// # drop(small);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest payload accepted, in bytes (at most `u32::MAX`). A header
    /// announcing more is refused before any memory is allocated for it.
    pub max_frame_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// What a frame's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A serde value in postcard format.
    Value,
    /// Raw bytes (Python's `send_bytes`).
    Bytes,
    /// No message: a header alone (no payload, no descriptors) that makes
    /// the socket readable, for a peer that sleeps in `poll` while messages
    /// arrive through shared memory beside the socket. A receiver skips it.
    Wake,
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: usize,
    /// File descriptors announced.
    pub nfds: usize,
    /// What the payload holds.
    pub kind: FrameKind,
}

impl Header {
    /// Parses and checks a header against `limits`.
    ///
    /// ```
    /// let f = mp_codec::encode(&5u8)?;
    /// let h = mp_codec::Header::parse(&f.as_bytes()[..12], &Default::default())?;
    /// assert_eq!((h.len, h.nfds), (1, 0));
    /// assert!(mp_codec::Header::parse(b"not a header", &Default::default()).is_err());
    /// # Ok::<(), mp_codec::CodecError>(())
    /// ```
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Header, CodecError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(CodecError::Truncated {
                expected: HEADER_LEN,
                got: bytes.len(),
            });
        };
        if h[..4] != MAGIC {
            return Err(CodecError::Corrupt(format!(
                "bad magic number {:02x?}: this is not an mp-codec frame, or the stream is out of step",
                &h[..4]
            )));
        }
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let nfds = usize::from(u16::from_le_bytes([h[8], h[9]]));
        let kind = match h[10] {
            0 => FrameKind::Value,
            1 => FrameKind::Bytes,
            2 => FrameKind::Wake,
            k => return Err(CodecError::Corrupt(format!("unknown frame kind {k}"))),
        };
        if kind == FrameKind::Wake && (len != 0 || nfds != 0) {
            return Err(CodecError::Corrupt(format!(
                "a wake-up frame with {len} payload bytes and {nfds} descriptors (it has neither)"
            )));
        }
        if h[11] != 0 {
            return Err(CodecError::Corrupt(format!(
                "reserved header byte is {:#x}, not 0",
                h[11]
            )));
        }
        if len > limits.max_frame_len {
            return Err(CodecError::TooLarge {
                len,
                max: limits.max_frame_len,
            });
        }
        if nfds > mp_sys::socket::MAX_FDS_PER_MESSAGE {
            return Err(CodecError::Corrupt(format!("header announces {nfds} file descriptors")));
        }
        Ok(Header { len, nfds, kind })
    }

    /// Appends the header's 12 bytes to `out`.
    pub(crate) fn write_into(&self, out: &mut Vec<u8>) {
        let mut head = [0u8; HEADER_LEN];
        self.write(&mut head);
        out.extend_from_slice(&head);
    }

    #[inline]
    pub(crate) fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&(self.len as u32).to_le_bytes());
        out[8..10].copy_from_slice(&(self.nfds as u16).to_le_bytes());
        out[10] = match self.kind {
            FrameKind::Value => 0,
            FrameKind::Bytes => 1,
            FrameKind::Wake => 2,
        };
        out[11] = 0;
    }

    /// The header of a wake-up frame ([`FrameKind::Wake`]): the whole frame.
    ///
    /// ```
    /// let w = mp_codec::Header::wake();
    /// let h = mp_codec::Header::parse(&w, &Default::default())?;
    /// assert_eq!((h.kind, h.len, h.nfds), (mp_codec::FrameKind::Wake, 0, 0));
    /// # Ok::<(), mp_codec::CodecError>(())
    /// ```
    pub fn wake() -> [u8; HEADER_LEN] {
        let mut head = [0u8; HEADER_LEN];
        Header {
            len: 0,
            nfds: 0,
            kind: FrameKind::Wake,
        }
        .write(&mut head);
        head
    }
}

/// One message as it goes over the wire: header and payload bytes, and the
/// file descriptors of the handles in it.
#[derive(Debug)]
pub struct Frame {
    /// The frame is `buf[..end]`; bytes past `end` are left from earlier
    /// uses, kept so that a reused frame is never zero-filled twice.
    buf: Vec<u8>,
    end: usize,
    fds: Vec<OwnedFd>,
    kind: FrameKind,
}

impl Default for Frame {
    fn default() -> Self {
        Frame::new()
    }
}

impl Frame {
    /// An empty frame, to be filled by [`encode_into`] (which reuses its
    /// buffer).
    ///
    /// ```
    /// let mut f = mp_codec::Frame::new();
    /// mp_codec::encode_into(&42u64, &mut f)?;
    /// assert_eq!(mp_codec::decode::<u64>(f)?, 42);
    /// # Ok::<(), mp_codec::CodecError>(())
    /// ```
    pub fn new() -> Frame {
        Frame {
            buf: Vec::new(),
            end: 0,
            fds: Vec::new(),
            kind: FrameKind::Value,
        }
    }

    /// A frame of raw bytes (Python's `send_bytes`).
    ///
    /// ```
    /// let f = mp_codec::Frame::from_bytes(b"raw")?;
    /// assert_eq!(f.payload(), b"raw");
    /// assert_eq!(f.kind(), mp_codec::FrameKind::Bytes);
    /// # Ok::<(), mp_codec::CodecError>(())
    /// ```
    pub fn from_bytes(data: &[u8]) -> Result<Frame, CodecError> {
        check_len(data.len())?;
        let mut buf = Vec::with_capacity(HEADER_LEN + data.len());
        buf.resize(HEADER_LEN, 0);
        buf.extend_from_slice(data);
        let mut f = Frame {
            end: buf.len(),
            buf,
            fds: Vec::new(),
            kind: FrameKind::Bytes,
        };
        f.seal();
        Ok(f)
    }

    /// Rebuilds a frame from the bytes and descriptors that came off the
    /// wire, checking the header against the payload and the descriptors.
    ///
    /// ```
    /// let f = mp_codec::encode(&"hi")?;
    /// let (bytes, fds) = f.into_parts();
    /// let f = mp_codec::Frame::from_wire(bytes.clone(), fds, &Default::default())?;
    /// assert_eq!(mp_codec::decode::<String>(f)?, "hi");
    /// let cut = bytes[..bytes.len() - 1].to_vec();
    /// assert!(mp_codec::Frame::from_wire(cut, vec![], &Default::default()).is_err());
    /// # Ok::<(), mp_codec::CodecError>(())
    /// ```
    pub fn from_wire(buf: Vec<u8>, fds: Vec<OwnedFd>, limits: &Limits) -> Result<Frame, CodecError> {
        let h = Header::parse(&buf, limits)?;
        let total = HEADER_LEN + h.len;
        if buf.len() < total {
            return Err(CodecError::Truncated {
                expected: total,
                got: buf.len(),
            });
        }
        if buf.len() > total {
            return Err(CodecError::Corrupt(format!(
                "{} bytes after the end of a {total}-byte frame",
                buf.len() - total
            )));
        }
        if fds.len() != h.nfds {
            return Err(CodecError::FdCount {
                announced: h.nfds,
                received: fds.len(),
            });
        }
        Ok(Frame {
            end: buf.len(),
            buf,
            fds,
            kind: h.kind,
        })
    }

    /// The bytes to write: header and payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.end]
    }

    /// The payload, without the header.
    pub fn payload(&self) -> &[u8] {
        self.buf.get(HEADER_LEN..self.end).unwrap_or(&[])
    }

    /// The file descriptors that travel with the frame.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// What the payload holds.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// Takes the descriptors out of the frame (closing them is then the
    /// caller's business), leaving its bytes: for a frame reused across
    /// messages, so that no descriptor lingers in it once sent.
    ///
    /// ```
    /// let mut f = mp_codec::Frame::new();
    /// let (r, _w) = mp_sys::fd::pipe()?;
    /// mp_codec::encode_into(&mp_codec::Fd(r), &mut f)?;
    /// assert_eq!(f.take_fds().len(), 1);
    /// assert!(f.fds().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// The bytes and the descriptors.
    pub fn into_parts(self) -> (Vec<u8>, Vec<OwnedFd>) {
        let Frame { mut buf, end, fds, .. } = self;
        buf.truncate(end);
        (buf, fds)
    }

    /// The payload as an owned vector (the header is removed in place).
    ///
    /// ```
    /// assert_eq!(mp_codec::Frame::from_bytes(b"abc")?.into_payload(), b"abc");
    /// # Ok::<(), mp_codec::CodecError>(())
    /// ```
    pub fn into_payload(mut self) -> Vec<u8> {
        self.buf.truncate(self.end);
        self.buf.drain(..HEADER_LEN.min(self.buf.len()));
        self.buf
    }

    /// Writes the header for the current payload and descriptors.
    #[inline]
    fn seal(&mut self) {
        let h = Header {
            len: self.end - HEADER_LEN,
            nfds: self.fds.len(),
            kind: self.kind,
        };
        h.write(&mut self.buf[..HEADER_LEN]);
    }
}

#[inline]
fn check_len(len: usize) -> Result<(), CodecError> {
    if len > u32::MAX as usize {
        return Err(CodecError::TooLarge {
            len,
            max: u32::MAX as usize,
        });
    }
    Ok(())
}

/// Encodes `value` into a new frame, collecting the descriptors of the
/// handles it holds.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Job { id: u32, name: String }
/// let f = mp_codec::encode(&Job { id: 7, name: "x".into() })?;
/// assert_eq!(mp_codec::decode::<Job>(f)?, Job { id: 7, name: "x".into() });
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Frame, CodecError> {
    let mut f = Frame::new();
    encode_into(value, &mut f)?;
    Ok(f)
}

/// Encodes `value` into `frame`, reusing its buffer. On error the frame is
/// left empty.
///
/// ```
/// let mut f = mp_codec::Frame::new();
/// for i in 0..3u32 {
///     mp_codec::encode_into(&i, &mut f)?;
///     assert_eq!(f.payload(), &[i as u8]);
/// }
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn encode_into<T: Serialize + ?Sized>(value: &T, frame: &mut Frame) -> Result<(), CodecError> {
    frame.fds.clear();
    frame.kind = FrameKind::Value;
    let r = encode_payload(value, frame);
    if r.is_err() {
        frame.buf.clear();
        frame.end = 0;
        frame.fds.clear();
    }
    r
}

/// [`encode_into`] in a variant of the format with every integer and
/// length at its full width (little-endian, two's complement), not as a
/// varint: a third to a half of the work per integer, for more bytes.
/// Read it with [`decode_payload_fixed`]; it is not postcard's format, so
/// only for a peer that reads it so (the pool's chunks of items, between
/// processes of one binary). A value too big for the frame's buffer is
/// written again into one twice as large (no measuring pass).
///
/// ```
/// let mut f = mp_codec::Frame::new();
/// mp_codec::encode_into_fixed(&vec![1u64, 1 << 40], &mut f)?;
/// assert_eq!(f.payload().len(), 8 + 2 * 8);
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn encode_into_fixed<T: Serialize + ?Sized>(value: &T, frame: &mut Frame) -> Result<(), CodecError> {
    frame.fds.clear();
    frame.kind = FrameKind::Value;
    let r = encode_payload_fixed(value, frame);
    if r.is_err() {
        frame.buf.clear();
        frame.end = 0;
        frame.fds.clear();
    }
    r
}

/// [`encode_into_fixed`] straight into `buf` (a ring in shared memory, say),
/// with no frame around it: the payload's length and the descriptors of the
/// handles in the value, or `Ok(None)` when `buf` is too small (nothing
/// useful is left in it then).
///
/// ```
/// let mut buf = [0u8; 64];
/// let (n, fds) = mp_codec::encode_fixed_to_slice(&vec![1u64, 2], &mut buf)?.unwrap();
/// assert_eq!((n, fds.len()), (24, 0));
/// let v: Vec<u64> = mp_codec::decode_payload_fixed(&buf[..n], fds)?;
/// assert_eq!(v, [1, 2]);
/// assert!(mp_codec::encode_fixed_to_slice(&vec![0u64; 8], &mut buf)?.is_none());
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn encode_fixed_to_slice<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut [u8],
) -> Result<Option<(usize, Vec<OwnedFd>)>, CodecError> {
    let (written, pass) = handle::collecting(|| writer::to_slice_as::<true, T>(value, buf));
    match written {
        Ok(n) => {
            check_fds(pass.put)?;
            Ok(Some((n, pass.fds.into_iter().flatten().collect())))
        }
        Err(postcard::Error::SerializeBufferFull) => Ok(None),
        Err(e) => Err(encode_failure(value, e, pass.error)),
    }
}

fn encode_payload_fixed<T: Serialize + ?Sized>(value: &T, frame: &mut Frame) -> Result<(), CodecError> {
    if frame.buf.len() < HEADER_LEN + SMALL {
        frame.buf.resize(HEADER_LEN + SMALL, 0);
    }
    loop {
        let (written, pass) =
            handle::collecting(|| writer::to_slice_as::<true, T>(value, &mut frame.buf[HEADER_LEN..]));
        match written {
            Ok(n) => return finish(frame, n, pass),
            Err(postcard::Error::SerializeBufferFull) => {
                let len = frame.buf.len() - HEADER_LEN;
                let next = len.saturating_mul(2).min(u32::MAX as usize);
                if next <= len {
                    return check_len(len.saturating_add(1));
                }
                frame.buf.resize(HEADER_LEN + next, 0);
            }
            Err(e) => return Err(encode_failure(value, e, pass.error)),
        }
    }
}

/// Payloads up to this size are encoded in one pass.
const SMALL: usize = 256;

/// Two passes: one measures the payload, the other writes it into a buffer of
/// exactly that size. Writing into a slice lets the compiler turn a sequence of
/// bytes into a copy (a 1 MiB `Vec<u8>` costs about a memcpy), where growing a
/// `Vec` one element at a time measured 20 times slower.
fn encode_payload<T: Serialize + ?Sized>(value: &T, frame: &mut Frame) -> Result<(), CodecError> {
    // Small values (the common case) are written in one pass into a window of
    // SMALL bytes, or of the whole buffer a reused frame already has (so a
    // frame that carries messages of similar sizes measures only the first);
    // only a value that does not fit is measured first.
    if frame.buf.len() < HEADER_LEN + SMALL {
        frame.buf.resize(HEADER_LEN + SMALL, 0);
    }
    let (written, pass) = handle::collecting(|| writer::to_slice(value, &mut frame.buf[HEADER_LEN..]));
    match written {
        Ok(n) => return finish(frame, n, pass),
        Err(postcard::Error::SerializeBufferFull) => {} // Too big: measure, then write.
        Err(e) => return Err(encode_failure(value, e, pass.error)),
    }
    let (size, pass) = handle::counting(|| postcard::experimental::serialized_size(value));
    let size = size.map_err(|e| encode_failure(value, e, pass.error))?;
    check_len(size)?;
    check_fds(pass.put)?;
    // Stale bytes from an earlier use are overwritten below: only growth is
    // zero-filled.
    if frame.buf.len() < HEADER_LEN + size {
        frame.buf.resize(HEADER_LEN + size, 0);
    }
    let (written, mut pass) =
        handle::collecting(|| writer::to_slice(value, &mut frame.buf[HEADER_LEN..HEADER_LEN + size]));
    let written = written.map_err(|e| encode_failure(value, e, pass.error.take()))?;
    if written != size {
        return Err(CodecError::Encode(format!(
            "the value serialized to {size} bytes, then to {written}: its Serialize impl is not deterministic"
        )));
    }
    finish(frame, size, pass)
}

/// The error of a failed encode: a handle's message, else the `Serialize`
/// impl's own, else postcard's.
///
/// postcard replaces what a `Serialize` impl passes to `Error::custom` with
/// one fixed text. Reading the message through [`capture`] on every encode
/// would cost encodes that succeed up to three times their time (the
/// wrapper keeps the compiler from turning a sequence into a copy), so the
/// value is serialized a second time, through it, only when it has failed:
/// `Serialize` takes `&self`, and handles only count in this pass.
#[cold]
fn encode_failure<T: Serialize + ?Sized>(value: &T, e: postcard::Error, handle_error: Option<String>) -> CodecError {
    if let Some(m) = handle_error {
        return CodecError::Encode(m);
    }
    if e == postcard::Error::SerdeSerCustom {
        let (again, _) = handle::counting(|| capture::serialize(value, postcard::ser_flavors::Size::default()));
        if let Err(capture::Error::Custom(m)) = again {
            return CodecError::Encode(m);
        }
    }
    CodecError::Encode(e.to_string())
}

/// Completes a frame whose payload of `len` bytes is in place.
#[inline]
fn finish(frame: &mut Frame, len: usize, pass: handle::Pass) -> Result<(), CodecError> {
    check_fds(pass.put)?;
    frame.end = HEADER_LEN + len;
    if !pass.fds.is_empty() {
        frame.fds = pass.fds.into_iter().flatten().collect();
    }
    frame.seal();
    Ok(())
}

#[inline]
fn check_fds(count: usize) -> Result<(), CodecError> {
    let max = mp_sys::socket::MAX_FDS_PER_MESSAGE;
    if count > max {
        return Err(CodecError::TooManyFds { count, max });
    }
    Ok(())
}

/// Decodes a frame into a `T`, handing its descriptors to the handles in it.
///
/// Fails with [`CodecError::Decode`] when the payload is not a `T` (another
/// type, corrupt bytes, or bytes left over), and with [`CodecError::Handle`]
/// when descriptors are missing or left unclaimed (they are closed).
///
/// ```
/// let f = mp_codec::encode(&"text")?;
/// let err = mp_codec::decode::<bool>(f).unwrap_err();
/// assert!(matches!(err, mp_codec::CodecError::Decode(_)));
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn decode<T: DeserializeOwned>(frame: Frame) -> Result<T, CodecError> {
    let Frame { buf, end, fds, kind } = frame;
    if kind == FrameKind::Bytes {
        return Err(CodecError::Decode(
            "the frame holds raw bytes (sent with send_bytes), not a serde value: receive it as bytes".into(),
        ));
    }
    decode_payload(buf.get(HEADER_LEN..end).unwrap_or(&[]), fds)
}

/// Decodes the payload of a value frame ([`FrameKind::Value`]) into a `T`,
/// handing `fds` (the descriptors that came with its header) to the handles
/// in it: [`decode`] for a payload read apart from its header, as with
/// [`recv_header`](crate::recv_header). The same errors as [`decode`].
///
/// ```
/// let f = mp_codec::encode(&(1u8, "x"))?;
/// let (a, b): (u8, String) = mp_codec::decode_payload(f.payload(), Vec::new())?;
/// assert_eq!((a, b.as_str()), (1, "x"));
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8], fds: Vec<OwnedFd>) -> Result<T, CodecError> {
    // The descriptors of a frame that carries them are gone after one pass
    // (to handles that were dropped), so such a frame is decoded through
    // `capture` at once, which keeps a `Deserialize` impl's own message.
    if !fds.is_empty() {
        return decode_captured::<T>(payload, fds);
    }
    match decode_payload_as::<false, _>(payload, fds, PhantomData::<T>) {
        Err(CodecError::Decode(m)) if m == CUSTOM_LOST => {
            Err(CodecError::Decode(decode_message(&decode_again::<T>(payload))))
        }
        r => r,
    }
}

/// What a decode error says when a `Deserialize` impl's own message could
/// not be read back (postcard's fixed text for `Error::custom`).
const CUSTOM_LOST: &str = "a Deserialize impl failed (Error::custom)";

/// [`decode_payload`] through [`capture`] (postcard's reader wrapped so it
/// keeps `Error::custom` messages), with the same checks.
fn decode_captured<T: DeserializeOwned>(payload: &[u8], fds: Vec<OwnedFd>) -> Result<T, CodecError> {
    let nfds = fds.len();
    let (r, pass) = handle::supplying(fds, || capture::take_from_bytes::<T>(payload));
    let unclaimed = pass.fds.iter().flatten().count();
    if let Some(msg) = pass.error {
        return Err(CodecError::Handle(msg));
    }
    let (value, rest) = r.map_err(|e| CodecError::Decode(decode_message(&e)))?;
    if !rest.is_empty() {
        return Err(CodecError::Decode(format!(
            "{} bytes left over after the value: the frame holds a different type",
            rest.len()
        )));
    }
    if unclaimed > 0 {
        return Err(CodecError::Handle(format!(
            "the frame carried {nfds} file descriptors but the value claimed {}",
            nfds - unclaimed
        )));
    }
    Ok(value)
}

/// [`decode_payload`] through a serde [`DeserializeSeed`]: the seed decides
/// where the value goes (say, appended to a vector the caller already
/// holds, instead of a new one). The same checks and errors as
/// [`decode_payload`].
///
/// ```
/// use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
/// /// Appends a sequence of `u32` to the vector it holds.
/// struct Append<'a>(&'a mut Vec<u32>);
/// impl<'de> DeserializeSeed<'de> for Append<'_> {
///     type Value = ();
///     fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
///         d.deserialize_seq(self)
///     }
/// }
/// impl<'de> Visitor<'de> for Append<'_> {
///     type Value = ();
///     fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("a sequence")
///     }
///     fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
///         while let Some(x) = seq.next_element()? {
///             self.0.push(x);
///         }
///         Ok(())
///     }
/// }
/// let mut all = vec![1u32];
/// let f = mp_codec::encode(&vec![2u32, 3])?;
/// mp_codec::decode_payload_seed(f.payload(), Vec::new(), Append(&mut all))?;
/// assert_eq!(all, [1, 2, 3]);
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn decode_payload_seed<'de, S: DeserializeSeed<'de>>(
    payload: &'de [u8],
    fds: Vec<OwnedFd>,
    seed: S,
) -> Result<S::Value, CodecError> {
    decode_payload_as::<false, S>(payload, fds, seed)
}

/// [`decode_payload`] for a payload written by [`encode_into_fixed`].
///
/// ```
/// let mut f = mp_codec::Frame::new();
/// mp_codec::encode_into_fixed(&(7u64, -1i32, "x"), &mut f)?;
/// assert_eq!(f.payload().len(), 8 + 4 + 8 + 1);
/// let v: (u64, i32, String) = mp_codec::decode_payload_fixed(f.payload(), Vec::new())?;
/// assert_eq!(v, (7, -1, "x".to_string()));
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn decode_payload_fixed<T: DeserializeOwned>(payload: &[u8], fds: Vec<OwnedFd>) -> Result<T, CodecError> {
    decode_payload_as::<true, _>(payload, fds, PhantomData::<T>)
}

/// [`decode_payload_seed`] for a payload written by [`encode_into_fixed`].
///
/// ```
/// use std::marker::PhantomData;
/// let mut f = mp_codec::Frame::new();
/// mp_codec::encode_into_fixed(&[3u16, 4], &mut f)?;
/// let v: [u16; 2] = mp_codec::decode_payload_seed_fixed(f.payload(), Vec::new(), PhantomData)?;
/// assert_eq!(v, [3, 4]);
/// # Ok::<(), mp_codec::CodecError>(())
/// ```
pub fn decode_payload_seed_fixed<'de, S: DeserializeSeed<'de>>(
    payload: &'de [u8],
    fds: Vec<OwnedFd>,
    seed: S,
) -> Result<S::Value, CodecError> {
    decode_payload_as::<true, S>(payload, fds, seed)
}

fn decode_payload_as<'de, const FIXED: bool, S: DeserializeSeed<'de>>(
    payload: &'de [u8],
    fds: Vec<OwnedFd>,
    seed: S,
) -> Result<S::Value, CodecError> {
    let nfds = fds.len();
    let (r, pass) = handle::supplying(fds, || {
        let mut de = reader::Reader::<FIXED>::new(payload);
        seed.deserialize(&mut de).map(|v| (v, de.rest().len()))
    });
    let unclaimed = pass.fds.iter().flatten().count();
    if let Some(msg) = pass.error {
        return Err(CodecError::Handle(msg));
    }
    let (value, rest) = match r {
        Ok(v) => v,
        // The reader keeps postcard's errors, which replace a `Deserialize`
        // impl's `Error::custom` message with one fixed text: the caller that
        // knows the type reads it again (`decode_payload`).
        Err(postcard::Error::SerdeDeCustom) => return Err(CodecError::Decode(CUSTOM_LOST.into())),
        Err(e) => return Err(CodecError::Decode(decode_message(&capture::Error::Inner(e)))),
    };
    if rest > 0 {
        return Err(CodecError::Decode(format!(
            "{rest} bytes left over after the value: the frame holds a different type"
        )));
    }
    if unclaimed > 0 {
        return Err(CodecError::Handle(format!(
            "the frame carried {nfds} file descriptors but the value claimed {}",
            nfds - unclaimed
        )));
    }
    Ok(value)
}

/// Decodes a payload without descriptors again, through [`capture`], for
/// the message of a custom error that postcard dropped.
#[cold]
fn decode_again<T: DeserializeOwned>(payload: &[u8]) -> capture::Error<postcard::Error> {
    let (again, _) = handle::supplying(Vec::new(), || capture::take_from_bytes::<T>(payload));
    match again {
        Err(e) => e,
        // A `Deserialize` impl that failed once and not twice.
        Ok(_) => capture::Error::Inner(postcard::Error::SerdeDeCustom),
    }
}

fn decode_message(e: &capture::Error<postcard::Error>) -> String {
    use postcard::Error as E;
    let e = match e {
        // What a `Deserialize` impl said, word for word.
        capture::Error::Custom(m) => return m.clone(),
        capture::Error::Inner(e) => e,
    };
    let hint = match e {
        E::DeserializeUnexpectedEnd => "the payload ended early: wrong type or a truncated frame",
        E::DeserializeBadVarint
        | E::DeserializeBadBool
        | E::DeserializeBadChar
        | E::DeserializeBadUtf8
        | E::DeserializeBadOption
        | E::DeserializeBadEnum
        | E::DeserializeBadEncoding => "the payload does not encode the requested type",
        _ => "",
    };
    if hint.is_empty() {
        e.to_string()
    } else {
        format!("{e} ({hint})")
    }
}
