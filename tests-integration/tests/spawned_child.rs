//! mp-sys and mp-codec together: a re-executed copy of this test binary
//! (`spawn_self`, the mechanism of the spawn start method) connects back over
//! a Unix socket, receives a message holding a shared region, writes through
//! it, and answers.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use mp_sys::process::{ExitStatus, SpawnOptions, spawn_self};
use mp_sys::region::Region;
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "MP_INTEGRATION_CHILD_SOCKET";

#[derive(Serialize, Deserialize)]
struct Work {
    words: Vec<String>,
    #[serde(with = "mp_codec::handle::region")]
    out: Region,
}

/// The child side: runs only in the re-executed binary.
#[test]
fn spawned_child_entry() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let sock = OwnedFd::from(UnixStream::connect(path).expect("connect back to the parent"));
    let work: Work = mp_codec::recv(sock.as_fd()).expect("receive the work");
    let joined = work.words.join(" ").to_uppercase();
    work.out.write(0, joined.as_bytes()).expect("write through the region");
    mp_codec::send(sock.as_fd(), &(std::process::id(), joined.len())).expect("answer");
    mp_sys::process::exit_now(0);
}

#[test]
fn a_spawned_child_writes_through_a_region_it_received() {
    let dir = std::env::temp_dir().join(format!("mp-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut child = spawn_self(
        &SpawnOptions::new()
            .arg("spawned_child::spawned_child_entry")
            .arg("--exact")
            .arg("--quiet")
            .arg("--test-threads=1")
            .env(CHILD_ENV, &path),
    )
    .unwrap();
    // Never block without a timeout: wait for the child's connection first.
    let mut ready = [mp_sys::fd::PollFd::readable(listener.as_fd())];
    assert_eq!(
        mp_sys::fd::poll(&mut ready, Some(Duration::from_secs(30))).unwrap(),
        1,
        "the child never connected"
    );
    let (stream, _) = listener.accept().unwrap();
    let sock = OwnedFd::from(stream);
    let out = Region::create("out", 4096).unwrap();
    let work = Work {
        words: vec!["handles".into(), "travel".into()],
        out,
    };
    mp_codec::send(sock.as_fd(), &work).unwrap();
    let (pid, len): (u32, usize) = mp_codec::decode(
        mp_codec::recv_frame_timeout(sock.as_fd(), &Default::default(), Duration::from_secs(30)).unwrap(),
    )
    .unwrap();
    assert_eq!(pid, child.pid());
    let mut got = vec![0u8; len];
    work.out.read(0, &mut got).unwrap();
    assert_eq!(got, b"HANDLES TRAVEL");
    let status = child.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(status, Some(ExitStatus::Exited(0)));
    std::fs::remove_dir_all(&dir).unwrap();
}
