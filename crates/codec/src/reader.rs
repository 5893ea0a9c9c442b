//! A serde deserializer for postcard's format, reading straight from a
//! slice: the counterpart of [`writer`](crate::writer).
//!
//! It accepts and refuses exactly what postcard's own deserializer does,
//! with the same errors (tests below compare the two on good and on broken
//! input). What differs is the varint: postcard reads it a byte at a time,
//! each byte checked against the end of the input, in a function of its own
//! per integer; here a varint with its longest form's bytes still ahead is
//! read without those checks, inline.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use postcard::Error;

type Result<T> = std::result::Result<T, Error>;

/// The input not yet read. `FIXED`: integers and lengths at their full
/// width, as [`Writer`](crate::writer::Writer) writes them then.
pub(crate) struct Reader<'de, const FIXED: bool = false> {
    input: &'de [u8],
}

impl<'de, const FIXED: bool> Reader<'de, FIXED> {
    pub(crate) fn new(input: &'de [u8]) -> Reader<'de, FIXED> {
        Reader { input }
    }

    /// What is left after the value.
    pub(crate) fn rest(&self) -> &'de [u8] {
        self.input
    }

    #[inline(always)]
    fn pop(&mut self) -> Result<u8> {
        let (&b, rest) = self.input.split_first().ok_or(Error::DeserializeUnexpectedEnd)?;
        self.input = rest;
        Ok(b)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.input.len() {
            return Err(Error::DeserializeUnexpectedEnd);
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    /// A varint of at most `MAX` bytes whose last byte is at most `LAST`
    /// (the bits its type has left), as postcard checks them.
    #[inline(always)]
    fn varint<const MAX: usize, const LAST: u8>(&mut self) -> Result<u64> {
        if let Some(w) = self.input.first_chunk::<MAX>() {
            // Its longest form fits in what is left: no end check per byte.
            // (Reading eight bytes at once and gathering their 7-bit groups
            // without a branch per byte was measured slower: a map's values
            // come in runs of one length, which the branches predict.)
            let mut out = 0u64;
            for (i, &b) in w.iter().enumerate() {
                out |= u64::from(b & 0x7F) << (7 * i);
                if b & 0x80 == 0 {
                    if i == MAX - 1 && b > LAST {
                        return Err(Error::DeserializeBadVarint);
                    }
                    self.input = &self.input[i + 1..];
                    return Ok(out);
                }
            }
            return Err(Error::DeserializeBadVarint);
        }
        let mut out = 0u64;
        for i in 0..MAX {
            let b = self.pop()?;
            out |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i == MAX - 1 && b > LAST {
                    return Err(Error::DeserializeBadVarint);
                }
                return Ok(out);
            }
        }
        Err(Error::DeserializeBadVarint)
    }

    /// `N` bytes, for a fixed-width integer.
    #[inline(always)]
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (&b, rest) = self
            .input
            .split_first_chunk::<N>()
            .ok_or(Error::DeserializeUnexpectedEnd)?;
        self.input = rest;
        Ok(b)
    }

    #[inline(always)]
    fn u16(&mut self) -> Result<u16> {
        if FIXED {
            return self.fixed().map(u16::from_le_bytes);
        }
        self.varint::<3, 0x03>().map(|v| v as u16)
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<u32> {
        if FIXED {
            return self.fixed().map(u32::from_le_bytes);
        }
        self.varint::<5, 0x0F>().map(|v| v as u32)
    }

    #[inline(always)]
    fn u64(&mut self) -> Result<u64> {
        if FIXED {
            return self.fixed().map(u64::from_le_bytes);
        }
        self.varint::<10, 0x01>()
    }

    #[inline(always)]
    fn usize(&mut self) -> Result<usize> {
        self.u64().map(|v| v as usize)
    }

    fn u128(&mut self) -> Result<u128> {
        if FIXED {
            return self.fixed().map(u128::from_le_bytes);
        }
        const MAX: usize = 19;
        let mut out = 0u128;
        for i in 0..MAX {
            let b = self.pop()?;
            out |= u128::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i == MAX - 1 && b > 0x03 {
                    return Err(Error::DeserializeBadVarint);
                }
                return Ok(out);
            }
        }
        Err(Error::DeserializeBadVarint)
    }
}

/// `len` elements in a row (a sequence, tuple or struct).
struct Seq<'a, 'de, const FIXED: bool> {
    de: &'a mut Reader<'de, FIXED>,
    len: usize,
}

impl<'de, const FIXED: bool> de::SeqAccess<'de> for Seq<'_, 'de, FIXED> {
    type Error = Error;

    #[inline(always)]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        // As postcard's: no hint larger than the bytes left (each element
        // takes at least one), so a corrupt length allocates nothing big.
        (self.de.input.len() >= self.len).then_some(self.len)
    }
}

/// `len` key-value pairs.
struct Map<'a, 'de, const FIXED: bool> {
    de: &'a mut Reader<'de, FIXED>,
    len: usize,
}

impl<'de, const FIXED: bool> de::MapAccess<'de> for Map<'_, 'de, FIXED> {
    type Error = Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len)
    }
}

fn unzig(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

impl<'de, const FIXED: bool> de::Deserializer<'de> for &mut Reader<'de, FIXED> {
    type Error = Error;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error::WontImplement)
    }

    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.pop()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            _ => Err(Error::DeserializeBadBool),
        }
    }

    #[inline]
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(self.pop()? as i8)
    }

    #[inline]
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.u16()?;
        if FIXED {
            return visitor.visit_i16(n as i16);
        }
        visitor.visit_i16(((n >> 1) as i16) ^ -((n & 1) as i16))
    }

    #[inline(always)]
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.u32()?;
        if FIXED {
            return visitor.visit_i32(n as i32);
        }
        visitor.visit_i32(((n >> 1) as i32) ^ -((n & 1) as i32))
    }

    #[inline(always)]
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.u64()?;
        if FIXED {
            return visitor.visit_i64(n as i64);
        }
        visitor.visit_i64(unzig(n))
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.u128()?;
        if FIXED {
            return visitor.visit_i128(n as i128);
        }
        visitor.visit_i128(((n >> 1) as i128) ^ -((n & 1) as i128))
    }

    #[inline(always)]
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.pop()?)
    }

    #[inline(always)]
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u16(self.u16()?)
    }

    #[inline(always)]
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u32(self.u32()?)
    }

    #[inline(always)]
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u64(self.u64()?)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u128(self.u128()?)
    }

    #[inline]
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let b = self.take(4)?;
        visitor.visit_f32(f32::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    }

    #[inline]
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        visitor.visit_f64(f64::from_bits(u64::from_le_bytes(w)))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.usize()?;
        if n > 4 {
            return Err(Error::DeserializeBadChar);
        }
        let c = std::str::from_utf8(self.take(n)?)
            .map_err(|_| Error::DeserializeBadChar)?
            .chars()
            .next()
            .ok_or(Error::DeserializeBadChar)?;
        visitor.visit_char(c)
    }

    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.usize()?;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| Error::DeserializeBadUtf8)?;
        visitor.visit_borrowed_str(s)
    }

    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.usize()?;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| Error::DeserializeBadUtf8)?;
        visitor.visit_str(s)
    }

    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.usize()?;
        visitor.visit_borrowed_bytes(self.take(n)?)
    }

    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.usize()?;
        visitor.visit_bytes(self.take(n)?)
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.pop()? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            _ => Err(Error::DeserializeBadOption),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.usize()?;
        visitor.visit_seq(Seq { de: self, len })
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Seq { de: self, len })
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_seq(Seq { de: self, len })
    }

    #[inline]
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.usize()?;
        visitor.visit_map(Map { de: self, len })
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_seq(Seq {
            de: self,
            len: fields.len(),
        })
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(self)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error::WontImplement)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error::WontImplement)
    }
}

impl<'de, const FIXED: bool> de::VariantAccess<'de> for &mut Reader<'de, FIXED> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Seq { de: self, len })
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Seq {
            de: self,
            len: fields.len(),
        })
    }
}

impl<'de, const FIXED: bool> de::EnumAccess<'de> for &mut Reader<'de, FIXED> {
    type Error = Error;
    type Variant = Self;

    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let index = self.u32()?;
        let v = seed.deserialize(index.into_deserializer())?;
        Ok((v, self))
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::Serialize;
    use serde::de::{DeserializeOwned, DeserializeSeed};

    use super::Reader;

    use crate::fixtures::All;

    fn ours<T: DeserializeOwned>(b: &[u8]) -> Result<(T, usize), postcard::Error> {
        let mut r = Reader::<false>::new(b);
        let v = std::marker::PhantomData::<T>.deserialize(&mut r)?;
        Ok((v, r.rest().len()))
    }

    fn theirs<T: DeserializeOwned>(b: &[u8]) -> Result<(T, usize), postcard::Error> {
        postcard::take_from_bytes::<T>(b).map(|(v, rest)| (v, rest.len()))
    }

    /// Reads `bytes` as a `T` both ways: the same value and rest, or the
    /// same error (compared as text: a changed byte may make a NaN).
    fn same<T: DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
        assert_eq!(
            format!("{:?}", ours::<T>(bytes)),
            format!("{:?}", theirs::<T>(bytes)),
            "{bytes:?}"
        );
    }

    /// `value`'s bytes, each prefix of them and each one-byte change, read
    /// both ways.
    fn agree<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
        let mut bytes = postcard::to_allocvec(value).unwrap();
        bytes.extend_from_slice(&[0x80, 7]);
        for n in 0..=bytes.len() {
            same::<T>(&bytes[..n]);
        }
        for i in 0..bytes.len().min(300) {
            for x in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[i] = x;
                same::<T>(&bad);
            }
        }
    }

    #[test]
    fn it_reads_what_postcard_reads() {
        for v in [0u64, 1, 127, 128, 300, 16383, 16384, u32::MAX as u64, u64::MAX] {
            agree(&v);
            agree(&(v as i64).wrapping_neg());
            agree(&(v as u32));
            agree(&(v as i32));
            agree(&(v as u16));
            agree(&(v as i16));
            agree(&(v as u128 * 1_000_003));
            agree(&(-(v as i128) * 7));
        }
        agree(&(0..300u64).map(|x| x * x * 31).collect::<Vec<_>>());
        agree(&All::sample("xy".into()));
        // Too long varints, for each width.
        same::<u16>(&[0xFF, 0xFF, 0x04]);
        same::<u32>(&[0xFF, 0xFF, 0xFF, 0xFF, 0x10]);
        same::<u64>(&[0xFF; 11]);
        same::<u64>(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]);
        same::<u128>(&[0xFF; 20]);
        // A huge sequence length over few bytes.
        same::<Vec<u8>>(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 1, 2]);
        // Random widths, as a map's values have.
        let mut rng = fastrand::Rng::with_seed(7);
        let mixed: Vec<u64> = (0..5000).map(|_| rng.u64(..) >> rng.u32(0..64)).collect();
        let bytes = postcard::to_allocvec(&mixed).unwrap();
        same::<Vec<u64>>(&bytes);
        same::<Vec<u32>>(&bytes);
        same::<Vec<i64>>(&bytes);
        same::<Vec<u16>>(&bytes);
        // The fixed-width variant reads what its writer writes, and a
        // cut-short or lengthened payload is an error, never a panic.
        let all = All::sample("fixed".into());
        let mut buf = vec![0u8; 4096];
        let n = crate::writer::to_slice_as::<true, _>(&all, &mut buf).unwrap();
        let mut r = Reader::<true>::new(&buf[..n]);
        let back = std::marker::PhantomData::<All>.deserialize(&mut r).unwrap();
        assert_eq!(format!("{back:?}"), format!("{all:?}"));
        assert!(r.rest().is_empty());
        for cut in 0..n {
            let mut r = Reader::<true>::new(&buf[..cut]);
            assert!(std::marker::PhantomData::<All>.deserialize(&mut r).is_err(), "{cut}");
        }
        // What postcard will not read.
        assert!(ours::<serde_json::Value>(&[0]).is_err());
    }
}
