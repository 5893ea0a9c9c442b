//! Start methods, the process-wide default, and contexts that pin one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::ProcessError;
use crate::process::Process;
use crate::target::{Args, Run, Target};

/// How a child process is started.
///
/// | method | how | cost | closures |
/// |---|---|---|---|
/// | `Fork` | `fork()` of the caller | about a fork | yes ([`Process::from_closure`]) |
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

static METHOD: Mutex<Option<StartMethod>> = Mutex::new(None);
pub(crate) static STARTED: AtomicBool = AtomicBool::new(false);

/// Sets the process-wide start method. Only before the first process starts
/// (Python raises `RuntimeError` after; this returns an error).
///
/// ```
/// use mp_process::{get_start_method, set_start_method, StartMethod};
/// set_start_method(StartMethod::Spawn)?;
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// # Ok::<(), mp_process::ProcessError>(())
/// ```
pub fn set_start_method(m: StartMethod) -> Result<(), ProcessError> {
    let mut cur = METHOD.lock().unwrap_or_else(|e| e.into_inner());
    if STARTED.load(Ordering::Acquire) && cur.unwrap_or(default_method()) != m {
        return Err(ProcessError::StartMethodFixed(cur.unwrap_or(default_method())));
    }
    *cur = Some(m);
    Ok(())
}

/// The process-wide start method: the one set, else `MP_START_METHOD` from the
/// environment (`fork`, `spawn` or `forkserver`), else [`StartMethod::ForkServer`].
///
/// ```
/// let m = mp_process::get_start_method();
/// # let _ = m;
/// ```
pub fn get_start_method() -> StartMethod {
    METHOD
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(default_method)
}

pub(crate) fn set_inherited_method(m: StartMethod) {
    *METHOD.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
}

fn default_method() -> StartMethod {
    match std::env::var("MP_START_METHOD").as_deref() {
        Ok("fork") => StartMethod::Fork,
        Ok("spawn") => StartMethod::Spawn,
        _ => StartMethod::ForkServer,
    }
}

/// A start method to create processes with, whatever the process-wide one.
///
/// ```
/// use mp_process::{get_context, StartMethod};
/// fn work() {}
/// let mut p = get_context(StartMethod::Spawn).process(work, ());
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), mp_process::ProcessError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Context {
    method: StartMethod,
}

/// A context for start method `m` (Python's `multiprocessing.get_context`).
pub fn get_context(m: StartMethod) -> Context {
    Context { method: m }
}

impl Context {
    /// The context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// [`Process::new`] with this context's start method.
    pub fn process<F: Target<A>, A: Args>(&self, target: F, args: A) -> Process {
        Process::new(target, args).start_method(self.method)
    }

    /// [`Process::from_run`] with this context's start method.
    pub fn process_from_run<T: Run>(&self, value: T) -> Process {
        Process::from_run(value).start_method(self.method)
    }
}

/// The number of CPUs this process may use.
///
/// ```
/// assert!(mp_process::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
