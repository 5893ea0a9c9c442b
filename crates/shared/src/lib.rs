//! Python's `multiprocessing` shared memory for Rust: `Value`, `Array`,
//! `RawValue` and `RawArray` (`multiprocessing.sharedctypes`), and
//! `SharedMemory` and `ShareableList` (`multiprocessing.shared_memory`).
//!
//! ```
//! use mp_shared::{Array, Value};
//!
//! let num = Value::new(0.0f64)?;
//! let arr = Array::from_slice(&[0i32, 1, 2, 3])?;
//! // ... hand clones to child processes; here, the same calls in one process:
//! num.set(3.1415927);
//! for x in arr.lock()?.iter_mut() {
//!     *x = -*x;
//! }
//! assert_eq!(num.get(), 3.1415927);
//! assert_eq!(arr.to_vec(), [0, -1, -2, -3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`Value`] and [`Array`]: plain data (`T: Pod`) with an
//!   [`RLock`](mp_sync::RLock) that every access takes; [`ValueGuard`] and
//!   [`ArrayGuard`] hold the lock for a read-modify-write.
//! - [`RawValue`] and [`RawArray`]: the same without a lock. The two forms
//!   are one generic type each, [`SharedValue`] and [`SharedArray`], whose
//!   lock parameter is [`RLock`](mp_sync::RLock) or [`NoLock`].
//! - [`SharedMemory`] and [`ShareableList`]: named segments other processes
//!   attach to by name.
//! - [`Pod`] and [`Zeroable`]: the plain-data traits (bytemuck's), with
//!   their derives.
//!
//! Value, Array and their raw forms live in anonymous memfd regions: nothing
//! appears in `/dev/shm`, and the kernel frees the memory when the last
//! process holding it exits, killed or not. They are handles: a clone, or a
//! copy passed to a child process or pool task, refers to the same memory.
//! `get`, `set` and friends copy elements in and out. A guard from
//! [`Value::lock`] or [`Array::lock`] is the shared memory itself while the
//! lock is held: no copy, writes visible at once, and a holder that dies
//! leaves what it wrote. [`SharedMemory::as_slice_of`] views a named segment
//! as `[T]`, and with the `ndarray` feature both give `ndarray` views
//! (`ArrayGuard::view_mut`, `SharedMemory::ndarray_view`): Python's
//! `np.ndarray(shape, dtype, buffer=shm.buf)`. A process that writes without
//! the lock while another holds a view races, as in CPython.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod array;
mod error;
mod locking;
mod mem;
#[cfg(feature = "ndarray")]
mod nd;
mod shareable_list;
mod shared_memory;
mod value;
mod view;

pub use array::{Array, ArrayGuard, Iter, RawArray, SharedArray};
pub use bytemuck::{Pod, Zeroable};
pub use error::SharedError;
pub use locking::{Locking, NoLock};
/// The `ndarray` crate the views are made with (feature `ndarray`).
#[cfg(feature = "ndarray")]
pub use ndarray;
pub use shareable_list::ShareableList;
pub use shared_memory::SharedMemory;
pub use value::{RawValue, SharedValue, Value, ValueGuard};
