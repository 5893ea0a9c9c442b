//! The shared ring every queue is: framed messages in a memfd region, a
//! producer lock and a consumer lock, futex sequence words for "not empty" and
//! "not full", and a socket pair for the descriptors that travel with some
//! items.
//!
//! # Layout
//!
//! Each group of words has its own cache line, so that producers and
//! consumers do not pass one line back and forth on every item:
//!
//! - header (read-mostly): the workspace's shared-region
//!   [`Header`](mp_sys::header::Header) (magic `mpQ1`, [`Kind`], the item
//!   type's tag as the layout word), then maxsize, the state word (closed bit), `cap` (the ring's size, a power of
//!   two);
//! - sleepers: how many getters, putters and joiners sleep on a futex (changed
//!   by the sleepers themselves);
//! - producers: their lock word, `put_seq` (futex word bumped by every put),
//!   `head`, the next descriptor sequence number, and the producers' last view
//!   of `tail`;
//! - consumers: their lock word, `get_seq`, `tail`, and their last view of
//!   `head`;
//! - the unfinished-task count of a JoinableQueue (futex word of `join`).
//!
//! `head` and `tail` each pack a byte position (low 38 bits, modulo 2^38) and
//! an item count (high 26 bits, modulo 2^26) into one 64-bit word, so a
//! position and its count always move together: the queue's length is
//! `head.count - tail.count` and its bytes in use `head.pos - tail.pos`.
//!
//! The ring's bytes start at [`DATA`]; byte position `p` lives at
//! `DATA + (p & (cap - 1))`. A record is a 16-byte header (payload length,
//! descriptor count and side flag, descriptor sequence number) then the
//! payload, padded to 8 bytes. A payload larger than [`INLINE_MAX`] goes in its
//! own memfd (the *side path*) and its record carries no payload.
//!
//! # Concurrency and crash safety
//!
//! Producers serialize on the producer lock and write only at `head`;
//! consumers serialize on the consumer lock and read only at `tail`; a
//! producer publishes a record by storing `head` (release) after copying it,
//! a consumer frees one by storing `tail` after copying it out. So one
//! producer and one consumer work at the same time. Both lock words name their
//! holder's pid; a process killed while holding one is found dead by the next
//! one to wait (see `mp_sync::raw`), which takes the lock over. Nothing needs
//! repair then: a producer killed mid-copy has not moved `head` (its half
//! record is overwritten later), a consumer killed mid-copy has not moved
//! `tail` (the record stays queued), and since a position and its count are
//! one word they cannot disagree. The ring grows by doubling under both locks:
//! the bytes that move are copied (never moved) into the new half, and the new
//! size is published last, so a grower killed halfway leaves the old ring
//! intact.
//!
//! # Descriptors
//!
//! An item holding handles (a queue, a lock, a connection) carries their
//! descriptors, and a side-path item its memfd. Every handle of a queue holds
//! one socket pair; a producer sends the descriptors, tagged with a sequence
//! number from the header, on one end while it holds the producer lock and
//! before it publishes the record, and a consumer receives them from the other
//! end while it holds the consumer lock. Socket order is therefore ring order;
//! the sequence numbers let a consumer skip descriptors a killed producer sent
//! for a record it never published, and notice a record whose descriptors a
//! killed consumer had already taken (that item is lost with the consumer that
//! took it).

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mp_codec::handle::FdRef;
use mp_sync::raw::{self, Acquired};
use mp_sys::fd::{PollFd, poll};
use mp_sys::futex;
use mp_sys::header::Header;
use mp_sys::region::Region;
use mp_sys::socket::{self, MAX_FDS_PER_MESSAGE, SocketKind};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serializer};

use crate::error::QueueError;
use mp_sys::time::Deadline;

const MAGIC: [u8; 4] = *b"mpQ1";

/// Where the ring's bytes start (one page of header).
const DATA: usize = 4096;
/// The ring's first size.
const INITIAL_CAP: u64 = 64 << 10;
/// The largest the ring grows to: the address space reserved in every
/// process (no memory until used).
const MAX_CAP: u64 = 256 << 20;
/// Payloads above this go through the side path.
const INLINE_MAX: usize = 4 << 20;
/// A record's header.
const REC: u64 = 16;
/// The largest maxsize: what the item count of a `head` or `tail` word can
/// tell apart (a full ring of the smallest records holds fewer).
const MAX_ITEMS: u64 = (1 << (64 - POS_BITS)) - 1;
/// A sleeper wakes at least this often and looks again, so a wake-up lost
/// with a killed process costs a delay, never a hang.
const NAP: Duration = Duration::from_millis(500);

/// How long a waiter yields the CPU before it sleeps on a futex.
const YIELD_FOR: Duration = Duration::from_micros(50);

/// How long a call may wait for the ring's lock even when its own timeout is
/// shorter (see [`Block::lock_deadline`]).
const LOCK_PATIENCE: Duration = Duration::from_millis(250);

/// Set in a record's flags when the payload is in a side memfd (the last of
/// its descriptors).
const SIDE: u32 = 1 << 31;
/// The closed bit of the state word.
const CLOSED: u32 = 1;

// 32-bit word indexes (byte offset / 4).
const W_STATE: usize = 6;
const W_GETTERS: usize = 16;
const W_PUTTERS: usize = 17;
const W_JOINERS: usize = 18;
const W_PUT_LOCK: usize = 32;
const W_PUT_SEQ: usize = 33;
const W_GET_LOCK: usize = 48;
const W_GET_SEQ: usize = 49;
const W_UNFINISHED: usize = 64;
// 64-bit word indexes (byte offset / 8).
const D_MAXSIZE: usize = 2;
const D_CAP: usize = 4;
const D_HEAD: usize = 17;
const D_FD_SEQ: usize = 18;
const D_TAIL_SEEN: usize = 19;
const D_TAIL: usize = 25;
const D_HEAD_SEEN: usize = 26;

/// Bits of a position in a `head` or `tail` word; the count takes the rest.
const POS_BITS: u32 = 38;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const COUNT_MASK: u64 = (1 << (64 - POS_BITS)) - 1;

/// A `head` or `tail` word: position and item count.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct End {
    pos: u64,
    count: u64,
}

impl End {
    #[inline]
    fn unpack(w: u64) -> End {
        End {
            pos: w & POS_MASK,
            count: w >> POS_BITS,
        }
    }

    #[inline]
    fn pack(self) -> u64 {
        (self.pos & POS_MASK) | ((self.count & COUNT_MASK) << POS_BITS)
    }

    /// This end moved past one record of `size` bytes.
    #[inline]
    fn advance(self, size: u64) -> End {
        End {
            pos: (self.pos + size) & POS_MASK,
            count: (self.count + 1) & COUNT_MASK,
        }
    }
}

/// Bytes and items between `tail` and `head`.
#[inline]
fn span(tail: End, head: End) -> (u64, u64) {
    (
        head.pos.wrapping_sub(tail.pos) & POS_MASK,
        head.count.wrapping_sub(tail.count) & COUNT_MASK,
    )
}

/// Which queue type a ring belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Queue = 1,
    SimpleQueue = 2,
    JoinableQueue = 3,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Queue => "Queue",
            Kind::SimpleQueue => "SimpleQueue",
            Kind::JoinableQueue => "JoinableQueue",
        }
    }

    fn from_u32(k: u32) -> Option<Kind> {
        [Kind::Queue, Kind::SimpleQueue, Kind::JoinableQueue]
            .into_iter()
            .find(|c| *c as u32 == k)
    }
}

/// How long an operation may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Block {
    /// Not at all (`put_nowait`, `get_nowait`).
    No,
    /// Until the deadline (`None`: forever).
    Until(Option<Instant>),
}

impl Block {
    pub(crate) fn timeout(t: Duration) -> Block {
        Block::Until(Deadline::after(t).instant())
    }

    /// Whether the caller may still wait, and until when the next sleep may
    /// last.
    fn sleep_until(self) -> Option<Instant> {
        match self {
            Block::No => None,
            Block::Until(d) => (!Deadline::from(d).has_passed()).then(|| Deadline::from(d).sleep_until(NAP)),
        }
    }

    /// Until when the ring's lock may be waited for. The lock is held only
    /// while a record is copied, so even a call that must not wait for room
    /// or items waits for it a little: long enough for a holder that was
    /// descheduled to finish, and for a holder that was killed to be found
    /// dead and replaced.
    #[inline]
    fn lock_deadline(self) -> Option<Instant> {
        let soon = || Deadline::nap(LOCK_PATIENCE);
        match self {
            Block::No => Some(soon()),
            Block::Until(Some(d)) => Some(d.max(soon())),
            Block::Until(None) => None,
        }
    }
}

/// Why a put or a get failed in the ring.
#[derive(Debug)]
pub(crate) enum Fail {
    /// Full (put) or empty (get) until the deadline.
    Timeout,
    Closed,
    /// The descriptors could not be passed, or a side memfd made or read.
    Io(io::Error),
    /// A record was taken but is unusable (its descriptors went with a
    /// killed consumer, or they do not match it).
    Lost(String),
}

/// The ring, its descriptor socket pair, and what this process knows of it.
#[derive(Debug)]
pub(crate) struct Ring {
    region: Region,
    /// Every producer sends descriptors here...
    tx: OwnedFd,
    /// ...and every consumer receives them here.
    rx: OwnedFd,
    kind: Kind,
    maxsize: u64,
}

/// A lock word (the producers' or the consumers'), held; released on drop.
struct Held<'a> {
    ring: &'a Ring,
    word: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        raw::unlock(self.ring.word(self.word));
    }
}

/// An item taken from the ring: its payload is in the caller's buffer
/// (`len` bytes) unless it came by the side path (then in `side`).
pub(crate) struct Taken {
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) len: usize,
    /// The payload is in a side memfd (the last of `fds`), not yet in the
    /// buffer.
    side: bool,
}

/// A record taken under the lock: usable, or consumed but broken.
type Record = Result<Taken, Fail>;

impl Ring {
    /// A new empty ring.
    pub(crate) fn create(kind: Kind, tag: u64, maxsize: u64) -> Result<Ring, QueueError> {
        if maxsize > MAX_ITEMS {
            return Err(QueueError::InvalidArgument(format!(
                "maxsize {maxsize} is too large: a queue holds at most {MAX_ITEMS} items (use 0 for unbounded)"
            )));
        }
        let region = Region::create_growable(kind.name(), DATA + INITIAL_CAP as usize, DATA + MAX_CAP as usize)
            .map_err(|source| QueueError::Create {
                what: "shared memory",
                source,
            })?;
        let (tx, rx) = socket::socketpair(SocketKind::Stream).map_err(|source| QueueError::Create {
            what: "descriptor socket",
            source,
        })?;
        let ring = Ring {
            region,
            tx,
            rx,
            kind,
            maxsize,
        };
        ring.dword(D_MAXSIZE).store(maxsize, Ordering::Relaxed);
        ring.dword(D_CAP).store(INITIAL_CAP, Ordering::Relaxed);
        // Last: the magic word publishes the words above.
        Header::new(MAGIC, kind as u32, tag)
            .write_to(&ring.region)
            .map_err(|source| QueueError::Create {
                what: "shared memory",
                source,
            })?;
        Ok(ring)
    }

    /// A ring received from another process, checked to be one of `kinds`
    /// holding items of the type tagged `tag` (`what` names that type).
    fn open(wire: Wire, kinds: &[Kind], tag: u64, what: &str) -> Result<Ring, String> {
        let region = Region::from_fd_growable(wire.region, DATA + MAX_CAP as usize)
            .map_err(|e| format!("the {what} handle's memory is not a queue: {e}"))?;
        let header = Header::read_from(&region, MAGIC, DATA)
            .map_err(|e| format!("the {what} handle's memory is not a queue of this version: {e}"))?;
        let found = header.kind;
        let kind = match Kind::from_u32(found) {
            Some(k) if kinds.contains(&k) => k,
            Some(k) => return Err(format!("expected a {what} handle, got a {} handle", k.name())),
            None => return Err(format!("expected a {what} handle, got a queue of unknown kind {found}")),
        };
        let dwords = region.atomics_u64();
        if header.expect_layout(tag).is_err() {
            return Err(format!(
                "expected a {what} handle, got a queue of another item type: the sender and receiver disagree on the type"
            ));
        }
        let maxsize = dwords[D_MAXSIZE].load(Ordering::Relaxed);
        Ok(Ring {
            region,
            tx: wire.tx,
            rx: wire.rx,
            kind,
            maxsize,
        })
    }

    #[inline]
    fn word(&self, i: usize) -> &AtomicU32 {
        &self.region.atomics_u32()[i]
    }

    #[inline]
    fn dword(&self, i: usize) -> &AtomicU64 {
        &self.region.atomics_u64()[i]
    }

    pub(crate) fn maxsize(&self) -> u64 {
        self.maxsize
    }

    /// Items in the queue now.
    #[inline]
    pub(crate) fn count(&self) -> usize {
        // Tail first: the head read after it is at least as new, so the
        // difference is never negative.
        let tail = End::unpack(self.dword(D_TAIL).load(Ordering::Acquire));
        let head = End::unpack(self.dword(D_HEAD).load(Ordering::Acquire));
        span(tail, head).1 as usize
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.word(W_STATE).load(Ordering::Acquire) & CLOSED != 0
    }

    pub(crate) fn is_full(&self) -> bool {
        self.maxsize > 0 && self.count() as u64 >= self.maxsize
    }

    /// Takes lock word `word` (`W_PUT_LOCK` or `W_GET_LOCK`). A holder that
    /// died is taken over; nothing needs repair (see the module docs).
    #[inline]
    fn lock(&self, word: usize, deadline: Option<Instant>) -> Option<Held<'_>> {
        let _: Acquired = raw::lock(self.word(word), deadline)?;
        Some(Held { ring: self, word })
    }

    /// The ring's size, with this process's view of the region extended to
    /// cover it (another process may have grown it).
    fn cap(&self) -> io::Result<u64> {
        let cap = self.dword(D_CAP).load(Ordering::Relaxed);
        if !cap.is_power_of_two() || !(INITIAL_CAP..=MAX_CAP).contains(&cap) {
            return Err(io::Error::other(format!("the queue's ring size {cap} is corrupt")));
        }
        let need = DATA + cap as usize;
        if self.region.len() < need && self.region.sync_len()? < need {
            return Err(io::Error::other("the queue's ring is shorter than its header says"));
        }
        Ok(cap)
    }

    /// Copies `data` into the ring at position `p`, wrapping at the end.
    fn write_at(&self, p: u64, cap: u64, data: &[u8]) -> io::Result<()> {
        mp_sys::ring::write_wrapped(&self.region, DATA, cap as usize, p, data)
    }

    /// Copies `buf.len()` bytes out of the ring at position `p`.
    fn read_at(&self, p: u64, cap: u64, buf: &mut [u8]) -> io::Result<()> {
        mp_sys::ring::read_wrapped(&self.region, DATA, cap as usize, p, buf)
    }

    /// The record at `p`: (payload length, flags, descriptor sequence, total
    /// size), or `None` when it does not fit in the `avail` bytes before
    /// `head` or its fields are out of range.
    fn record_at(&self, p: u64, cap: u64, avail: u64) -> Option<(usize, u32, u64, u64)> {
        let mut h = [0u8; REC as usize];
        self.read_at(p, cap, &mut h).ok()?;
        let len = u32::from_le_bytes(h[0..4].try_into().ok()?);
        let flags = u32::from_le_bytes(h[4..8].try_into().ok()?);
        let seq = u64::from_le_bytes(h[8..16].try_into().ok()?);
        let size = record_size(len as usize, flags & SIDE != 0);
        let nfds = (flags & !SIDE) as usize;
        (size <= avail && nfds <= MAX_FDS_PER_MESSAGE && (flags & SIDE == 0 || nfds >= 1)).then_some((
            len as usize,
            flags,
            seq,
            size,
        ))
    }

    /// Doubles the ring until `need` more bytes fit beside the `used` bytes
    /// from `tail`; `None` when it would pass [`MAX_CAP`]. Under both locks.
    fn grow(&self, mut cap: u64, tail: u64, used: u64, need: u64) -> io::Result<Option<u64>> {
        while cap - used < need {
            let new = cap * 2;
            if new > MAX_CAP {
                return Ok(None);
            }
            self.region.extend(DATA + new as usize)?;
            // Position p moves from p & (cap-1) to p & (new-1): by `cap` when
            // bit `cap` of p is set (cap divides 2^38, so positions taken
            // modulo 2^38 agree). Copy those runs (at most two: the used bytes
            // span at most two cap-aligned blocks); the old bytes stay, so
            // the old ring is intact until `cap` is published.
            let mut a = tail;
            let end = tail + used;
            while a < end {
                let b = end.min((a / cap + 1) * cap);
                if a & cap != 0 {
                    let off = DATA + (a & (cap - 1)) as usize;
                    self.region.copy_within(off, off + cap as usize, (b - a) as usize)?;
                }
                a = b;
            }
            self.dword(D_CAP).store(new, Ordering::Release);
            cap = new;
        }
        Ok(Some(cap))
    }

    /// Queues one record: `payload` (already encoded) and `fds`. A payload
    /// above [`INLINE_MAX`] goes into its own memfd first, outside the lock.
    pub(crate) fn put(&self, payload: &[u8], fds: &[BorrowedFd<'_>], block: Block) -> Result<(), Fail> {
        let side = if payload.len() > INLINE_MAX {
            let r = Region::create("mp-queue-item", payload.len()).map_err(Fail::Io)?;
            r.write(0, payload).map_err(Fail::Io)?;
            Some(r)
        } else {
            None
        };
        let nfds = fds.len() + usize::from(side.is_some());
        if nfds > MAX_FDS_PER_MESSAGE {
            return Err(Fail::Io(io::Error::other(format!(
                "the item holds {nfds} descriptors; one item carries at most {MAX_FDS_PER_MESSAGE}"
            ))));
        }
        let size = record_size(payload.len(), side.is_some());
        let len = u32::try_from(payload.len())
            .map_err(|_| Fail::Io(io::Error::other("an item is limited to 4 GiB encoded")))?;
        loop {
            let Some(held) = self.lock(W_PUT_LOCK, block.lock_deadline()) else {
                return Err(Fail::Timeout);
            };
            if self.is_closed() {
                return Err(Fail::Closed);
            }
            let Some((head, cap)) = self.room(size, false)? else {
                // Full. Note the consumers' sequence word before looking
                // again, so a get that frees room after the look wakes us.
                let seen = self.word(W_GET_SEQ).load(Ordering::SeqCst);
                if self.room(size, true)?.is_none() {
                    self.wait_for(W_GET_SEQ, W_PUTTERS, seen, held, block, |r| {
                        !r.is_full() || r.is_closed()
                    })?;
                }
                continue;
            };
            let mut flags = nfds as u32;
            let mut seq = 0;
            if nfds > 0 {
                flags |= if side.is_some() { SIDE } else { 0 };
                seq = self.dword(D_FD_SEQ).fetch_add(1, Ordering::Relaxed);
                let mut all: Vec<BorrowedFd<'_>> = fds.to_vec();
                all.extend(side.as_ref().map(AsFd::as_fd));
                let tag = seq.to_le_bytes();
                match socket::try_send_with_fds(self.tx.as_fd(), &[IoSlice::new(&tag)], &all) {
                    Ok(8) => {}
                    Ok(n) => return Err(Fail::Io(io::Error::other(format!("sent {n} of 8 tag bytes")))),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The socket is full of descriptors nobody took yet:
                        // wait for room without holding the ring.
                        drop(held);
                        let until = block.sleep_until().ok_or(Fail::Timeout)?;
                        let mut set = [PollFd::writable(self.tx.as_fd())];
                        poll(&mut set, Some(until.saturating_duration_since(Instant::now()))).map_err(Fail::Io)?;
                        continue;
                    }
                    Err(e) => return Err(Fail::Io(e)),
                }
            }
            let mut h = [0u8; REC as usize];
            h[0..4].copy_from_slice(&len.to_le_bytes());
            h[4..8].copy_from_slice(&flags.to_le_bytes());
            h[8..16].copy_from_slice(&seq.to_le_bytes());
            self.write_at(head.pos, cap, &h).map_err(Fail::Io)?;
            if side.is_none() {
                self.write_at(head.pos + REC, cap, payload).map_err(Fail::Io)?;
            }
            self.dword(D_HEAD).store(head.advance(size).pack(), Ordering::Release);
            if self.kind == Kind::JoinableQueue {
                self.word(W_UNFINISHED).fetch_add(1, Ordering::SeqCst);
            }
            self.word(W_PUT_SEQ).fetch_add(1, Ordering::SeqCst);
            let sleepers = self.word(W_GETTERS).load(Ordering::SeqCst);
            drop(held);
            if sleepers > 0 {
                futex::wake(self.word(W_PUT_SEQ), 1);
            }
            return Ok(());
        }
    }

    /// Under the producer lock: where a record of `size` bytes goes (`head`)
    /// and the ring's size, or `None` when the queue is full (maxsize items,
    /// or the ring at its largest). Looks at the consumers' `tail` only when
    /// the last view of it shows no room, and grows the ring (taking the
    /// consumer lock too) when the bytes do not fit. `fresh`: read `tail`
    /// again whatever the last view says.
    fn room(&self, size: u64, fresh: bool) -> Result<Option<(End, u64)>, Fail> {
        let head = End::unpack(self.dword(D_HEAD).load(Ordering::Relaxed));
        let cap = self.cap().map_err(Fail::Io)?;
        let fits = |tail: End, cap: u64| {
            let (used, items) = span(tail, head);
            (self.maxsize == 0 || items < self.maxsize, used + size <= cap)
        };
        let mut tail = End::unpack(self.dword(D_TAIL_SEEN).load(Ordering::Relaxed));
        if fresh || fits(tail, cap) != (true, true) {
            tail = End::unpack(self.dword(D_TAIL).load(Ordering::Acquire));
            self.dword(D_TAIL_SEEN).store(tail.pack(), Ordering::Relaxed);
        }
        match fits(tail, cap) {
            (true, true) => Ok(Some((head, cap))),
            (false, _) => Ok(None),
            (true, false) => {
                // Grow under both locks (producer first: consumers never take
                // the producer lock, so this order cannot deadlock).
                let Some(_consumers) = self.lock(W_GET_LOCK, None) else {
                    return Ok(None);
                };
                let cap = self.cap().map_err(Fail::Io)?;
                let tail = End::unpack(self.dword(D_TAIL).load(Ordering::Acquire));
                self.dword(D_TAIL_SEEN).store(tail.pack(), Ordering::Relaxed);
                let (used, _) = span(tail, head);
                Ok(self
                    .grow(cap, tail.pos, used, size)
                    .map_err(Fail::Io)?
                    .map(|cap| (head, cap)))
            }
        }
    }

    /// Takes the oldest record: its payload into `buf` (resized), its
    /// descriptors returned. A side-path payload is read out of its memfd
    /// after the lock is released.
    pub(crate) fn get(&self, buf: &mut Vec<u8>, block: Block) -> Result<Taken, Fail> {
        loop {
            let Some(held) = self.lock(W_GET_LOCK, block.lock_deadline()) else {
                return Err(Fail::Timeout);
            };
            let taken = match self.take_one(buf)? {
                Some(t) => t,
                None => {
                    // Empty. Note the producers' sequence word, then look
                    // again, so a put that lands after the look wakes us.
                    let seen = self.word(W_PUT_SEQ).load(Ordering::SeqCst);
                    if self.has_items() {
                        continue;
                    }
                    if self.is_closed() {
                        if self.has_items() {
                            continue;
                        }
                        return Err(Fail::Closed);
                    }
                    self.wait_for(W_PUT_SEQ, W_GETTERS, seen, held, block, |r| {
                        r.count() > 0 || r.is_closed()
                    })?;
                    continue;
                }
            };
            let sleepers = self.word(W_PUTTERS).load(Ordering::SeqCst);
            drop(held);
            if sleepers > 0 {
                futex::wake(self.word(W_GET_SEQ), 1);
            }
            let Taken { mut fds, len, side } = taken?;
            if side {
                let memfd = fds
                    .pop()
                    .ok_or_else(|| Fail::Lost("a side-path item came without its memory".into()))?;
                let r = Region::from_fd(memfd).map_err(Fail::Io)?;
                if r.len() < len {
                    return Err(Fail::Lost(format!(
                        "a side-path item of {len} bytes came in {} bytes of memory",
                        r.len()
                    )));
                }
                buf.resize(len, 0);
                r.read(0, buf).map_err(Fail::Io)?;
            }
            return Ok(Taken { fds, len, side: false });
        }
    }

    /// Under the consumer lock: whether `head` shows items past `tail`.
    fn has_items(&self) -> bool {
        let tail = End::unpack(self.dword(D_TAIL).load(Ordering::Relaxed));
        let head = End::unpack(self.dword(D_HEAD).load(Ordering::Acquire));
        span(tail, head).1 > 0
    }

    /// Under the consumer lock: takes the oldest usable record, its inline
    /// payload into `buf`; `None` when the ring is empty. Records whose
    /// descriptors went with a killed consumer are skipped (that item is lost
    /// with the consumer that took it). The inner `Result` is the taken
    /// record's own failure (it is consumed either way).
    fn take_one(&self, buf: &mut Vec<u8>) -> Result<Option<Record>, Fail> {
        let mut stash = None;
        loop {
            let tail = End::unpack(self.dword(D_TAIL).load(Ordering::Relaxed));
            let mut head = End::unpack(self.dword(D_HEAD_SEEN).load(Ordering::Relaxed));
            if span(tail, head).1 == 0 {
                head = End::unpack(self.dword(D_HEAD).load(Ordering::Acquire));
                self.dword(D_HEAD_SEEN).store(head.pack(), Ordering::Relaxed);
                if span(tail, head).1 == 0 {
                    return Ok(None);
                }
            }
            let cap = self.cap().map_err(Fail::Io)?;
            let (used, _) = span(tail, head);
            let Some((len, flags, seq, size)) = self.record_at(tail.pos, cap, used) else {
                // Only a scribbled ring gets here: drop what it holds.
                let head = End::unpack(self.dword(D_HEAD).load(Ordering::Acquire));
                self.dword(D_TAIL).store(head.pack(), Ordering::Release);
                return Err(Fail::Lost(
                    "the queue's ring held a corrupt record; its contents were dropped".into(),
                ));
            };
            let nfds = (flags & !SIDE) as usize;
            let side = flags & SIDE != 0;
            let fds = if nfds > 0 {
                self.take_fds(seq, &mut stash)
            } else {
                Ok(Some(Vec::new()))
            };
            let copied = match &fds {
                Ok(Some(_)) if !side => {
                    buf.resize(len, 0);
                    self.read_at(tail.pos + REC, cap, buf)
                }
                _ => Ok(()),
            };
            self.dword(D_TAIL).store(tail.advance(size).pack(), Ordering::Release);
            self.word(W_GET_SEQ).fetch_add(1, Ordering::SeqCst);
            let fds = match fds {
                Ok(Some(fds)) => fds,
                Ok(None) => continue,
                Err(msg) => return Ok(Some(Err(Fail::Lost(msg)))),
            };
            let taken = match copied {
                Err(e) => Err(Fail::Io(e)),
                Ok(()) if fds.len() != nfds => Err(Fail::Lost(format!(
                    "an item announced {nfds} descriptors but {} came with it",
                    fds.len()
                ))),
                Ok(()) => Ok(Taken { fds, len, side }),
            };
            return Ok(Some(taken));
        }
    }

    /// Under the lock: the descriptors sent for the record with sequence
    /// number `seq`. Skips those of records never published (a producer
    /// killed after sending); `None` when a killed consumer had already taken
    /// them (any later descriptors received meanwhile go to `stash`); `Err`
    /// when the socket failed or the descriptors came truncated.
    fn take_fds(&self, seq: u64, stash: &mut Option<(u64, Vec<OwnedFd>)>) -> Result<Option<Vec<OwnedFd>>, String> {
        loop {
            let (got, fds) = match stash.take() {
                Some(s) => s,
                None => {
                    let mut tag = [0u8; 8];
                    let mut fds = Vec::new();
                    match socket::try_recv_with_fds(self.rx.as_fd(), &mut tag, &mut fds) {
                        Ok(r) if r.bytes == 8 && !r.fds_truncated => (u64::from_le_bytes(tag), fds),
                        Ok(r) if r.fds_truncated => return Err("an item's descriptors were truncated".into()),
                        Ok(r) => return Err(format!("a descriptor message of {} bytes (8 expected)", r.bytes)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                        Err(e) => return Err(format!("an item's descriptors could not be received: {e}")),
                    }
                }
            };
            match got.cmp(&seq) {
                std::cmp::Ordering::Less => continue, // Sent for a record never published.
                std::cmp::Ordering::Equal => return Ok(Some(fds)),
                std::cmp::Ordering::Greater => {
                    *stash = Some((got, fds));
                    return Ok(None);
                }
            }
        }
    }

    /// Sleeps on futex word `seq`, which read `seen` before the caller last
    /// found the queue empty or full, until it moves or `ready` holds,
    /// counted in `sleepers`; releases the lock first. Fails with `Timeout`
    /// when the caller may not wait any longer.
    fn wait_for(
        &self,
        seq: usize,
        sleepers: usize,
        seen: u32,
        held: Held<'_>,
        block: Block,
        ready: impl Fn(&Ring) -> bool,
    ) -> Result<(), Fail> {
        let Some(until) = block.sleep_until() else {
            return Err(Fail::Timeout);
        };
        drop(held);
        // Counted as a sleeper only after the spin, so that the other side's
        // puts or gets pay for a futex wake only when someone may really
        // sleep. The other side bumps `seq` and then reads the count (both
        // SeqCst): either it sees this sleeper and wakes it, or the bump
        // happened first and the futex wait returns at once, seeing `seq`
        // moved from `seen`.
        futex::spin_then_wait(
            YIELD_FOR,
            || ready(self),
            self.word(seq),
            || seen,
            self.word(sleepers),
            Deadline::at(until),
        );
        Ok(())
    }

    /// Closes the queue for every handle: puts fail from now on, gets drain
    /// what is left and then fail, and every sleeper wakes.
    pub(crate) fn close(&self) {
        // Under the producer lock, so no put lands after a get saw "closed
        // and empty".
        let held = self.lock(W_PUT_LOCK, None);
        self.word(W_STATE).fetch_or(CLOSED, Ordering::SeqCst);
        drop(held);
        self.word(W_PUT_SEQ).fetch_add(1, Ordering::SeqCst);
        self.word(W_GET_SEQ).fetch_add(1, Ordering::SeqCst);
        futex::wake_all(self.word(W_PUT_SEQ));
        futex::wake_all(self.word(W_GET_SEQ));
    }

    /// JoinableQueue: one task done.
    pub(crate) fn task_done(&self) -> Result<(), QueueError> {
        let w = self.word(W_UNFINISHED);
        let mut v = w.load(Ordering::SeqCst);
        loop {
            if v == 0 {
                return Err(QueueError::TaskDoneTooOften);
            }
            match w.compare_exchange_weak(v, v - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if v == 1 && self.word(W_JOINERS).load(Ordering::SeqCst) > 0 {
            futex::wake_all(w);
        }
        Ok(())
    }

    /// JoinableQueue: waits until every item put has been marked done; false
    /// when the wait's deadline passed first.
    pub(crate) fn join(&self, block: Block) -> bool {
        let deadline = match block {
            Block::No => Some(Instant::now()),
            Block::Until(d) => d,
        };
        let w = self.word(W_UNFINISHED);
        loop {
            self.word(W_JOINERS).fetch_add(1, Ordering::SeqCst);
            let v = w.load(Ordering::SeqCst);
            if v != 0 {
                let until = Deadline::from(deadline).sleep_until(NAP);
                futex::wait_until(w, v, Some(until));
            }
            self.word(W_JOINERS).fetch_sub(1, Ordering::SeqCst);
            if v == 0 || w.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
        }
    }

    pub(crate) fn unfinished(&self) -> usize {
        self.word(W_UNFINISHED).load(Ordering::SeqCst) as usize
    }

    /// Whether two handles are the same queue.
    pub(crate) fn same(&self, other: &Ring) -> bool {
        self.region.same_memory(&other.region)
    }

    /// `Serialize` for a handle: the region and both sockets travel as
    /// descriptors.
    pub(crate) fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&FdRef(self.region.as_fd()))?;
        t.serialize_element(&FdRef(self.tx.as_fd()))?;
        t.serialize_element(&FdRef(self.rx.as_fd()))?;
        t.end()
    }

    /// `Deserialize` for a handle that accepts rings of `kinds`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
        kinds: &[Kind],
        tag: u64,
        what: &str,
    ) -> Result<Ring, D::Error> {
        let wire = Wire::deserialize(d)?;
        Ring::open(wire, kinds, tag, what).map_err(mp_codec::handle::invalid)
    }
}

/// A record's size in the ring: header, then the payload padded to 8 (none
/// for a side-path record).
#[inline]
fn record_size(len: usize, side: bool) -> u64 {
    mp_sys::ring::record_size(REC as usize, if side { 0 } else { len })
}

#[derive(Deserialize)]
struct Wire {
    #[serde(with = "mp_codec::handle::fd")]
    region: OwnedFd,
    #[serde(with = "mp_codec::handle::fd")]
    tx: OwnedFd,
    #[serde(with = "mp_codec::handle::fd")]
    rx: OwnedFd,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Ring {
        Ring::create(Kind::Queue, 7, 0).unwrap()
    }

    fn get(r: &Ring) -> Result<Vec<u8>, Fail> {
        let mut buf = Vec::new();
        let t = r.get(&mut buf, Block::No)?;
        buf.truncate(t.len);
        Ok(buf)
    }

    #[test]
    fn records_come_out_in_order_across_the_wrap() {
        let r = ring();
        // Enough traffic to wrap the 64 KiB ring several times without growing.
        for i in 0..20_000u32 {
            let msg = vec![i as u8; (i % 13) as usize];
            r.put(&msg, &[], Block::No).unwrap();
            assert_eq!(get(&r).unwrap(), msg);
        }
        assert_eq!(r.dword(D_CAP).load(Ordering::Relaxed), INITIAL_CAP);
        assert!(matches!(get(&r), Err(Fail::Timeout)));
    }

    #[test]
    fn growth_keeps_wrapped_records() {
        let r = ring();
        // Put the tail near the end of the ring so the queued bytes wrap.
        let filler = vec![1u8; 40_000];
        r.put(&filler, &[], Block::No).unwrap();
        get(&r).unwrap();
        let msgs: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_le_bytes().repeat(300)).collect();
        for m in &msgs {
            r.put(m, &[], Block::No).unwrap();
        }
        assert!(r.dword(D_CAP).load(Ordering::Relaxed) > INITIAL_CAP);
        for m in &msgs {
            assert_eq!(&get(&r).unwrap(), m);
        }
    }

    #[test]
    fn positions_and_counts_wrap() {
        let r = ring();
        // Both ends just below the wrap of the position and of the count.
        let start = End {
            pos: POS_MASK + 1 - 40,
            count: COUNT_MASK - 1,
        };
        for w in [D_HEAD, D_TAIL, D_HEAD_SEEN, D_TAIL_SEEN] {
            r.dword(w).store(start.pack(), Ordering::Relaxed);
        }
        for i in 0..10u8 {
            r.put(&[i; 5], &[], Block::No).unwrap();
        }
        assert_eq!(r.count(), 10);
        for i in 0..10u8 {
            assert_eq!(get(&r).unwrap(), [i; 5]);
        }
        assert_eq!(r.count(), 0);
        assert!(End::unpack(r.dword(D_HEAD).load(Ordering::Relaxed)).pos < 1000);
    }

    #[test]
    fn a_dead_holders_locks_are_taken_over() {
        let r = ring();
        r.put(&[1], &[], Block::No).unwrap();
        // A process that held a lock and died (reaped: its pid is free).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        r.word(W_GET_LOCK).store(dead, Ordering::Relaxed);
        assert_eq!(get(&r).unwrap(), [1]);
        r.word(W_PUT_LOCK).store(dead, Ordering::Relaxed);
        r.put(&[2], &[], Block::No).unwrap();
        assert_eq!(get(&r).unwrap(), [2]);
    }

    #[test]
    fn descriptors_of_unpublished_records_are_skipped() {
        let r = ring();
        let (p, _q) = mp_sys::fd::pipe().unwrap();
        // A producer that sent descriptors (sequence 0) and died before
        // publishing its record.
        let seq = r.dword(D_FD_SEQ).fetch_add(1, Ordering::Relaxed);
        socket::send_with_fds(r.tx.as_fd(), &[IoSlice::new(&seq.to_le_bytes())], &[p.as_fd()]).unwrap();
        r.put(b"x", &[p.as_fd()], Block::No).unwrap();
        let mut buf = Vec::new();
        let t = r.get(&mut buf, Block::No).unwrap();
        assert_eq!(t.fds.len(), 1);
    }
}
