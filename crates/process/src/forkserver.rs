//! The fork-server start method (Python's `'forkserver'`, the default).
//!
//! The first start spawns a server: a re-executed copy of this binary that
//! stays single-threaded and forks one child per request. A child forked from
//! it costs about a fork, whatever the size or the threads of the parent.
//!
//! - The server talks only over a socket pair made for it, so no other
//!   process can reach it: there is no address to connect to.
//! - It exits when the parent's end closes (the parent exited or was killed);
//!   its daemonic children die with it through their parent-death signal.
//! - It reaps its children and writes each one's exit code to a status pipe
//!   the parent made for that child: that pipe is the child's sentinel.
//!
//! The parent then bootstraps the child directly, over a second socket pair
//! that went to the child through the server, with the spawn method's
//! protocol.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use mp_codec::{Fd, Frame, Limits};
use mp_sys::code::Entry;
use mp_sys::fd::{self, PollFd};
use mp_sys::process::{Child, Fork, PidFd, SpawnOptions, try_fork};
use mp_sys::signal::Signal;
use mp_sys::socket::{SocketKind, socketpair};

use crate::child::Meta;
use crate::error::ProcessError;
use crate::handle::ChildHandle;
use crate::spawn;

struct Server {
    owner: u32,
    sock: OwnedFd,
    process: Child,
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Server>> {
    SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// In a forked child: closes the parent's connection to its server (the
/// child starts its own if it needs one).
pub(crate) fn forget_inherited() {
    if let Some(server) = lock().take() {
        drop(server.sock);
        // Not our child: never wait for it here.
        std::mem::forget(server.process);
    }
}

type Reply = Result<u32, String>;

/// Asks the server for a child and bootstraps it.
pub(crate) fn start(meta: &Meta, args: &Frame) -> Result<(ChildHandle, u32), ProcessError> {
    let (mine, theirs) = socketpair(SocketKind::Stream)?;
    let (status_r, status_w) = fd::pipe()?;
    let pid = {
        let mut guard = lock();
        let server = ensure_server(&mut guard)?;
        let request = (Fd(theirs), Fd(status_w), meta.daemon);
        let reply = mp_codec::send(server.sock.as_fd(), &request).and_then(|()| {
            mp_codec::recv_frame_timeout(server.sock.as_fd(), &Limits::default(), spawn::BOOTSTRAP_TIMEOUT)
        });
        match reply.and_then(mp_codec::decode::<Reply>) {
            Ok(Ok(pid)) => pid,
            Ok(Err(why)) => {
                return Err(ProcessError::Bootstrap(format!(
                    "the fork server could not fork: {why}"
                )));
            }
            Err(e) => {
                // The server is gone or out of step: start afresh next time.
                *guard = None;
                return Err(ProcessError::Bootstrap(format!("the fork server did not answer: {e}")));
            }
        }
    };
    let pidfd = PidFd::open(pid)?;
    if let Err(why) = spawn::send_bootstrap(mine.as_fd(), meta, args) {
        let _ = mp_sys::signal::kill(pid, Signal::KILL);
        return Err(ProcessError::Bootstrap(why));
    }
    Ok((
        ChildHandle::Served {
            pidfd,
            status: status_r,
            exit: None,
        },
        pid,
    ))
}

fn ensure_server(guard: &mut Option<Server>) -> Result<&mut Server, ProcessError> {
    let me = std::process::id();
    let alive = guard
        .as_mut()
        .is_some_and(|s| s.owner == me && s.process.try_wait().ok().flatten().is_none());
    if !alive {
        *guard = None;
        let (mine, theirs) = socketpair(SocketKind::Stream)?;
        let entry = Entry::<OwnedFd>::new(server_main)?;
        let (k, v) = mp_sys::boot::entry_env(&entry, theirs.as_fd());
        let process = mp_sys::process::spawn_self(&SpawnOptions::new().env(k, v).inherit_fd(theirs.as_fd()))?;
        *guard = Some(Server {
            owner: me,
            sock: mine,
            process,
        });
    }
    guard
        .as_mut()
        .ok_or_else(|| ProcessError::Bootstrap("the fork server did not start".into()))
}

/// A child of the server, until it is reaped.
struct Served {
    child: Child,
    status: OwnedFd,
}

/// The server: one thread, one loop, until the parent's end closes.
fn server_main(sock: OwnedFd) -> i32 {
    let _ = mp_sys::process::set_name("mp-forkserver");
    let parent = mp_sys::process::parent_pid();
    let mut children: Vec<Served> = Vec::new();
    loop {
        let ready: Vec<bool> = {
            let mut set: Vec<PollFd<'_>> = std::iter::once(PollFd::readable(sock.as_fd()))
                .chain(children.iter().map(|c| PollFd::readable(c.child.pidfd())))
                .collect();
            if fd::poll(&mut set, Some(Duration::from_secs(3600))).is_err() {
                return 1;
            }
            set.iter().map(PollFd::is_ready).collect()
        };
        // Report and forget the children that ended.
        let mut i = 0;
        children.retain_mut(|c| {
            i += 1;
            if !ready[i] {
                return true;
            }
            match c.child.try_wait() {
                Ok(Some(s)) => {
                    let _ = fd::write_all(c.status.as_fd(), &s.exitcode().to_le_bytes());
                    false
                }
                _ => true,
            }
        });
        if ready[0] {
            let request =
                mp_codec::recv_frame(sock.as_fd(), &Limits::default()).and_then(mp_codec::decode::<(Fd, Fd, bool)>);
            let (child_sock, status) = match request {
                Ok((Fd(s), Fd(w), _daemon)) => (s, w),
                // The parent closed its end (or broke the protocol): the server's
                // work is over. Daemonic children die with it.
                Err(_) => return 0,
            };
            match try_fork() {
                Ok(Fork::Child) => {
                    // Keep nothing of the server's: its socket and the other
                    // children's status pipes.
                    drop(sock);
                    for c in children {
                        drop(c.status);
                        std::mem::forget(c.child);
                    }
                    drop(status);
                    let code = run_child(child_sock, parent);
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                    mp_sys::process::exit_now(code)
                }
                Ok(Fork::Parent(child)) => {
                    let _ = mp_codec::send(sock.as_fd(), &Reply::Ok(child.pid()));
                    children.push(Served { child, status });
                }
                Err(e) => {
                    let _ = mp_codec::send(sock.as_fd(), &Reply::Err(e.to_string()));
                }
            }
        }
    }
}

/// In a child of the server: take the bootstrap from the parent and run.
fn run_child(sock: OwnedFd, _server_parent: u32) -> i32 {
    match spawn::receive_bootstrap(sock.as_fd()) {
        Ok((meta, args)) => {
            let _ = mp_codec::send(sock.as_fd(), &Result::<(), String>::Ok(()));
            drop(sock);
            let server = mp_sys::process::parent_pid();
            spawn::run_meta(meta, args, server)
        }
        Err(why) => {
            eprintln!("multiprocessing: the child process cannot start: {why}");
            let _ = mp_codec::send(sock.as_fd(), &Result::<(), String>::Err(why));
            1
        }
    }
}
