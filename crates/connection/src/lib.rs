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
//!   `recv_bytes`, `recv_bytes_into` (each receive also with a deadline for
//!   the whole message: `recv_timeout`, ...), `poll`, `close`. A connection is a
//!   handle: it can be a process argument, or be sent over another
//!   connection.
//! - [`Listener`], [`Client`]: Unix socket paths and TCP, with an
//!   HMAC-SHA256 challenge-response in both directions when an authkey is
//!   given; [`ListenerBuilder`] sets how many handshakes run at once and
//!   their deadline, so silent clients cannot lock honest ones out.
//! - [`wait`], [`Waitable`]: wait for connections, listeners and processes.
//! - [`ConnectionError`]: what went wrong, and whether the connection can
//!   still be read afterwards.
//!
//! # Performance
//!
//! On this project's 2-vCPU VM (`cargo xtask compare`, medians): an 8-byte
//! ping-pong between two processes over a [`pipe`] takes 4.4 µs with both
//! pinned to one CPU (CPython 16.4 µs), and 1.7-4.4 µs unpinned (CPython 48
//! µs); 64 MiB `send_bytes` to a child runs at 3.7 GB/s (CPython 0.67
//! GB/s). A pipe's small messages cross through a shared ring beside the
//! socket (see [`Connection`]); a receive polls for 50 µs, yielding the CPU,
//! before it sleeps; a large payload lands in memory reserved up front and
//! advised onto huge pages. Making a pipe (and dropping it) takes 10.8 µs
//! (CPython's `Pipe()` and `close`: 18.9 µs).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod connection;
mod error;
mod listener;
mod ring;
mod wait;

pub use connection::{Connection, pipe, pipe_simplex};
pub use error::ConnectionError;
pub use listener::{Client, Listener, ListenerBuilder};
pub use wait::{WaitFd, Waitable, wait};
