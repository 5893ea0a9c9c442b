//! The shared ring beside a pipe's socket: small messages cross through
//! shared memory instead of the kernel.
//!
//! A [`pipe`](crate::pipe) is a Unix socket pair plus a *slot* of a shared
//! region with a *lane* per direction. A region holds [`SLOTS`] slots, handed
//! out in turn to the pipes a process makes (the next free slot is counted
//! in the region itself, so a forked child and its parent never take the
//! same one): making a memfd and mapping it costs more than the socket pair,
//! and this way one region serves many pipes. It is freed when the last
//! process holding one of its pipes' ends lets go. A lane is a byte ring of records (an 8-byte header,
//! length and kind, then the payload padded to 8 bytes) with its positions
//! and counters in shared words. The socket stays: it carries the messages
//! the ring does not (descriptors, more than [`MAX_INLINE`] bytes, no room),
//! it tells a reader that the peer is gone (end of file), and a reader
//! sleeps in `poll` on it.
//!
//! # Order
//!
//! A message goes into the ring only when every message sent on the socket
//! before it has been claimed by a reader (`sock_sent == sock_read`);
//! otherwise it follows them on the socket. A writer counts a socket message
//! (`sock_sent`) before it sends it, and a reader claims one (`sock_read`)
//! before it reads it. So the pending messages are always some ring records
//! followed by some socket frames, and a reader takes the ring first: a
//! reader that sees a counted socket frame sees every record published
//! before it (the count is stored after them).
//!
//! # Who writes, who reads
//!
//! The first process to send on a lane *owns* it and is its only ring
//! writer; other processes that hold the same end (a fork's copy, say) send
//! on the socket, counted. A dead owner leaves a consistent ring (a record
//! is published by one store of `head`), so nothing waits on it. Readers
//! take a record by moving `tail` with a compare-and-swap, so any number of
//! processes may read one end: each record goes to exactly one of them.
//! Threads of one process are serialized by the connection's own locks.
//!
//! # Sleeping and waking
//!
//! A reader yields the CPU while it polls the ring (the connection's spin),
//! then sets the lane's `sleeps` word and sleeps in `poll` on the socket. A
//! writer that publishes a record and finds `sleeps` set clears it and sends
//! a wake-up frame ([`mp_codec::FrameKind::Wake`]) on the socket. Both sides
//! store, then load, with sequential consistency, so a sleeper either sees
//! the record on its last look or gets the wake-up. A reader that finds
//! nothing to receive drops the wake-ups at the front of the socket before
//! it sleeps again; one that finds a record leaves them, so another sleeper
//! on the same end is not robbed of its wake-up.
//!
//! # A dead peer
//!
//! A send into the ring first sends zero bytes on the socket, which fails
//! with `EPIPE` when no process holds the other end any more: sending to a
//! closed peer is an error at once, as on the socket.
//!
//! # Bad input
//!
//! Every word and record is checked before it is used: a header announcing
//! more than the lane holds or more than [`MAX_INLINE`], or positions that
//! do not fit the ring, are a corrupt lane (an error, never a panic or an
//! out-of-range access). The region is sealed against shrinking by
//! [`Region`].

use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mp_codec::{FrameKind, HEADER_LEN};
use mp_sys::header::{Header, HeaderError};
use mp_sys::region::Region;
use mp_sys::socket;

/// Bytes of ring per direction.
pub(crate) const RING: usize = 32 * 1024;
/// The largest payload that goes through the ring; larger ones use the socket.
pub(crate) const MAX_INLINE: usize = 8 * 1024;
/// A record's header: payload length (u32) and kind (u32), little-endian.
const REC: usize = 8;
/// Slots (pipes) per region.
pub(crate) const SLOTS: usize = 16;
/// The region's first page: the workspace's shared-region
/// [`Header`] (magic `mpR3`, kind [`KIND`], the layout word [`LAYOUT`]), then
/// the next free slot.
const BATCH_HEADER: usize = 4096;
/// The next free slot (u32), after the header.
const NEXT_AT: usize = mp_sys::header::LEN;
/// A slot: a page of control words, then each lane's bytes.
const SLOT_LEN: usize = DATA + 2 * RING;
/// Where lane `d`'s control words start in a slot: `LANES + d * LANE_STRIDE`.
const LANES: usize = 64;
const LANE_STRIDE: usize = 256;
// Offsets inside a lane's control block. The writer's words, the reader's
// words and the sleep flag each have their own cache line.
/// The byte position after the last published record (u64, the owner's).
const HEAD: usize = 0;
/// Messages counted onto the socket (u32, wrapping).
const SOCK_SENT: usize = 8;
/// Non-zero: every message goes on the socket (the reader's descriptor is
/// watched by code of the user's own, which cannot see the ring).
const SOCKET_ONLY: usize = 12;
/// The lane's ring writer (u64): its pid in the high half and the number of
/// its end in that process in the low half ([`writer_token`]); 0 before the
/// first send.
const OWNER: usize = 16;
/// The byte position of the next record to take (u64).
const TAIL: usize = 64;
/// Socket messages claimed by readers (u32, wrapping).
const SOCK_READ: usize = 72;
/// Non-zero while a reader sleeps, or is about to, in `poll`.
const SLEEPS: usize = 128;
/// Where lane `d`'s bytes start in a slot: `DATA + d * RING`.
const DATA: usize = 4096;
/// The region's length.
const REGION_LEN: usize = BATCH_HEADER + SLOTS * SLOT_LEN;
/// The header's magic word (`mpR2` had its own header).
const MAGIC: [u8; 4] = *b"mpR3";
/// The header's kind: a region of pipe slots, the one kind of this format.
const KIND: u32 = 1;
/// The header's layout word: the lane size (low half) and slots per region
/// (high half).
const LAYOUT: u64 = RING as u64 | ((SLOTS as u64) << 32);

/// Record kinds, as in a frame header.
const KIND_VALUE: u32 = 0;
const KIND_BYTES: u32 = 1;

/// Who writes through a lane: this process's id and `end`, a number that
/// tells this process's ends apart (two ends of one lane can meet in one
/// process when a connection is sent to its own process).
pub(crate) fn writer_token(end: u32) -> u64 {
    (u64::from(mp_sys::process::pid()) << 32) | u64::from(end)
}

/// A slot for a new pipe: in the region this process is handing out, or
/// in a new one when that is full.
pub(crate) fn allocate() -> io::Result<(Arc<Region>, usize)> {
    static CURRENT: Mutex<Option<Arc<Region>>> = Mutex::new(None);
    // Busy (another thread is here, or was when this process was forked
    // from it): a region of its own, rather than waiting.
    let mut current = CURRENT.try_lock().ok();
    if let Some(region) = current.as_deref().and_then(Option::as_ref)
        && let Some(slot) = take_slot(region)
    {
        return Ok((region.clone(), slot));
    }
    let region = Arc::new(new_region()?);
    let slot = take_slot(&region).unwrap_or(0);
    if let Some(current) = current.as_mut() {
        **current = Some(region.clone());
    }
    Ok((region, slot))
}

/// A region of [`SLOTS`] free slots.
fn new_region() -> io::Result<Region> {
    let region = Region::create("mp-pipes", REGION_LEN)?;
    Header::new(MAGIC, KIND, LAYOUT).write_to(&region)?;
    Ok(region)
}

/// Takes the next free slot of `region`, if any.
fn take_slot(region: &Region) -> Option<usize> {
    let next = region.atomic_u32(NEXT_AT).ok()?;
    let mut n = next.load(Ordering::Relaxed);
    while (n as usize) < SLOTS {
        match next.compare_exchange(n, n + 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(n as usize),
            Err(now) => n = now,
        }
    }
    None
}

/// Checks a region and slot that arrived with a connection.
pub(crate) fn check(region: &Region, slot: usize) -> Result<(), String> {
    let not_pipes = |e: HeaderError| format!("the shared region is not a pipe's: {e}");
    let header = Header::read_from(region, MAGIC, REGION_LEN).map_err(not_pipes)?;
    if header.kind != KIND {
        return Err(format!(
            "the shared region is not a pipe's: its kind is {}, not {KIND}",
            header.kind
        ));
    }
    header.expect_layout(LAYOUT).map_err(not_pipes)?;
    if slot >= SLOTS {
        return Err(format!("slot {slot} of a region of {SLOTS}"));
    }
    Ok(())
}

/// Where a reader's next message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A record in the ring.
    Ring,
    /// A frame counted onto the socket and not yet claimed.
    Socket,
    /// Nothing sent that nobody took.
    Nothing,
}

/// A record found at the front of a lane, not yet taken.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rec {
    /// Its position (the tail it was found at).
    pos: u64,
    /// Value or Bytes.
    pub(crate) kind: FrameKind,
    /// Payload bytes.
    pub(crate) len: usize,
}

impl Rec {
    fn size(&self) -> u64 {
        record_size(self.len)
    }
}

/// Ring bytes a record of `len` payload bytes takes: its header, then the
/// payload padded to 8 bytes.
fn record_size(len: usize) -> u64 {
    mp_sys::ring::record_size(REC, len)
}

/// What [`Lane::push`] did.
#[derive(Debug)]
pub(crate) enum Pushed {
    /// The message is in the ring.
    Done,
    /// The message must go on the socket (count it first).
    UseSocket,
}

/// One direction of a pipe's region, seen from one end.
///
/// The region's length was checked ([`check`]) and it cannot shrink, so the
/// word accessors cannot fail; they fall back to a dummy word rather than
/// panic all the same.
#[derive(Debug)]
pub(crate) struct Lane<'a> {
    region: &'a Region,
    /// Where the slot starts in the region.
    slot: usize,
    dir: usize,
}

impl<'a> Lane<'a> {
    /// Lane `dir` (0 or 1) of slot `slot` (checked by [`check`]).
    pub(crate) fn new(region: &'a Region, slot: usize, dir: usize) -> Lane<'a> {
        Lane {
            region,
            slot: BATCH_HEADER + slot.min(SLOTS - 1) * SLOT_LEN,
            dir: dir & 1,
        }
    }

    fn u32(&self, off: usize) -> &'a AtomicU32 {
        static DUMMY: AtomicU32 = AtomicU32::new(0);
        self.region
            .atomic_u32(self.slot + LANES + self.dir * LANE_STRIDE + off)
            .unwrap_or(&DUMMY)
    }

    fn u64(&self, off: usize) -> &'a AtomicU64 {
        static DUMMY: AtomicU64 = AtomicU64::new(0);
        self.region
            .atomic_u64(self.slot + LANES + self.dir * LANE_STRIDE + off)
            .unwrap_or(&DUMMY)
    }

    fn data(&self) -> usize {
        self.slot + DATA + self.dir * RING
    }

    /// Copies `bytes` into the ring at byte position `pos`, wrapping.
    fn write_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        mp_sys::ring::write_wrapped(self.region, self.data(), RING, pos, bytes)
    }

    /// Copies ring bytes at `pos` into `buf`, wrapping.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        mp_sys::ring::read_wrapped(self.region, self.data(), RING, pos, buf)
    }

    // ---- The writer's side.

    /// Puts one message into the ring if `me` ([`writer_token`]) may and it
    /// fits, and wakes a sleeping reader. `sock` is the writer's socket: a
    /// zero-byte send on it first reports a peer that is gone (`EPIPE`).
    pub(crate) fn push(&self, sock: BorrowedFd<'_>, me: u64, kind: FrameKind, payload: &[u8]) -> io::Result<Pushed> {
        if payload.len() > MAX_INLINE || self.u32(SOCKET_ONLY).load(Ordering::Relaxed) != 0 {
            return Ok(Pushed::UseSocket);
        }
        let kind = match kind {
            FrameKind::Value => KIND_VALUE,
            FrameKind::Bytes => KIND_BYTES,
            FrameKind::Wake => return Ok(Pushed::UseSocket),
        };
        let owner = self.u64(OWNER);
        let mine = match owner.load(Ordering::Relaxed) {
            o if o == me => true,
            0 => owner
                .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok(),
            _ => false,
        };
        // Earlier socket messages not yet claimed: this one follows them.
        if !mine || self.u32(SOCK_SENT).load(Ordering::Relaxed) != self.u32(SOCK_READ).load(Ordering::Acquire) {
            return Ok(Pushed::UseSocket);
        }
        let head = self.u64(HEAD).load(Ordering::Relaxed);
        let tail = self.u64(TAIL).load(Ordering::Acquire);
        let size = record_size(payload.len());
        let used = head.wrapping_sub(tail);
        if !head.is_multiple_of(8) || used > RING as u64 || used + size > RING as u64 {
            // Full (or the words were scribbled on: then the socket still works).
            return Ok(Pushed::UseSocket);
        }
        socket::try_send_with_fds(sock, &[], &[])?;
        let mut rec = [0u8; REC];
        rec[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        rec[4..].copy_from_slice(&kind.to_le_bytes());
        self.write_at(head, &rec)?;
        self.write_at(head + REC as u64, payload)?;
        self.u64(HEAD).store(head + size, Ordering::SeqCst);
        let sleeps = self.u32(SLEEPS);
        if sleeps.load(Ordering::SeqCst) != 0 && sleeps.swap(0, Ordering::SeqCst) != 0 {
            wake(sock)?;
        }
        Ok(Pushed::Done)
    }

    /// Counts a message that is about to go on the socket.
    pub(crate) fn count_socket(&self) {
        self.u32(SOCK_SENT).fetch_add(1, Ordering::SeqCst);
    }

    // ---- The reader's side.

    /// Turns the ring off for this lane's writers: every later message goes
    /// on the socket, so code that watches the socket sees it.
    pub(crate) fn socket_only(&self) {
        self.u32(SOCKET_ONLY).store(1, Ordering::SeqCst);
    }

    /// Where the next message is.
    pub(crate) fn next(&self) -> Next {
        // The count first: a counted frame's earlier records are then visible.
        let sent = self.u32(SOCK_SENT).load(Ordering::SeqCst);
        if self.u64(HEAD).load(Ordering::SeqCst) != self.u64(TAIL).load(Ordering::Acquire) {
            Next::Ring
        } else if sent != self.u32(SOCK_READ).load(Ordering::Acquire) {
            Next::Socket
        } else {
            Next::Nothing
        }
    }

    /// Claims the next counted socket frame for this reader; false when
    /// another reader claimed it first (or there is none).
    pub(crate) fn claim_socket(&self) -> bool {
        let read = self.u32(SOCK_READ);
        let r = read.load(Ordering::Acquire);
        r != self.u32(SOCK_SENT).load(Ordering::Acquire)
            && read
                .compare_exchange(r, r.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Gives back a socket frame [`claim_socket`](Lane::claim_socket)
    /// claimed when none of it was read (a receive's deadline passed before
    /// the frame's bytes came): the next receive claims it again, in its
    /// turn. Only the reader that claimed it, holding its reader lock, calls
    /// this.
    pub(crate) fn unclaim_socket(&self) {
        self.u32(SOCK_READ).fetch_sub(1, Ordering::AcqRel);
    }

    /// The record at the front, checked; `None` when the ring is empty.
    pub(crate) fn peek(&self) -> Result<Option<Rec>, String> {
        loop {
            let tail = self.u64(TAIL).load(Ordering::Acquire);
            let head = self.u64(HEAD).load(Ordering::Acquire);
            if head == tail {
                return Ok(None);
            }
            let avail = head.wrapping_sub(tail);
            if !tail.is_multiple_of(8) || avail > RING as u64 || avail < REC as u64 {
                return Err(format!(
                    "the pipe's shared ring is corrupt: positions {tail}..{head} do not fit a ring of {RING} bytes"
                ));
            }
            let mut h = [0u8; REC];
            self.read_at(tail, &mut h).map_err(|e| e.to_string())?;
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let raw_kind = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let kind = match raw_kind {
                KIND_VALUE => Some(FrameKind::Value),
                KIND_BYTES => Some(FrameKind::Bytes),
                _ => None,
            };
            let size = record_size(len);
            if let Some(kind) = kind
                && len <= MAX_INLINE
                && size <= avail
            {
                return Ok(Some(Rec { pos: tail, kind, len }));
            }
            let kind = raw_kind;
            if self.u64(TAIL).load(Ordering::Acquire) == tail {
                return Err(format!(
                    "the pipe's shared ring is corrupt: a record of {len} bytes, kind {kind}, with {avail} bytes published"
                ));
            }
            // Another reader took it while this one looked: not corrupt.
        }
    }

    /// Copies `rec`'s payload into `dst` (`rec.len` bytes long).
    pub(crate) fn copy(&self, rec: &Rec, dst: &mut [u8]) -> io::Result<()> {
        self.read_at(rec.pos + REC as u64, dst)
    }

    /// Takes `rec` off the ring; false when another reader took it first
    /// (what was copied is then not this reader's).
    pub(crate) fn commit(&self, rec: &Rec) -> bool {
        self.u64(TAIL)
            .compare_exchange(rec.pos, rec.pos + rec.size(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Asks the next writer that publishes a record to send a wake-up.
    /// Look at [`next`](Lane::next) once more after this, then sleep.
    pub(crate) fn want_wake(&self) {
        self.u32(SLEEPS).store(1, Ordering::SeqCst);
    }
}

/// Sends a wake-up frame without blocking: when the socket's buffer is full
/// the reader has something to read already.
///
/// The record is published before the wake-up goes out, so a reader that
/// was not asleep after all can take it and close its end first. A wake-up
/// for a reader that is gone is therefore not an error: the message was
/// delivered, and the next send reports the closed peer, as a plain pipe
/// does.
fn wake(sock: BorrowedFd<'_>) -> io::Result<()> {
    let head = mp_codec::Header::wake();
    let sent = match socket::try_send_with_fds(sock, &[IoSlice::new(&head)], &[]) {
        // A stream socket took part of it: the rest must follow, or the
        // frames after it would be out of step.
        Ok(n) if n < HEADER_LEN => mp_sys::fd::write_all(sock, &head[n..]),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    match sent {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || peer_gone(&e) => Ok(()),
        other => other,
    }
}

/// Whether a send failed because the reading end is closed.
fn peer_gone(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
}

/// What [`drain_wakes`] found at the front of the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Front {
    /// Nothing (after dropping the wake-ups there were).
    Empty,
    /// The peer is gone.
    Eof,
    /// Bytes of a frame that is not a wake-up.
    Data,
    /// Wake-ups, left in place (`consume` was false).
    Wakes,
}

/// Looks at the front of the socket and, when `consume`, drops the wake-up
/// frames there. The caller must be the only reader of the socket in this
/// process while it does.
pub(crate) fn drain_wakes(sock: BorrowedFd<'_>, consume: bool) -> io::Result<Front> {
    const AT_ONCE: usize = 16;
    let wake = mp_codec::Header::wake();
    let mut buf = [0u8; HEADER_LEN * AT_ONCE];
    loop {
        let n = match socket::try_peek(sock, &mut buf) {
            Ok(0) => return Ok(Front::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Front::Empty),
            // The peer closed with bytes it had not read (wake-ups, say),
            // and nothing is left here: the end (see mp-codec's reads).
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Front::Eof),
            Err(e) => return Err(e),
        };
        let wakes = buf[..n]
            .chunks_exact(HEADER_LEN)
            .take_while(|c| *c == wake.as_slice())
            .count();
        if wakes == 0 {
            return Ok(Front::Data);
        }
        if !consume {
            return Ok(Front::Wakes);
        }
        let mut sink = [0u8; HEADER_LEN * AT_ONCE];
        let mut fds = Vec::new();
        let mut left = wakes * HEADER_LEN;
        while left > 0 {
            let got = socket::try_recv_with_fds(sock, &mut sink[..left], &mut fds)?.bytes;
            if got == 0 {
                return Ok(Front::Eof);
            }
            left -= got;
        }
        // What followed them (if anything) is looked at next.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    const ME: u64 = 7;

    #[test]
    fn pipes_take_the_slots_of_one_region_in_turn() {
        let (first, slot) = allocate().unwrap();
        let mut seen = vec![slot];
        let mut region = first.clone();
        while Arc::ptr_eq(&region, &first) {
            let (r, s) = allocate().unwrap();
            if Arc::ptr_eq(&r, &first) {
                seen.push(s);
            }
            region = r;
        }
        // Other tests take slots at the same time: these are increasing and
        // end with the last one; the next region starts over.
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert!(seen.iter().all(|&s| s < SLOTS), "{seen:?}");
        check(&region, 0).unwrap();
        assert!(take_slot(&first).is_none(), "the first region is full");
    }

    #[test]
    fn records_wrap_around_the_ring_whole() {
        let region = new_region().unwrap();
        check(&region, 5).unwrap();
        let (a, _b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        let lane = Lane::new(&region, 5, 1);
        // Odd sizes, many times round the ring.
        for i in 0..5_000usize {
            let msg: Vec<u8> = (0..(i * 37) % 3000).map(|j| (i + j) as u8).collect();
            assert!(matches!(
                lane.push(a.as_fd(), ME, FrameKind::Bytes, &msg).unwrap(),
                Pushed::Done
            ));
            assert_eq!(lane.next(), Next::Ring);
            let rec = lane.peek().unwrap().unwrap();
            assert_eq!((rec.kind, rec.len), (FrameKind::Bytes, msg.len()));
            let mut got = vec![0u8; rec.len];
            lane.copy(&rec, &mut got).unwrap();
            assert!(lane.commit(&rec));
            assert!(!lane.commit(&rec), "a record is taken once");
            assert_eq!(got, msg);
        }
        assert_eq!(lane.next(), Next::Nothing);
    }

    #[test]
    fn a_full_ring_or_a_pending_socket_message_sends_on_the_socket() {
        let region = new_region().unwrap();
        let (a, _b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        let lane = Lane::new(&region, SLOTS - 1, 0);
        let big = vec![1u8; MAX_INLINE];
        let mut n = 0;
        while let Pushed::Done = lane.push(a.as_fd(), ME, FrameKind::Bytes, &big).unwrap() {
            n += 1;
        }
        assert_eq!(n, RING / (MAX_INLINE + REC), "ring full after {n}");
        assert!(matches!(
            lane.push(a.as_fd(), ME, FrameKind::Bytes, &vec![0; MAX_INLINE + 1])
                .unwrap(),
            Pushed::UseSocket
        ));
        // Empty the ring, then count a socket message: the ring waits for it.
        while let Some(rec) = lane.peek().unwrap() {
            assert!(lane.commit(&rec));
        }
        lane.count_socket();
        assert_eq!(lane.next(), Next::Socket);
        assert!(matches!(
            lane.push(a.as_fd(), ME, FrameKind::Bytes, b"x").unwrap(),
            Pushed::UseSocket
        ));
        assert!(lane.claim_socket());
        assert!(!lane.claim_socket(), "claimed once");
        assert_eq!(lane.next(), Next::Nothing);
        assert!(matches!(
            lane.push(a.as_fd(), ME, FrameKind::Bytes, b"x").unwrap(),
            Pushed::Done
        ));
    }

    #[test]
    fn scribbled_words_are_errors_not_panics() {
        let region = new_region().unwrap();
        let slot = 3;
        let lane = Lane::new(&region, slot, 0);
        let base = BATCH_HEADER + slot * SLOT_LEN + LANES;
        let data = BATCH_HEADER + slot * SLOT_LEN + DATA;
        // A head far past the tail.
        region.atomic_u64(base + HEAD).unwrap().store(1 << 40, Ordering::SeqCst);
        assert!(lane.peek().unwrap_err().contains("corrupt"));
        // A record announcing more than was published.
        region.atomic_u64(base + HEAD).unwrap().store(16, Ordering::SeqCst);
        region.write(data, &(5000u32).to_le_bytes()).unwrap();
        assert!(lane.peek().unwrap_err().contains("corrupt"));
        // An unknown kind.
        region.write(data, &[1, 0, 0, 0, 9, 0, 0, 0]).unwrap();
        assert!(lane.peek().unwrap_err().contains("kind 9"));
        // A writer facing nonsense positions falls back to the socket.
        let (a, _b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        region.atomic_u64(base + TAIL).unwrap().store(1 << 50, Ordering::SeqCst);
        assert!(matches!(
            lane.push(a.as_fd(), ME, FrameKind::Bytes, b"x").unwrap(),
            Pushed::UseSocket
        ));
        // A region that is not a pipe's.
        let other = Region::create("other", REGION_LEN).unwrap();
        assert!(check(&other, 0).is_err());
        assert!(check(&Region::create("small", 64).unwrap(), 0).is_err());
        assert!(check(&region, SLOTS).is_err(), "a slot past the last");
        // The other slots were not touched.
        let (a, b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        let next = Lane::new(&region, slot + 1, 0);
        assert!(matches!(
            next.push(a.as_fd(), ME, FrameKind::Value, b"ok").unwrap(),
            Pushed::Done
        ));
        drop(b);
    }

    #[test]
    fn a_send_into_the_ring_fails_when_the_peer_is_gone() {
        let region = new_region().unwrap();
        let (a, b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        let lane = Lane::new(&region, 0, 0);
        drop(b);
        let e = lane.push(a.as_fd(), ME, FrameKind::Value, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(lane.next(), Next::Nothing, "nothing was published");
    }

    #[test]
    fn a_wake_up_for_a_reader_that_took_the_record_and_left_is_not_an_error() {
        let (a, b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        drop(b);
        // What `push` does after publishing, when the reader already left.
        wake(a.as_fd()).unwrap();
        let region = new_region().unwrap();
        let lane = Lane::new(&region, 0, 0);
        let e = lane.push(a.as_fd(), ME, FrameKind::Value, b"x").unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::BrokenPipe,
            "the next send reports the peer gone"
        );
    }

    #[test]
    fn a_sleeping_reader_gets_one_wake_up_and_drains_it() {
        let region = new_region().unwrap();
        let (a, b) = socket::socketpair(socket::SocketKind::Stream).unwrap();
        let lane = Lane::new(&region, 0, 0);
        assert_eq!(drain_wakes(b.as_fd(), true).unwrap(), Front::Empty);
        lane.want_wake();
        lane.push(a.as_fd(), ME, FrameKind::Value, b"1").unwrap();
        lane.push(a.as_fd(), ME, FrameKind::Value, b"2").unwrap(); // no second wake-up
        assert_eq!(drain_wakes(b.as_fd(), false).unwrap(), Front::Wakes);
        assert_eq!(drain_wakes(b.as_fd(), true).unwrap(), Front::Empty);
        // A wake-up before a real frame: the frame stays.
        lane.want_wake();
        lane.push(a.as_fd(), ME, FrameKind::Value, b"3").unwrap();
        mp_codec::send_bytes(a.as_fd(), b"frame", &Default::default()).unwrap();
        assert_eq!(drain_wakes(b.as_fd(), true).unwrap(), Front::Data);
        let f = mp_codec::recv_frame(b.as_fd(), &Default::default()).unwrap();
        assert_eq!(f.payload(), b"frame");
        drop(a);
        assert_eq!(drain_wakes(b.as_fd(), true).unwrap(), Front::Eof);
    }
}
