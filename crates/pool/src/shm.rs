//! Large payloads through shared memory: each worker's region holds, after
//! its progress page, two rings of [`RING`] bytes, one for the arguments the
//! pool hands it and one for the replies it sends back. The socket then
//! carries only the frame's header, which says where in the ring the
//! payload lies (`spos`, `slen`), and the reader decodes it where it is:
//! no copy into and out of the kernel, no copy out of a receive buffer.
//!
//! Each ring has one writer and one reader, and its space is released in
//! the order it was taken:
//! - The arguments' ring is written by the pool thread and read by the
//!   worker. The worker is done with a job's arguments once it replies to
//!   that job, and it replies in order, so the pool releases a job's bytes
//!   when its reply arrives; it needs no shared word for that.
//! - The replies' ring is written by the worker and read by the pool
//!   thread, which releases each reply's bytes once it has decoded or
//!   copied them, by storing the ring's new tail in the region's
//!   [`TAIL_WORD`], which the worker reads before it writes.
//!
//! A payload never wraps around the ring's end: it starts at the ring's
//! beginning instead. A ring that is empty starts over at its beginning, so
//! a pool mapping small chunks touches only the first pages of its rings. A
//! payload that does not fit (larger than the ring, or the ring is full of
//! unreleased payloads) goes through the socket as before: nobody waits for
//! ring space.
//!
//! The reader checks every announced span: inside the ring, after what it
//! has released (replies). A span that is not is a bad frame; bytes that do
//! not decode are a decode error, as they are from the socket.

use std::ops::Range;

/// Bytes before the rings: the worker's progress page.
pub(crate) const HEADER: usize = 4096;

/// Bytes in each ring.
pub(crate) const RING: usize = 4 << 20;

/// The whole region of one worker.
pub(crate) const REGION_LEN: usize = HEADER + 2 * RING;

/// Where the arguments' ring starts in the region.
pub(crate) const ARGS_AT: usize = HEADER;

/// Where the replies' ring starts in the region.
pub(crate) const REPLIES_AT: usize = HEADER + RING;

/// The `u64` word (index into the region's words) where the pool publishes
/// the replies' ring's tail: the position up to which it has released
/// replies. Word 0 is the progress word.
pub(crate) const TAIL_WORD: usize = 8;

/// Payloads at least this large go through a ring (smaller ones cost less
/// copied beside their header on the socket).
pub(crate) const MIN: usize = 4096;

/// Payloads start on this boundary.
const ALIGN: u64 = 64;

/// Where a payload of `len` bytes goes in a ring of `cap` bytes whose next
/// free position is `head` and whose oldest unreleased byte is at `tail`
/// (positions count bytes since the ring was made, never wrapping; the
/// byte at position `p` is at offset `p % cap`). `None` if it does not fit
/// now.
pub(crate) fn place(head: u64, tail: u64, len: usize, cap: usize) -> Option<u64> {
    let (len, cap) = (len as u64, cap as u64);
    if len == 0 || len > cap || tail > head || head - tail > cap {
        return None;
    }
    // The start of the ring's next turn after `p`.
    let next_turn = |p: u64| p.div_ceil(cap).checked_mul(cap);
    if head == tail {
        // Empty: start over at the ring's beginning.
        return next_turn(head);
    }
    let aligned = head.div_ceil(ALIGN).checked_mul(ALIGN)?;
    let start = if aligned % cap + len > cap {
        next_turn(aligned)?
    } else {
        aligned
    };
    (start.checked_add(len)? - tail <= cap).then_some(start)
}

/// The writer's side of a ring: where the next payload goes.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// The next free position.
    head: u64,
    /// Where the writer last started over at the ring's beginning, the
    /// ring being empty: every byte before it is free, whatever the reader
    /// has said so far.
    floor: u64,
}

impl Writer {
    /// Where a payload of `len` bytes goes in a ring of `cap` bytes whose
    /// reader has released every byte before `released`; `None` if it does
    /// not fit now. Nothing is taken until [`commit`](Writer::commit).
    pub(crate) fn place(&self, released: u64, len: usize, cap: usize) -> Option<u64> {
        place(self.head, released.max(self.floor).min(self.head), len, cap)
    }

    /// The next position, and the bytes free from there on without
    /// crossing the ring's end or reaching unreleased bytes: for a payload
    /// written before its length is known. Any length up to that fits
    /// there ([`place`](Writer::place) would give the same position).
    pub(crate) fn room(&self, released: u64, cap: usize) -> Option<(u64, usize)> {
        let tail = released.max(self.floor).min(self.head);
        let cap = cap as u64;
        if tail == self.head {
            return Some((self.head.div_ceil(cap).checked_mul(cap)?, cap as usize));
        }
        let aligned = self.head.div_ceil(ALIGN).checked_mul(ALIGN)?;
        let to_end = cap - aligned % cap;
        let to_tail = (tail + cap).checked_sub(aligned)?;
        let room = to_end.min(to_tail);
        (room > 0).then_some((aligned, room as usize))
    }

    /// Takes the `len` bytes at `pos` that [`place`](Writer::place) gave
    /// (the payload is written there).
    pub(crate) fn commit(&mut self, released: u64, pos: u64, len: usize) {
        if released.max(self.floor) >= self.head {
            self.floor = pos;
        }
        self.head = pos + len as u64;
    }
}

/// The offsets in the ring of a span a peer announced: `len` bytes from
/// position `pos`, in a ring of `cap` bytes whose reader has released up
/// to `released`. Bad input from the peer is an error.
pub(crate) fn span(pos: u64, len: usize, released: u64, cap: usize) -> Result<Range<usize>, String> {
    // The writer puts a payload right after the last one, or skips to the
    // ring's next beginning: less than a ring ahead of what the reader,
    // which releases each payload as it reads it, has released.
    let at = (pos % cap as u64) as usize;
    let fits = len <= cap && at + len <= cap;
    if !fits || pos < released || pos - released >= cap as u64 {
        return Err(format!(
            "a payload of {len} bytes at ring position {pos} (released up to {released}) is not in a ring of {cap} bytes"
        ));
    }
    Ok(at..at + len)
}

/// The offsets of a span, checked only to lie inside the ring (the
/// worker's view of its arguments: the pool is the only writer).
pub(crate) fn span_in(pos: u64, len: usize, cap: usize) -> Result<Range<usize>, String> {
    let at = (pos % cap as u64) as usize;
    if len > cap || at + len > cap {
        return Err(format!(
            "a payload of {len} bytes at ring position {pos} does not fit in a ring of {cap} bytes"
        ));
    }
    Ok(at..at + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_fill_the_ring_in_order_and_never_wrap() {
        let cap = 1024;
        // Empty: at the start; then each after the last, aligned.
        assert_eq!(place(0, 0, 300, cap), Some(0));
        assert_eq!(place(300, 0, 300, cap), Some(320));
        assert_eq!(place(620, 0, 300, cap), Some(640));
        // It would cross the end: it starts over at the beginning (position
        // 1024), once the bytes there are released.
        assert_eq!(place(940, 0, 300, cap), None);
        assert_eq!(place(940, 320, 300, cap), Some(1024));
        // Full: nothing fits until released.
        assert_eq!(place(1324, 320, 300, cap), None);
        assert_eq!(place(1324, 640, 300, cap), Some(1344));
        // Empty again: back to the beginning.
        assert_eq!(place(1644, 1644, 10, cap), Some(2048));
        assert_eq!(place(2048, 2048, 1024, cap), Some(2048));
        // Too large, empty, or nonsense positions.
        assert_eq!(place(0, 0, 1025, cap), None);
        assert_eq!(place(0, 0, 0, cap), None);
        assert_eq!(place(5, 9, 10, cap), None);
        assert_eq!(place(5000, 1000, 10, cap), None);
        assert_eq!(place(u64::MAX - 5, u64::MAX - 5, 10, cap), None);
    }

    #[test]
    fn a_writer_starts_over_when_its_ring_is_empty() {
        let cap = 1024;
        let mut w = Writer::default();
        let mut released = 0;
        for round in 0..10u64 {
            // Two payloads in flight, then both released: each round starts
            // at the beginning of the ring's next turn.
            let a = w.place(released, 500, cap).unwrap();
            w.commit(released, a, 500);
            assert_eq!(a % cap as u64, 0, "round {round}");
            let b = w.place(released, 400, cap).unwrap();
            w.commit(released, b, 400);
            assert_eq!(b, a + 512);
            assert_eq!(w.place(released, 100, cap), None, "full");
            assert!(span(a, 500, released, cap).is_ok());
            released = a + 500;
            assert!(span(b, 400, released, cap).is_ok());
            released = b + 400;
        }
    }

    #[test]
    fn room_is_what_place_would_give() {
        let cap = 1024;
        let mut w = Writer::default();
        let mut released = 0;
        let mut taken = std::collections::VecDeque::new();
        // Payloads of assorted lengths, released two behind: wherever
        // `room` says a payload of up to its length fits, `place` agrees.
        for k in 0..200u64 {
            let len = (k * 97 % 500 + 1) as usize;
            if let Some((pos, room)) = w.room(released, cap) {
                for l in [1, len.min(room), room] {
                    assert_eq!(w.place(released, l, cap), Some(pos), "k {k}: {l} of {room}");
                }
                assert!(room == cap || w.place(released, room + 1, cap) != Some(pos));
            }
            if let Some(pos) = w.place(released, len, cap) {
                assert!(span(pos, len, released, cap).is_ok());
                w.commit(released, pos, len);
                taken.push_back(pos + len as u64);
            }
            if taken.len() > 2 {
                released = taken.pop_front().unwrap();
            }
        }
    }

    #[test]
    fn announced_spans_are_checked() {
        let cap = 1024;
        assert_eq!(span(1024, 300, 940, cap), Ok(0..300));
        assert_eq!(span(320, 300, 300, cap), Ok(320..620));
        assert_eq!(span(2048, 10, 1644, cap), Ok(0..10));
        // Across the end, past the end, before what was released, far ahead.
        assert!(span(900, 200, 0, cap).is_err());
        assert!(span(0, 1025, 0, cap).is_err());
        assert!(span(100, 10, 200, cap).is_err());
        assert!(span(5000, 10, 200, cap).is_err());
        assert!(span(u64::MAX, usize::MAX, 0, cap).is_err());
        assert_eq!(span_in(1344, 80, cap), Ok(320..400));
        assert!(span_in(1020, 20, cap).is_err());
        assert!(span_in(u64::MAX, usize::MAX, cap).is_err());
    }
}
