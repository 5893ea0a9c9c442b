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
//! A request carries the child's description and its arguments (with the
//! descriptors of the handles in them); the server checks the target, forks,
//! and answers with the pid, so a start costs one round trip. The child
//! writes its own exit code to the status pipe as it exits, so `join` does
//! not wait for the server either; the server writes it again after reaping,
//! which covers deaths by signal.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use mp_codec::{Fd, Frame, Limits};
use mp_sys::code::Entry;
use mp_sys::fd::{self, PollFd};
use mp_sys::process::{Child, Fork, PidFd, SpawnOptions, try_fork};
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

/// In a forked child: closes the parent's connection to its server and its
/// pidfd (the child starts its own server if it needs one).
pub(crate) fn forget_inherited() {
    if let Some(server) = lock().take() {
        drop(server.sock);
        // Not our child: never wait for it here.
        server.process.disown();
    }
}

/// The server's answer: the child's pid and a pidfd for it (opened by the
/// server, which owns the child, so it names the right process even if the
/// child has already ended and been reaped), or why it could not fork.
type Reply = Result<(u32, Fd), String>;

/// Stops this process's fork server, if it has one, and reaps it: closing
/// its socket ends its loop (its unused spare child then reads the end of its
/// socket and exits).
pub(crate) fn shutdown() {
    let Some(server) = lock().take() else { return };
    stop(server);
}

/// Closes a server's socket and reaps it (killing it if it does not end
/// within 2 s); a server inherited from a parent is only let go.
fn stop(mut server: Server) {
    if server.owner != mp_sys::process::pid() {
        server.process.disown();
        return;
    }
    drop(server.sock);
    if server
        .process
        .wait_timeout(Duration::from_secs(2))
        .ok()
        .flatten()
        .is_none()
    {
        let _ = server.process.signal(mp_sys::signal::Signal::KILL);
        let _ = server.process.wait_timeout(Duration::from_secs(2));
    }
}

/// Asks the server for a child: the request carries the bootstrap itself, so
/// the child starts with everything it needs and the parent waits for one
/// answer only.
pub(crate) fn start(meta: &Meta, args: &Frame) -> Result<(ChildHandle, u32), ProcessError> {
    let (status_r, status_w) = fd::pipe()?;
    let (pid, pidfd) = {
        let mut guard = lock();
        let server = ensure_server(&mut guard)?;
        let sock = server.sock.as_fd();
        let request = mp_codec::send(sock, &(meta, Fd(status_w)));
        if let Err(e @ mp_codec::CodecError::Encode(_)) = request {
            // Nothing was sent (a request is encoded whole before it is
            // written): the server is in step and stays.
            return Err(ProcessError::Bootstrap(format!(
                "cannot ask the fork server for a child: {e}"
            )));
        }
        let reply = request
            .and_then(|()| mp_codec::send_frame(sock, args))
            .and_then(|()| mp_codec::recv_frame_timeout(sock, &Limits::default(), spawn::BOOTSTRAP_TIMEOUT))
            .and_then(mp_codec::decode::<Reply>);
        match reply {
            Ok(Ok((pid, Fd(pidfd)))) => (pid, pidfd),
            Ok(Err(why)) => return Err(ProcessError::Bootstrap(why)),
            Err(e) => {
                // The server is gone or out of step (or this process ran out
                // of descriptors for its answer): end and reap it, and start
                // afresh next time.
                if let Some(server) = guard.take() {
                    stop(server);
                }
                return Err(ProcessError::Bootstrap(format!("the fork server did not answer: {e}")));
            }
        }
    };
    let pidfd = PidFd::from_fd(pid, pidfd);
    Ok((
        ChildHandle::Served {
            pidfd,
            status: status_r,
            gone: false,
            exit: None,
        },
        pid,
    ))
}

fn ensure_server(guard: &mut Option<Server>) -> Result<&mut Server, ProcessError> {
    let me = mp_sys::process::pid();
    let alive = guard
        .as_mut()
        .is_some_and(|s| s.owner == me && s.process.try_wait().ok().flatten().is_none());
    if !alive {
        // From the first server on, a forked child lets go of the parent's
        // server, and this process stops its own at exit (the layers below
        // the start methods run these hooks without naming this module).
        static HOOKED: Once = Once::new();
        HOOKED.call_once(|| {
            crate::hooks::after_fork(forget_inherited);
            crate::hooks::at_exit(shutdown);
        });
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

/// Reads one request: the child's description, its status pipe, and its
/// arguments. `Ok(None)`: the parent closed its end.
fn read_request(sock: BorrowedFd<'_>) -> Result<Option<(Meta, OwnedFd, Frame)>, String> {
    let limits = Limits::default();
    let head = match mp_codec::recv_frame(sock, &limits) {
        Ok(f) => f,
        Err(e) if e.is_eof() => return Ok(None),
        Err(e) => return Err(format!("bad request: {e}")),
    };
    let args = mp_codec::recv_frame(sock, &limits).map_err(|e| format!("bad arguments frame: {e}"))?;
    let (meta, Fd(status)) = mp_codec::decode::<(Meta, Fd)>(head).map_err(|e| format!("bad request: {e}"))?;
    let (offset, tag) = meta.target;
    Entry::<Frame>::from_parts(offset, tag)
        .check()
        .map_err(|e| e.to_string())?;
    Ok(Some((meta, status, args)))
}

/// A descriptor serialized as a handle without giving it up (the codec
/// sends a duplicate); it decodes as an [`Fd`].
struct BorrowedHandle<'a>(BorrowedFd<'a>);

impl serde::Serialize for BorrowedHandle<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        mp_codec::handle::serialize_fd(self.0, s)
    }
}

/// A child forked ahead of time, waiting for its bootstrap on `sock`: a
/// request then costs a message to it and no fork on the critical path.
struct Spare {
    child: Child,
    sock: OwnedFd,
}

/// The server: one thread, one loop, until the parent's end closes.
fn server_main(sock: OwnedFd) -> i32 {
    let _ = mp_sys::process::set_name("mp-forkserver");
    let mut children: Vec<Served> = Vec::new();
    let mut spare: Option<Spare> = None;
    loop {
        if spare.is_none() {
            let Ok((mine, theirs)) = socketpair(SocketKind::Stream) else {
                return 1;
            };
            // Taken before the fork: a spare that asked after its request
            // could get init's pid from a server that is gone, and its
            // daemonic child's "is my parent still here" check would pass.
            let server = mp_sys::process::pid();
            match try_fork() {
                Ok(Fork::Child) => {
                    // Keep nothing of the server's: its socket, and the other
                    // children's status pipes and pidfds (a sibling's
                    // descriptor in a child is one the child's program never
                    // asked for).
                    drop(sock);
                    drop(mine);
                    for c in children {
                        drop(c.status);
                        c.child.disown();
                    }
                    spare_main(theirs, server)
                }
                Ok(Fork::Parent(child)) => spare = Some(Spare { child, sock: mine }),
                Err(_) => {}
            }
        }
        let ready: Vec<bool> = {
            let mut set: Vec<PollFd<'_>> = std::iter::once(PollFd::readable(sock.as_fd()))
                .chain(children.iter().map(|c| PollFd::readable(c.child.pidfd())))
                .collect();
            if fd::poll(&mut set, Some(Duration::from_secs(3600))).is_err() {
                return 1;
            }
            set.iter().map(PollFd::is_ready).collect()
        };
        // Report and forget the children that ended. A child that exited
        // normally wrote its code already; writing it again is harmless (the
        // parent reads the first four bytes), and covers the other ways out.
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
        if !ready[0] {
            continue;
        }
        let (meta, status, args) = match read_request(sock.as_fd()) {
            Ok(Some(r)) => r,
            // The parent closed its end: the server's work is over. Daemonic
            // children die with it (their parent-death signal); the spare is
            // ended and reaped here, so nothing is left for init to reap.
            Ok(None) => {
                if let Some(Spare {
                    mut child,
                    sock: to_spare,
                }) = spare.take()
                {
                    drop(to_spare);
                    if child.wait_timeout(Duration::from_secs(2)).ok().flatten().is_none() {
                        let _ = child.signal(mp_sys::signal::Signal::KILL);
                        let _ = child.wait_timeout(Duration::from_secs(2));
                    }
                }
                return 0;
            }
            Err(why) => {
                if mp_codec::send(sock.as_fd(), &Reply::Err(why)).is_err() {
                    return 1;
                }
                continue;
            }
        };
        let reply = match spare.take() {
            Some(Spare { child, sock: to_spare }) => {
                let handed = mp_codec::send(to_spare.as_fd(), &(&meta, BorrowedHandle(status.as_fd())))
                    .and_then(|()| mp_codec::send_frame(to_spare.as_fd(), &args));
                match handed.map_err(|e| e.to_string()).and_then(|()| {
                    child
                        .pidfd()
                        .try_clone_to_owned()
                        .map_err(|e| format!("cannot pass the child's pidfd: {e}"))
                }) {
                    Ok(pidfd) => {
                        let pid = child.pid();
                        children.push(Served { child, status });
                        Reply::Ok((pid, Fd(pidfd)))
                    }
                    Err(why) => {
                        let _ = child.signal(mp_sys::signal::Signal::KILL);
                        Reply::Err(format!("the fork server's spare child failed: {why}"))
                    }
                }
            }
            None => Reply::Err("the fork server could not fork a child".into()),
        };
        if mp_codec::send(sock.as_fd(), &reply).is_err() {
            return 1;
        }
    }
}

/// A spare child: waits for its bootstrap from the server, then becomes the
/// child it describes. The server's end closing (it exited unused) ends it.
///
/// It has no parent-death signal: a server that dies before handing it a
/// request closes the socket, and the read below ends it; a server that dies
/// after must not take with it a child its parent was told is started.
fn spare_main(sock: OwnedFd, server: u32) -> ! {
    let limits = Limits::default();
    let request = mp_codec::recv_frame(sock.as_fd(), &limits)
        .and_then(mp_codec::decode::<(Meta, Fd)>)
        .and_then(|(meta, Fd(status))| mp_codec::recv_frame(sock.as_fd(), &limits).map(|args| (meta, status, args)));
    drop(sock);
    let Ok((meta, status, args)) = request else {
        mp_sys::process::exit_now(0)
    };
    crate::identity::set_status_pipe(status);
    let code = spawn::run_meta(meta, args, server);
    crate::identity::report_exit(code);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    mp_sys::process::exit_now(code)
}
