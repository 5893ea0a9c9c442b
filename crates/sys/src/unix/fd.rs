//! File-descriptor helpers: close-on-exec, non-blocking mode, pipes, raw reads
//! and writes, `poll`, and counting the descriptors a process holds.
//!
//! The system calls go through nix's safe wrappers (`fcntl`, `pipe2`, `read`,
//! `write`, `poll`); only [`read_spare`], which lets the kernel fill a
//! vector's uninitialized capacity (nix reads only into initialized bytes),
//! calls libc itself.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFlags, PollTimeout};

use super::{cvt_r, retry};
use crate::time::Deadline;

/// Sets or clears `FD_CLOEXEC`: whether `fd` is closed across `exec`.
///
/// ```
/// # use std::os::fd::AsFd;
/// let (r, _w) = mp_sys::fd::pipe()?;
/// mp_sys::fd::set_cloexec(r.as_fd(), false)?;
/// assert!(!mp_sys::fd::is_cloexec(r.as_fd())?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD)?);
    let mut new = flags;
    new.set(FdFlag::FD_CLOEXEC, on);
    if new != flags {
        fcntl(fd, FcntlArg::F_SETFD(new))?;
    }
    Ok(())
}

/// Whether `FD_CLOEXEC` is set on `fd`.
///
/// ```
/// # use std::os::fd::AsFd;
/// let (r, _w) = mp_sys::fd::pipe()?;
/// assert!(mp_sys::fd::is_cloexec(r.as_fd())?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let flags = FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD)?);
    Ok(flags.contains(FdFlag::FD_CLOEXEC))
}

/// Sets or clears `O_NONBLOCK` on the open file description behind `fd`.
///
/// ```
/// # use std::os::fd::AsFd;
/// let (r, _w) = mp_sys::fd::pipe()?;
/// mp_sys::fd::set_nonblocking(r.as_fd(), true)?;
/// let mut buf = [0u8; 1];
/// let err = mp_sys::fd::read(r.as_fd(), &mut buf).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    let mut new = flags;
    new.set(OFlag::O_NONBLOCK, on);
    if new != flags {
        fcntl(fd, FcntlArg::F_SETFL(new))?;
    }
    Ok(())
}

/// Creates a pipe, both ends close-on-exec: `(read end, write end)`.
///
/// ```
/// # use std::os::fd::AsFd;
/// let (r, w) = mp_sys::fd::pipe()?;
/// mp_sys::fd::write(w.as_fd(), b"hi")?;
/// let mut buf = [0u8; 2];
/// assert_eq!(mp_sys::fd::read(r.as_fd(), &mut buf)?, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// `read(2)`, retried on `EINTR`. Async-signal-safe: usable in a forked child.
///
/// ```
/// # use std::os::fd::AsFd;
/// let (r, w) = mp_sys::fd::pipe()?;
/// drop(w);
/// let mut buf = [0u8; 4];
/// assert_eq!(mp_sys::fd::read(r.as_fd(), &mut buf)?, 0); // end of file
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| nix::unistd::read(fd, buf))
}

/// Reads into the spare capacity of `buf` (at most `max` bytes) and extends
/// its length by what was read, without zero-filling the space first;
/// retried on `EINTR`. Returns the bytes read: 0 at end of file, or when
/// `buf` has no spare capacity or `max` is 0.
///
/// ```
/// # use std::os::fd::AsFd;
/// let (r, w) = mp_sys::fd::pipe()?;
/// mp_sys::fd::write(w.as_fd(), b"hello")?;
/// let mut buf = Vec::with_capacity(16);
/// buf.push(b'>');
/// assert_eq!(mp_sys::fd::read_spare(r.as_fd(), &mut buf, 3)?, 3);
/// assert_eq!(buf, b">hel");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_spare(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    if want == 0 {
        return Ok(0);
    }
    // SAFETY: `spare` is valid for writes of `want` bytes (uninitialized
    // memory may be written by read(2)); the pointer is not read.
    let n = cvt_r(|| unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), want) })?;
    let n = n.unsigned_abs().min(want);
    // SAFETY: read(2) initialized the first `n` bytes of the spare capacity,
    // and `len + n <= capacity`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// `write(2)`, retried on `EINTR`. Async-signal-safe: usable in a forked child.
///
/// ```
/// # use std::os::fd::AsFd;
/// let (_r, w) = mp_sys::fd::pipe()?;
/// assert_eq!(mp_sys::fd::write(w.as_fd(), b"abc")?, 3);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    retry(|| nix::unistd::write(fd, buf))
}

/// Writes all of `buf`, looping over short writes. Async-signal-safe.
///
/// ```
/// # use std::os::fd::AsFd;
/// let (_r, w) = mp_sys::fd::pipe()?;
/// mp_sys::fd::write_all(w.as_fd(), b"all of it")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match write(fd, buf)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

/// What to wait for on one descriptor in [`poll`].
#[derive(Debug)]
pub struct PollFd<'fd> {
    fd: BorrowedFd<'fd>,
    readable: bool,
    writable: bool,
    revents: i16,
}

impl<'fd> PollFd<'fd> {
    /// Waits for `fd` to become readable (or hung up).
    pub fn readable(fd: BorrowedFd<'fd>) -> Self {
        PollFd {
            fd,
            readable: true,
            writable: false,
            revents: 0,
        }
    }

    /// Waits only for `fd` to hang up (or fail): a pipe whose writers are
    /// all gone, or a pidfd whose process has been reaped (Linux 6.9 and
    /// later; an exited but unreaped process makes a pidfd readable, not hung
    /// up).
    ///
    /// ```
    /// use mp_sys::fd::{pipe, poll, PollFd};
    /// use std::os::fd::AsFd;
    /// let (r, w) = pipe()?;
    /// mp_sys::fd::write_all(w.as_fd(), b"data")?; // readable, not hung up
    /// assert_eq!(poll(&mut [PollFd::hangup(r.as_fd())], Some(std::time::Duration::ZERO))?, 0);
    /// drop(w);
    /// let mut set = [PollFd::hangup(r.as_fd())];
    /// assert_eq!(poll(&mut set, None)?, 1);
    /// assert!(set[0].is_hup());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn hangup(fd: BorrowedFd<'fd>) -> Self {
        PollFd {
            fd,
            readable: false,
            writable: false,
            revents: 0,
        }
    }

    /// Waits for `fd` to become writable.
    pub fn writable(fd: BorrowedFd<'fd>) -> Self {
        PollFd {
            fd,
            readable: false,
            writable: true,
            revents: 0,
        }
    }

    /// Also waits for `fd` to become writable when `on` (a socket with
    /// bytes queued to send, say).
    ///
    /// ```
    /// use mp_sys::fd::{poll, PollFd};
    /// use std::os::fd::AsFd;
    /// let (r, w) = mp_sys::fd::pipe()?;
    /// let mut set = [PollFd::readable(w.as_fd()).also_writable(true)];
    /// assert_eq!(poll(&mut set, Some(std::time::Duration::ZERO))?, 1); // an empty pipe takes bytes
    /// # drop(r);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn also_writable(mut self, on: bool) -> Self {
        self.writable |= on;
        self
    }

    /// Whether the last [`poll`] found this descriptor ready: readable or
    /// writable as asked, hung up, or in error (a read or write then reports
    /// what happened).
    pub fn is_ready(&self) -> bool {
        self.revents != 0
    }

    /// Whether the last [`poll`] saw the peer hang up.
    pub fn is_hup(&self) -> bool {
        self.revents & libc::POLLHUP != 0
    }
}

/// `poll(2)` over `fds` for at most `timeout` (`None`: forever), retried on
/// `EINTR` with the time that is left. Returns how many are ready; each
/// [`PollFd::is_ready`] tells which.
///
/// ```
/// # use std::os::fd::AsFd;
/// use mp_sys::fd::{poll, PollFd};
/// use std::time::Duration;
/// let (r, w) = mp_sys::fd::pipe()?;
/// let mut set = [PollFd::readable(r.as_fd())];
/// assert_eq!(poll(&mut set, Some(Duration::from_millis(10)))?, 0);
/// mp_sys::fd::write(w.as_fd(), b"x")?;
/// assert_eq!(poll(&mut set, Some(Duration::ZERO))?, 1);
/// assert!(set[0].is_ready());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let mut set: Vec<nix::poll::PollFd<'_>> = fds
        .iter()
        .map(|p| {
            let mut events = PollFlags::empty();
            events.set(PollFlags::POLLIN, p.readable);
            events.set(PollFlags::POLLOUT, p.writable);
            nix::poll::PollFd::new(p.fd, events)
        })
        .collect();
    let deadline = timeout.map(|t| Deadline::after(t).instant());
    loop {
        let ms = match deadline {
            None | Some(None) => PollTimeout::NONE,
            Some(Some(d)) => PollTimeout::try_from(timeout_ms(d.saturating_duration_since(Instant::now())))
                .unwrap_or(PollTimeout::MAX),
        };
        match nix::poll::poll(&mut set, ms) {
            Ok(n) => {
                for (p, r) in fds.iter_mut().zip(&set) {
                    p.revents = r.revents().map_or(0, |f| f.bits());
                }
                return Ok(n.unsigned_abs() as usize);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Milliseconds for `poll`, rounded up so that a wait never ends early, and
/// capped at `c_int::MAX`.
pub(crate) fn timeout_ms(t: Duration) -> libc::c_int {
    let ms = t.as_nanos().div_ceil(1_000_000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

/// The descriptors this process holds open, in ascending order.
///
/// ```
/// let fds = mp_sys::fd::open_fds()?;
/// assert!(fds.windows(2).all(|w| w[0] < w[1]));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn open_fds() -> io::Result<Vec<RawFd>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) {
            fds.push(fd);
        }
    }
    // The directory stream's own fd was listed too and is closed now: keep
    // only the descriptors that are still valid.
    fds.retain(|&fd| is_valid(fd));
    fds.sort_unstable();
    Ok(fds)
}

/// How many descriptors this process holds open (tests use it to find leaks).
///
/// ```
/// let before = mp_sys::fd::count_open_fds()?;
/// let pair = mp_sys::fd::pipe()?;
/// assert_eq!(mp_sys::fd::count_open_fds()?, before + 2);
/// drop(pair);
/// assert_eq!(mp_sys::fd::count_open_fds()?, before);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn count_open_fds() -> io::Result<usize> {
    open_fds().map(|v| v.len())
}

/// Whether `fd` is an open descriptor of this process.
///
/// ```
/// assert!(!mp_sys::fd::is_valid(-1));
/// ```
pub fn is_valid(fd: RawFd) -> bool {
    // procfs lists exactly the open descriptors; asking the kernel about a
    // bare number with `fcntl` would need a borrowed descriptor that may not
    // exist.
    fd >= 0 && std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_ok()
}
