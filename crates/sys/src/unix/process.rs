//! Processes: `fork`, re-executing the current binary, reaping children
//! through their pidfd with timeouts, and immediate exit.
//!
//! The system calls go through nix where it wraps them (`fork`, `getppid`,
//! `prctl`, `pthread_sigmask`, `posix_spawn`). Through libc, each with its
//! reason: `pidfd_open` and `pidfd_send_signal` (nix has no pidfd calls),
//! `waitid` (nix's turns a child killed by a real-time signal into an
//! error after reaping it, losing its status), `execve` and `fcntl` in a
//! forked child (nix's `execve` allocates, which a child of a threaded
//! parent must not), `_exit`, `atexit` and `pthread_atfork` (not in nix).
#![allow(unsafe_code)]
#![allow(
    clippy::disallowed_methods,
    reason = "this module holds the wrappers the bans in .clippy.toml point to"
)]

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use nix::unistd::ForkResult;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::fd::{self, PollFd};
use super::signal::Signal;
use super::{cvt, cvt_r, invalid_input};
use crate::time::Deadline;

/// The result of [`fork`], seen from each side.
#[derive(Debug)]
pub enum Fork {
    /// In the parent: the new child.
    Parent(Child),
    /// In the child.
    Child,
}

/// Forks the calling process.
///
/// # Safety
///
/// In a process with more than one thread, the child holds a copy of every
/// lock some other thread held at the fork, and nobody will ever release
/// them. Until it calls `exec` or [`exit_now`], the child must therefore use
/// only async-signal-safe operations: no allocation through a lock another
/// thread may hold, no `println!`, no `std::io::stdout()`, no thread spawn.
/// In a single-threaded process the child may do anything. The child must
/// end with [`exit_now`] (or `exec`), never by returning through the caller's
/// stack into code that expects to run once (a test harness, `main`).
///
/// [`try_fork`] is the safe form (it refuses in a threaded process), and
/// [`fork_run`] runs a closure in the child; their examples show the use.
pub unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: the caller upholds this function's contract for the child.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => Ok(Fork::Child),
        ForkResult::Parent { child } => adopt(child.as_raw().unsigned_abs()).map(Fork::Parent),
    }
}

/// Forks the calling process if it has a single thread, and fails otherwise.
///
/// With one thread there is no lock another thread could hold at the fork,
/// so the child may run any code: this is the safe [`fork`]. Its child must
/// still end with [`exit_now`] rather than return into code that expects to
/// run once.
///
/// ```
/// use mp_sys::process::{exit_now, try_fork, Fork};
/// std::thread::scope(|s| {
///     s.spawn(|| {});
///     // While a second thread runs, a fork could inherit its locks.
/// });
/// match try_fork() {
///     Ok(Fork::Child) => exit_now(0),
///     Ok(Fork::Parent(mut c)) => assert!(c.wait()?.success()),
///     Err(e) => assert!(e.to_string().contains("threads")),
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn try_fork() -> io::Result<Fork> {
    let n = thread_count()?;
    if n != 1 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "cannot fork safely: this process runs {n} threads, and a forked copy of it may only make \
                 async-signal-safe calls (it could block forever on a lock another thread held); fork before \
                 starting threads, or use the spawn or forkserver start method (spawn_self)"
            ),
        ));
    }
    // SAFETY: the process has one thread (this one), and no other can start
    // between the check and the fork, so the child inherits no held lock.
    unsafe { fork() }
}

/// Forks a child that runs `f` and exits with the code it returns (101 if it
/// panics), and returns the child to the parent. This is the `fork` start
/// method's primitive.
///
/// Like [`try_fork`], it refuses (an error of kind `Unsupported` that says
/// why) when the process runs more than one thread: the child of such a fork
/// may only make async-signal-safe calls until it execs, and `f` is arbitrary
/// code. Python forks anyway and warns (3.12); the `fork` start method of
/// `mp-process` warns and starts such a child through its single-threaded
/// fork server instead.
///
/// ```
/// let mut c = mp_sys::process::fork_run(|| 3)?;
/// assert_eq!(c.wait_timeout(std::time::Duration::from_secs(10))?.and_then(|s| s.code()), Some(3));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn fork_run(f: impl FnOnce() -> i32) -> io::Result<Child> {
    match try_fork()? {
        Fork::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            exit_now(code)
        }
        Fork::Parent(child) => Ok(child),
    }
}

/// Runs `hook` when the process exits normally (`main` returns or
/// `std::process::exit`), after hooks registered later. Not run by
/// [`exit_now`] or a signal.
///
/// ```
/// fn goodbye() {}
/// mp_sys::process::at_exit(goodbye)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn at_exit(hook: fn()) -> io::Result<()> {
    static HOOKS: std::sync::Mutex<Vec<fn()>> = std::sync::Mutex::new(Vec::new());
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    extern "C" fn run_hooks() {
        let hooks = std::mem::take(&mut *HOOKS.lock().unwrap_or_else(|e| e.into_inner()));
        for hook in hooks.into_iter().rev() {
            let _ = std::panic::catch_unwind(hook);
        }
    }
    let mut err = None;
    REGISTERED.call_once(|| {
        // SAFETY: atexit stores a plain `extern "C"` function pointer.
        if unsafe { libc::atexit(run_hooks) } != 0 {
            err = Some(io::Error::other("atexit refused another exit handler"));
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    HOOKS.lock().unwrap_or_else(|e| e.into_inner()).push(hook);
    Ok(())
}

/// A pidfd for any process (a parent, say), to ask whether it is alive or to
/// wait for its end with [`fd::poll`](crate::fd::poll). Unlike [`Child`], it
/// cannot reap.
#[derive(Debug)]
pub struct PidFd {
    pid: u32,
    fd: OwnedFd,
}

impl PidFd {
    /// Opens a pidfd for `pid`; fails if no such process exists.
    ///
    /// ```
    /// let me = mp_sys::process::PidFd::open(std::process::id())?;
    /// assert!(me.is_alive());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let raw_pid = libc::pid_t::try_from(pid)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| invalid_input(format!("{pid} is not a process id")))?;
        // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
        let raw = RawFd::try_from(cvt(raw)?).map_err(|_| io::Error::other("pidfd_open returned no descriptor"))?;
        // SAFETY: the descriptor is new and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(PidFd { pid, fd })
    }

    /// A pidfd received from another process (which opened it for `pid`,
    /// say a fork server for its child). `fd` must be a pidfd: any other
    /// descriptor makes [`is_alive`](PidFd::is_alive) meaningless.
    ///
    /// ```
    /// use mp_sys::process::PidFd;
    /// let me = PidFd::open(std::process::id())?;
    /// let again = PidFd::from_fd(me.pid(), std::os::fd::AsFd::as_fd(&me).try_clone_to_owned()?);
    /// assert!(again.is_alive());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_fd(pid: u32, fd: OwnedFd) -> PidFd {
        PidFd { pid, fd }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process has not exited yet.
    pub fn is_alive(&self) -> bool {
        let mut set = [PollFd::readable(self.fd.as_fd())];
        matches!(fd::poll(&mut set, Some(Duration::ZERO)), Ok(0))
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Ends the calling process at once with `code` (`_exit(2)`): no destructors,
/// no `atexit` handlers, no flush of Rust's stdout buffer. Async-signal-safe:
/// the way a forked child ends.
///
/// ```no_run
/// mp_sys::process::exit_now(0);
/// ```
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// The calling process's id, read from a cache after the first call.
///
/// `getpid` is a system call (glibc stopped caching it), and locks compare
/// their owner with the caller on every acquisition. The cache is cleared in
/// the child of every `fork` (a `pthread_atfork` handler), so a forked child
/// sees its own id. A child made by a raw `clone` system call that bypasses
/// libc would see its parent's id.
///
/// ```
/// assert_eq!(mp_sys::process::pid(), std::process::id());
/// ```
#[inline]
pub fn pid() -> u32 {
    match PID.load(Ordering::Relaxed) {
        0 => pid_slow(),
        p => p,
    }
}

static PID: AtomicU32 = AtomicU32::new(0);

#[cold]
fn pid_slow() -> u32 {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget_pid() {
        // Runs in the child right after fork: async-signal-safe (one store).
        PID.store(0, Ordering::Relaxed);
    }
    AT_FORK.call_once(|| {
        // SAFETY: registers a child handler that only stores to an atomic; the
        // prepare and parent handlers are absent. It is registered before the
        // first store below, so no fork can copy a cached id unnoticed.
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) };
    });
    let p = std::process::id();
    PID.store(p, Ordering::Relaxed);
    p
}

/// Whether the process `pid` is running: `false` once it has exited, also
/// while it is a zombie nobody has reaped yet (which `kill(pid, 0)` would
/// still report as alive).
///
/// A pid can be reused after its process is reaped; Linux hands ids out in
/// increasing order up to `pid_max` (4 million on 64-bit), so a reuse needs
/// that many process creations in between.
///
/// ```
/// assert!(mp_sys::process::is_alive(std::process::id())?);
/// assert!(!mp_sys::process::is_alive(u32::MAX >> 2)?); // above pid_max
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn is_alive(pid: u32) -> io::Result<bool> {
    match PidFd::open(pid) {
        Ok(p) => Ok(p.is_alive()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) || e.kind() == io::ErrorKind::InvalidInput => Ok(false),
        Err(e) => Err(e),
    }
}

/// The parent's process id; it changes (to 1 or a subreaper) when the parent
/// dies.
///
/// ```
/// assert!(mp_sys::process::parent_pid() > 0);
/// ```
pub fn parent_pid() -> u32 {
    nix::unistd::getppid().as_raw().unsigned_abs()
}

/// How many threads the calling process has (from procfs). `fork`
/// in a process with more than one is only safe for async-signal-safe code.
///
/// ```
/// assert!(mp_sys::process::thread_count()? >= 1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn thread_count() -> io::Result<usize> {
    // procfs gives the task directory one link per thread beyond its own
    // two: one `stat`, where parsing /proc/self/stat costs five calls.
    if let Ok(m) = std::fs::metadata("/proc/self/task") {
        use std::os::unix::fs::MetadataExt;
        if let Some(n) = m.nlink().checked_sub(2).filter(|&n| n >= 1) {
            return Ok(n as usize);
        }
    }
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces, so
    // count the fields after its closing parenthesis: num_threads is field 20.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after
        .split_whitespace()
        .nth(17)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("cannot read the thread count from /proc/self/stat"))
}

/// Sets the calling thread's name (`PR_SET_NAME`, at most 15 bytes kept), which
/// `ps` and `top` show for the process when called from its main thread.
///
/// ```
/// mp_sys::process::set_name("mp-worker")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_name(name: &str) -> io::Result<()> {
    // The kernel keeps 15 bytes; a NUL ends the name as C would.
    let bytes = name.as_bytes();
    let n = bytes
        .iter()
        .take(15)
        .position(|&b| b == 0)
        .unwrap_or(bytes.len().min(15));
    let name = CString::new(&bytes[..n]).map_err(|_| invalid_input("a process name must not contain NUL bytes"))?;
    Ok(nix::sys::prctl::set_name(&name)?)
}

/// How a child ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(Signal),
}

impl ExitStatus {
    /// The exit code, if it exited.
    ///
    /// ```
    /// use mp_sys::process::ExitStatus;
    /// assert_eq!(ExitStatus::Exited(3).code(), Some(3));
    /// ```
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(c),
            ExitStatus::Signaled(_) => None,
        }
    }

    /// The signal that killed it, if one did.
    ///
    /// ```
    /// use mp_sys::process::ExitStatus;
    /// use mp_sys::signal::Signal;
    /// assert_eq!(ExitStatus::Signaled(Signal::KILL).signal(), Some(Signal::KILL));
    /// ```
    pub fn signal(self) -> Option<Signal> {
        match self {
            ExitStatus::Exited(_) => None,
            ExitStatus::Signaled(s) => Some(s),
        }
    }

    /// Python's `Process.exitcode`: the code, or minus the signal number.
    ///
    /// ```
    /// use mp_sys::process::ExitStatus;
    /// use mp_sys::signal::Signal;
    /// assert_eq!(ExitStatus::Signaled(Signal::TERM).exitcode(), -15);
    /// assert_eq!(ExitStatus::Exited(0).exitcode(), 0);
    /// ```
    pub fn exitcode(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => -s.as_raw(),
        }
    }

    /// Whether it exited with code 0.
    ///
    /// ```
    /// assert!(mp_sys::process::ExitStatus::Exited(0).success());
    /// ```
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by {s}"),
        }
    }
}

/// A child process, held through its pidfd.
///
/// A pidfd names exactly this process, even after its pid is recycled, so
/// [`signal`](Child::signal) never hits a stranger, and it becomes readable
/// when the child exits, so waits can time out and can be mixed with other
/// descriptors in [`fd::poll`](crate::fd::poll).
///
/// Whoever holds a `Child` reaps it with [`wait`](Child::wait),
/// [`wait_timeout`](Child::wait_timeout) or [`try_wait`](Child::try_wait).
/// Dropping an unreaped `Child` reaps it if it has already exited; a child
/// still running then is left for its owner's owner to reap.
pub struct Child {
    pid: u32,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
    /// Set by [`Child::disown`]: drop closes the pidfd and reaps nothing.
    disowned: bool,
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish()
    }
}

impl Child {
    /// Takes charge of the child `pid` of this process.
    ///
    /// Fails if `pid` is not a live or unreaped process.
    ///
    /// ```
    /// let err = mp_sys::process::Child::from_pid(0).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn from_pid(pid: u32) -> io::Result<Child> {
        let PidFd { pid, fd } = PidFd::open(pid)?;
        Ok(Child {
            pid,
            pidfd: fd,
            status: None,
            disowned: false,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The pidfd: readable once the child has exited.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Closes the pidfd without reaping or waiting: for a forked copy of the
    /// parent, which holds a copy of this `Child` but is not the child's
    /// parent, so the descriptor does not linger there. The parent's own
    /// `Child` is untouched.
    ///
    /// ```
    /// use mp_sys::process::fork_run;
    /// use std::time::Duration;
    /// let mut first = Some(fork_run(|| 0)?);
    /// // The second child starts with a copy of `first`, not its own child.
    /// let mut second = fork_run(|| {
    ///     if let Some(c) = first.take() {
    ///         c.disown();
    ///     }
    ///     0
    /// })?;
    /// let code = |s: Option<mp_sys::process::ExitStatus>| s.and_then(|s| s.code());
    /// assert_eq!(code(second.wait_timeout(Duration::from_secs(10))?), Some(0));
    /// if let Some(c) = first.as_mut() {
    ///     assert_eq!(code(c.wait_timeout(Duration::from_secs(10))?), Some(0));
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn disown(mut self) {
        // Dropping `self` closes the pidfd; the flag skips the reap.
        self.disowned = true;
    }

    /// How it ended, if it has been reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Reaps the child if it has exited, without blocking.
    ///
    /// ```
    /// let mut c = mp_sys::process::fork_run(|| 0)?;
    /// c.wait_timeout(std::time::Duration::from_secs(10))?;
    /// assert_eq!(c.try_wait()?.and_then(|s| s.code()), Some(0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Blocks until the child exits, and reaps it.
    ///
    /// ```
    /// let mut c = mp_sys::process::fork_run(|| 4)?;
    /// assert_eq!(c.wait()?.code(), Some(4));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.reap(0)? {
                return Ok(s);
            }
        }
    }

    /// Waits at most `timeout` for the child to exit; `None` if it is still
    /// running then.
    ///
    /// ```
    /// use std::time::Duration;
    /// // The child sleeps until the parent's SIGKILL ends it.
    /// let mut c = mp_sys::process::fork_run(|| loop { std::thread::park() })?;
    /// assert_eq!(c.wait_timeout(Duration::from_millis(20))?, None);
    /// c.signal(mp_sys::signal::Signal::KILL)?;
    /// let s = c.wait_timeout(Duration::from_secs(10))?.unwrap();
    /// assert_eq!(s.exitcode(), -9);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Deadline::after(timeout).instant();
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Ok(None);
            }
            let mut set = [PollFd::readable(self.pidfd.as_fd())];
            fd::poll(&mut set, deadline.map(|_| left))?;
        }
    }

    /// Sends `sig` to the child through its pidfd (`pidfd_send_signal`). Once
    /// the child has been reaped this is an error of kind `NotFound`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let mut c = mp_sys::process::fork_run(|| 0)?;
    /// c.wait_timeout(Duration::from_secs(10))?;
    /// assert!(c.signal(mp_sys::signal::Signal::TERM).is_err()); // already reaped
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("process {} has already exited", self.pid),
            ));
        }
        // SAFETY: pidfd_send_signal takes our pidfd, a signal number, a null
        // siginfo (meaning: like kill), and zero flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig.as_raw(),
                std::ptr::null::<u8>(),
                0,
            )
        };
        match cvt(r) {
            Ok(_) => Ok(()),
            // The child has exited but is not reaped yet: nothing to signal.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        let id = libc::id_t::try_from(self.pidfd.as_raw_fd()).map_err(|_| invalid_input("bad pidfd"))?;
        // SAFETY: `info` is a valid out-pointer to a siginfo_t; P_PIDFD with
        // our own pidfd names only this child.
        cvt_r(|| unsafe { libc::waitid(libc::P_PIDFD, id, info.as_mut_ptr(), libc::WEXITED | flags) })?;
        // SAFETY: waitid succeeded on the zeroed struct (so with WNOHANG and
        // no exited child si_pid reads 0, as waitid(2) documents); for its
        // SIGCHLD siginfo, si_pid and si_status are the valid union members.
        let (pid, status, code) = unsafe {
            let info = info.assume_init();
            (info.si_pid(), info.si_status(), info.si_code)
        };
        if pid == 0 {
            return Ok(None);
        }
        let s = match code {
            libc::CLD_EXITED => ExitStatus::Exited(status),
            _ => ExitStatus::Signaled(Signal::from_raw(status).unwrap_or(Signal::KILL)),
        };
        self.status = Some(s);
        Ok(Some(s))
    }
}

impl AsFd for Child {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.disowned {
            let _ = self.try_wait();
        }
    }
}

/// How [`spawn_self`] starts a new copy of the current executable.
#[derive(Debug, Default, Clone)]
pub struct SpawnOptions {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    arg0: Option<OsString>,
    inherit: Vec<RawFd>,
    parent_death_signal: Option<Signal>,
}

impl SpawnOptions {
    /// Options that run the executable with no arguments, the caller's
    /// environment, and no inherited descriptors.
    pub fn new() -> SpawnOptions {
        SpawnOptions::default()
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Adds or replaces an environment variable for the child.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env.push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Sets `argv[0]` (what `ps` shows as the command line); by default the
    /// executable's resolved path.
    pub fn arg0(mut self, a: impl AsRef<OsStr>) -> Self {
        self.arg0 = Some(a.as_ref().to_owned());
        self
    }

    /// Lets the child inherit `fd` under the same number (it is made
    /// non-close-on-exec in the child only). The descriptor must stay open
    /// until [`spawn_self`] returns.
    pub fn inherit_fd(mut self, fd: BorrowedFd<'_>) -> Self {
        self.inherit.push(fd.as_raw_fd());
        self
    }

    /// Has the kernel send `sig` to the child when the spawning thread dies
    /// (`PR_SET_PDEATHSIG`, set in the child before `exec`).
    pub fn parent_death_signal(mut self, sig: Signal) -> Self {
        self.parent_death_signal = Some(sig);
        self
    }
}

/// The resolved path of the running executable.
///
/// ```
/// assert!(mp_sys::process::current_exe()?.is_absolute());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn current_exe() -> io::Result<std::path::PathBuf> {
    std::fs::read_link("/proc/self/exe")
}

/// Starts a new process running the current executable
/// (`fork` + `execve("/proc/self/exe")`), so the child runs exactly the
/// parent's binary even if the file was replaced on disk.
///
/// Everything the child needs is prepared before the fork; between fork and
/// exec the child makes only async-signal-safe calls, so this is sound in a
/// threaded parent. A failed `exec` is reported here as an error.
///
/// ```
/// use mp_sys::process::{spawn_self, SpawnOptions};
/// use std::time::Duration;
/// // The re-executed copy of this program sees the variable and exits 5.
/// if std::env::var_os("MP_SYS_DOC_CHILD").is_some() {
///     mp_sys::process::exit_now(5);
/// }
/// let mut child = spawn_self(&SpawnOptions::new().env("MP_SYS_DOC_CHILD", "1"))?;
/// let status = child.wait_timeout(Duration::from_secs(30))?;
/// assert_eq!(status.and_then(|s| s.code()), Some(5));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn_self(opts: &SpawnOptions) -> io::Result<Child> {
    let exe = c"/proc/self/exe";
    let arg0 = match &opts.arg0 {
        Some(a) => cstring(a)?,
        None => cstring(current_exe().unwrap_or_else(|_| "/proc/self/exe".into()).as_os_str())?,
    };
    let mut argv = vec![arg0];
    for a in &opts.args {
        argv.push(cstring(a)?);
    }
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !opts.env.iter().any(|(k2, _)| k2 == k))
        .collect();
    env.extend(opts.env.iter().cloned());
    // The child runs this executable: it takes the build id from here
    // instead of hashing the file again (unless the caller set it).
    if let Some((k, v)) = crate::code::build_env() {
        if !opts.env.iter().any(|(k2, _)| k2 == k) {
            env.retain(|(k2, _)| k2 != k);
            env.push((k.into(), v.into()));
        }
    }
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| invalid_input("an environment entry contains a NUL byte"))
        })
        .collect::<io::Result<_>>()?;
    match opts.parent_death_signal {
        None => posix_spawn(exe, &argv, &envp, &opts.inherit),
        Some(sig) => fork_exec(exe, &argv, &envp, &opts.inherit, sig),
    }
}

/// `fork` + `execve` with the parent death signal set in between (which
/// `posix_spawn` cannot do). The child makes only async-signal-safe calls on
/// memory prepared before the fork, so this is sound in a threaded parent.
fn fork_exec(
    exe: &std::ffi::CStr,
    argv: &[CString],
    envp: &[CString],
    inherit: &[RawFd],
    sig: Signal,
) -> io::Result<Child> {
    let pdeathsig = sig.to_nix()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let no_signals = SigSet::empty();
    let parent = pid();
    let (err_r, err_w) = fd::pipe()?;

    // SAFETY: the child below runs only async-signal-safe calls (fcntl,
    // pthread_sigmask, prctl, getppid, execve, write, _exit) on memory
    // prepared before the fork, then execs or exits.
    let mut child = match unsafe { fork() }? {
        Fork::Parent(child) => child,
        Fork::Child => {
            let fail = |err: nix::errno::Errno| -> ! {
                let _ = fd::write_all(err_w.as_fd(), &(err as i32).to_ne_bytes());
                exit_now(127)
            };
            for &raw in inherit {
                // SAFETY: fcntl on a descriptor number; an invalid one fails.
                if unsafe { libc::fcntl(raw, libc::F_SETFD, 0) } == -1 {
                    fail(nix::errno::Errno::last());
                }
            }
            if let Err(e) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&no_signals), None) {
                fail(e);
            }
            if let Err(e) = nix::sys::prctl::set_pdeathsig(pdeathsig) {
                fail(e);
            }
            if parent_pid() != parent {
                // The parent died before the setting took effect.
                exit_now(1);
            }
            // SAFETY: exe, argv and envp are NUL-terminated and live (they
            // were built before the fork and this address space is a copy).
            unsafe { libc::execve(exe.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
            fail(nix::errno::Errno::last())
        }
    };
    drop(err_w);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match fd::read(err_r.as_fd(), &mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    if got == 0 {
        return Ok(child);
    }
    child.wait()?;
    let err = io::Error::from_raw_os_error(i32::from_ne_bytes(buf));
    Err(io::Error::new(
        err.kind(),
        format!("cannot re-execute the current program: {err}"),
    ))
}

/// `posix_spawn`: glibc starts the child with `clone(CLONE_VM | CLONE_VFORK)`,
/// so the parent's page tables are not copied (a fork of a large parent
/// costs more than the exec itself), and reports a failed exec as an error.
fn posix_spawn(exe: &std::ffi::CStr, argv: &[CString], envp: &[CString], inherit: &[RawFd]) -> io::Result<Child> {
    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_sigmask(&SigSet::empty())?;
    attr.set_flags(PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK)?;
    let mut actions = PosixSpawnFileActions::init()?;
    for &fd in inherit {
        // dup2 of a descriptor onto itself clears its close-on-exec flag in
        // the child (glibc >= 2.29).
        actions.add_dup2(fd, fd)?;
    }
    let pid = nix::spawn::posix_spawn(exe, &actions, &attr, argv, envp).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("cannot re-execute the current program: {e}"))
    })?;
    adopt(pid.as_raw().unsigned_abs())
}

/// A [`Child`] for a process this one just started. When that fails (no
/// descriptor left for its pidfd, say), the process is killed and reaped
/// before the error is returned, so a failed start leaves nothing running.
fn adopt(pid: u32) -> io::Result<Child> {
    Child::from_pid(pid).inspect_err(|_| {
        let Ok(raw) = i32::try_from(pid) else { return };
        let pid = nix::unistd::Pid::from_raw(raw);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    })
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| invalid_input("an argument contains a NUL byte"))
}
