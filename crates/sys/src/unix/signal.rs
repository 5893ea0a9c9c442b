//! Signals: sending them (`kill`), naming them, and asking the kernel to send
//! one when the parent dies (`PR_SET_PDEATHSIG`).
#![allow(unsafe_code)]
#![allow(
    clippy::disallowed_methods,
    reason = "this module holds the wrappers the bans in .clippy.toml point to"
)]

use std::fmt;
use std::io;

use nix::sys::prctl;
use nix::sys::signal::{self as nix_signal, SaFlags, SigAction, SigHandler, SigSet};
use nix::unistd::Pid;

use super::invalid_input;

/// A signal number.
///
/// ```
/// use mp_sys::signal::Signal;
/// assert_eq!(Signal::TERM.as_raw(), 15);
/// assert_eq!(Signal::KILL.name(), "SIGKILL");
/// assert_eq!(Signal::from_raw(9), Some(Signal::KILL));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// `SIGHUP`.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGINT`.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGQUIT`.
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// `SIGABRT`.
    pub const ABRT: Signal = Signal(libc::SIGABRT);
    /// `SIGKILL`: cannot be caught; Python's `Process.kill()`.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGSEGV`.
    pub const SEGV: Signal = Signal(libc::SIGSEGV);
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// `SIGPIPE`.
    pub const PIPE: Signal = Signal(libc::SIGPIPE);
    /// `SIGTERM`: Python's `Process.terminate()`.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGCHLD`.
    pub const CHLD: Signal = Signal(libc::SIGCHLD);

    /// The signal with number `n`, if `n` is one (1 to `SIGRTMAX`).
    ///
    /// ```
    /// assert!(mp_sys::signal::Signal::from_raw(0).is_none());
    /// ```
    pub fn from_raw(n: i32) -> Option<Signal> {
        (1..=libc::SIGRTMAX()).contains(&n).then_some(Signal(n))
    }

    /// The signal's number.
    ///
    /// ```
    /// assert_eq!(mp_sys::signal::Signal::KILL.as_raw(), 9);
    /// ```
    pub fn as_raw(self) -> i32 {
        self.0
    }

    /// The signal's name, such as `"SIGTERM"` (`"SIG?"` for one without a
    /// fixed name, such as a real-time signal).
    ///
    /// ```
    /// assert_eq!(mp_sys::signal::Signal::TERM.name(), "SIGTERM");
    /// ```
    pub fn name(self) -> &'static str {
        match self.0 {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGILL => "SIGILL",
            libc::SIGTRAP => "SIGTRAP",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGALRM => "SIGALRM",
            libc::SIGTERM => "SIGTERM",
            libc::SIGCHLD => "SIGCHLD",
            libc::SIGCONT => "SIGCONT",
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGTSTP => "SIGTSTP",
            libc::SIGXCPU => "SIGXCPU",
            libc::SIGXFSZ => "SIGXFSZ",
            libc::SIGSYS => "SIGSYS",
            _ => "SIG?",
        }
    }
}

impl Signal {
    /// nix's name for this signal; real-time signals have none.
    pub(crate) fn to_nix(self) -> io::Result<nix_signal::Signal> {
        nix_signal::Signal::try_from(self.0)
            .map_err(|_| invalid_input(format!("signal {} has no fixed name and cannot be sent here", self.0)))
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Sends `sig` to the process `pid`.
///
/// `pid` must name one process: 0 (the caller's process group) and values that
/// do not fit a `pid_t` are refused, because `kill(2)` would read them as
/// groups. Prefer [`Child::signal`](crate::process::Child::signal) for one's
/// own children: it cannot hit a recycled pid.
///
/// ```
/// use mp_sys::signal::{kill, Signal};
/// assert!(kill(0, Signal::TERM).is_err());
/// ```
pub fn kill(pid: u32, sig: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| invalid_input(format!("{pid} is not the pid of a single process")))?;
    nix_signal::kill(Pid::from_raw(pid), sig.to_nix()?)?;
    Ok(())
}

/// Asks the kernel to send `sig` to this process when its parent thread dies
/// (`PR_SET_PDEATHSIG`); `None` clears it. The setting is not inherited by
/// children and is cleared by `exec` of a set-uid binary only.
///
/// Call [`parent_pid`](crate::process::parent_pid) after setting it: if the
/// parent died before the call, no signal will come.
///
/// ```
/// use mp_sys::signal::{parent_death_signal, set_parent_death_signal, Signal};
/// set_parent_death_signal(Some(Signal::TERM))?;
/// assert_eq!(parent_death_signal()?, Some(Signal::TERM));
/// set_parent_death_signal(None)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_parent_death_signal(sig: Option<Signal>) -> io::Result<()> {
    prctl::set_pdeathsig(sig.map(Signal::to_nix).transpose()?)?;
    Ok(())
}

/// The signal set with [`set_parent_death_signal`], if any.
///
/// ```
/// assert_eq!(mp_sys::signal::parent_death_signal()?, None);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn parent_death_signal() -> io::Result<Option<Signal>> {
    Ok(prctl::get_pdeathsig()?.map(|s| Signal(s as i32)))
}

/// Sets `sig`'s disposition to the default action (undoing an inherited
/// "ignore", for example `SIGPIPE`, which Rust programs ignore at start-up).
///
/// ```
/// mp_sys::signal::set_default(mp_sys::signal::Signal::USR2)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_default(sig: Signal) -> io::Result<()> {
    set_disposition(sig, SigHandler::SigDfl)
}

/// Ignores `sig` (`SIG_IGN`): it no longer ends or interrupts the process.
/// Python's manager servers ignore `SIGINT` this way.
///
/// ```
/// use mp_sys::signal::{ignore, kill, set_default, Signal};
/// ignore(Signal::USR1)?;
/// kill(std::process::id(), Signal::USR1)?; // ignored: the process lives on
/// set_default(Signal::USR1)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn ignore(sig: Signal) -> io::Result<()> {
    set_disposition(sig, SigHandler::SigIgn)
}

/// Sets `sig` to the default action or to ignored: dispositions that run no
/// code of ours.
fn set_disposition(sig: Signal, how: SigHandler) -> io::Result<()> {
    debug_assert!(matches!(how, SigHandler::SigDfl | SigHandler::SigIgn));
    // SAFETY: `how` is SIG_DFL or SIG_IGN (the only callers), so no handler
    // of ours ever runs in signal context.
    unsafe { nix_signal::signal(sig.to_nix()?, how) }?;
    Ok(())
}

extern "C" fn do_nothing(_: libc::c_int) {}

/// Installs a handler for `sig` that does nothing, without `SA_RESTART`: a
/// blocking system call of a thread that receives `sig` then fails with
/// `EINTR` instead of being restarted by the kernel. The workspace's wrappers
/// retry on `EINTR`, and tests use this to show that they do.
///
/// ```
/// use mp_sys::signal::{interrupt_on, kill, Signal};
/// interrupt_on(Signal::USR2)?;
/// kill(std::process::id(), Signal::USR2)?; // handled: the process lives on
/// mp_sys::signal::set_default(Signal::USR2)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn interrupt_on(sig: Signal) -> io::Result<()> {
    let act = SigAction::new(SigHandler::Handler(do_nothing), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler is async-signal-safe (it does nothing); the old
    // action is not needed.
    unsafe { nix_signal::sigaction(sig.to_nix()?, &act) }?;
    Ok(())
}
