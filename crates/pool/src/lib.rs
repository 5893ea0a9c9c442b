//! Python's `multiprocessing.Pool` and `concurrent.futures.ProcessPoolExecutor`
//! for Rust: worker processes that survive dying workers.
//!
//! ```
//! use mp_pool::Pool;
//! fn square(x: u64) -> u64 { x * x }
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(square, 1..=4)?, vec![1, 4, 9, 16]);
//! let r = pool.apply_async(square, (9,))?;
//! assert_eq!(r.get()?, 81);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//! - Each worker is a daemonic process (the pool's start method) with its
//!   own socket to the pool, so the pool always knows which jobs each
//!   worker holds. A task is its function's *entry* (a trampoline named by
//!   its offset in the binary, checked against the binary's identity) and
//!   its arguments encoded by `mp-codec`, handles' descriptors included.
//! - One thread in the parent owns the workers. It hands each a few jobs at
//!   a time (more when tasks are short), so a worker never waits on a
//!   round trip; replies and jobs are batched into few system calls.
//!   Callbacks run on this thread, in completion order.
//! - Arguments and results of 4 KiB or more travel in shared memory: each
//!   worker has a ring each way, and the socket carries only where the
//!   payload lies, which the reader checks (`shm`). A map's chunk is
//!   decoded by the worker where it lies, and its results encoded there
//!   and decoded by the pool straight into the map's output.
//! - A map's chunk travels as one message: its items encoded together,
//!   decoded by the worker into one vector, run under one `catch_unwind`
//!   (a panic fails only its item), and answered with one message of all
//!   the results. For `map`, the pool thread decodes them straight into
//!   their places in the output vector, in order, as the chunks complete,
//!   while the caller is still encoding the last chunks.
//! - A worker writes the job and item it is running to a shared page. When
//!   its pidfd says it died, the pool reads what it sent, fails the job (or
//!   the map item) that was running with [`TaskError::WorkerLost`], hands
//!   the jobs queued behind it to the others, and starts a new worker.
//!   (CPython's pool hangs forever here: python/cpython#66587.)
//!
//! # Differences from Python
//! - Items of a map whose worker died after running them, before their
//!   results were sent, run again; a task from `apply` never runs twice
//!   (it fails with `WorkerLost` instead).
//! - `imap` pulls its input lazily, from the consuming thread, with a
//!   bounded number of chunks in flight; Python's reads the whole input.
//! - `map` and `starmap` read an input that knows its exact length (a
//!   range, a vector) chunk by chunk, queueing each chunk as it is encoded,
//!   so the first chunks run while the rest are read; any other input is
//!   read whole first, as Python reads it.
//! - Dropping a pool terminates it, as leaving `with Pool() as p:` does.
//! - A map that fails returns (or its [`AsyncResult`] is ready) once every
//!   chunk is done, as in Python; its error is that of the first failed
//!   item in item order, where Python's is the first chunk to fail in time.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod core;
mod error;
pub mod executor;
mod pool;
mod result;
mod shm;
mod task;
mod wire;

pub use error::{PoolError, TaskError};
pub use executor::{
    ChunkedMapResults, DoneAndNotDone, ExecutorBuilder, ExecutorError, MapResults, ProcessPoolExecutor, ReturnWhen,
    TaskFuture,
};
pub use pool::{Data, Pool, PoolBuilder, PoolContext};
pub use result::{AsyncResult, IMap};
