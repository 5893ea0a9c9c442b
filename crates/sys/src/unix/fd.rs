//! File-descriptor helpers: close-on-exec, non-blocking mode, pipes, raw reads
//! and writes, `poll`, and counting the descriptors a process holds.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::{cvt, cvt_r};

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
    update_flag(fd, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC, on)
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
    // SAFETY: F_GETFD takes no argument and only reads the flags of a live fd.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    Ok(flags & libc::FD_CLOEXEC != 0)
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
    update_flag(fd, libc::F_GETFL, libc::F_SETFL, libc::O_NONBLOCK, on)
}

/// Sets or clears `bit` in the flags `fcntl` reads with `get` and writes with
/// `set` (descriptor flags or file status flags), skipping the write when
/// nothing changes.
fn update_flag(fd: BorrowedFd<'_>, get: libc::c_int, set: libc::c_int, bit: libc::c_int, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_GETFL take no argument and only read the flags of a
    // live (borrowed) descriptor.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), get) })?;
    let new = if on { flags | bit } else { flags & !bit };
    if new != flags {
        // SAFETY: F_SETFD/F_SETFL take an int of flags; the fd is open.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), set, new) })?;
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
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid out-array of two ints, as pipe2 requires.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call.
    let n = cvt_r(|| unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(n.unsigned_abs())
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
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call.
    let n = cvt_r(|| unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })?;
    Ok(n.unsigned_abs())
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
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|p| libc::pollfd {
            fd: p.fd.as_raw_fd(),
            events: if p.readable { libc::POLLIN } else { 0 } | if p.writable { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    let deadline = timeout.map(|t| Instant::now().checked_add(t));
    loop {
        let ms: libc::c_int = match deadline {
            None | Some(None) => -1,
            Some(Some(d)) => timeout_ms(d.saturating_duration_since(Instant::now())),
        };
        let nfds = libc::nfds_t::try_from(raw.len()).map_err(|_| super::invalid_input("too many fds to poll"))?;
        // SAFETY: `raw` is a valid array of `nfds` pollfd structs for the call.
        match cvt(unsafe { libc::poll(raw.as_mut_ptr(), nfds, ms) }) {
            Ok(n) => {
                for (p, r) in fds.iter_mut().zip(&raw) {
                    p.revents = r.revents;
                }
                return Ok(n.unsigned_abs() as usize);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
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
    // SAFETY: F_GETFD on any integer only reads the fd table; an invalid one
    // fails with EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1
}
