//! Serde values to length-prefixed frames, with file descriptors carried
//! beside the bytes.
//!
//! This is how every message of `multiprocessing` crosses a process boundary:
//! process arguments, pipe messages, pool tasks. A value is encoded with
//! [postcard]; the file descriptors of the *handles* inside it (a queue, a
//! lock, a shared region, a connection) are collected while it is encoded and
//! sent with the frame through `SCM_RIGHTS`, and handed back to the handles,
//! in order, while it is decoded (see [`handle`]). A handle encoded by any
//! other serde format fails with a clear error.
//!
//! ```
//! use mp_sys::region::Region;
//! use mp_sys::socket::{socketpair, SocketKind};
//! use serde::{Deserialize, Serialize};
//! use std::os::fd::AsFd;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Task {
//!     id: u64,
//!     #[serde(with = "mp_codec::handle::region")]
//!     output: Region,
//! }
//!
//! let (a, b) = socketpair(SocketKind::Stream)?;
//! let output = Region::create("output", 4096)?;
//! mp_codec::send(a.as_fd(), &Task { id: 1, output })?;
//! let task: Task = mp_codec::recv(b.as_fd())?;
//! task.output.write(0, b"done")?; // the same memory as the sender's `output`
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Wire format
//!
//! A 12-byte header (magic `mpF1`, payload length, descriptor count, kind),
//! then the payload; see [`Header`]. Receivers check every field against
//! [`Limits`] before allocating, so a truncated, corrupt or oversized frame is
//! an error, never a panic, a hang on garbage, or a huge allocation.
//!
//! # Error messages
//!
//! postcard turns what a `Serialize` or `Deserialize` impl passes to serde's
//! `Error::custom` into one fixed text ("Serde Serialization Error"). The
//! codec keeps the impl's own words in [`CodecError::Encode`] and
//! [`CodecError::Decode`]: a failed value is serialized (or its bytes
//! decoded) a second time through an adapter that records the message, so
//! values that succeed cost what postcard costs. A frame that carries
//! descriptors is decoded through the adapter at once, since they are gone
//! after the first pass.
//!
//! ```
//! struct Unlucky(u32);
//! impl serde::Serialize for Unlucky {
//!     fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
//!         if self.0 == 13 {
//!             return Err(serde::ser::Error::custom("13 is unlucky"));
//!         }
//!         s.serialize_u32(self.0)
//!     }
//! }
//! let err = mp_codec::encode(&[Unlucky(1), Unlucky(13)]).unwrap_err();
//! assert_eq!(err.to_string(), "cannot encode the value: 13 is unlucky");
//! ```
//!
//! # Why postcard
//!
//! Measured on this project's 2-core VM (criterion medians, rustc 1.95,
//! postcard 1.1.3 against bincode 2.0.1):
//!
//! | value | postcard encode / decode | bincode (varint) encode / decode |
//! |---|---|---|
//! | `i64` | 9 ns / 3.4 ns, 7 bytes | 3.8 ns / 8.3 ns, 9 bytes |
//! | small struct (u64, 10-char String, 8 u32, bool) | 43 ns / 81 ns, 32 bytes | 27 ns / 78 ns, 36 bytes |
//! | 1 MiB `Vec<u8>` | 28 µs / 873 µs | 27 µs / 1153 µs |
//! | 1 MiB `serde_bytes::ByteBuf` | 22 µs / 23 µs (46 GB/s) | 24 µs / 33 µs |
//! | 131072 `f64` | 28 µs / 147 µs | 26 µs / 183 µs |
//!
//! (memcpy of 1 MiB: 22 µs, 47 GB/s.) postcard's output is the smallest and it
//! decodes as fast or faster in every case but the small struct, where the two
//! are within 5%.
//!
//! # What the codec costs
//!
//! `cargo xtask bench codec`, criterion medians on the same VM:
//!
//! | value | encode | decode |
//! |---|---|---|
//! | `i64` | 32 ns (postcard alone into a slice: 9.5 ns) | 36 ns |
//! | small struct | 55 ns (postcard alone: 49 ns) | 104 ns |
//! | 1 MiB `Vec<u8>` | 78 µs, 12.5 GiB/s | 896 µs, 1.1 GiB/s |
//! | 1 MiB `Vec<u8>` as `serde_bytes` | 22.5 µs, 43 GiB/s | 25 µs, 38 GiB/s |
//! | 1 MiB `Vec<f64>` | 27 µs, 36 GiB/s | 162 µs, 6 GiB/s |
//! | 1 MiB raw-bytes frame ([`Frame::from_bytes`]) | 22.6 µs, 43 GiB/s | (no decode) |
//! | memcpy of 1 MiB | 22.4 µs, 44 GiB/s | |
//!
//! A value up to 256 bytes is encoded in one pass into the frame's buffer;
//! a larger one is measured first (`serialized_size`) and then written into
//! a slice of exactly that size, which lets the compiler turn a sequence of
//! plain values into a copy. postcard's own `to_extend` grows a `Vec` one
//! byte at a time: 580 µs for the 1 MiB `Vec<u8>`. Serde encodes a plain
//! `Vec<u8>` element by element in any format; mark byte blobs
//! `#[serde(with = "serde_bytes")]`, or send them as raw frames, and they cost
//! a memcpy.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod capture;
mod error;
#[cfg(test)]
mod fixtures;
mod frame;
pub mod handle;
mod reader;
mod wire;
mod writer;

pub use error::CodecError;
pub use frame::{
    DEFAULT_MAX_FRAME_LEN, Frame, FrameKind, HEADER_LEN, Header, Limits, decode, decode_payload, decode_payload_fixed,
    decode_payload_seed, decode_payload_seed_fixed, encode, encode_fixed_to_slice, encode_into, encode_into_fixed,
};
pub use handle::Fd;
pub use wire::{
    Incoming, Wait, recv, recv_frame, recv_frame_timeout, recv_header, recv_payload, recv_payload_into, send,
    send_bytes, send_frame,
};
