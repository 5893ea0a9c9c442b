//! A started child, shared between its `Process`, the registry of children
//! and the exit hook.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mp_sys::fd::{self, PollFd};
use mp_sys::process::{Child, ExitStatus, PidFd};
use mp_sys::signal::Signal;
use mp_sys::time::Deadline;

/// How the parent holds a child.
pub(crate) enum ChildHandle {
    /// Our own child (fork, spawn): reaped through its pidfd.
    Direct(Child),
    /// A fork server's child: its pidfd turns readable once it is gone
    /// (`gone`), and its exit code is on `status` (an `i32`, written by the
    /// child as it exits, or by the server after reaping).
    Served {
        pidfd: PidFd,
        status: OwnedFd,
        gone: bool,
        exit: Option<ExitStatus>,
    },
    /// A sibling's handle in a forked child, which got it with its parent's
    /// memory: its descriptors are closed there, since the child is not the
    /// sibling's parent and must not keep them open.
    Disowned,
}

/// The error for a sibling's handle used in a forked child.
fn not_ours() -> io::Error {
    io::Error::other(
        "this process is not the child's parent: it is a forked copy of the parent, and a sibling's \
         Process can be waited for or signalled only by the process that started it",
    )
}

impl ChildHandle {
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self {
            ChildHandle::Direct(c) => c.try_wait(),
            ChildHandle::Served {
                pidfd,
                status,
                gone,
                exit,
            } => {
                if exit.is_none() {
                    if !*gone {
                        *gone = ready(pidfd.as_fd())?;
                    }
                    // Once the process is gone its code is in the pipe:
                    // written by the child itself as it exited, or by the
                    // server after reaping one that a signal killed.
                    if *gone && ready(status.as_fd())? {
                        let c = read_status(status.as_fd())?;
                        *exit = Some(match Signal::from_raw(-c) {
                            Some(sig) if c < 0 => ExitStatus::Signaled(sig),
                            _ => ExitStatus::Exited(c),
                        });
                    }
                }
                Ok(*exit)
            }
            ChildHandle::Disowned => Err(not_ours()),
        }
    }

    fn sentinel(&self) -> io::Result<BorrowedFd<'_>> {
        Ok(match self {
            ChildHandle::Disowned => return Err(not_ours()),
            ChildHandle::Direct(c) => c.pidfd(),
            // First the end of the process, then its code; once the code is
            // read, the pidfd again (readable for good: the process is gone).
            ChildHandle::Served { pidfd, gone: false, .. } => pidfd.as_fd(),
            ChildHandle::Served {
                pidfd, exit: Some(_), ..
            } => pidfd.as_fd(),
            ChildHandle::Served { status, .. } => status.as_fd(),
        })
    }

    fn signal(&self, sig: Signal) -> io::Result<()> {
        match self {
            ChildHandle::Direct(c) => c.signal(sig),
            ChildHandle::Served { pidfd, exit, .. } => {
                if exit.is_some() {
                    return Ok(());
                }
                mp_sys::signal::kill(pidfd.pid(), sig).or_else(|e| {
                    if e.raw_os_error() == Some(3) { Ok(()) } else { Err(e) } // ESRCH: already gone
                })
            }
            ChildHandle::Disowned => Err(not_ours()),
        }
    }
}

fn ready(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut set = [PollFd::readable(fd)];
    Ok(fd::poll(&mut set, Some(Duration::ZERO))? == 1)
}

/// Reads the exit code written for a fork server's child: Python's exit code
/// as an `i32`. EOF means the server died before the child ended.
fn read_status(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match fd::read(fd, &mut buf[got..])? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the fork server ended before reporting the child's exit status",
                ));
            }
            n => got += n,
        }
    }
    Ok(i32::from_le_bytes(buf))
}

/// A started child.
pub(crate) struct ChildState {
    pub(crate) name: String,
    pub(crate) pid: u32,
    pub(crate) daemon: bool,
    handle: Mutex<ChildHandle>,
}

impl fmt::Debug for ChildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildState")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish()
    }
}

impl ChildState {
    pub(crate) fn new(name: String, daemon: bool, pid: u32, handle: ChildHandle) -> ChildState {
        ChildState {
            name,
            pid,
            daemon,
            handle: Mutex::new(handle),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ChildHandle> {
        self.handle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exit code once known (Python's `exitcode`); reaps if it can.
    pub(crate) fn exitcode(&self) -> Option<i32> {
        self.lock().try_wait().ok().flatten().map(ExitStatus::exitcode)
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.exitcode().is_none()
    }

    pub(crate) fn signal(&self, sig: Signal) -> io::Result<()> {
        self.lock().signal(sig)
    }

    /// Waits at most `timeout` for the child to end; `None` if it still runs.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Deadline::after(timeout).instant();
        loop {
            // The lock is not held while sleeping, so `terminate` from another
            // thread can reach the child.
            let raw_sentinel = {
                let mut h = self.lock();
                if let Some(s) = h.try_wait()? {
                    return Ok(Some(s));
                }
                h.sentinel()?.try_clone_to_owned()?
            };
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            let mut set = [PollFd::readable(raw_sentinel.as_fd())];
            fd::poll(&mut set, left.map(|l| l.min(Duration::from_secs(3600))))?;
        }
    }

    pub(crate) fn wait(&self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.wait_timeout(Duration::from_secs(3600))? {
                return Ok(s);
            }
        }
    }

    /// A duplicate of the descriptor that turns readable when the child ends.
    pub(crate) fn sentinel(&self) -> io::Result<OwnedFd> {
        self.lock().sentinel()?.try_clone_to_owned()
    }

    /// In a forked child, for a sibling it inherited: closes the sibling's
    /// descriptors. Skipped if another thread of the parent held the lock at
    /// the fork (it stays locked here for good).
    pub(crate) fn disown(&self) {
        let mut h = match self.handle.try_lock() {
            Ok(h) => h,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if let ChildHandle::Direct(c) = std::mem::replace(&mut *h, ChildHandle::Disowned) {
            c.disown();
        }
    }
}
