//! `ShareableList`: Python's `shared_memory.ShareableList`, a fixed-length
//! list of plain-data values in a named segment.
//!
//! Layout of the segment: the workspace's shared-region [`Header`] (bytes 0-3
//! the magic word `mpL1`, 4-7 kind 1, 8-15 the layout word: 8-11 the element
//! size, 12-15 its alignment), then 16-23 the length, 24-31 a hash of the element type's
//! name; the elements start at byte 64.

use std::fmt;
use std::marker::PhantomData;

use bytemuck::Pod;
use mp_sys::header::Header;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SharedError;
use crate::mem::type_tag;
use crate::shared_memory::SharedMemory;

const MAGIC: [u8; 4] = *b"mpL1";
/// The header's kind: the one kind of segment this format has.
const KIND: u32 = 1;
const DATA: usize = 64;

/// Python's `ShareableList`: a list of `T: Pod` values with a fixed length,
/// in a named [`SharedMemory`] segment other processes attach to by name.
///
/// ```
/// use mp_shared::ShareableList;
/// let mut list = ShareableList::create(&[1i64, 2, 3], None)?;
/// list.set(0, 10)?;
/// let other = ShareableList::<i64>::attach(list.name())?;
/// assert_eq!(other.get(0), Some(10));
/// assert_eq!(other.len(), 3);
/// list.shm().unlink()?;
/// # Ok::<(), mp_shared::SharedError>(())
/// ```
///
/// # Differences from Python
///
/// Every element has the one type `T` (Python mixes ints, floats, strings
/// and bytes, each slot sized when the list is made), so a slot never
/// overflows. The unlink contract is [`SharedMemory`]'s.
pub struct ShareableList<T> {
    shm: SharedMemory,
    len: usize,
    _elem: PhantomData<fn() -> T>,
}

fn header(shm: &SharedMemory) -> [u64; 4] {
    let mut h = [0u64; 4];
    for (i, w) in h.iter_mut().enumerate() {
        *w = bytemuck::pod_read_unaligned(&shm.as_slice()[i * 8..i * 8 + 8]);
    }
    h
}

impl<T: Pod> ShareableList<T> {
    /// Python's `ShareableList(sequence, name=name)`: a new segment holding
    /// a copy of `values`.
    ///
    /// ```
    /// let list = mp_shared::ShareableList::create(&[0.5f32; 4], Some("mp_shared_doc_list"))?;
    /// assert_eq!(list.name(), "mp_shared_doc_list");
    /// # list.shm().unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn create(values: &[T], name: Option<&str>) -> Result<ShareableList<T>, SharedError> {
        let bytes = size_of_val(values)
            .checked_add(DATA)
            .ok_or_else(|| SharedError::InvalidArgument("the list does not fit in memory".into()))?;
        let mut shm = SharedMemory::create(name, bytes)?;
        let buf = shm.as_mut_slice();
        let layout = size_of::<T>() as u64 | ((align_of::<T>() as u64) << 32);
        buf[16..24].copy_from_slice(&(values.len() as u64).to_le_bytes());
        buf[24..32].copy_from_slice(&type_tag::<T>().to_le_bytes());
        buf[DATA..].copy_from_slice(bytemuck::cast_slice(values));
        buf[..mp_sys::header::LEN].copy_from_slice(&Header::new(MAGIC, KIND, layout).to_bytes());
        Ok(ShareableList {
            shm,
            len: values.len(),
            _elem: PhantomData,
        })
    }

    /// Python's `ShareableList(name=name)`: attaches to an existing list;
    /// fails if the segment is missing or holds another element type.
    ///
    /// ```
    /// let e = mp_shared::ShareableList::<u8>::attach("psm_no_such_list").unwrap_err();
    /// assert!(matches!(e, mp_shared::SharedError::NotFound(_)));
    /// ```
    pub fn attach(name: &str) -> Result<ShareableList<T>, SharedError> {
        let shm = SharedMemory::attach(name)?;
        let wrong = |found: String| SharedError::WrongType {
            expected: format!("ShareableList<{}>", std::any::type_name::<T>()),
            found,
        };
        let sizes = match Header::from_bytes(shm.as_slice(), MAGIC, DATA) {
            Ok(h) if h.kind == KIND => h.layout,
            Ok(h) => {
                return Err(wrong(format!(
                    "the segment {name:?}, a ShareableList of unknown kind {}",
                    h.kind
                )));
            }
            Err(e) => {
                return Err(wrong(format!(
                    "the segment {name:?}, which is not a ShareableList ({e})"
                )));
            }
        };
        let [_, _, len, tag] = header(&shm);
        let (size, align) = (sizes as u32 as usize, (sizes >> 32) as usize);
        if size != size_of::<T>() || align != align_of::<T>() || tag != type_tag::<T>() {
            return Err(wrong(format!("a list of another type ({size}-byte elements)")));
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        match len.checked_mul(size).and_then(|b| b.checked_add(DATA)) {
            Some(b) if b <= shm.size() => Ok(ShareableList {
                shm,
                len,
                _elem: PhantomData,
            }),
            _ => Err(wrong(format!("{len} elements in a segment of {} bytes", shm.size()))),
        }
    }

    /// Python's `len(list)`.
    ///
    /// ```
    /// let list = mp_shared::ShareableList::create(&[1u8, 2], None)?;
    /// assert_eq!(list.len(), 2);
    /// # list.shm().unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no elements.
    ///
    /// ```
    /// let list = mp_shared::ShareableList::<u8>::create(&[], None)?;
    /// assert!(list.is_empty());
    /// # list.shm().unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Python's `list[i]`; `None` past the end (or after the segment was
    /// closed).
    ///
    /// ```
    /// let list = mp_shared::ShareableList::create(&[7u16], None)?;
    /// assert_eq!(list.get(0), Some(7));
    /// assert_eq!(list.get(1), None);
    /// # list.shm().unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        let at = DATA + i * size_of::<T>();
        self.shm
            .as_slice()
            .get(at..at + size_of::<T>())
            .map(bytemuck::pod_read_unaligned)
    }

    /// Python's `list[i] = v`; [`SharedError::OutOfRange`] past the end.
    ///
    /// ```
    /// let mut list = mp_shared::ShareableList::create(&[0i32; 2], None)?;
    /// list.set(1, 5)?;
    /// assert!(list.set(2, 5).is_err());
    /// assert_eq!(list.to_vec(), [0, 5]);
    /// # list.shm().unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn set(&mut self, i: usize, v: T) -> Result<(), SharedError> {
        if i >= self.len {
            return Err(SharedError::OutOfRange {
                index: i,
                len: self.len,
            });
        }
        if self.shm.is_closed() {
            return Err(SharedError::Closed(self.shm.name().to_owned()));
        }
        let at = DATA + i * size_of::<T>();
        self.shm.as_mut_slice()[at..at + size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&v));
        Ok(())
    }

    /// Every element, copied out.
    ///
    /// ```
    /// let list = mp_shared::ShareableList::create(&[1u8, 2, 3], None)?;
    /// assert_eq!(list.to_vec(), [1, 2, 3]);
    /// # list.shm().unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).filter_map(|i| self.get(i)).collect()
    }

    /// The segment's name.
    ///
    /// ```
    /// let list = mp_shared::ShareableList::create(&[1u8], None)?;
    /// assert!(list.name().starts_with("psm_"));
    /// # list.shm().unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// Python's `list.shm`: the segment, to unlink it.
    ///
    /// ```
    /// let list = mp_shared::ShareableList::create(&[1u8], None)?;
    /// list.shm().unlink()?;
    /// # Ok::<(), mp_shared::SharedError>(())
    /// ```
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }
}

impl<T> Clone for ShareableList<T> {
    fn clone(&self) -> Self {
        ShareableList {
            shm: self.shm.clone(),
            len: self.len,
            _elem: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ShareableList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList")
            .field("name", &self.name())
            .field("values", &self.to_vec())
            .finish()
    }
}

impl<T: Pod> Serialize for ShareableList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shm.name().serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for ShareableList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ShareableList::attach(&name).map_err(mp_codec::handle::invalid)
    }
}
