//! The bottom of mp-process: the start methods, named. The process-wide
//! choice among them lives in [`setting`](crate::setting).

use serde::{Deserialize, Serialize};

/// How a child process is started.
///
/// | method | how | cost | closures |
/// |---|---|---|---|
/// | `Fork` | `fork()` of the caller | about a fork | yes ([`Process::from_closure`](crate::Process::from_closure)) |
/// | `Spawn` | re-execute this binary; the child is diverted before `main` | about an exec | no |
/// | `ForkServer` | fork of a single-threaded server spawned once | about a fork, safe with threads | no |
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// Python's `'fork'`.
    Fork,
    /// Python's `'spawn'`.
    Spawn,
    /// Python's `'forkserver'`, the default on Linux.
    ForkServer,
}

impl StartMethod {
    /// Python's name for the method: `"fork"`, `"spawn"` or `"forkserver"`
    /// (what `MP_START_METHOD` takes).
    ///
    /// ```
    /// assert_eq!(mp_process::StartMethod::ForkServer.name(), "forkserver");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }

    /// The method Python calls `name`, if any (Python's names only, as in
    /// `MP_START_METHOD`).
    ///
    /// ```
    /// use mp_process::StartMethod;
    /// assert_eq!(StartMethod::from_name("spawn"), Some(StartMethod::Spawn));
    /// assert_eq!(StartMethod::from_name("frok"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<StartMethod> {
        [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer]
            .into_iter()
            .find(|m| m.name() == name)
    }
}
