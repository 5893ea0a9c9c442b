//! A serde serializer that writes postcard's format straight into a slice.
//!
//! The bytes are exactly postcard's (a test below checks them against
//! postcard's own serializer), so [`decode`](crate::decode) reads them
//! with postcard's deserializer. What differs is how an integer is written:
//! postcard builds each varint in a small buffer on the stack and then
//! copies it out, which costs a store-to-load stall or a call to `memcpy`
//! per integer (measured: 5 of the 7 ns an element of a `Vec<u64>` took);
//! here the varint's bytes go into the output as they are computed, with
//! one bound check per integer instead of one per byte.

use serde::ser::{self, Serialize};

use postcard::Error;

type Result<T> = std::result::Result<T, Error>;

/// The output: a slice and how much of it is written. `FIXED`: integers
/// and lengths at their full width, not as varints (see
/// [`encode_into_fixed`](crate::encode_into_fixed)).
pub(crate) struct Writer<'a, const FIXED: bool = false> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a, const FIXED: bool> Writer<'a, FIXED> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Writer<'a, FIXED> {
        Writer { buf, at: 0 }
    }

    /// Bytes written.
    pub(crate) fn len(&self) -> usize {
        self.at
    }

    #[inline(always)]
    fn push(&mut self, b: u8) -> Result<()> {
        let slot = self.buf.get_mut(self.at).ok_or(Error::SerializeBufferFull)?;
        *slot = b;
        self.at += 1;
        Ok(())
    }

    #[inline(always)]
    fn extend(&mut self, b: &[u8]) -> Result<()> {
        let end = self.at.checked_add(b.len()).ok_or(Error::SerializeBufferFull)?;
        let dst = self.buf.get_mut(self.at..end).ok_or(Error::SerializeBufferFull)?;
        dst.copy_from_slice(b);
        self.at = end;
        Ok(())
    }

    /// A LEB128 varint, as postcard writes every unsigned integer wider
    /// than a byte.
    #[inline(always)]
    fn varint(&mut self, mut v: u64) -> Result<()> {
        if let Some(w) = self.buf.get_mut(self.at..).and_then(|r| r.first_chunk_mut::<10>()) {
            // Room for the longest varint: no bound checks per byte. (A
            // form without a branch per byte, all eight bytes at once, was
            // measured slower: a map's values come in runs of one length,
            // which the branches predict.)
            let mut i = 0;
            while v >= 0x80 && i < 9 {
                w[i] = (v as u8) | 0x80;
                v >>= 7;
                i += 1;
            }
            w[i] = v as u8;
            self.at += i + 1;
            return Ok(());
        }
        while v >= 0x80 {
            self.push((v as u8) | 0x80)?;
            v >>= 7;
        }
        self.push(v as u8)
    }

    fn varint_u128(&mut self, mut v: u128) -> Result<()> {
        while v >= 0x80 {
            self.push((v as u8) | 0x80)?;
            v >>= 7;
        }
        self.push(v as u8)
    }

    fn len_prefix(&mut self, len: usize) -> Result<()> {
        if FIXED {
            return self.extend(&(len as u64).to_le_bytes());
        }
        self.varint(len as u64)
    }

    /// An enum variant's index.
    #[inline(always)]
    fn index(&mut self, i: u32) -> Result<()> {
        if FIXED {
            return self.extend(&i.to_le_bytes());
        }
        self.varint(u64::from(i))
    }
}

impl<const FIXED: bool> ser::Serializer for &mut Writer<'_, FIXED> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<()> {
        self.push(u8::from(v))
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.push(v as u8)
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Result<()> {
        if FIXED {
            return self.extend(&v.to_le_bytes());
        }
        self.varint(u64::from(((v << 1) ^ (v >> 15)) as u16))
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Result<()> {
        if FIXED {
            return self.extend(&v.to_le_bytes());
        }
        self.varint(u64::from(((v << 1) ^ (v >> 31)) as u32))
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Result<()> {
        if FIXED {
            return self.extend(&v.to_le_bytes());
        }
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }

    fn serialize_i128(self, v: i128) -> Result<()> {
        if FIXED {
            return self.extend(&v.to_le_bytes());
        }
        self.varint_u128(((v << 1) ^ (v >> 127)) as u128)
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.push(v)
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Result<()> {
        if FIXED {
            return self.extend(&v.to_le_bytes());
        }
        self.varint(u64::from(v))
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Result<()> {
        if FIXED {
            return self.extend(&v.to_le_bytes());
        }
        self.varint(u64::from(v))
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Result<()> {
        if FIXED {
            return self.extend(&v.to_le_bytes());
        }
        self.varint(v)
    }

    fn serialize_u128(self, v: u128) -> Result<()> {
        if FIXED {
            return self.extend(&v.to_le_bytes());
        }
        self.varint_u128(v)
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.extend(&v.to_bits().to_le_bytes())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.extend(&v.to_bits().to_le_bytes())
    }

    fn serialize_char(self, v: char) -> Result<()> {
        let mut buf = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut buf))
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<()> {
        self.len_prefix(v.len())?;
        self.extend(v.as_bytes())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.len_prefix(v.len())?;
        self.extend(v)
    }

    #[inline]
    fn serialize_none(self) -> Result<()> {
        self.push(0)
    }

    #[inline]
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<()> {
        self.push(1)?;
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(self, _name: &'static str, index: u32, _variant: &'static str) -> Result<()> {
        self.index(index)
    }

    #[inline]
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _name: &'static str, value: &T) -> Result<()> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.index(index)?;
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        self.len_prefix(len.ok_or(Error::SerializeSeqLengthUnknown)?)?;
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.index(index)?;
        Ok(self)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        self.len_prefix(len.ok_or(Error::SerializeSeqLengthUnknown)?)?;
        Ok(self)
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.index(index)?;
        Ok(self)
    }

    fn collect_str<T: ?Sized + std::fmt::Display>(self, value: &T) -> Result<()> {
        use std::fmt::Write;
        /// Counts the bytes of the text, then writes them.
        struct Text<'w, 'a, const F: bool> {
            out: Option<&'w mut Writer<'a, F>>,
            len: usize,
            full: bool,
        }
        impl<const F: bool> Write for Text<'_, '_, F> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.len += s.len();
                match &mut self.out {
                    Some(w) => w.extend(s.as_bytes()).map_err(|_| {
                        self.full = true;
                        std::fmt::Error
                    }),
                    None => Ok(()),
                }
            }
        }
        let mut count = Text::<FIXED> {
            out: None,
            len: 0,
            full: false,
        };
        write!(count, "{value}").map_err(|_| Error::CollectStrError)?;
        self.len_prefix(count.len)?;
        let mut text = Text {
            out: Some(self),
            len: 0,
            full: false,
        };
        // A full buffer says so (postcard's own serializer reports it as a
        // failed `Display`), so that the caller measures and tries again.
        write!(text, "{value}").map_err(|_| {
            if text.full {
                Error::SerializeBufferFull
            } else {
                Error::CollectStrError
            }
        })
    }
}

/// The compound forms of postcard have no framing of their own: their
/// elements follow each other.
macro_rules! compound {
    ($($trait:ident :: $method:ident),*) => {$(
        impl<const FIXED: bool> ser::$trait for &mut Writer<'_, FIXED> {
            type Ok = ();
            type Error = Error;

            #[inline]
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Result<()> {
                Ok(())
            }
        }
    )*};
}

compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl<const FIXED: bool> ser::SerializeMap for &mut Writer<'_, FIXED> {
    type Ok = ();
    type Error = Error;

    #[inline]
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<()> {
        key.serialize(&mut **self)
    }

    #[inline]
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl<const FIXED: bool> ser::SerializeStruct for &mut Writer<'_, FIXED> {
    type Ok = ();
    type Error = Error;

    #[inline]
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _key: &'static str, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl<const FIXED: bool> ser::SerializeStructVariant for &mut Writer<'_, FIXED> {
    type Ok = ();
    type Error = Error;

    #[inline]
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _key: &'static str, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<()> {
        Ok(())
    }
}

/// Writes `value` into `buf`; the bytes written.
pub(crate) fn to_slice<T: ?Sized + Serialize>(value: &T, buf: &mut [u8]) -> Result<usize> {
    to_slice_as::<false, T>(value, buf)
}

/// [`to_slice`], with integers at their full width if `FIXED`.
pub(crate) fn to_slice_as<const FIXED: bool, T: ?Sized + Serialize>(value: &T, buf: &mut [u8]) -> Result<usize> {
    let mut w = Writer::<FIXED>::new(buf);
    value.serialize(&mut w)?;
    Ok(w.len())
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::to_slice;

    use crate::fixtures::All;

    /// Checks that `value` encodes to postcard's bytes, and that a buffer
    /// one byte short is reported as full.
    fn same<T: Serialize>(value: &T) {
        let want = postcard::to_allocvec(value).unwrap();
        let mut buf = vec![0u8; want.len() + 16];
        let n = to_slice(value, &mut buf).unwrap();
        assert_eq!(&buf[..n], &want[..]);
        if !want.is_empty() {
            let mut short = vec![0u8; want.len() - 1];
            assert_eq!(to_slice(value, &mut short), Err(postcard::Error::SerializeBufferFull));
        }
    }

    #[test]
    fn the_bytes_are_postcards() {
        for v in [
            0u64,
            1,
            127,
            128,
            255,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            same(&v);
            same(&(v as i64));
            same(&(v as i64).wrapping_neg());
            same(&(v as u32));
            same(&(v as i32));
            same(&(v as u16));
            same(&(v as i16));
            same(&(v as u128 * 1_000_003));
            same(&(-(v as i128) * 7));
        }
        same(&(0..20_000u64).map(|x| x * x * 31).collect::<Vec<_>>());
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let v = rng.u64(..) >> rng.u32(0..64);
            same(&v);
            same(&(v as i64));
            same(&(v as u32));
            same(&(v as i16));
        }
        // A varint ending right at the end of the buffer, for each length.
        for bits in 0..64 {
            let v = (1u64 << bits) | 1;
            let want = postcard::to_allocvec(&v).unwrap();
            let mut buf = vec![0u8; want.len()];
            assert_eq!(to_slice(&v, &mut buf), Ok(want.len()));
            assert_eq!(buf, want);
        }
        same(&(0..1000i64).map(|x| -x * 1_000_003).collect::<Vec<_>>());
        same(&All::sample("x".repeat(200)));
        same(&format_args!("{}-{}", 12, "ab").to_string());
    }

    #[test]
    fn collected_text_is_postcards() {
        struct Shown(u32);
        impl Serialize for Shown {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("#{}", self.0))
            }
        }
        same(&Shown(12345));
        same(&vec![Shown(1), Shown(22)]);
    }
}
