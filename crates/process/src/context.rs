//! Contexts: a start method pinned for the processes they make (the
//! method itself and the process-wide choice live in [`method`](crate::method)).

use crate::method::StartMethod;
use crate::process::Process;
use crate::target::{Args, Run, Target};

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
