//! What can go wrong with a pool and its tasks.

use serde::{Deserialize, Serialize};

/// Why a task has no value. The task's own value comes back as it is (a
/// task returning `Result` gives that `Result`); these are what the pool
/// adds.
///
/// ```
/// use mp_pool::TaskError;
/// let e = TaskError::WorkerLost { exitcode: -9 };
/// assert_eq!(e.to_string(), "the worker running the task died (exit code -9, killed by signal 9); a new worker took its place");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the message is the panic's.
    #[error("the task panicked: {0}")]
    Panicked(String),
    /// The worker process died while it ran the task (killed, aborted, or
    /// it called `exit`). The pool started a new worker.
    #[error("the worker running the task died (exit code {exitcode}{}); a new worker took its place", signal_note(*.exitcode))]
    WorkerLost {
        /// The worker's exit code: `-N` for signal `N`, as in Python.
        exitcode: i32,
    },
    /// The result was not ready within the timeout. The task goes on;
    /// `get` can be called again.
    #[error("the result was not ready within the timeout (the task goes on; ask again)")]
    Timeout,
    /// The task, its arguments or its result could not be encoded.
    #[error("could not encode: {0}")]
    Encode(String),
    /// The task's arguments or result could not be decoded.
    #[error("could not decode: {0}")]
    Decode(String),
    /// The pool was closed or terminated before the task could run.
    #[error("the pool is closed or was terminated: the task did not run (or its result was dropped)")]
    Closed,
    /// The pool's initializer failed in a worker, so no worker can run
    /// tasks.
    #[error("the pool's initializer failed in a worker, so the pool cannot run tasks: {0}")]
    Initializer(String),
    /// The task was lost with the server that held it (a cluster's Redis
    /// came back without its data): it may or may not have run, and no
    /// result will come. The message says what happened and what to do.
    #[error("the task was lost: {0}")]
    Lost(String),
}

fn signal_note(code: i32) -> String {
    if code < 0 {
        format!(", killed by signal {}", -code)
    } else {
        String::new()
    }
}

/// Why a pool could not be built, joined or terminated.
///
/// ```
/// let e = mp_pool::Pool::new(0).unwrap_err();
/// assert!(matches!(e, mp_pool::PoolError::InvalidArgument(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A worker process could not be started.
    #[error("could not start a pool worker: {0}")]
    Start(#[from] mp_process::ProcessError),
    /// A bad setting, such as zero processes.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `join` was called on a pool that is still running: call `close` or
    /// `terminate` first (Python raises `ValueError` here).
    #[error("join() needs close() or terminate() first: the pool is still accepting tasks")]
    StillRunning,
    /// `join_timeout` gave up.
    #[error("the pool's workers did not finish within the timeout")]
    Timeout,
    /// The operating system refused something.
    #[error("pool: {0}")]
    Io(#[from] std::io::Error),
}

/// How a task failed inside a worker, as the worker reports it.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Failure {
    Panicked(String),
    Encode(String),
    Decode(String),
}

impl From<Failure> for TaskError {
    fn from(f: Failure) -> TaskError {
        match f {
            Failure::Panicked(m) => TaskError::Panicked(m),
            Failure::Encode(m) => TaskError::Encode(m),
            Failure::Decode(m) => TaskError::Decode(m),
        }
    }
}
