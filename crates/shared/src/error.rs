//! [`SharedError`], the error of every call in mp-shared.

use std::io;

/// What went wrong with a shared value, array or segment.
///
/// ```
/// let a = mp_shared::Array::<i32>::new(3)?;
/// let e = a.set(5, 1).unwrap_err();
/// assert!(matches!(e, mp_shared::SharedError::OutOfRange { index: 5, len: 3 }));
/// # Ok::<(), mp_shared::SharedError>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedError {
    /// The shared memory could not be made (out of memory or descriptors).
    #[error("cannot create the shared memory of a {what}: {source}")]
    Create {
        /// What was being made.
        what: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// An index past the end (Python's `IndexError`).
    #[error("index {index} is out of range for {len} elements")]
    OutOfRange {
        /// The first index past the end that was asked for.
        index: usize,
        /// The number of elements.
        len: usize,
    },
    /// A handle received from another process holds another type, kind or
    /// length than the receiver expected.
    #[error("expected a {expected} handle, got {found}: the sender and receiver disagree on the type")]
    WrongType {
        /// What was being decoded.
        expected: String,
        /// What the handle held.
        found: String,
    },
    /// An argument is out of range or malformed (a zero size, a bad name).
    #[error("{0}")]
    InvalidArgument(String),
    /// No shared memory segment has that name (Python's `FileNotFoundError`).
    #[error("no shared memory segment named {0:?}: it was never created, or was unlinked")]
    NotFound(String),
    /// A segment of that name exists already (Python's `FileExistsError`).
    #[error("a shared memory segment named {0:?} exists already: attach to it, or choose another name")]
    AlreadyExists(String),
    /// The segment was closed in this process.
    #[error("the shared memory segment {0:?} is closed in this process")]
    Closed(String),
    /// A lock could not be taken.
    #[error(transparent)]
    Sync(#[from] mp_sync::SyncError),
    /// Another system error.
    #[error("shared memory: {0}")]
    Io(#[from] io::Error),
}
