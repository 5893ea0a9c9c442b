//! The header every shared region of the workspace starts with.
//!
//! A region (or a named segment) arrives from another process as a bare
//! descriptor or name: nothing but its first bytes says what it holds. Each
//! crate that lays out shared memory (the synchronization primitives, shared
//! values, `ShareableList`, the queue ring, the pipe rings) starts it with the
//! same 16 bytes, little-endian:
//!
//! | bytes | field | meaning |
//! |-------|-------|---------|
//! | 0-3   | magic  | four ASCII bytes naming the format and its version (`mpQ1`) |
//! | 4-7   | kind   | which object of that format (a `Lock`, a `JoinableQueue`) |
//! | 8-15  | layout | what the rest is shaped by: an element size and alignment, a type tag, ring sizes |
//!
//! [`Header::write_to`] stores kind and layout first and publishes the magic
//! word last (release), so a reader that sees the magic word with
//! [`Header::read_from`] (acquire) sees the rest. Opening checks the length
//! before reading anything and turns a foreign, truncated or other-version
//! region into a [`HeaderError`], never a panic: the caller then compares
//! kind and layout with what it expected and says which differs.
//!
//! ```
//! use mp_sys::header::{Header, HeaderError};
//! use mp_sys::region::Region;
//!
//! let region = Region::create("doc-header", 64)?;
//! Header::new(*b"mpD1", 2, 8).write_to(&region)?;
//! let h = Header::read_from(&region, *b"mpD1", 64)?;
//! assert_eq!((h.kind, h.layout), (2, 8));
//! h.expect_layout(8)?;
//! assert!(matches!(h.expect_layout(4), Err(HeaderError::Layout { .. })));
//! // Another format's region, or one too short, is an error.
//! assert!(matches!(Header::read_from(&region, *b"mpE1", 64), Err(HeaderError::Foreign { .. })));
//! assert!(matches!(Header::read_from(&region, *b"mpD1", 1 << 20), Err(HeaderError::Short { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::sync::atomic::Ordering;

use crate::region::Region;

/// The header's size in bytes; a format's own words start at or after it.
pub const LEN: usize = 16;

/// A shared region's first [`LEN`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Names the format and its version; changes whenever the layout does.
    pub magic: [u8; 4],
    /// Which object of the format the region holds (the format's own numbering).
    pub kind: u32,
    /// What the rest of the region is shaped by (the format's own encoding).
    pub layout: u64,
}

/// Why a region's header was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// The region is shorter than its format needs: truncated, or not one of ours.
    Short {
        /// The region's length.
        len: usize,
        /// What the format needs at least.
        need: usize,
    },
    /// The magic word is not the expected one: another format, another
    /// version of this one, or memory never initialised.
    Foreign {
        /// The magic word the format uses.
        expected: [u8; 4],
        /// The bytes found there.
        found: [u8; 4],
    },
    /// The layout word differs from the one this build uses.
    Layout {
        /// This build's layout word.
        expected: u64,
        /// The region's.
        found: u64,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short { len, need } => write!(
                f,
                "the shared region is {len} bytes, shorter than the {need} its format needs: it is truncated or holds something else"
            ),
            HeaderError::Foreign { expected, found } => write!(
                f,
                "the shared region starts with {}, not {}: it holds something else, or was made by another version",
                show(found),
                show(expected)
            ),
            HeaderError::Layout { expected, found } => write!(
                f,
                "the shared region's layout word is {found:#x}, not {expected:#x}: it was made by a build with another layout"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

impl From<HeaderError> for io::Error {
    fn from(e: HeaderError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// A magic word for a message: its text when printable, else its bytes.
fn show(m: &[u8; 4]) -> String {
    if m.iter().all(|b| b.is_ascii_graphic()) {
        format!("{:?}", String::from_utf8_lossy(m))
    } else {
        format!("{m:02x?}")
    }
}

impl Header {
    /// A header to write.
    pub const fn new(magic: [u8; 4], kind: u32, layout: u64) -> Header {
        Header { magic, kind, layout }
    }

    /// Writes the header into `region`'s first [`LEN`] bytes: kind and layout,
    /// then the magic word with release ordering, so a reader that sees the
    /// magic word sees everything written before this call.
    ///
    /// Fails if the region is shorter than the header.
    pub fn write_to(&self, region: &Region) -> io::Result<()> {
        region.atomic_u32(4)?.store(self.kind, Ordering::Relaxed);
        region.atomic_u64(8)?.store(self.layout, Ordering::Relaxed);
        region
            .atomic_u32(0)?
            .store(u32::from_le_bytes(self.magic), Ordering::Release);
        Ok(())
    }

    /// Reads the header of a region that should carry `magic` and be at least
    /// `need` bytes long (at least [`LEN`] is always required).
    pub fn read_from(region: &Region, magic: [u8; 4], need: usize) -> Result<Header, HeaderError> {
        let need = need.max(LEN);
        if region.len() < need {
            return Err(HeaderError::Short {
                len: region.len(),
                need,
            });
        }
        let words = region.atomics_u32();
        let found = words[0].load(Ordering::Acquire).to_le_bytes();
        if found != magic {
            return Err(HeaderError::Foreign { expected: magic, found });
        }
        Ok(Header {
            magic,
            kind: words[1].load(Ordering::Relaxed),
            layout: region.atomics_u64()[1].load(Ordering::Relaxed),
        })
    }

    /// The header as bytes, for memory written through a byte slice (a named
    /// segment written before it is shared).
    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&self.magic);
        b[4..8].copy_from_slice(&self.kind.to_le_bytes());
        b[8..16].copy_from_slice(&self.layout.to_le_bytes());
        b
    }

    /// [`read_from`](Header::read_from) for memory read as bytes.
    ///
    /// ```
    /// use mp_sys::header::Header;
    /// let h = Header::new(*b"mpL1", 1, 42);
    /// let mut bytes = h.to_bytes().to_vec();
    /// assert_eq!(Header::from_bytes(&bytes, *b"mpL1", 16), Ok(h));
    /// bytes.truncate(10);
    /// assert!(Header::from_bytes(&bytes, *b"mpL1", 16).is_err());
    /// ```
    pub fn from_bytes(bytes: &[u8], magic: [u8; 4], need: usize) -> Result<Header, HeaderError> {
        let need = need.max(LEN);
        let Some(b) = bytes.get(..LEN).filter(|_| bytes.len() >= need) else {
            return Err(HeaderError::Short { len: bytes.len(), need });
        };
        let found = [b[0], b[1], b[2], b[3]];
        if found != magic {
            return Err(HeaderError::Foreign { expected: magic, found });
        }
        let mut kind = [0u8; 4];
        kind.copy_from_slice(&b[4..8]);
        let mut layout = [0u8; 8];
        layout.copy_from_slice(&b[8..16]);
        Ok(Header {
            magic,
            kind: u32::from_le_bytes(kind),
            layout: u64::from_le_bytes(layout),
        })
    }

    /// Checks the layout word against this build's.
    pub fn expect_layout(&self, expected: u64) -> Result<(), HeaderError> {
        if self.layout == expected {
            Ok(())
        } else {
            Err(HeaderError::Layout {
                expected,
                found: self.layout,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zeroed_region_is_foreign_and_a_short_one_is_short() {
        let r = Region::create("hdr-test", 32).unwrap();
        let e = Header::read_from(&r, *b"mpT1", 32).unwrap_err();
        assert_eq!(
            e,
            HeaderError::Foreign {
                expected: *b"mpT1",
                found: [0; 4]
            }
        );
        assert!(e.to_string().contains("holds something else"), "{e}");
        let e = Header::from_bytes(&[0u8; 8], *b"mpT1", 0).unwrap_err();
        assert_eq!(e, HeaderError::Short { len: 8, need: LEN });
    }

    #[test]
    fn what_write_to_stores_read_from_and_from_bytes_read() {
        let r = Region::create("hdr-test", 64).unwrap();
        let h = Header::new(*b"mpT1", 7, u64::MAX - 3);
        h.write_to(&r).unwrap();
        assert_eq!(Header::read_from(&r, *b"mpT1", 64), Ok(h));
        let mut bytes = [0u8; LEN];
        r.read(0, &mut bytes).unwrap();
        assert_eq!(bytes, h.to_bytes());
        assert_eq!(Header::from_bytes(&bytes, *b"mpT1", 0), Ok(h));
        assert!(Header::read_from(&r, *b"mpT2", 0).is_err());
    }
}
