//! Python's `multiprocessing.Pipe` and `multiprocessing.connection` for
//! Rust: message connections between processes, listeners and clients with
//! an authkey handshake, and `wait` over many of them.
//!
//! ```
//! use mp_connection::{pipe, wait};
//! use std::time::Duration;
//!
//! let (parent, child) = pipe()?;
//! child.send(&("result", vec![1u32, 2, 3]))?;
//! assert_eq!(wait(&[&parent], Some(Duration::from_secs(5)))?, vec![0]);
//! let (what, v): (String, Vec<u32>) = parent.recv()?;
//! assert_eq!((what.as_str(), v.len()), ("result", 3));
//! # Ok::<(), mp_connection::ConnectionError>(())
//! ```
//!
//! - [`pipe`], [`pipe_simplex`]: Python's `Pipe()` and `Pipe(duplex=False)`.
//! - [`Connection`]: `send`/`recv` of serde values, `send_bytes`,
//!   `recv_bytes`, `recv_bytes_into`, `poll`, `close`. A connection is a
//!   handle: it can be a process argument, or be sent over another
//!   connection.
//! - [`Listener`], [`Client`]: Unix socket paths and TCP, with an
//!   HMAC-SHA256 challenge-response in both directions when an authkey is
//!   given.
//! - [`wait`], [`Waitable`]: wait for connections, listeners and processes.
//! - [`ConnectionError`]: what went wrong, and whether the connection can
//!   still be read afterwards.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod connection;
mod error;
mod listener;
mod wait;

pub use connection::{Connection, pipe, pipe_simplex};
pub use error::ConnectionError;
pub use listener::{Client, Listener};
pub use wait::{WaitFd, Waitable, wait};
