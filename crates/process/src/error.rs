//! The process crate's error type.

use std::io;

/// What went wrong starting, waiting for or signalling a process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// `start` was called twice on the same `Process`.
    #[error("the process {0} was already started; a Process can be started once")]
    AlreadyStarted(String),
    /// `join`, `terminate` or `kill` before `start`.
    #[error("the process {0} was not started yet: call start() first")]
    NotStarted(String),
    /// A call on a `Process` after `close`.
    #[error("the process {0} is closed")]
    Closed(String),
    /// `close` while the process runs.
    #[error("cannot close the process {0} while it is running: join it (or kill it) first")]
    StillRunning(String),
    /// A daemonic process tried to start a child (as in Python).
    #[error("a daemonic process is not allowed to have children")]
    DaemonicParent,
    /// `Process::from_closure` under a start method other than fork.
    #[error(
        "a closure can only run in a child started with the fork method; under {0:?} pass a fn item \
         (or a closure that captures nothing) to Process::new, with its data as arguments"
    )]
    ClosureNeedsFork(crate::StartMethod),
    /// The target cannot be named in another process (it captures data).
    #[error("{0}")]
    Target(#[from] mp_sys::code::EntryError),
    /// `set_start_method` after a process was started with the
    /// process-wide method.
    #[error("the start method can only be set before the first process starts (it is {0:?})")]
    StartMethodFixed(crate::StartMethod),
    /// The environment variable that chooses the process-wide start method
    /// (`MP_START_METHOD`) names none, and the program set none: no child is
    /// started with a method nobody asked for.
    #[error(
        "{variable}={value:?} is not a start method: use one of {valid} (or unset {variable} for the \
         default, forkserver), or call set_start_method"
    )]
    UnknownStartMethod {
        /// The variable's name.
        variable: &'static str,
        /// Its value.
        value: String,
        /// The valid values, comma-separated.
        valid: &'static str,
    },
    /// The arguments could not be encoded for the child.
    #[error("cannot send the arguments to the child: {0}")]
    Codec(#[from] mp_codec::CodecError),
    /// The child could not be started, or died before it took its bootstrap
    /// message; what it printed on stderr says why.
    #[error("the child process could not start: {0}")]
    Bootstrap(String),
    /// The operating system refused.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}
