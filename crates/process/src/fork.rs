//! The fork start method.

use std::sync::atomic::{AtomicBool, Ordering};

use mp_sys::process::Child;
use mp_sys::signal::Signal;

use crate::child::{self, Job};
use crate::error::ProcessError;
use crate::identity;

/// Forks a child that runs `job` directly (no encoding: the child has the
/// parent's memory). Warns on stderr, once, when other threads are running.
pub(crate) fn start(
    name: &str,
    identity: Vec<u32>,
    daemon: bool,
    parent_name: String,
    job: Box<dyn Job>,
) -> Result<Child, ProcessError> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let threads = mp_sys::process::thread_count().unwrap_or(1);
    if threads > 1 && !WARNED.swap(true, Ordering::AcqRel) {
        eprintln!(
            "multiprocessing: warning: fork with {threads} threads running; the child may deadlock on a lock \
             another thread held (use the spawn or forkserver start method)"
        );
    }
    crate::process::flush_stdout();
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
    let child = mp_sys::process::fork_run(move || {
        crate::forkserver::forget_inherited();
        identity::become_forked_child(me);
        if daemon {
            let _ = mp_sys::signal::set_parent_death_signal(Some(Signal::KILL));
        }
        child::run_job(|| job.run_here())
    })?;
    Ok(child)
}
