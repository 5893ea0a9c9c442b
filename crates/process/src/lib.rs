//! Python's `multiprocessing.Process` for Rust, with the fork, spawn and
//! fork-server start methods.
//!
//! ```
//! use mp_process::Process;
//!
//! fn worker(n: u64) -> Result<(), String> {
//!     if n % 2 == 0 { Ok(()) } else { Err(format!("{n} is odd")) }
//! }
//!
//! let mut even = Process::new(worker, (4,));
//! let mut odd = Process::new(worker, (3,));
//! even.start()?;
//! odd.start()?;
//! even.join()?;
//! odd.join()?;
//! assert_eq!(even.exitcode(), Some(0));
//! assert_eq!(odd.exitcode(), Some(1)); // and "Process Process-2:\n3 is odd" on stderr
//! # Ok::<(), mp_process::ProcessError>(())
//! ```
//!
//! - [`Process`]: `start`, `join`, `join_timeout`, `is_alive`, `exitcode`,
//!   `terminate`, `kill`, `close`, `pid`, names and daemons.
//! - [`StartMethod`], [`set_start_method`], [`get_start_method`],
//!   [`try_get_start_method`], [`get_context`]: how children start.
//! - [`current_process`], [`parent_process`], [`active_children`],
//!   [`cpu_count`], [`exit`].
//!
//! A spawned or fork-server child never runs the program's `main`: mp-sys's
//! load-time hook hands it to its target first, so no init call is needed,
//! in binaries, examples or `cargo test` harnesses. When `main` returns,
//! daemonic children are terminated and the others joined, as in Python.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod child;
mod context;
mod error;
mod fork;
mod forkserver;
mod handle;
mod hooks;
mod identity;
mod method;
mod process;
mod setting;
mod spawn;
mod target;
#[doc(hidden)]
pub mod testing;

pub use context::{Context, cpu_count, get_context};
pub use error::ProcessError;
pub use identity::{ProcessInfo, active_children, current_process, exit, parent_process};
pub use method::StartMethod;
pub use process::Process;
pub use setting::{get_start_method, set_start_method, try_get_start_method};
pub use target::{Args, Function, Outcome, Run, Target};
