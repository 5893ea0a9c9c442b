//! The errors of mp-queue: [`PutError`] hands the item back, [`GetError`]
//! says why nothing came, [`QueueError`] covers the rest.

use std::fmt;
use std::io;

/// Why a `put` did not queue its item; the item is inside, nothing is lost.
///
/// ```
/// let q = mp_queue::Queue::with_maxsize(1)?;
/// q.put(1u8)?;
/// match q.put_nowait(2) {
///     Err(mp_queue::PutError::Full(item)) => assert_eq!(item, 2),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub enum PutError<T> {
    /// The queue holds `maxsize` items (or its ring is at its largest) and
    /// no room came before the timeout (at once for `put_nowait`).
    Full(T),
    /// The queue was [closed](crate::Queue::close).
    Closed(T),
    /// The queue is out of reach: the process that holds it (a manager's
    /// server, for a `QueueProxy`) was shut down or died. Unlike `Closed`,
    /// nobody closed the queue; whatever it held is lost with its server.
    /// A local [`Queue`](crate::Queue) never returns this.
    Disconnected(T),
    /// The item could not be encoded (a `Serialize` impl failed, a handle
    /// could not be duplicated, too many descriptors in one item) or its
    /// descriptors could not be passed; the message says which.
    Encode(T, String),
}

impl<T> PutError<T> {
    /// The item that was not queued.
    ///
    /// ```
    /// let q = mp_queue::Queue::new()?;
    /// q.close();
    /// assert_eq!(q.put(String::from("late")).unwrap_err().into_inner(), "late");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t) | PutError::Closed(t) | PutError::Disconnected(t) | PutError::Encode(t, _) => t,
        }
    }

    /// Whether the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_))
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, PutError::Closed(_))
    }

    /// Whether the queue's server (or peer) is gone: see
    /// [`Disconnected`](PutError::Disconnected).
    ///
    /// ```
    /// let e = mp_queue::PutError::Disconnected(5u8);
    /// assert!(e.is_disconnected() && !e.is_closed());
    /// assert!(e.to_string().contains("gone"));
    /// assert_eq!(e.into_inner(), 5);
    /// ```
    pub fn is_disconnected(&self) -> bool {
        matches!(self, PutError::Disconnected(_))
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Disconnected(_) => f.write_str("Disconnected(..)"),
            PutError::Encode(_, msg) => f.debug_tuple("Encode").field(&"..").field(msg).finish(),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full; the item was handed back"),
            PutError::Closed(_) => f.write_str("the queue is closed; the item was handed back"),
            PutError::Disconnected(_) => f.write_str(
                "the queue's server is gone (it was shut down or died); the item was handed back: \
                 start a new manager (or reconnect) and a new queue",
            ),
            PutError::Encode(_, msg) => write!(f, "the item could not be queued: {msg}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

/// Why a `get` returned no item.
///
/// ```
/// let q = mp_queue::Queue::<u8>::new()?;
/// assert_eq!(q.get_nowait(), Err(mp_queue::GetError::Empty));
/// q.close();
/// assert_eq!(q.get_nowait(), Err(mp_queue::GetError::Closed));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum GetError {
    /// No item came before the timeout (at once for `get_nowait`).
    #[error("the queue is empty")]
    Empty,
    /// The queue is closed and every item in it has been taken.
    #[error("the queue is closed and empty")]
    Closed,
    /// The queue is out of reach: the process that holds it (a manager's
    /// server, for a `QueueProxy`) was shut down or died, so no item can
    /// come. A local [`Queue`](crate::Queue) never returns this.
    #[error(
        "the queue's server is gone (it was shut down or died): start a new manager (or reconnect) and a new queue"
    )]
    Disconnected,
    /// An item was taken but is not a `T` (another type was put through a
    /// handle of another type, or its handles could not be rebuilt); the item
    /// is consumed, the queue goes on.
    #[error("an item was taken from the queue but could not be decoded: {0}")]
    Decode(String),
}

/// What went wrong making or using a queue, other than a put or a get.
///
/// ```
/// let q = mp_queue::JoinableQueue::<u8>::new()?;
/// let e = q.task_done().unwrap_err();
/// assert!(e.to_string().contains("more times"), "{e}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The shared memory or the socket of a new queue could not be made
    /// (out of memory or of file descriptors).
    #[error("cannot create the queue's {what}: {source}")]
    Create {
        /// The part that failed.
        what: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// An argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// `task_done` was called more times than items were put (Python's
    /// `ValueError: task_done() called too many times`).
    #[error("task_done() called more times than items were put on the queue")]
    TaskDoneTooOften,
}
