//! `wait` and `Waitable`: Python's `multiprocessing.connection.wait`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use mp_sys::fd::{self, PollFd};

use crate::connection::Connection;
use crate::error::ConnectionError;
use crate::listener::Listener;
use mp_sys::time::Deadline;

/// The descriptor a [`Waitable`] is waited on through: borrowed from the
/// object, or a duplicate the object handed out (when its own sits behind
/// a lock, as a process's does).
///
/// ```
/// use mp_connection::WaitFd;
/// use std::os::fd::{AsFd, AsRawFd};
/// let (r, _w) = mp_sys::fd::pipe()?;
/// let borrowed = WaitFd::Borrowed(r.as_fd());
/// let owned = WaitFd::Owned(r.try_clone()?);
/// assert_eq!(borrowed.as_fd().as_raw_fd(), r.as_raw_fd());
/// assert_ne!(owned.as_fd().as_raw_fd(), r.as_raw_fd());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub enum WaitFd<'a> {
    /// The object's own descriptor.
    Borrowed(BorrowedFd<'a>),
    /// A descriptor of its own (closed after the wait).
    Owned(OwnedFd),
}

impl AsFd for WaitFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            WaitFd::Borrowed(fd) => *fd,
            WaitFd::Owned(fd) => fd.as_fd(),
        }
    }
}

/// Something [`wait`] can wait on: an object with a descriptor that turns
/// readable when the object is *ready* and stays so until it is used.
///
/// - [`Connection`]: a message has begun to arrive, or the peer closed (a
///   connection at end of file is ready: its `recv` returns the end).
/// - [`Listener`]: a client is waiting to be accepted.
/// - `mp_process::Process` (implemented there): the started process has
///   exited (Python's `Process.sentinel`).
///
/// Implement it for a type of your own by returning the descriptor to poll
/// for readability:
///
/// ```
/// use mp_connection::{ConnectionError, WaitFd, Waitable};
/// use std::os::fd::{AsFd, OwnedFd};
/// use std::time::Duration;
///
/// struct Doorbell(OwnedFd);
/// impl Waitable for Doorbell {
///     fn wait_fd(&self) -> Result<WaitFd<'_>, ConnectionError> {
///         Ok(WaitFd::Borrowed(self.0.as_fd()))
///     }
/// }
///
/// let (r, w) = mp_sys::fd::pipe()?;
/// let bell = Doorbell(r);
/// mp_sys::fd::write(w.as_fd(), b"!")?;
/// assert_eq!(mp_connection::wait(&[&bell], Some(Duration::ZERO))?, vec![0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Waitable {
    /// The descriptor that is readable when this object is ready, or why it
    /// cannot be waited on (closed, a simplex writer, a process not
    /// started).
    fn wait_fd(&self) -> Result<WaitFd<'_>, ConnectionError>;

    /// The connection this object is, for [`wait`] to look into a pipe's
    /// shared ring as well as at its descriptor. Not for implementing: the
    /// default (`None`) is right for every type but [`Connection`].
    #[doc(hidden)]
    fn as_connection(&self) -> Option<&Connection> {
        None
    }
}

/// A pipe's end is ready when a message waits in its shared ring too, which
/// its descriptor does not show: [`wait`] looks at both. A type of one's own
/// that hands out a pipe end's descriptor through `wait_fd` gets one that
/// tells the truth: the ring is turned off for messages sent to that end
/// afterwards, as by [`Connection::fileno`].
impl Waitable for Connection {
    fn wait_fd(&self) -> Result<WaitFd<'_>, ConnectionError> {
        self.fd_for_others().map(WaitFd::Borrowed)
    }

    fn as_connection(&self) -> Option<&Connection> {
        Some(self)
    }
}

impl Waitable for Listener {
    fn wait_fd(&self) -> Result<WaitFd<'_>, ConnectionError> {
        self.listen_fd().map(WaitFd::Borrowed)
    }
}

impl<T: Waitable + ?Sized> Waitable for &T {
    fn wait_fd(&self) -> Result<WaitFd<'_>, ConnectionError> {
        (**self).wait_fd()
    }

    fn as_connection(&self) -> Option<&Connection> {
        (**self).as_connection()
    }
}

/// Python's `multiprocessing.connection.wait(object_list, timeout)`: waits
/// until at least one of `objects` is ready, or `timeout` passes (`None`:
/// forever), and returns the indexes of the ready ones, in order (empty
/// after a timeout). Nothing is consumed.
///
/// ```
/// use mp_connection::{pipe, wait};
/// use std::time::Duration;
/// let (a1, b1) = pipe()?;
/// let (a2, mut b2) = pipe()?;
/// a1.send(&"hi")?;
/// b2.close()?; // a2 is now at end of file: ready too
/// assert_eq!(wait(&[&b1, &a2], Some(Duration::from_secs(5)))?, vec![0, 1]);
/// assert!(wait(&[&a1], Some(Duration::from_millis(1)))?.is_empty());
/// # Ok::<(), mp_connection::ConnectionError>(())
/// ```
///
/// Errors: an object that cannot be waited on (a closed connection, the
/// writer of a simplex pipe, a process that was not started) fails the whole
/// call before any waiting.
///
/// # Differences from Python
///
/// Python returns the ready objects; this returns their indexes into
/// `objects`.
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>, ConnectionError> {
    let deadline = Deadline::from_timeout(timeout).instant();
    let fds: Vec<WaitFd<'_>> = objects
        .iter()
        .map(|o| match o.as_connection() {
            Some(c) => c.read_fd().map(WaitFd::Borrowed),
            None => o.wait_fd(),
        })
        .collect::<Result<_, _>>()?;
    loop {
        // Pipe ends with a message in their ring are ready without their
        // descriptor; the others ask for a wake-up before the sleep.
        let mut ready = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            if let Some(c) = o.as_connection()
                && c.ready_or_arm()?
            {
                ready.push(i);
            }
        }
        let sleep = if !ready.is_empty() {
            Some(Duration::ZERO)
        } else {
            match (timeout, deadline) {
                (None, _) => None,
                (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
                // A timeout past `Instant`'s range: in long steps.
                (Some(_), None) => Some(Duration::from_secs(3600)),
            }
        };
        let mut set: Vec<PollFd<'_>> = fds.iter().map(|f| PollFd::readable(f.as_fd())).collect();
        fd::poll(&mut set, sleep)?;
        for (i, p) in set.iter().enumerate() {
            if !p.is_ready() || ready.contains(&i) {
                continue;
            }
            // A pipe end's descriptor may have woken for wake-ups only.
            let really = match objects[i].as_connection() {
                Some(c) => c.confirm_ready()?,
                None => true,
            };
            if really {
                ready.push(i);
            }
        }
        if !ready.is_empty() {
            ready.sort_unstable();
            return Ok(ready);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Vec::new());
        }
    }
}
