//! Random bytes from the kernel (`getrandom(2)`), for nonces such as the
//! challenges of an authenticated connection handshake.
#![allow(unsafe_code)]

use std::io;

use super::cvt_r;

/// Fills `buf` with cryptographically secure random bytes from the kernel's
/// pool (`getrandom(2)`, blocking only until the pool is first initialized at
/// boot), retried on `EINTR` and short reads.
///
/// ```
/// let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
/// mp_sys::random::fill(&mut a)?;
/// mp_sys::random::fill(&mut b)?;
/// assert_ne!(a, b);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let rest = &mut buf[at..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        let n = cvt_r(|| unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) })?;
        at += n.unsigned_abs();
    }
    Ok(())
}
