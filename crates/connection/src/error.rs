//! The connection crate's error type.

use std::io;

use mp_codec::CodecError;

/// What went wrong sending, receiving, listening, connecting or waiting.
///
/// After an error the connection is in one of two states, which each
/// variant names:
/// - *in sync*: the message that failed was consumed whole; the next call
///   reads the next message. Wrong type or kind ([`Decode`] from a valid
///   frame), [`BufferTooShort`], descriptors that did not match.
/// - *broken*: the byte stream is out of step (a corrupt header, a length
///   over the limit, a peer gone mid-message); every later receive fails
///   with [`Broken`] and the connection should be closed. Sending still
///   works if the peer still reads.
///
/// [`Decode`]: ConnectionError::Decode
/// [`BufferTooShort`]: ConnectionError::BufferTooShort
/// [`Broken`]: ConnectionError::Broken
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer closed its end (or died) between two messages: there is
    /// nothing more to receive (Python's `EOFError`).
    #[error("end of file: the other end of the connection was closed (or its process ended)")]
    Eof,
    /// The peer closed its end (or died) in the middle of a message; the
    /// part that arrived was dropped (broken).
    #[error("the other end closed in the middle of a message: {got} of {expected} bytes arrived")]
    Truncated {
        /// Bytes the message announced (with its 12-byte header).
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The message did not fit the buffer given to `recv_bytes_into`; here
    /// it is whole, consumed from the connection (in sync).
    #[error("the buffer is too short for a message of {} bytes; the message is in this error", .0.len())]
    BufferTooShort(Vec<u8>),
    /// The connection (or listener) was closed by `close` on this handle.
    #[error("the connection is closed")]
    Closed,
    /// `send` or `send_bytes` on the read end of a simplex pipe.
    #[error("this is the read end of a simplex pipe: it cannot send (use the other end, or pipe() for both ways)")]
    ReadOnly,
    /// `recv`, `poll` or `wait` on the write end of a simplex pipe.
    #[error("this is the write end of a simplex pipe: it cannot receive (use the other end, or pipe() for both ways)")]
    WriteOnly,
    /// The authkey handshake failed: the keys differ, the peer does not
    /// authenticate (or does when this side does not), or it sent something
    /// else. The connection was closed.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The message is not a value of the requested type, or is of the other
    /// kind (sent with `send_bytes`, received with `recv`, or the reverse):
    /// in sync. Or the frame is corrupt: broken.
    #[error("cannot decode the message: {0}")]
    Decode(String),
    /// A message over the limit: on sending, nothing was sent; on receiving,
    /// the announced length was refused before anything was allocated for it
    /// (broken).
    #[error("a message of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The limit (1 GiB by default, the codec's).
        max: usize,
    },
    /// The value could not be encoded: a serde error, or a handle (a
    /// Connection, a shared region) sent over a connection that cannot carry
    /// descriptors (TCP). Nothing was sent.
    #[error("cannot encode the value: {0}")]
    Encode(String),
    /// An earlier receive found the stream out of step; nothing more can be
    /// read from this connection. Close it.
    #[error("the connection cannot be read any more: {0}; close it")]
    Broken(String),
    /// A `*_timeout` call ran out of time: `accept_timeout` found no
    /// client (whose handshake completed), or a receive's message did not
    /// arrive whole. In sync when nothing of the message had arrived;
    /// broken when part had (the next receive says
    /// [`Broken`](ConnectionError::Broken)).
    #[error("timed out")]
    Timeout,
    /// The operating system refused.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl ConnectionError {
    /// Whether the other end is gone: closed or dead, between messages or in
    /// the middle of one, seen by a receive ([`Eof`](Self::Eof),
    /// [`Truncated`](Self::Truncated)) or a send (a broken pipe or a reset).
    ///
    /// ```
    /// let (a, b) = mp_connection::pipe()?;
    /// drop(b);
    /// assert!(a.recv::<i32>().unwrap_err().is_eof());
    /// assert!(a.send(&1).unwrap_err().is_eof());
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn is_eof(&self) -> bool {
        match self {
            ConnectionError::Eof | ConnectionError::Truncated { .. } => true,
            ConnectionError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// Maps a codec error met while receiving.
impl From<CodecError> for ConnectionError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Eof => ConnectionError::Eof,
            CodecError::Truncated { expected, got } => ConnectionError::Truncated { expected, got },
            CodecError::TooLarge { len, max } => ConnectionError::TooLarge { len, max },
            CodecError::Io(e) => ConnectionError::Io(e),
            CodecError::Timeout => ConnectionError::Timeout,
            CodecError::Encode(m) => ConnectionError::Encode(m),
            CodecError::TooManyFds { .. } => ConnectionError::Encode(e.to_string()),
            other => ConnectionError::Decode(other.to_string()),
        }
    }
}
