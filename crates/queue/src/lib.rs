//! Python's `multiprocessing.Queue`, `SimpleQueue` and `JoinableQueue` for
//! Rust: typed FIFOs shared by any number of producer and consumer
//! processes.
//!
//! ```
//! use mp_queue::{GetError, Queue};
//!
//! let q = Queue::new()?;
//! for i in 0..3 {
//!     q.put(i)?;
//! }
//! q.close(); // no more puts: consumers drain, then see Closed
//! let mut got = Vec::new();
//! loop {
//!     match q.get() {
//!         Ok(i) => got.push(i),
//!         Err(GetError::Closed) => break,
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! assert_eq!(got, [0, 1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! Python's Queue is a pipe, a lock and a feeder thread per process. Here a
//! queue is one memfd region holding a ring of framed messages, with one lock
//! word for producers and one for consumers (each knows its holder's pid; see
//! `mp_sync::raw`), so a producer and a consumer work at the same time, and
//! futex words for "not empty" and "not full":
//!
//! - `put` encodes the item in the caller's thread (so an encoding error comes
//!   back from `put`, with the item), then copies it into the ring under the
//!   producer lock; `get` copies the oldest item out under the consumer lock
//!   and decodes it after. No background thread, nothing buffered in a process that could die
//!   with it.
//! - The ring grows by doubling, up to 256 MiB of unread items; an item
//!   larger than 4 MiB encoded goes into its own memfd and only a small
//!   record goes through the ring.
//! - Items may hold handles (a lock, a connection, a queue): their
//!   descriptors travel through a socket pair that every handle of the queue
//!   holds, in ring order.
//! - A producer or consumer killed in the middle (even `SIGKILL`) does not
//!   wedge or corrupt the queue: the next process to take its lock sees the
//!   holder dead and takes over. A half-written item is dropped; a half-read
//!   one stays queued; an item a killed consumer had already taken is lost
//!   with it.
//! - `qsize` is exact (a counter in the ring), unlike Python's on macOS.
//!
//! A queue is a handle: it travels as a process argument or inside another
//! item, under every start method, and lives until the last process holding
//! it lets go (nothing is left in `/dev/shm`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod queue;
mod ring;

pub use error::{GetError, PutError, QueueError};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
