//! What runs in the child, whatever the start method: the job, Python's exit
//! codes and error report, and the child's own exit handling.

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use mp_codec::Frame;
use serde::{Deserialize, Serialize};

use crate::identity;
use crate::target::{Args, Outcome, Run, Target};

/// What the parent tells a spawned or fork-server child about itself.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Meta {
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
    pub(crate) method: crate::StartMethod,
    /// The target's [`Entry`](mp_sys::code::Entry) parts.
    pub(crate) target: (i64, u64),
}

static PANIC: Mutex<Option<String>> = Mutex::new(None);
static HOOKED: AtomicBool = AtomicBool::new(false);
static IN_JOB: AtomicBool = AtomicBool::new(false);

/// Installs, once per process, a panic hook that records a child job's panic
/// message (for `Process <name>:` on stderr) and hands every other panic to
/// the hook that was there before. Called in the parent before a fork, so a
/// forked child inherits it and does no work here.
pub(crate) fn ensure_panic_hook() {
    if HOOKED.swap(true, Ordering::AcqRel) {
        return;
    }
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if IN_JOB.load(Ordering::Acquire) {
            *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
        } else {
            previous(info);
        }
    }));
}

/// Runs the job and turns its outcome into Python's exit code: 0, or 1 with
/// `Process <name>:` and the message on stderr. Then joins this child's own
/// children (terminating daemonic ones) and flushes stdout.
pub(crate) fn run_job(job: impl FnOnce() -> Result<(), String>) -> i32 {
    ensure_panic_hook();
    IN_JOB.store(true, Ordering::Release);
    let outcome = panic::catch_unwind(AssertUnwindSafe(job));
    IN_JOB.store(false, Ordering::Release);
    let code = match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            report(&msg);
            1
        }
        Err(_) => {
            let msg = PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| "panicked".into());
            report(&msg);
            1
        }
    };
    identity::finalize_children();
    let _ = std::io::stdout().flush();
    code
}

fn report(msg: &str) {
    let name = identity::me().name;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "Process {name}:\n{msg}");
}

/// A child's work: run here after a fork, or described for another process.
pub(crate) trait Job: Send {
    /// Runs the job in this (forked) process.
    fn run_here(self: Box<Self>) -> Result<(), String>;
    /// The entry and the encoded arguments for a spawned or fork-server child.
    fn for_child(&self) -> Result<(mp_sys::code::Entry<Frame>, Frame), crate::ProcessError>;
}

pub(crate) struct TargetJob<F, A> {
    pub(crate) f: F,
    pub(crate) args: A,
}

impl<F: Target<A>, A: Args> Job for TargetJob<F, A> {
    fn run_here(self: Box<Self>) -> Result<(), String> {
        self.f.call(self.args).into_result()
    }

    fn for_child(&self) -> Result<(mp_sys::code::Entry<Frame>, Frame), crate::ProcessError> {
        let f = self.f;
        let entry = mp_sys::code::Entry::new(move |frame: Frame| run_target(f, frame))?;
        Ok((entry, mp_codec::encode(&self.args)?))
    }
}

fn run_target<F: Target<A>, A: Args>(f: F, frame: Frame) -> i32 {
    run_job(|| {
        let args: A = mp_codec::decode(frame).map_err(|e| format!("cannot decode the target's arguments: {e}"))?;
        f.call(args).into_result()
    })
}

pub(crate) struct RunJob<T>(pub(crate) T);

impl<T: Run> Job for RunJob<T> {
    fn run_here(self: Box<Self>) -> Result<(), String> {
        self.0.run();
        Ok(())
    }

    fn for_child(&self) -> Result<(mp_sys::code::Entry<Frame>, Frame), crate::ProcessError> {
        let entry = mp_sys::code::Entry::new(|frame: Frame| run_value::<T>(frame))?;
        Ok((entry, mp_codec::encode(&self.0)?))
    }
}

fn run_value<T: Run>(frame: Frame) -> i32 {
    run_job(|| {
        let value: T = mp_codec::decode(frame).map_err(|e| format!("cannot decode the process value: {e}"))?;
        value.run();
        Ok(())
    })
}

pub(crate) struct ClosureJob(pub(crate) Box<dyn FnOnce() + Send>);

impl Job for ClosureJob {
    fn run_here(self: Box<Self>) -> Result<(), String> {
        (self.0)();
        Ok(())
    }

    fn for_child(&self) -> Result<(mp_sys::code::Entry<Frame>, Frame), crate::ProcessError> {
        Err(crate::ProcessError::ClosureNeedsFork(crate::get_start_method()))
    }
}
