//! The operating-system layer of `multiprocessing`: the one crate with `unsafe` code.
//!
//! Everything the other crates need from the kernel goes through a safe wrapper
//! here, so the rest of the workspace is `#![forbid(unsafe_code)]`:
//!
//! - [`process`]: [`fork`](process::fork), a [`Child`](process::Child) reaped
//!   through its pidfd with timeouts, re-execution of the current binary
//!   ([`spawn_self`](process::spawn_self)), `_exit`, thread counts.
//! - [`region`]: [`Region`](region::Region), a memfd mapped shared, passed to
//!   other processes by its file descriptor, grown in place.
//! - [`futex`]: wait (with a timeout) and wake on an `AtomicU32` that lives in a
//!   shared region.
//! - [`socket`]: Unix socket pairs, and `SCM_RIGHTS` messages that carry file
//!   descriptors beside the bytes.
//! - [`shm`]: named POSIX shared memory segments (`shm_open`), for
//!   Python's `SharedMemory`.
//! - [`signal`]: [`Signal`](signal::Signal), `kill`, `PR_SET_PDEATHSIG`.
//! - [`code`]: [`Entry`](code::Entry), a function named so that another
//!   process of the same binary can call it; [`boot`]: the load-time hook
//!   that hands a re-executed child to its entry before `main`.
//! - [`mem`]: huge-page advice for large buffers.
//! - [`random`]: random bytes from the kernel, for nonces.
//! - [`fd`]: close-on-exec, non-blocking mode, pipes, `poll`, open-fd counts.
//! - [`header`]: [`Header`](header::Header), the magic word, kind and layout
//!   word every shared region of the workspace starts with, checked on open.
//! - [`ring`]: byte-ring copies that wrap, and record sizes, for the rings
//!   the queue and the pipes lay out in a region.
//! - [`time`]: [`Deadline`](time::Deadline), a timeout turned into a point in
//!   time that saturates (a huge timeout waits forever, never panics).
//!
//! Linux (x86-64) is the platform this crate is built and tested on. The
//! backend sits in `src/unix/` behind one module alias, so another platform can
//! be added beside it without touching the crates above.
//!
//! ```
//! use mp_sys::region::Region;
//! use mp_sys::socket::{self, SocketKind};
//! use std::io::IoSlice;
//!
//! // A region and its file descriptor travel through a socket pair.
//! let region = Region::create("doc", 4096)?;
//! region.write(0, b"hello")?;
//! let (a, b) = socket::socketpair(SocketKind::Stream)?;
//! use std::os::fd::AsFd;
//! socket::send_with_fds(a.as_fd(), &[IoSlice::new(b"x")], &[region.as_fd()])?;
//! let mut buf = [0u8; 1];
//! let mut fds = Vec::new();
//! socket::recv_with_fds(b.as_fd(), &mut buf, &mut fds)?;
//! let other = Region::from_fd(fds.pop().unwrap())?;
//! let mut got = [0u8; 5];
//! other.read(0, &mut got)?;
//! assert_eq!(&got, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("mp-sys supports Linux only for now; its backend lives in src/unix");

#[cfg(target_os = "linux")]
#[path = "unix/mod.rs"]
mod os;

pub use os::{boot, code, fd, futex, mem, process, random, region, shm, signal, socket};

pub mod header;
pub mod ring;
pub mod time;
