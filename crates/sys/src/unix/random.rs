//! Random bytes from the kernel (`/dev/urandom`), for nonces such as the
//! challenges of an authenticated connection handshake.

use std::io::{self, Read};

/// Fills `buf` with cryptographically secure random bytes from the kernel's
/// pool (`/dev/urandom`, the same pool as `getrandom(2)`, read through std so
/// no `unsafe` is needed; `EINTR` and short reads are retried by
/// `read_exact`).
///
/// ```
/// let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
/// mp_sys::random::fill(&mut a)?;
/// mp_sys::random::fill(&mut b)?;
/// assert_ne!(a, b);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}
