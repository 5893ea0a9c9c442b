//! The process-wide start method: set by the program, read from
//! `MP_START_METHOD`, or inherited by a child; fixed by the first start that
//! uses it. Above [`method`](crate::method) and [`error`](crate::error),
//! below the start methods.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::ProcessError;
use crate::method::StartMethod;

/// The variable that chooses the process-wide start method when the program
/// sets none.
pub(crate) const ENV: &str = "MP_START_METHOD";

static METHOD: Mutex<Option<StartMethod>> = Mutex::new(None);
/// Whether a child was started with the process-wide method (which fixes
/// it, as Python's default context is fixed by its first use). Children of
/// an explicit method (a [`Context`](crate::Context), [`Process::start_method`](crate::Process::start_method)) do not fix
/// it.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Sets the process-wide start method. Only before the first process starts
/// with the process-wide method (Python raises `RuntimeError` after; this
/// returns an error). It takes precedence over `MP_START_METHOD`.
///
/// ```
/// use mp_process::{get_start_method, set_start_method, StartMethod};
/// set_start_method(StartMethod::Spawn)?;
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// # Ok::<(), mp_process::ProcessError>(())
/// ```
pub fn set_start_method(m: StartMethod) -> Result<(), ProcessError> {
    let mut cur = METHOD.lock().unwrap_or_else(|e| e.into_inner());
    if STARTED.load(Ordering::Acquire) {
        // A start fixed the method, so it resolved without error.
        let fixed = match *cur {
            Some(c) => c,
            None => env_method().ok().flatten().unwrap_or(StartMethod::ForkServer),
        };
        if fixed != m {
            return Err(ProcessError::StartMethodFixed(fixed));
        }
    }
    *cur = Some(m);
    Ok(())
}

/// The process-wide start method: the one set, else `MP_START_METHOD` from the
/// environment (`fork`, `spawn` or `forkserver`), else [`StartMethod::ForkServer`].
///
/// When `MP_START_METHOD` names no start method this returns the default,
/// [`StartMethod::ForkServer`], for display, but no child starts with it:
/// [`Process::start`](crate::Process::start) (and pools, managers and executors) fail with
/// [`ProcessError::UnknownStartMethod`]. [`try_get_start_method`] reports
/// that error.
///
/// ```
/// let m = mp_process::get_start_method();
/// # let _ = m;
/// ```
pub fn get_start_method() -> StartMethod {
    try_get_start_method().unwrap_or(StartMethod::ForkServer)
}

/// [`get_start_method`], or the error a start with the process-wide method
/// gets: [`ProcessError::UnknownStartMethod`] when no method was set and
/// `MP_START_METHOD` names none (`MP_START_METHOD=frok`). Code that starts
/// children itself with the process-wide method (a pool, say) resolves it
/// here, so a misspelt variable is an error there too.
///
/// ```
/// use mp_process::{set_start_method, try_get_start_method, StartMethod};
/// set_start_method(StartMethod::Fork)?;
/// assert_eq!(try_get_start_method()?, StartMethod::Fork);
/// # Ok::<(), mp_process::ProcessError>(())
/// ```
pub fn try_get_start_method() -> Result<StartMethod, ProcessError> {
    let set = *METHOD.lock().unwrap_or_else(|e| e.into_inner());
    match set {
        Some(m) => Ok(m),
        None => Ok(env_method()?.unwrap_or(StartMethod::ForkServer)),
    }
}

/// The process-wide method for a child about to start with it; that start
/// fixes it (see [`set_start_method`]).
pub(crate) fn method_for_start() -> Result<StartMethod, ProcessError> {
    let m = try_get_start_method()?;
    STARTED.store(true, Ordering::Release);
    Ok(m)
}

pub(crate) fn set_inherited_method(m: StartMethod) {
    *METHOD.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
}

/// [`set_inherited_method`] for a forked child, which must not wait on a
/// lock another thread of its parent may have held at the fork: when the
/// lock is taken, the child keeps the parent's setting.
pub(crate) fn set_forked_method() {
    let guard = match METHOD.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    };
    if let Some(mut g) = guard {
        *g = Some(StartMethod::Fork);
    }
}

/// `MP_START_METHOD`: `None` when unset or empty, an error when it names no
/// start method.
fn env_method() -> Result<Option<StartMethod>, ProcessError> {
    let unknown = |value: String| ProcessError::UnknownStartMethod {
        variable: ENV,
        value,
        valid: "fork, spawn, forkserver",
    };
    match std::env::var(ENV) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(unknown(v.to_string_lossy().into_owned())),
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => StartMethod::from_name(&v).map(Some).ok_or_else(|| unknown(v)),
    }
}
