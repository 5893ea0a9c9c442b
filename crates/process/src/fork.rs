//! The fork start method.

use std::sync::atomic::{AtomicBool, Ordering};

use mp_sys::process::Child;
use mp_sys::signal::Signal;

use crate::child::{self, Job};
use crate::error::ProcessError;
use crate::identity;

/// How many threads this process runs, if more than one: a forked copy of
/// it may then only make async-signal-safe calls, so a fork-method child is
/// started through the fork server instead (see `Process::start`).
pub(crate) fn other_threads() -> Option<usize> {
    match mp_sys::process::thread_count() {
        Ok(1) => None,
        Ok(n) => Some(n),
        // Unknown: assume the worst, the fork server is always sound.
        Err(_) => Some(2),
    }
}

/// Warns on stderr, once per process, that fork-method children are started
/// through the fork server because other threads run.
pub(crate) fn warn_threads(threads: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::AcqRel) {
        eprintln!(
            "multiprocessing: warning: fork with {threads} threads running: a forked copy of this process could \
             block forever on a lock another thread holds, so fork-method children are started through the \
             fork server instead (their arguments are encoded; start them before any thread, or use the \
             forkserver or spawn method to silence this)"
        );
    }
}

/// The error for a closure (which only a real fork can run) while other
/// threads run.
pub(crate) fn closure_with_threads(threads: usize) -> ProcessError {
    ProcessError::Io(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!(
            "cannot fork safely: this process runs {threads} threads, and a forked copy of it may only make \
             async-signal-safe calls, not run a closure; start closure processes before any thread, or pass a fn \
             item and its arguments to Process::new (those start through the fork server)"
        ),
    ))
}

/// Forks a child that runs `job` directly (no encoding: the child has the
/// parent's memory). Only for a single-threaded parent: mp-sys refuses to
/// fork otherwise.
pub(crate) fn start(
    name: &str,
    identity: Vec<u32>,
    daemon: bool,
    parent_name: String,
    job: Box<dyn Job>,
) -> Result<Child, ProcessError> {
    let _ = std::io::Write::flush(&mut std::io::stdout());
    child::ensure_panic_hook();
    identity::prepare_fork();
    // Built here, so the child only moves it into place.
    let me = identity::Me {
        name: name.to_string(),
        identity,
        daemon,
        is_child: true,
        parent: Some((mp_sys::process::pid(), parent_name)),
    };
    let parent = mp_sys::process::pid();
    let child = mp_sys::process::fork_run(move || {
        if daemon {
            // First, so that a parent killed from here on takes the child
            // with it; then a parent killed before that is seen as gone.
            let _ = mp_sys::signal::set_parent_death_signal(Some(Signal::KILL));
            if mp_sys::process::parent_pid() != parent {
                return 1;
            }
        }
        crate::hooks::run_after_fork();
        // As Python's child forces its own start method: a child of a fork
        // context reports Fork, whatever the parent's default.
        crate::setting::set_forked_method();
        identity::become_forked_child(me);
        child::run_job(|| job.run_here())
    })?;
    Ok(child)
}
