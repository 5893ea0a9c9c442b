//! `Process`: Python's `multiprocessing.Process`.

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use mp_sys::signal::Signal;

use crate::child::{ClosureJob, Job, Meta, RunJob, TargetJob};
use crate::error::ProcessError;
use crate::handle::{ChildHandle, ChildState};
use crate::identity;
use crate::method::StartMethod;
use crate::setting;
use crate::target::{Args, Run, Target};

enum State {
    New(Box<dyn Job>),
    Started(Arc<ChildState>),
    Closed,
}

/// A child process running a target (Python's `multiprocessing.Process`).
///
/// ```
/// use mp_process::Process;
///
/// fn greet(name: String, times: u32) {
///     for _ in 0..times {
///         println!("hello, {name}");
///     }
/// }
///
/// let mut p = Process::new(greet, ("bob".to_string(), 2)).name("greeter");
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// assert_eq!(p.get_name(), "greeter");
/// # Ok::<(), mp_process::ProcessError>(())
/// ```
///
/// # Differences from Python
///
/// - The target is a `fn` item or a closure that captures nothing, and its
///   arguments are a tuple of serde values; they travel to the child encoded,
///   handles (queues, locks, pipes) included. Under [`StartMethod::Fork`] a
///   capturing closure may run too: [`Process::from_closure`].
/// - `is_alive` takes `&mut self`: it reaps the child when it has exited.
pub struct Process {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    method: Option<StartMethod>,
    state: State,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::New(_) => "initial".to_string(),
            State::Started(c) => match c.exitcode() {
                None => format!("started, pid {}", c.pid),
                Some(code) => format!("stopped, exitcode {code}"),
            },
            State::Closed => "closed".to_string(),
        };
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("state", &state)
            .finish()
    }
}

impl Process {
    fn with_job(job: Box<dyn Job>) -> Process {
        let (identity, name) = identity::next_child();
        Process {
            name,
            identity,
            daemon: identity::me().daemon,
            method: None,
            state: State::New(job),
        }
    }

    /// A process that will run `target(args..)`; `args` is a tuple: `()`,
    /// `(a,)`, `(a, b)`, up to six.
    ///
    /// ```
    /// fn add(a: i32, b: i32) -> Result<(), String> {
    ///     if a + b == 3 { Ok(()) } else { Err("wrong sum".into()) }
    /// }
    /// let mut p = mp_process::Process::new(add, (1, 2));
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), mp_process::ProcessError>(())
    /// ```
    pub fn new<F: Target<A>, A: Args>(target: F, args: A) -> Process {
        Process::with_job(Box::new(TargetJob { f: target, args }))
    }

    /// A process that runs `value.run()` (Python's subclass overriding
    /// `run`). See [`Run`].
    pub fn from_run<T: Run>(value: T) -> Process {
        Process::with_job(Box::new(RunJob(value)))
    }

    /// A process that runs a closure, which may capture anything. Fork start
    /// method only: `start` fails under the others, which cannot move a
    /// closure's captures into a new program.
    ///
    /// ```
    /// use mp_process::{Process, StartMethod};
    /// let data = vec![1, 2, 3];
    /// let mut p = Process::from_closure(move || assert_eq!(data.len(), 3)).start_method(StartMethod::Fork);
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), mp_process::ProcessError>(())
    /// ```
    pub fn from_closure(f: impl FnOnce() + Send + 'static) -> Process {
        Process::with_job(Box::new(ClosureJob(Box::new(f))))
    }

    /// Sets the name (builder form of Python's `name=`).
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// Sets the daemon flag (builder form of Python's `daemon=`). Daemonic
    /// children are terminated when their parent exits, and die with it if it
    /// is killed.
    pub fn daemon(mut self, yes: bool) -> Self {
        self.daemon = yes;
        self
    }

    /// Sets the start method for this process only (what a [`Context`]
    /// does).
    ///
    /// [`Context`]: crate::Context
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.method = Some(m);
        self
    }

    /// Starts the child. The arguments are moved into it and dropped here,
    /// as Python does, so a pipe end passed to the child is no longer held
    /// by the parent, and no child started later gets a copy of them. Nor
    /// does a later child, by any method, get the descriptors this library
    /// keeps for this one while it runs (its pidfd, a fork server's status
    /// pipe). A forked child still inherits what its parent holds itself, as
    /// in Python: the arguments of processes not started yet, say.
    ///
    /// Errors: a second start; a daemonic parent; a closure under another
    /// method than fork; [`ProcessError::UnknownStartMethod`] when the
    /// process has no method of its own, none was set, and `MP_START_METHOD`
    /// names none (nothing starts then, and the process can be started again
    /// once a method is set).
    pub fn start(&mut self) -> Result<(), ProcessError> {
        let job = match std::mem::replace(&mut self.state, State::Closed) {
            State::New(job) => job,
            other @ State::Started(_) => {
                self.state = other;
                return Err(ProcessError::AlreadyStarted(self.name.clone()));
            }
            State::Closed => return Err(ProcessError::Closed(self.name.clone())),
        };
        match self.launch(job) {
            Ok(child) => {
                identity::register(Arc::clone(&child));
                self.state = State::Started(child);
                Ok(())
            }
            Err((job, e)) => {
                // Nothing started: the process can be started again.
                if let Some(job) = job {
                    self.state = State::New(job);
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity, reason = "the job comes back only when nothing was started")]
    fn launch(&self, job: Box<dyn Job>) -> Result<Arc<ChildState>, (Option<Box<dyn Job>>, ProcessError)> {
        let me = identity::me();
        if me.daemon {
            return Err((Some(job), ProcessError::DaemonicParent));
        }
        let method = match self.method {
            Some(m) => m,
            None => match setting::method_for_start() {
                Ok(m) => m,
                Err(e) => return Err((Some(job), e)),
            },
        };
        // A forked copy of a process that runs other threads may only make
        // async-signal-safe calls, and the job is arbitrary code: such a
        // child is started through the single-threaded fork server instead.
        let threads = if method == StartMethod::Fork {
            crate::fork::other_threads()
        } else {
            None
        };
        let (handle, pid) = if method == StartMethod::Fork && threads.is_none() {
            let child = crate::fork::start(&self.name, self.identity.clone(), self.daemon, me.name, job)
                .map_err(|e| (None, e))?;
            let pid = child.pid();
            (ChildHandle::Direct(child), pid)
        } else {
            let (entry, args) = match job.for_child() {
                Ok(x) => x,
                Err(ProcessError::ClosureNeedsFork(_)) => {
                    let e = match threads {
                        Some(n) => crate::fork::closure_with_threads(n),
                        None => ProcessError::ClosureNeedsFork(method),
                    };
                    return Err((Some(job), e));
                }
                Err(e) => return Err((Some(job), e)),
            };
            if let Some(n) = threads {
                crate::fork::warn_threads(n);
            }
            let meta = Meta {
                name: self.name.clone(),
                identity: self.identity.clone(),
                daemon: self.daemon,
                parent_pid: mp_sys::process::pid(),
                parent_name: me.name,
                method,
                target: entry.parts(),
            };
            drop(job);
            if method == StartMethod::Spawn {
                let child = crate::spawn::start(&meta, &args).map_err(|e| (None, e))?;
                let pid = child.pid();
                (ChildHandle::Direct(child), pid)
            } else {
                crate::forkserver::start(&meta, &args).map_err(|e| (None, e))?
            }
        };
        Ok(Arc::new(ChildState::new(self.name.clone(), self.daemon, pid, handle)))
    }

    fn started(&self) -> Result<&Arc<ChildState>, ProcessError> {
        match &self.state {
            State::Started(c) => Ok(c),
            State::New(_) => Err(ProcessError::NotStarted(self.name.clone())),
            State::Closed => Err(ProcessError::Closed(self.name.clone())),
        }
    }

    /// Waits until the child exits.
    pub fn join(&mut self) -> Result<(), ProcessError> {
        self.started()?.wait()?;
        identity::forget_reaped();
        Ok(())
    }

    /// Waits at most `t`; returns `Ok` after `t` even if the child still runs
    /// (check [`exitcode`](Process::exitcode)), as Python's `join(timeout)`.
    pub fn join_timeout(&mut self, t: Duration) -> Result<(), ProcessError> {
        if self.started()?.wait_timeout(t)?.is_some() {
            identity::forget_reaped();
        }
        Ok(())
    }

    /// Whether the child has been started and has not exited.
    pub fn is_alive(&mut self) -> bool {
        self.started().is_ok_and(|c| c.is_alive())
    }

    /// The exit code: `None` while running (or before start); `-N` when a
    /// signal `N` killed it.
    pub fn exitcode(&self) -> Option<i32> {
        self.started().ok().and_then(|c| c.exitcode())
    }

    /// The child's process id, once started.
    pub fn pid(&self) -> Option<u32> {
        self.started().ok().map(|c| c.pid)
    }

    /// The process's name.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// Whether the process is daemonic.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Sends `SIGTERM` (exit code `-15` unless the child handles it).
    pub fn terminate(&mut self) -> Result<(), ProcessError> {
        Ok(self.started()?.signal(Signal::TERM)?)
    }

    /// Sends `SIGKILL` (exit code `-9`).
    pub fn kill(&mut self) -> Result<(), ProcessError> {
        Ok(self.started()?.signal(Signal::KILL)?)
    }

    /// A descriptor that turns readable when the child exits (Python's
    /// `sentinel`), for `connection::wait` and `poll`. A `Process` is itself
    /// [`Waitable`](mp_connection::Waitable), through this descriptor.
    pub fn sentinel(&self) -> Result<OwnedFd, ProcessError> {
        Ok(self.started()?.sentinel()?)
    }

    /// Releases the process's resources. An error while it runs; a second
    /// `close` is `Ok`; every other call after it is an error.
    pub fn close(&mut self) -> Result<(), ProcessError> {
        match &self.state {
            State::Closed => return Ok(()),
            State::Started(c) if c.is_alive() => return Err(ProcessError::StillRunning(self.name.clone())),
            _ => {}
        }
        self.state = State::Closed;
        identity::forget_reaped();
        Ok(())
    }
}

/// A started process is ready for [`mp_connection::wait`] once it has
/// exited (Python's `wait([p.sentinel])`). Waiting on a process that was not
/// started, or was closed, is an error.
///
/// ```
/// use mp_process::Process;
/// use std::time::Duration;
///
/// fn quick() {}
/// let mut p = Process::new(quick, ());
/// p.start()?;
/// let ready = mp_connection::wait(&[&p], Some(Duration::from_secs(30)))?;
/// assert_eq!(ready, vec![0]);
/// p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl mp_connection::Waitable for Process {
    fn wait_fd(&self) -> Result<mp_connection::WaitFd<'_>, mp_connection::ConnectionError> {
        // The descriptor sits behind the child's lock, so a duplicate goes
        // out; the wait closes it.
        match self.sentinel() {
            Ok(fd) => Ok(mp_connection::WaitFd::Owned(fd)),
            Err(ProcessError::Io(e)) => Err(mp_connection::ConnectionError::Io(e)),
            Err(e) => Err(mp_connection::ConnectionError::Io(std::io::Error::other(e))),
        }
    }
}
