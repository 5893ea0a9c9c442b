//! The channel between the pool and one worker: frames on a stream socket,
//! many per read or write.
//!
//! Every frame is a 56-byte header and a payload. The header says how many
//! descriptors the frame carries; the sender attaches them to a `sendmsg`
//! that starts at the frame's first byte, so they arrive no later than that
//! byte, and the receiver hands them out in order from a FIFO. A large
//! payload is not on the socket but in the worker's shared region (see
//! [`crate::shm`]): the header says where (`spos`, `slen`).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use mp_sys::socket::{self, MAX_FDS_PER_MESSAGE};

/// Bytes in a frame header.
pub(crate) const HEAD_LEN: usize = 56;

/// The largest payload a peer may announce.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

const MAGIC: u8 = 0xB7;

/// What a frame is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Kind {
    /// To a worker: run a task (`entry`, arguments in the payload).
    Task = 1,
    /// To a worker: run items `lo..hi` of a chunk.
    Chunk = 2,
    /// To a worker: run the initializer.
    Init = 3,
    /// To a worker: finish and exit.
    Stop = 4,
    /// From a worker: a task's or chunk's reply.
    Done = 16,
    /// From a worker: the initializer's reply.
    InitDone = 17,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Task,
            2 => Kind::Chunk,
            3 => Kind::Init,
            4 => Kind::Stop,
            16 => Kind::Done,
            17 => Kind::InitDone,
            _ => return None,
        })
    }
}

/// A frame header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Head {
    pub(crate) kind: Kind,
    pub(crate) nfds: u16,
    pub(crate) len: u32,
    /// The job this frame is about.
    pub(crate) id: u64,
    /// To a worker: the entry's offset. From a worker: the task's run time
    /// in nanoseconds.
    pub(crate) a: u64,
    /// To a worker: the entry's tag.
    pub(crate) b: u64,
    /// A chunk's item range.
    pub(crate) lo: u32,
    pub(crate) hi: u32,
    /// A payload in shared memory: its position in the ring and its
    /// length (0: the payload, if any, follows on the socket).
    pub(crate) spos: u64,
    pub(crate) slen: u32,
}

impl Head {
    pub(crate) fn new(kind: Kind, id: u64) -> Head {
        Head {
            kind,
            nfds: 0,
            len: 0,
            id,
            a: 0,
            b: 0,
            lo: 0,
            hi: 0,
            spos: 0,
            slen: 0,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_le_bytes());
        out.push(MAGIC);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.nfds.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.a.to_le_bytes());
        out.extend_from_slice(&self.b.to_le_bytes());
        out.extend_from_slice(&self.lo.to_le_bytes());
        out.extend_from_slice(&self.hi.to_le_bytes());
        out.extend_from_slice(&self.spos.to_le_bytes());
        out.extend_from_slice(&self.slen.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
    }

    fn parse(h: &[u8; HEAD_LEN]) -> Result<Head, String> {
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or_default());
        if h[4] != MAGIC {
            return Err(format!("bad magic byte {:#04x}: the channel is out of step", h[4]));
        }
        let kind = Kind::from_u8(h[5]).ok_or_else(|| format!("unknown frame kind {}", h[5]))?;
        let nfds = u16::from_le_bytes([h[6], h[7]]);
        let len = u32_at(0);
        if len as usize > MAX_PAYLOAD {
            return Err(format!(
                "a frame announces {len} bytes, over the {MAX_PAYLOAD}-byte limit"
            ));
        }
        if usize::from(nfds) > MAX_FDS_PER_MESSAGE {
            return Err(format!("a frame announces {nfds} descriptors"));
        }
        let slen = u32_at(48);
        if slen > 0 && len > 0 {
            return Err(format!(
                "a frame announces {len} bytes on the socket and {slen} in shared memory"
            ));
        }
        Ok(Head {
            kind,
            nfds,
            len,
            id: u64_at(8),
            a: u64_at(16),
            b: u64_at(24),
            lo: u32_at(32),
            hi: u32_at(36),
            spos: u64_at(40),
            slen,
        })
    }
}

/// Where a queued frame's descriptors live until they are sent.
#[derive(Debug)]
pub(crate) enum Fds {
    Owned(Vec<OwnedFd>),
    Shared(Arc<Payload>),
}

impl Fds {
    fn get(&self) -> &[OwnedFd] {
        match self {
            Fds::Owned(v) => v,
            Fds::Shared(p) => &p.fds,
        }
    }
}

/// An encoded value: bytes and the descriptors of the handles in it.
#[derive(Debug, Default)]
pub(crate) struct Payload {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

impl Payload {
    /// Copies of the descriptors, for a second decode.
    pub(crate) fn dup_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.fds.iter().map(|f| f.try_clone()).collect()
    }
}

/// Frames waiting to be written.
///
/// A frame's payload is either copied into one buffer that is reused (a
/// worker's replies, encoded in a scratch frame), or held by reference (a
/// job's arguments, which the pool keeps anyway until the job is done):
/// those go to the socket with a gathering write, never copied in user
/// space (a map of 1M items sends megabytes of them).
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    frames: VecDeque<OutFrame>,
    /// The headers and copied payloads of the inline frames, back to back,
    /// so a run of them goes out as one segment.
    owned: Vec<u8>,
    /// Bytes of the front frame already written.
    sent: usize,
    /// Bytes the queued frames announce in shared memory.
    carried: usize,
}

#[derive(Debug)]
struct OutFrame {
    body: Body,
    fds: Option<Fds>,
}

#[derive(Debug)]
enum Body {
    /// Header and payload, `owned[start..end]`.
    Inline(usize, usize),
    /// A header, then a payload sent from where it is.
    Shared([u8; HEAD_LEN], Arc<Payload>),
}

/// Frames written by one `sendmsg` at most.
const BATCH: usize = 64;

/// Payloads below this are copied beside their header even when queued by
/// reference: one segment for a run of small frames costs the kernel less
/// than a pair of tiny ones per frame.
const INLINE_BELOW: usize = 4096;

impl OutBuf {
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes of the copied headers and payloads waiting, and of the
    /// payloads in shared memory their frames announce.
    pub(crate) fn owned_len(&self) -> usize {
        self.owned.len() + self.carried
    }

    /// Queues a frame, its payload copied. `head.len` and `head.nfds` are
    /// filled in here.
    pub(crate) fn push(&mut self, head: Head, payload: &[u8], fds: Option<Fds>) {
        let (head, fds) = Self::complete(head, payload.len(), fds);
        self.carried += head.slen as usize;
        let start = self.owned.len();
        head.write(&mut self.owned);
        self.owned.extend_from_slice(payload);
        self.frames.push_back(OutFrame {
            body: Body::Inline(start, self.owned.len()),
            fds,
        });
    }

    /// Queues a frame whose payload is sent from where it is (or copied,
    /// when it is small).
    pub(crate) fn push_shared(&mut self, head: Head, payload: Arc<Payload>, fds: Option<Fds>) {
        if payload.bytes.len() < INLINE_BELOW {
            return self.push(head, &payload.bytes, fds);
        }
        let (head, fds) = Self::complete(head, payload.bytes.len(), fds);
        let mut h = Vec::with_capacity(HEAD_LEN);
        head.write(&mut h);
        let mut bytes = [0u8; HEAD_LEN];
        bytes.copy_from_slice(&h);
        self.frames.push_back(OutFrame {
            body: Body::Shared(bytes, payload),
            fds,
        });
    }

    /// `head` with its length and descriptor count, and the descriptors if
    /// there are any.
    fn complete(mut head: Head, len: usize, fds: Option<Fds>) -> (Head, Option<Fds>) {
        head.len = len as u32;
        head.nfds = 0;
        let fds = fds.filter(|f| !f.get().is_empty());
        if let Some(f) = &fds {
            head.nfds = f.get().len() as u16;
        }
        (head, fds)
    }

    /// The whole frame's length, header included.
    fn frame_len(f: &OutFrame) -> usize {
        match &f.body {
            Body::Inline(a, b) => b - a,
            Body::Shared(_, p) => HEAD_LEN + p.bytes.len(),
        }
    }

    /// Writes what the socket takes. `Ok(true)` when everything went.
    ///
    /// Each `sendmsg` starts with the front frame and takes the frames
    /// after it up to the next that carries descriptors: a frame's
    /// descriptors go with the `sendmsg` that starts at its first byte, so
    /// they arrive no later than that byte. Inline frames next to each other
    /// are one segment.
    pub(crate) fn flush(&mut self, sock: BorrowedFd<'_>, block: bool) -> io::Result<bool> {
        while !self.frames.is_empty() {
            let r = {
                let owned = &self.owned;
                let mut bufs: Vec<IoSlice<'_>> = Vec::with_capacity(2 * BATCH);
                // A run of inline bytes not yet in `bufs`.
                let mut run: Option<(usize, usize)> = None;
                for (i, f) in self.frames.iter().enumerate().take(BATCH) {
                    if i > 0 && f.fds.is_some() {
                        break;
                    }
                    let skip = if i == 0 { self.sent } else { 0 };
                    match &f.body {
                        Body::Inline(a, b) => match &mut run {
                            Some((_, end)) if *end == a + skip => *end = *b,
                            _ => {
                                end_run(owned, &mut run, &mut bufs);
                                run = Some((a + skip, *b));
                            }
                        },
                        Body::Shared(head, p) => {
                            end_run(owned, &mut run, &mut bufs);
                            if skip < HEAD_LEN {
                                bufs.push(IoSlice::new(&head[skip..]));
                                bufs.push(IoSlice::new(&p.bytes));
                            } else {
                                bufs.push(IoSlice::new(p.bytes.get(skip - HEAD_LEN..).unwrap_or_default()));
                            }
                        }
                    }
                }
                end_run(owned, &mut run, &mut bufs);
                let fds: Vec<BorrowedFd<'_>> = match self.frames.front() {
                    Some(f) if self.sent == 0 => f
                        .fds
                        .as_ref()
                        .map_or(Vec::new(), |d| d.get().iter().map(|x| x.as_fd()).collect()),
                    _ => Vec::new(),
                };
                if block {
                    socket::send_with_fds(sock, &bufs, &fds)
                } else {
                    socket::try_send_with_fds(sock, &bufs, &fds)
                }
            };
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    while n > 0 {
                        let Some(f) = self.frames.front() else { break };
                        let left = Self::frame_len(f) - self.sent;
                        if n >= left {
                            n -= left;
                            self.frames.pop_front();
                            self.sent = 0;
                        } else {
                            self.sent += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.owned.clear();
        self.carried = 0;
        Ok(true)
    }
}

/// Puts the run of inline bytes `run` (if any) into `bufs`, as one segment.
fn end_run<'b>(owned: &'b [u8], run: &mut Option<(usize, usize)>, bufs: &mut Vec<IoSlice<'b>>) {
    if let Some((a, b)) = run.take() {
        bufs.push(IoSlice::new(owned.get(a..b).unwrap_or_default()));
    }
}

/// Bytes and descriptors read and not yet parsed into frames.
#[derive(Debug)]
pub(crate) struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
}

/// A frame taken from an [`InBuf`]: its payload is `InBuf::payload(&f)`.
#[derive(Debug)]
pub(crate) struct InFrame {
    pub(crate) head: Head,
    pub(crate) fds: Vec<OwnedFd>,
    at: usize,
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Some bytes.
    Data,
    /// Nothing now (non-blocking read).
    Empty,
    /// The peer closed its end.
    Eof,
}

impl InBuf {
    pub(crate) fn new() -> InBuf {
        InBuf {
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            fds: VecDeque::new(),
        }
    }

    /// Reads once from `sock`.
    pub(crate) fn fill(&mut self, sock: BorrowedFd<'_>, block: bool) -> io::Result<Read> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        // Room for at least the frame being assembled, or 64 KiB.
        let need = self.frame_len().unwrap_or(0).max(64 * 1024);
        if self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < need {
                self.buf.resize(need, 0);
            }
        } else if self.buf.len() - self.end < 16 * 1024 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut fds = Vec::new();
        let r = if block {
            socket::recv_with_fds(sock, &mut self.buf[self.end..], &mut fds)
        } else {
            socket::try_recv_with_fds(sock, &mut self.buf[self.end..], &mut fds)
        };
        match r {
            Ok(got) => {
                if got.fds_truncated {
                    return Err(io::Error::other("descriptors were lost on the way (MSG_CTRUNC)"));
                }
                self.fds.extend(fds);
                self.end += got.bytes;
                Ok(if got.bytes == 0 { Read::Eof } else { Read::Data })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Empty),
            Err(e) => Err(e),
        }
    }

    /// The whole length of the frame at the front, once its header is in.
    fn frame_len(&self) -> Option<usize> {
        let h = self.buf.get(self.start..self.start + 4)?;
        if self.end - self.start < 4 {
            return None;
        }
        Some(HEAD_LEN + (u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize).min(MAX_PAYLOAD + 1))
    }

    /// The next complete frame, if one is in.
    pub(crate) fn next(&mut self) -> Result<Option<InFrame>, String> {
        if self.end - self.start < HEAD_LEN {
            return Ok(None);
        }
        let mut h = [0u8; HEAD_LEN];
        h.copy_from_slice(&self.buf[self.start..self.start + HEAD_LEN]);
        let head = Head::parse(&h)?;
        let total = HEAD_LEN + head.len as usize;
        if self.end - self.start < total {
            return Ok(None);
        }
        if self.fds.len() < usize::from(head.nfds) {
            return Err(format!(
                "a frame announces {} descriptors but {} arrived",
                head.nfds,
                self.fds.len()
            ));
        }
        let fds = self.fds.drain(..usize::from(head.nfds)).collect();
        let at = self.start + HEAD_LEN;
        self.start += total;
        Ok(Some(InFrame { head, fds, at }))
    }

    /// The payload of `f`, the frame [`next`](InBuf::next) returned last.
    pub(crate) fn payload(&self, f: &InFrame) -> &[u8] {
        &self.buf[f.at..f.at + f.head.len as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_descriptors_arrive_in_order() {
        let (a, b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        let (r, _w) = mp_sys::fd::pipe().unwrap();
        let mut out = OutBuf::default();
        out.push(Head::new(Kind::Task, 1), b"one", None);
        out.push(
            Head::new(Kind::Task, 2),
            b"two",
            Some(Fds::Owned(vec![r.try_clone().unwrap()])),
        );
        out.push(Head::new(Kind::Stop, 3), b"", None);
        assert!(out.flush(a.as_fd(), true).unwrap());
        let mut inb = InBuf::new();
        let mut got = Vec::new();
        while got.len() < 3 {
            assert_eq!(inb.fill(b.as_fd(), true).unwrap(), Read::Data);
            while let Some(f) = inb.next().unwrap() {
                got.push((f.head.id, inb.payload(&f).to_vec(), f.fds.len()));
            }
        }
        assert_eq!(
            got,
            vec![(1, b"one".to_vec(), 0), (2, b"two".to_vec(), 1), (3, Vec::new(), 0)]
        );
        drop(a);
        assert_eq!(inb.fill(b.as_fd(), true).unwrap(), Read::Eof);
    }

    #[test]
    fn runs_of_small_frames_and_big_ones_cut_anywhere_arrive_whole() {
        let (a, b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        mp_sys::fd::set_nonblocking(a.as_fd(), true).unwrap();
        let big = Arc::new(Payload {
            bytes: (0..(1 << 20)).map(|i| (i % 253) as u8).collect(),
            fds: Vec::new(),
        });
        let mut want = Vec::new();
        let mut out = OutBuf::default();
        for id in 0..3000u64 {
            let body: Vec<u8> = match id % 500 {
                499 => big.bytes.clone(),
                k => (0..(k * 7 % 300) as usize).map(|i| (i as u64 + id) as u8).collect(),
            };
            if id % 500 == 499 {
                out.push_shared(Head::new(Kind::Chunk, id), Arc::clone(&big), None);
            } else if id % 3 == 0 {
                let shared = Arc::new(Payload {
                    bytes: body.clone(),
                    fds: Vec::new(),
                });
                out.push_shared(Head::new(Kind::Task, id), shared, None);
            } else {
                out.push(Head::new(Kind::Task, id), &body, None);
            }
            want.push((id, body));
        }
        let n = want.len();
        let reader = std::thread::spawn(move || {
            let mut inb = InBuf::new();
            let mut got = Vec::new();
            while got.len() < n {
                assert_eq!(inb.fill(b.as_fd(), true).unwrap(), Read::Data);
                while let Some(f) = inb.next().unwrap() {
                    got.push((f.head.id, inb.payload(&f).to_vec()));
                }
            }
            got
        });
        while !out.flush(a.as_fd(), false).unwrap() {
            let mut set = [mp_sys::fd::PollFd::writable(a.as_fd())];
            mp_sys::fd::poll(&mut set, Some(std::time::Duration::from_secs(10))).unwrap();
        }
        assert!(out.is_empty() && out.owned_len() == 0);
        assert!(reader.join().unwrap() == want, "frames lost, cut or reordered");
    }

    #[test]
    fn a_big_frame_grows_the_buffer() {
        let (a, b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        let big = vec![7u8; 1 << 20];
        let t = std::thread::spawn(move || {
            let mut out = OutBuf::default();
            out.push(Head::new(Kind::Done, 9), &big, None);
            out.flush(a.as_fd(), true).unwrap();
        });
        let mut inb = InBuf::new();
        let f = loop {
            inb.fill(b.as_fd(), true).unwrap();
            if let Some(f) = inb.next().unwrap() {
                break f;
            }
        };
        assert_eq!(inb.payload(&f).len(), 1 << 20);
        t.join().unwrap();
    }

    #[test]
    fn shared_payloads_go_whole_and_in_order_with_descriptors() {
        let (a, b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        mp_sys::fd::set_nonblocking(a.as_fd(), true).unwrap();
        let (r, _w) = mp_sys::fd::pipe().unwrap();
        let big = Arc::new(Payload {
            bytes: (0..(3 << 20)).map(|i| (i % 251) as u8).collect(),
            fds: Vec::new(),
        });
        let with_fd = Arc::new(Payload {
            bytes: b"fd".to_vec(),
            fds: vec![r.try_clone().unwrap()],
        });
        let mut out = OutBuf::default();
        out.push(Head::new(Kind::Task, 1), b"one", None);
        out.push_shared(Head::new(Kind::Chunk, 2), Arc::clone(&big), None);
        out.push_shared(
            Head::new(Kind::Task, 3),
            Arc::clone(&with_fd),
            Some(Fds::Shared(Arc::clone(&with_fd))),
        );
        out.push_shared(Head::new(Kind::Chunk, 4), Arc::clone(&big), None);
        out.push(Head::new(Kind::Stop, 5), b"", None);
        let reader = std::thread::spawn(move || {
            let mut inb = InBuf::new();
            let mut got = Vec::new();
            while got.len() < 5 {
                assert_eq!(inb.fill(b.as_fd(), true).unwrap(), Read::Data);
                while let Some(f) = inb.next().unwrap() {
                    got.push((f.head.id, inb.payload(&f).to_vec(), f.fds.len()));
                }
            }
            got
        });
        // The socket takes a part at a time: a frame is cut between writes.
        let mut polls = 0;
        while !out.flush(a.as_fd(), false).unwrap() {
            polls += 1;
            let mut set = [mp_sys::fd::PollFd::writable(a.as_fd())];
            mp_sys::fd::poll(&mut set, Some(std::time::Duration::from_secs(10))).unwrap();
        }
        let got = reader.join().unwrap();
        assert!(polls > 0, "the socket took 6 MiB at once");
        let ids: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(got[1].1, big.bytes);
        assert_eq!(got[3].1, big.bytes);
        assert_eq!((got[2].1.as_slice(), got[2].2), (&b"fd"[..], 1));
        assert_eq!((got[0].2, got[1].2, got[3].2), (0, 0, 0));
        assert!(out.is_empty());
    }

    #[test]
    fn a_payload_in_shared_memory_is_announced_in_the_header() {
        let (a, b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        let mut out = OutBuf::default();
        let mut h = Head::new(Kind::Done, 7);
        h.spos = (5 << 32) + 64;
        h.slen = 100_000;
        out.push(h, &[], None);
        out.push(Head::new(Kind::Done, 8), b"inline", None);
        // Counted as waiting, so a worker sends it soon.
        assert_eq!(out.owned_len(), 2 * HEAD_LEN + 6 + 100_000);
        assert!(out.flush(a.as_fd(), true).unwrap());
        assert_eq!(out.owned_len(), 0);
        let mut inb = InBuf::new();
        let mut got = Vec::new();
        while got.len() < 2 {
            assert_eq!(inb.fill(b.as_fd(), true).unwrap(), Read::Data);
            while let Some(f) = inb.next().unwrap() {
                got.push((f.head, inb.payload(&f).to_vec()));
            }
        }
        assert_eq!(
            (got[0].0.spos, got[0].0.slen, got[0].0.len),
            ((5 << 32) + 64, 100_000, 0)
        );
        assert!(got[0].1.is_empty());
        assert_eq!((got[1].0.slen, got[1].1.as_slice()), (0, &b"inline"[..]));
        // A frame with a payload both on the socket and in shared memory
        // is garbage.
        let mut bytes = Vec::new();
        let mut both = Head::new(Kind::Done, 9);
        both.len = 3;
        both.slen = 3;
        both.write(&mut bytes);
        let mut inb = InBuf::new();
        inb.buf[..HEAD_LEN].copy_from_slice(&bytes);
        inb.end = HEAD_LEN;
        assert!(inb.next().is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        let mut inb = InBuf::new();
        inb.buf[..HEAD_LEN].fill(0xFF);
        inb.end = HEAD_LEN;
        assert!(inb.next().is_err());
    }
}
