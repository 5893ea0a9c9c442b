//! The codec's error type.

use std::io;

/// What went wrong while encoding, decoding, sending or receiving a frame.
///
/// Every variant says what happened; none of them is a panic. Errors marked
/// *in sync* leave the stream at the start of the next frame, so the caller
/// may keep reading; the others mean the stream can no longer be trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The operating system refused a read or write.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection between two frames (a clean end of
    /// stream: no data was lost).
    #[error("end of stream: the peer closed the connection")]
    Eof,
    /// The peer closed the connection in the middle of a frame.
    #[error("truncated frame: expected {expected} bytes, the stream ended after {got}")]
    Truncated {
        /// Bytes the frame announced (header included).
        expected: usize,
        /// Bytes that arrived before the end.
        got: usize,
    },
    /// The bytes are not an mp-codec frame header (wrong magic number or
    /// reserved bits): the stream is out of step or the peer speaks another
    /// protocol.
    #[error("corrupt frame: {0}")]
    Corrupt(String),
    /// A frame is larger than the limit. Raise
    /// [`Limits::max_frame_len`](crate::Limits::max_frame_len) if such
    /// messages are expected.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The frame's payload length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The number of file descriptors that came with a frame is not the
    /// number its header announced (in sync; the descriptors were closed).
    #[error("frame announced {announced} file descriptors but {received} arrived")]
    FdCount {
        /// Descriptors the header announced.
        announced: usize,
        /// Descriptors that arrived.
        received: usize,
    },
    /// A value holds more handles than one message can carry.
    #[error("a message can carry at most {max} file descriptors; this one holds {count}")]
    TooManyFds {
        /// Descriptors the value holds.
        count: usize,
        /// The kernel's limit per message.
        max: usize,
    },
    /// The value could not be encoded (a serde error, or a handle that could
    /// not be duplicated). A `Serialize` impl's own message (its
    /// `Error::custom`) is kept word for word.
    #[error("cannot encode the value: {0}")]
    Encode(String),
    /// The payload is not a valid encoding of the requested type: a value of
    /// another type, or corrupt bytes, or a `Deserialize` impl refused it
    /// (its `Error::custom` message is kept word for word) (in sync).
    #[error("cannot decode the frame: {0}")]
    Decode(String),
    /// A handle's descriptor is missing or was claimed twice, or descriptors
    /// came that no handle in the value claimed (in sync).
    #[error("handle error: {0}")]
    Handle(String),
    /// No frame arrived within the timeout (in sync: nothing was read).
    #[error("timed out waiting for a frame")]
    Timeout,
    /// A frame began but its bytes stopped coming before the deadline (the
    /// stream is out of step).
    #[error(
        "the peer stopped sending in the middle of a frame ({got} of {expected} bytes arrived before the deadline)"
    )]
    Stalled {
        /// Bytes the frame announced (header included), as far as known.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
}

impl CodecError {
    /// Whether the peer closed the connection (cleanly or in mid-frame).
    ///
    /// ```
    /// assert!(mp_codec::CodecError::Eof.is_eof());
    /// ```
    pub fn is_eof(&self) -> bool {
        match self {
            CodecError::Eof | CodecError::Truncated { .. } => true,
            CodecError::Io(e) => matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset),
            _ => false,
        }
    }
}
