//! Handles through a socket pair to and from forked children.
//!
//! This binary has its own `main` (no test harness), so it runs on a single
//! thread and may fork safely with `mp_sys::process::try_fork`. It prints the
//! same closing line as the standard harness.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mp_codec::CodecError;
use mp_sys::process::{Child, ExitStatus, Fork, exit_now, try_fork};
use mp_sys::region::Region;
use mp_sys::signal::{Signal, set_parent_death_signal};
use mp_sys::socket::{SocketKind, socketpair};
use mp_testkit::{Harness, Test, check};
use serde::{Deserialize, Serialize};

const PATIENCE: Duration = Duration::from_secs(20);

/// Forks a child that runs `f` and exits with its code (101 if it fails).
fn fork_child(f: impl FnOnce() -> Result<i32, String>) -> Child {
    match try_fork().expect("this test binary is single-threaded") {
        Fork::Child => {
            let _ = set_parent_death_signal(Some(Signal::KILL));
            let code = match f() {
                Ok(c) => c,
                Err(msg) => {
                    eprintln!("child failed: {msg}");
                    101
                }
            };
            exit_now(code)
        }
        Fork::Parent(child) => child,
    }
}

fn reap(c: &mut Child) -> Result<ExitStatus, String> {
    match c.wait_timeout(PATIENCE).map_err(|e| e.to_string())? {
        Some(s) => Ok(s),
        None => {
            let _ = c.signal(Signal::KILL);
            let _ = c.wait_timeout(PATIENCE);
            Err(format!("child {} still running after {PATIENCE:?}", c.pid()))
        }
    }
}

#[derive(Serialize, Deserialize)]
struct TwoRegions {
    #[serde(with = "mp_codec::handle::region")]
    text: Region,
    label: String,
    #[serde(with = "mp_codec::handle::region")]
    counters: Region,
}

/// The struct with two memfd handles goes to a child forked *before* the
/// regions existed, so the child can reach them only through the message; it
/// writes through both, and the parent reads what it wrote.
fn two_memfd_handles_reach_a_forked_child() -> Result<(), String> {
    let (parent_end, child_end) = socketpair(SocketKind::Stream).map_err(|e| e.to_string())?;
    let mut child = fork_child(move || {
        let msg: TwoRegions = mp_codec::recv(child_end.as_fd()).map_err(|e| e.to_string())?;
        let line = format!("{} written by {}", msg.label, std::process::id());
        msg.text
            .write(0, &(line.len() as u32).to_le_bytes())
            .map_err(|e| e.to_string())?;
        msg.text.write(4, line.as_bytes()).map_err(|e| e.to_string())?;
        for i in 0..16 {
            msg.counters
                .atomic_u64(i * 8)
                .map_err(|e| e.to_string())?
                .fetch_add(i as u64 + 1, Ordering::AcqRel);
        }
        mp_codec::send(child_end.as_fd(), &"done").map_err(|e| e.to_string())?;
        Ok(0)
    });
    let msg = TwoRegions {
        text: Region::create("text", 4096).map_err(|e| e.to_string())?,
        label: "hello".into(),
        counters: Region::create("counters", 128).map_err(|e| e.to_string())?,
    };
    msg.counters
        .atomic_u64(0)
        .map_err(|e| e.to_string())?
        .store(100, Ordering::Release);
    mp_codec::send(parent_end.as_fd(), &msg).map_err(|e| e.to_string())?;
    let ack: String = mp_codec::recv(parent_end.as_fd()).map_err(|e| e.to_string())?;
    check(ack == "done", format!("ack {ack:?}"))?;
    let status = reap(&mut child)?;
    check(status.success(), format!("child ended with {status}"))?;

    let mut len = [0u8; 4];
    msg.text.read(0, &mut len).map_err(|e| e.to_string())?;
    let mut line = vec![0u8; u32::from_le_bytes(len) as usize];
    msg.text.read(4, &mut line).map_err(|e| e.to_string())?;
    let line = String::from_utf8(line).map_err(|e| e.to_string())?;
    check(
        line == format!("hello written by {}", child.pid()),
        format!("parent read {line:?}"),
    )?;
    let counters: Vec<u64> = (0..16)
        .map(|i| msg.counters.atomic_u64(i * 8).map(|a| a.load(Ordering::Acquire)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let expected: Vec<u64> = (0..16).map(|i| if i == 0 { 101 } else { i + 1 }).collect();
    check(counters == expected, format!("counters {counters:?}"))?;
    println!("    parent read {line:?} and counters {:?}..", &counters[..4]);
    Ok(())
}

/// A region created in the child comes back to the parent and outlives the
/// child.
fn a_handle_comes_back_from_a_child() -> Result<(), String> {
    let (parent_end, child_end) = socketpair(SocketKind::Stream).map_err(|e| e.to_string())?;
    let mut child = fork_child(move || {
        let r = Region::create("from-child", 64).map_err(|e| e.to_string())?;
        r.write(0, b"made in the child").map_err(|e| e.to_string())?;
        mp_codec::send(
            child_end.as_fd(),
            &mp_codec::Fd(r.try_clone_fd().map_err(|e| e.to_string())?),
        )
        .map_err(|e| e.to_string())?;
        Ok(0)
    });
    let mp_codec::Fd(fd) = mp_codec::recv(parent_end.as_fd()).map_err(|e| e.to_string())?;
    check(reap(&mut child)?.success(), "child failed")?;
    let r = Region::from_fd(fd).map_err(|e| e.to_string())?;
    let mut got = [0u8; 17];
    r.read(0, &mut got).map_err(|e| e.to_string())?;
    check(&got == b"made in the child", format!("{got:?}"))
}

/// A child killed in the middle of a frame: the parent gets `Truncated`
/// (an end-of-stream error), not a hang.
fn a_child_dying_mid_frame_gives_truncated() -> Result<(), String> {
    let (parent_end, child_end) = socketpair(SocketKind::Stream).map_err(|e| e.to_string())?;
    let mut child = fork_child(move || {
        let frame = mp_codec::encode(&vec![7u64; 1000]).map_err(|e| e.to_string())?;
        let half = &frame.as_bytes()[..frame.as_bytes().len() / 2];
        mp_sys::fd::write_all(child_end.as_fd(), half).map_err(|e| e.to_string())?;
        // Die without finishing the frame.
        Ok(9)
    });
    // The parent's copy of `child_end` went with the closure: only the
    // child holds the other end now.
    let t0 = Instant::now();
    let err = mp_codec::recv_frame(parent_end.as_fd(), &Default::default());
    check(reap(&mut child)? == ExitStatus::Exited(9), "child exit")?;
    match err {
        Err(e @ CodecError::Truncated { .. }) => {
            check(e.is_eof(), "Truncated is an end of stream")?;
            check(t0.elapsed() < PATIENCE, "took too long")
        }
        other => Err(format!("expected Truncated, got {other:?}")),
    }
}

/// Frames with handles sent and received 200 times, then 1,000 regions
/// created and dropped: the descriptor count returns exactly to where it was
/// (exact, because this binary runs one test at a time on one thread).
fn no_descriptor_is_left_behind() -> Result<(), String> {
    let (a, b) = socketpair(SocketKind::Stream).map_err(|e| e.to_string())?;
    let (r, _w) = mp_sys::fd::pipe().map_err(|e| e.to_string())?;
    let before = mp_sys::fd::count_open_fds().map_err(|e| e.to_string())?;
    for i in 0..200u32 {
        let f = mp_codec::encode(&(mp_codec::Fd(r.try_clone().map_err(|e| e.to_string())?), i))
            .map_err(|e| e.to_string())?;
        mp_codec::send_frame(a.as_fd(), &f).map_err(|e| e.to_string())?;
        drop(f);
        let (_fd, n): (mp_codec::Fd, u32) = mp_codec::recv(b.as_fd()).map_err(|e| e.to_string())?;
        check(n == i, "order")?;
    }
    let regions: Vec<TwoRegions> = (0..500)
        .map(|_| {
            Ok(TwoRegions {
                text: Region::create("t", 4096).map_err(|e| e.to_string())?,
                label: String::new(),
                counters: Region::create("c", 64).map_err(|e| e.to_string())?,
            })
        })
        .collect::<Result<_, String>>()?;
    let frames: Vec<_> = regions
        .iter()
        .map(mp_codec::encode)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    drop(frames);
    drop(regions);
    let after = mp_sys::fd::count_open_fds().map_err(|e| e.to_string())?;
    check(after == before, format!("{before} descriptors before, {after} after"))?;
    println!("    {before} descriptors before, {after} after");
    Ok(())
}

fn main() -> ExitCode {
    let tests: [(&str, Test); 4] = [
        ("no_descriptor_is_left_behind", no_descriptor_is_left_behind),
        (
            "two_memfd_handles_reach_a_forked_child",
            two_memfd_handles_reach_a_forked_child,
        ),
        ("a_handle_comes_back_from_a_child", a_handle_comes_back_from_a_child),
        (
            "a_child_dying_mid_frame_gives_truncated",
            a_child_dying_mid_frame_gives_truncated,
        ),
    ];
    let mut harness = Harness::new(tests.len());
    for (name, test) in tests {
        harness.run(name, test);
    }
    harness.finish()
}
