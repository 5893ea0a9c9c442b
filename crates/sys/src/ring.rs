//! Byte-ring helpers shared by the queue ring and the pipe rings: copies in
//! and out of a ring laid out in a [`Region`] that wrap at its end, and the
//! size of a record (a header, then the payload padded to 8 bytes, so every
//! record header is 8-byte aligned).
//!
//! A ring of `cap` bytes (a power of two) starts at byte `base` of the
//! region; byte position `pos` (counting up forever) lives at
//! `base + (pos & (cap - 1))`.
//!
//! ```
//! use mp_sys::region::Region;
//! use mp_sys::ring;
//!
//! let r = Region::create("doc-ring", 64)?;
//! // A ring of 16 bytes at byte 32: a write at position 12 wraps.
//! ring::write_wrapped(&r, 32, 16, 12, b"abcdefgh")?;
//! let mut back = [0u8; 8];
//! ring::read_wrapped(&r, 32, 16, 12 + 16, &mut back)?; // one lap later
//! assert_eq!(&back, b"abcdefgh");
//! assert_eq!(ring::record_size(16, 5), 24);
//! assert!(ring::write_wrapped(&r, 32, 16, 0, &[0; 17]).is_err()); // larger than the ring
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;

use crate::region::Region;

/// A record's size in a ring: `header` bytes, then `payload` bytes padded to
/// a multiple of 8.
#[inline]
pub const fn record_size(header: usize, payload: usize) -> u64 {
    (header + payload.next_multiple_of(8)) as u64
}

/// Where `pos` lies in a ring of `cap` bytes, and how many of `len` bytes
/// fit before its end.
#[inline]
fn split(cap: usize, pos: u64, len: usize) -> io::Result<(usize, usize)> {
    if !cap.is_power_of_two() || len > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a copy of {len} bytes in a ring of {cap}: the ring's size must be a power of two and at least the copy's"
            ),
        ));
    }
    let off = (pos & (cap as u64 - 1)) as usize;
    Ok((off, len.min(cap - off)))
}

/// Copies `data` into the ring of `cap` bytes at `base` of `region`, at byte
/// position `pos`, wrapping at the ring's end.
#[inline]
pub fn write_wrapped(region: &Region, base: usize, cap: usize, pos: u64, data: &[u8]) -> io::Result<()> {
    let (off, first) = split(cap, pos, data.len())?;
    let (a, b) = data.split_at(first);
    region.write(base + off, a)?;
    if !b.is_empty() {
        region.write(base, b)?;
    }
    Ok(())
}

/// Copies `buf.len()` bytes out of the ring of `cap` bytes at `base` of
/// `region`, from byte position `pos`, wrapping at the ring's end.
#[inline]
pub fn read_wrapped(region: &Region, base: usize, cap: usize, pos: u64, buf: &mut [u8]) -> io::Result<()> {
    let (off, first) = split(cap, pos, buf.len())?;
    let (a, b) = buf.split_at_mut(first);
    region.read(base + off, a)?;
    if !b.is_empty() {
        region.read(base, b)?;
    }
    Ok(())
}
