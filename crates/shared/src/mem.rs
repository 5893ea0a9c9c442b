//! The memfd region behind a Value, Array, RawValue or RawArray: a header
//! that names the element type, then the elements.
//!
//! Layout: the workspace's shared-region [`Header`] (bytes 0-3 the magic
//! word `mpV1`, 4-7 the [`Kind`], 8-15 the layout word: 8-11 the element
//! size, 12-15 its alignment), then 16-23 the element count, 24-31 a hash of the element
//! type's name; the elements start at byte [`DATA`]. A handle decoded with
//! another element type, length or kind is refused with an error that says
//! which, so a `Value<f64>` sent where a `Value<u32>` is expected cannot
//! reinterpret the bytes.
//!
//! The handles' own accesses copy elements in and out (`Region::read` /
//! `write`); a guard that holds the lock views them in place through another
//! mapping instead (`crate::view`).

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use mp_sys::header::{Header, HeaderError};
use mp_sys::region::Region;
use serde::Serializer;

use crate::error::SharedError;

const MAGIC: [u8; 4] = *b"mpV1";
/// Where the elements start: enough for any element alignment up to 64.
pub(crate) const DATA: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Value = 1,
    Array = 2,
    RawValue = 3,
    RawArray = 4,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Value => "Value",
            Kind::Array => "Array",
            Kind::RawValue => "RawValue",
            Kind::RawArray => "RawArray",
        }
    }

    fn from_u32(k: u32) -> Option<Kind> {
        [Kind::Value, Kind::Array, Kind::RawValue, Kind::RawArray]
            .into_iter()
            .find(|c| *c as u32 == k)
    }
}

pub(crate) use mp_codec::handle::type_tag;

/// A typed view of a region holding `len` elements of `T`.
#[derive(Debug)]
pub(crate) struct Mem<T> {
    region: Region,
    len: usize,
    _elem: PhantomData<fn() -> T>,
}

impl<T: Pod> Mem<T> {
    /// The layout word: the element size (low half) and alignment (high half).
    fn layout() -> u64 {
        size_of::<T>() as u64 | ((align_of::<T>() as u64) << 32)
    }

    fn bytes_for(len: usize) -> Option<usize> {
        size_of::<T>().checked_mul(len)?.checked_add(DATA)
    }

    /// A new region of `len` zeroed elements.
    pub(crate) fn create(kind: Kind, len: usize) -> Result<Mem<T>, SharedError> {
        if align_of::<T>() > DATA {
            return Err(SharedError::InvalidArgument(format!(
                "{} needs {}-byte alignment; shared values support up to {DATA}",
                std::any::type_name::<T>(),
                align_of::<T>()
            )));
        }
        let bytes = Self::bytes_for(len).ok_or_else(|| {
            SharedError::InvalidArgument(format!(
                "{len} elements of {} do not fit in memory",
                std::any::type_name::<T>()
            ))
        })?;
        let region = Region::create(kind.name(), bytes).map_err(|source| SharedError::Create {
            what: kind.name(),
            source,
        })?;
        let dwords = region.atomics_u64();
        dwords[2].store(len as u64, Ordering::Relaxed);
        dwords[3].store(type_tag::<T>(), Ordering::Relaxed);
        // Last: the header publishes the words above with its magic word.
        Header::new(MAGIC, kind as u32, Self::layout())
            .write_to(&region)
            .map_err(|source| SharedError::Create {
                what: kind.name(),
                source,
            })?;
        Ok(Mem {
            region,
            len,
            _elem: PhantomData,
        })
    }

    /// A region received from another process, checked to hold `T`s as `kind`.
    pub(crate) fn open(region: Region, kind: Kind) -> Result<Mem<T>, SharedError> {
        let wrong = |found: String| SharedError::WrongType {
            expected: format!("{}<{}>", kind.name(), std::any::type_name::<T>()),
            found,
        };
        let header = match Header::read_from(&region, MAGIC, DATA) {
            Ok(h) => h,
            Err(e @ HeaderError::Short { .. }) => {
                return Err(wrong(format!("shared memory that is not a shared value ({e})")));
            }
            Err(e) => {
                return Err(wrong(format!(
                    "shared memory that is not a shared value of this version ({e})"
                )));
            }
        };
        let dwords = region.atomics_u64();
        let found_kind = header.kind;
        let size = header.layout as u32 as usize;
        let align = (header.layout >> 32) as usize;
        let len = usize::try_from(dwords[2].load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        let tag = dwords[3].load(Ordering::Relaxed);
        match Kind::from_u32(found_kind) {
            Some(k) if k == kind => {}
            Some(k) => {
                return Err(wrong(format!(
                    "{} {}",
                    if k == Kind::Array { "an" } else { "a" },
                    k.name()
                )));
            }
            None => return Err(wrong(format!("a shared value of unknown kind {found_kind}"))),
        }
        if size != size_of::<T>() || align != align_of::<T>() || tag != type_tag::<T>() {
            return Err(wrong(format!(
                "elements of another type ({size} bytes, {align}-byte aligned)"
            )));
        }
        match Self::bytes_for(len) {
            Some(bytes) if bytes <= region.len() => Ok(Mem {
                region,
                len,
                _elem: PhantomData,
            }),
            _ => Err(wrong(format!("{len} elements in a region of {} bytes", region.len()))),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The region, for a guard's in-place view (`crate::view`).
    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    /// Element `i`; `i < len` is the caller's check.
    pub(crate) fn read(&self, i: usize) -> T {
        let mut v = T::zeroed();
        self.region
            .read(DATA + i * size_of::<T>(), bytemuck::bytes_of_mut(&mut v))
            .expect("an element index below the length checked at open lies in the region");
        v
    }

    /// Writes element `i`; `i < len` is the caller's check.
    pub(crate) fn write(&self, i: usize, v: &T) {
        self.region
            .write(DATA + i * size_of::<T>(), bytemuck::bytes_of(v))
            .expect("an element index below the length checked at open lies in the region");
    }

    /// Copies `out.len()` elements from `start`; the range is the caller's check.
    pub(crate) fn read_into(&self, start: usize, out: &mut [T]) {
        self.region
            .read(DATA + start * size_of::<T>(), bytemuck::cast_slice_mut(out))
            .expect("a range checked against the length lies in the region");
    }

    /// Copies `src` to the elements from `start`; the range is the caller's check.
    pub(crate) fn write_from(&self, start: usize, src: &[T]) {
        self.region
            .write(DATA + start * size_of::<T>(), bytemuck::cast_slice(src))
            .expect("a range checked against the length lies in the region");
    }

    /// Every element, copied out.
    pub(crate) fn to_vec(&self) -> Vec<T> {
        let mut v: Vec<T> = bytemuck::zeroed_vec(self.len);
        self.read_into(0, &mut v);
        v
    }

    /// Checks `start..start + n` against the length.
    pub(crate) fn check_range(&self, start: usize, n: usize) -> Result<(), SharedError> {
        match start.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(SharedError::OutOfRange {
                index: start.saturating_add(n).saturating_sub(1).max(start),
                len: self.len,
            }),
        }
    }

    pub(crate) fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        mp_codec::handle::region::serialize(&self.region, s)
    }
}

/// Serializes a `Mem` as a handle inside a tuple.
pub(crate) struct MemRef<'a, T>(pub(crate) &'a Mem<T>);

impl<T: Pod> serde::Serialize for MemRef<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_checks_kind_type_and_length() {
        let m = Mem::<u32>::create(Kind::Array, 10).unwrap();
        m.write(9, &7);
        let again = Mem::<u32>::open(m.region.try_clone().unwrap(), Kind::Array).unwrap();
        assert_eq!(again.read(9), 7);
        let e = Mem::<i32>::open(m.region.try_clone().unwrap(), Kind::Array).unwrap_err();
        assert!(e.to_string().contains("another type"), "{e}");
        let e = Mem::<u32>::open(m.region.try_clone().unwrap(), Kind::Value).unwrap_err();
        assert!(e.to_string().contains("got an Array"), "{e}");
        // A length that claims more than the region holds.
        m.region.atomics_u64()[2].store(1 << 40, Ordering::Relaxed);
        assert!(Mem::<u32>::open(m.region.try_clone().unwrap(), Kind::Array).is_err());
    }
}
