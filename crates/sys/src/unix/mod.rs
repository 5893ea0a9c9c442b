//! The Linux backend. Each module wraps one family of system calls.

pub mod boot;
pub mod code;
pub mod fd;
pub mod futex;
pub(crate) mod mapping;
pub mod mem;
pub mod process;
pub mod random;
pub mod region;
pub(crate) mod shared_copy;
pub mod shm;
pub mod signal;
pub mod socket;

use std::io;

/// Turns a `-1` return of a libc call into the `errno` error.
pub(crate) fn cvt<T: IsMinusOne>(ret: T) -> io::Result<T> {
    if ret.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`], and retries the call while it fails with `EINTR`.
pub(crate) fn cvt_r<T: IsMinusOne>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Runs a nix call, retrying it while it fails with `EINTR`, and turns its
/// error into an `io::Error`.
pub(crate) fn retry<T>(mut f: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(nix::errno::Errno::EINTR) => {}
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Return types of libc calls that report failure as `-1`.
pub(crate) trait IsMinusOne {
    fn is_minus_one(&self) -> bool;
}

macro_rules! impl_is_minus_one {
    ($($t:ty)*) => {$(
        impl IsMinusOne for $t {
            fn is_minus_one(&self) -> bool {
                *self == -1
            }
        }
    )*};
}

impl_is_minus_one! { i32 i64 isize }

/// An `io::Error` of kind `InvalidInput` with a message.
pub(crate) fn invalid_input(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}
