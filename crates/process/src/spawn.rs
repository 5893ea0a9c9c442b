//! The spawn start method: re-execute this binary; the child is diverted
//! before `main` by mp-sys's boot hook into [`spawn_main`], which reads its
//! bootstrap message and runs the target.
//!
//! Bootstrap protocol on a private socket pair: the parent sends the [`Meta`]
//! frame, then the arguments frame (with the descriptors of the handles in
//! the arguments); the child answers `Ok(())` once it has both, or the reason
//! it cannot run, and only then runs the target. So `start` returns an error,
//! never hangs, when the child cannot take its message.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use mp_codec::{Frame, Limits};
use mp_sys::code::Entry;
use mp_sys::process::{Child, SpawnOptions};
use mp_sys::signal::Signal;
use mp_sys::socket::{SocketKind, socketpair};

use crate::child::Meta;
use crate::error::ProcessError;
use crate::identity;

/// How long a starting child may take to read its bootstrap message.
pub(crate) const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(60);

type Ack = Result<(), String>;

/// Starts a spawned child: returns it once it has acknowledged its bootstrap.
pub(crate) fn start(meta: &Meta, args: &Frame) -> Result<Child, ProcessError> {
    let (mine, theirs) = socketpair(SocketKind::Stream)?;
    let entry = Entry::<OwnedFd>::new(spawn_main)?;
    let (k, v) = mp_sys::boot::entry_env(&entry, theirs.as_fd());
    let mut opts = SpawnOptions::new().env(k, v).inherit_fd(theirs.as_fd());
    if let Ok(exe) = mp_sys::process::current_exe() {
        opts = opts.arg0(exe);
    }
    let mut child = mp_sys::process::spawn_self(&opts)?;
    drop(theirs);
    match send_bootstrap(mine.as_fd(), meta, args) {
        Ok(()) => Ok(child),
        Err(e) => Err(failed(&mut child, e)),
    }
}

/// For tests: a spawned child that receives bytes that are no frame.
pub(crate) fn start_with_garbage() -> Result<(), ProcessError> {
    let (mine, theirs) = socketpair(SocketKind::Stream)?;
    let entry = Entry::<OwnedFd>::new(spawn_main)?;
    let (k, v) = mp_sys::boot::entry_env(&entry, theirs.as_fd());
    let mut child = mp_sys::process::spawn_self(&SpawnOptions::new().env(k, v).inherit_fd(theirs.as_fd()))?;
    drop(theirs);
    let _ = mp_sys::fd::write_all(mine.as_fd(), b"GET / HTTP/1.1\r\n\r\n");
    let answer = mp_codec::recv_frame_timeout(mine.as_fd(), &Limits::default(), BOOTSTRAP_TIMEOUT)
        .map_err(|e| e.to_string())
        .and_then(|f| mp_codec::decode::<Ack>(f).map_err(|e| e.to_string()))
        .and_then(|ack| ack);
    match answer {
        Ok(()) => Ok(()),
        Err(why) => Err(failed(&mut child, why)),
    }
}

/// Sends the bootstrap frames on `sock` and waits for the child's answer.
pub(crate) fn send_bootstrap(sock: BorrowedFd<'_>, meta: &Meta, args: &Frame) -> Result<(), String> {
    mp_codec::send(sock, meta).map_err(|e| format!("cannot send the bootstrap message: {e}"))?;
    mp_codec::send_frame(sock, args).map_err(|e| format!("cannot send the arguments: {e}"))?;
    let frame = mp_codec::recv_frame_timeout(sock, &Limits::default(), BOOTSTRAP_TIMEOUT)
        .map_err(|e| format!("no answer to the bootstrap message: {e}"))?;
    let ack: Ack = mp_codec::decode(frame).map_err(|e| format!("bad answer to the bootstrap message: {e}"))?;
    ack
}

/// Reaps a child whose bootstrap failed and builds the error.
fn failed(child: &mut Child, why: String) -> ProcessError {
    let status = match child.wait_timeout(Duration::from_secs(5)) {
        Ok(Some(s)) => Some(s),
        _ => {
            let _ = child.signal(Signal::KILL);
            child.wait_timeout(Duration::from_secs(5)).ok().flatten()
        }
    };
    match status {
        Some(s) => ProcessError::Bootstrap(format!("{why} (the child ended with {s}; its stderr says more)")),
        None => ProcessError::Bootstrap(why),
    }
}

/// The child side, reached from the boot hook before `main`.
pub(crate) fn spawn_main(sock: OwnedFd) -> i32 {
    match receive_bootstrap(sock.as_fd()) {
        Ok((meta, args)) => {
            let _ = mp_codec::send(sock.as_fd(), &Ack::Ok(()));
            drop(sock);
            let parent = meta.parent_pid;
            run_meta(meta, args, parent)
        }
        Err(why) => {
            eprintln!("multiprocessing: the child process cannot start: {why}");
            let _ = mp_codec::send(sock.as_fd(), &Ack::Err(why));
            1
        }
    }
}

/// Reads and checks the bootstrap frames.
pub(crate) fn receive_bootstrap(sock: BorrowedFd<'_>) -> Result<(Meta, Frame), String> {
    let limits = Limits::default();
    let meta = mp_codec::recv_frame_timeout(sock, &limits, BOOTSTRAP_TIMEOUT)
        .and_then(mp_codec::decode::<Meta>)
        .map_err(|e| format!("bad bootstrap message: {e}"))?;
    let args = mp_codec::recv_frame_timeout(sock, &limits, BOOTSTRAP_TIMEOUT)
        .map_err(|e| format!("bad arguments frame: {e}"))?;
    // Check the target now, so that a bad one is reported to the parent.
    let (offset, tag) = meta.target;
    Entry::<Frame>::from_parts(offset, tag)
        .check()
        .map_err(|e| e.to_string())?;
    Ok((meta, args))
}

/// Becomes the child `meta` describes and runs its target. `os_parent` is
/// the process that forked this one (the fork server, or the parent itself).
pub(crate) fn run_meta(meta: Meta, args: Frame, os_parent: u32) -> i32 {
    crate::setting::set_inherited_method(meta.method);
    identity::become_child(
        meta.name,
        meta.identity,
        meta.daemon,
        (meta.parent_pid, meta.parent_name),
    );
    if meta.daemon {
        // Dies with its parent even if the parent is killed.
        let _ = mp_sys::signal::set_parent_death_signal(Some(Signal::KILL));
        if mp_sys::process::parent_pid() != os_parent {
            return 1;
        }
    }
    let (offset, tag) = meta.target;
    match Entry::<Frame>::from_parts(offset, tag).call(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("multiprocessing: cannot run the target: {e}");
            1
        }
    }
}
