//! Tests of `mp_sys::code` and `mp_sys::boot`: a re-executed copy of this
//! test binary is handed to an entry before its `main` (the test harness)
//! runs, and a bad entry is refused with a clear message.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use mp_sys::code::{Entry, EntryError};
use mp_sys::fd::{self, PollFd};
use mp_sys::process::{ExitStatus, SpawnOptions, spawn_self};
use mp_sys::socket::{SocketKind, socketpair};

fn greet(sock: OwnedFd) -> i32 {
    // Runs in the child before main: the test harness never starts there.
    let msg = format!("entry ran in {}", std::process::id());
    fd::write_all(sock.as_fd(), msg.as_bytes()).map_or(2, |()| 7)
}

fn read_all(fd: std::os::fd::BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let mut set = [PollFd::readable(fd)];
        assert_eq!(
            fd::poll(&mut set, Some(Duration::from_secs(20))).unwrap(),
            1,
            "no answer in time"
        );
        match fd::read(fd, &mut buf).unwrap() {
            0 => return String::from_utf8(out).unwrap(),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn a_re_executed_child_runs_the_entry_instead_of_main() {
    let (mine, theirs) = socketpair(SocketKind::Stream).unwrap();
    let entry = Entry::<OwnedFd>::new(greet).unwrap();
    let (k, v) = mp_sys::boot::entry_env(&entry, theirs.as_fd());
    let mut child = spawn_self(&SpawnOptions::new().env(k, v).inherit_fd(theirs.as_fd())).unwrap();
    drop(theirs);
    let got = read_all(mine.as_fd());
    assert_eq!(got, format!("entry ran in {}", child.pid()));
    assert_eq!(
        child.wait_timeout(Duration::from_secs(20)).unwrap(),
        Some(ExitStatus::Exited(7))
    );
}

#[test]
fn a_corrupt_entry_is_refused_with_exit_code_1() {
    let (mine, theirs) = socketpair(SocketKind::Stream).unwrap();
    let (offset, tag) = Entry::<OwnedFd>::new(greet).unwrap().parts();
    let forged = Entry::<OwnedFd>::from_parts(offset + 16, tag);
    let (k, v) = mp_sys::boot::entry_env(&forged, theirs.as_fd());
    let mut child = spawn_self(&SpawnOptions::new().env(k, v).inherit_fd(theirs.as_fd())).unwrap();
    drop(theirs);
    assert_eq!(read_all(mine.as_fd()), "", "the forged entry must not run");
    assert_eq!(
        child.wait_timeout(Duration::from_secs(20)).unwrap(),
        Some(ExitStatus::Exited(1))
    );
}

#[test]
fn entries_check_size_and_input_type() {
    let captured = 1u8;
    let err = Entry::<u8>::new(move |x: u8| i32::from(x + captured)).unwrap_err();
    assert!(matches!(err, EntryError::NotZeroSized(_)));
    assert!(err.to_string().contains("captures data"), "{err}");
    let e = Entry::<u8>::new(|x: u8| i32::from(x)).unwrap();
    let (o, t) = e.parts();
    assert_eq!(Entry::<u8>::from_parts(o, t).call(9), Ok(9));
    // The same parts read as an entry for another input type do not match.
    assert_eq!(Entry::<u16>::from_parts(o, t).call(9), Err(EntryError::Mismatch));
}

/// Runs a copy of this test binary at `path` on `greet`'s entry made here,
/// with `extra` in its environment; its exit code and what it wrote.
fn run_copy(path: &std::path::Path, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let entry = Entry::<OwnedFd>::new(greet).unwrap();
    let (offset, tag) = entry.parts();
    let mut cmd = std::process::Command::new(path);
    cmd.env(mp_sys::boot::ENTRY_ENV, format!("{offset}:{tag}:1"))
        .env_remove(mp_sys::code::BUILD_ENV)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A copy of this binary in another file (another inode, as on another
/// host) of the same bytes.
fn copy_of_this_binary(name: &str, other_link: bool) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("mp-sys-build-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("copy");
    let mut bytes = std::fs::read("/proc/self/exe").unwrap();
    if other_link {
        // What another link gives: another build-id note.
        let at = mp_sys::code::build_note(&bytes).expect("a build-id note");
        bytes[at.start] ^= 0xff;
    }
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_copy_of_the_binary_elsewhere_is_the_same_build() {
    let path = copy_of_this_binary("same", false);
    let (code, out) = run_copy(&path, &[]);
    // A stale identity from another file's process is ignored: the copy
    // hashes itself and still takes the entry.
    let (stale_code, _) = run_copy(&path, &[(mp_sys::code::BUILD_ENV, "0123:4567")]);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    assert_eq!(code, Some(7), "the copy refused an entry of the same build: {out:?}");
    assert!(out.starts_with("entry ran in "), "{out:?}");
    assert_eq!(stale_code, Some(7));
}

#[test]
fn a_binary_of_another_link_is_another_build() {
    let path = copy_of_this_binary("other", true);
    let (code, out) = run_copy(&path, &[]);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    assert_eq!(code, Some(1), "another build took the entry: {out:?}");
    assert_eq!(out, "");
}
