//! The manager crate's error type, and the faults the server replies with.

use std::io;

use mp_codec::CodecError;
use mp_connection::ConnectionError;
use mp_process::ProcessError;
use serde::{Deserialize, Serialize};

/// What went wrong starting a manager, connecting to one, or calling a
/// proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The server process could not be started.
    #[error("cannot start the manager's server process: {0}")]
    Start(#[from] ProcessError),
    /// The server is gone: it was shut down, or it died (killed, crashed),
    /// before or during the call. The call's effect on the server is
    /// unknown. Start a new manager.
    #[error("the manager's server is gone ({0}); it was shut down or died: start a new manager")]
    ServerGone(String),
    /// The authkey handshake with a remote manager failed: the keys differ
    /// (on the server side, a client with the wrong key is refused the same
    /// way).
    #[error("authentication with the manager failed: {0}")]
    Authentication(String),
    /// Connecting, listening or accepting failed.
    #[error("manager connection failed: {0}")]
    Connection(ConnectionError),
    /// The method panicked (or failed) on the server. The server keeps
    /// serving; the object may hold whatever the method left in it.
    #[error("the method failed on the manager's server: {0}")]
    Remote(String),
    /// The arguments or the result could not be encoded or decoded (a type
    /// that serde refuses, a handle sent to a remote manager over TCP, or
    /// a proxy whose type parameters differ from the object's).
    #[error("cannot encode or decode a manager message: {0}")]
    Codec(String),
    /// The object on the server is of another type than the proxy says.
    #[error("type mismatch: {0}")]
    WrongType(String),
    /// No object of that name is shared, or no type of that name is
    /// registered.
    #[error("not found on the manager: {0}")]
    NotFound(String),
    /// The server runs a different executable, so it cannot run this
    /// process's methods. Managers serve processes of their own binary.
    #[error("the manager's server runs a different executable: clients and server must run the same binary ({0})")]
    DifferentBinary(String),
    /// A bad argument: an index out of range, a zero-party barrier.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A barrier was broken (aborted, reset, or a waiter timed out).
    #[error("the barrier is broken (aborted, reset, or a waiter timed out)")]
    BrokenBarrier,
    /// A wait on the server timed out.
    #[error("timed out")]
    Timeout,
    /// The operating system refused.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl From<ConnectionError> for ManagerError {
    fn from(e: ConnectionError) -> Self {
        match e {
            ConnectionError::Authentication(m) => ManagerError::Authentication(m),
            e if e.is_eof() => ManagerError::ServerGone(e.to_string()),
            e => ManagerError::Connection(e),
        }
    }
}

impl From<CodecError> for ManagerError {
    fn from(e: CodecError) -> Self {
        if e.is_eof() {
            ManagerError::ServerGone(e.to_string())
        } else {
            ManagerError::Codec(e.to_string())
        }
    }
}

impl ManagerError {
    /// Whether the server is gone (shut down or dead).
    ///
    /// ```
    /// let e = mp_manager::ManagerError::ServerGone("end of file".into());
    /// assert!(e.is_server_gone());
    /// ```
    pub fn is_server_gone(&self) -> bool {
        matches!(self, ManagerError::ServerGone(_))
    }
}

/// Why the server refused or failed a request: sent back in the reply, and
/// turned into a [`ManagerError`] by the caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Fault {
    /// The method panicked; the message.
    Panicked(String),
    /// The request could not be decoded.
    BadRequest(String),
    /// The method's entry was made by another binary.
    DifferentBinary(String),
    /// No object with this id.
    NoSuchObject(u64),
    /// The object is of another type.
    WrongType(String),
    /// No shared object or registered type of this name.
    NotFound(String),
    /// A bad argument.
    Invalid(String),
    /// A barrier was broken.
    Broken,
    /// A wait timed out.
    Timeout,
    /// The client is gone (never sent: it ends a blocked method).
    Gone,
}

impl From<Fault> for ManagerError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Panicked(m) => ManagerError::Remote(m),
            Fault::BadRequest(m) => ManagerError::Codec(format!("the server could not decode the request: {m}")),
            Fault::DifferentBinary(m) => ManagerError::DifferentBinary(m),
            Fault::NoSuchObject(id) => ManagerError::NotFound(format!("no object with id {id} (was it released?)")),
            Fault::WrongType(m) => ManagerError::WrongType(m),
            Fault::NotFound(m) => ManagerError::NotFound(m),
            Fault::Invalid(m) => ManagerError::InvalidArgument(m),
            Fault::Broken => ManagerError::BrokenBarrier,
            Fault::Timeout => ManagerError::Timeout,
            Fault::Gone => ManagerError::ServerGone("the request was abandoned".into()),
        }
    }
}
