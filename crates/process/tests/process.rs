//! `Process` under every start method, from a single-threaded main (so the
//! fork method is safe here; see docs/ARCHITECTURE.md, fork safety).
//!
//! Run with `cargo test -p mp-process --test process [filter]`. Scenarios
//! that must watch a whole program (its stderr, its exit) re-run this binary
//! as a driver: `process --scenario NAME --method M`.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mp_connection::{Connection, pipe_simplex};
use mp_process::{
    Process, ProcessError, Run, StartMethod, active_children, current_process, exit, get_context, parent_process,
};
use mp_sys::fd::{PollFd, poll};
use mp_sys::process::PidFd;
use mp_sys::region::Region;
use mp_testkit::{Harness, PATIENCE, check, ok};
use serde::{Deserialize, Serialize};

const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

type Check = Result<(), String>;

fn run(m: StartMethod, p: &mut Process) -> Result<i32, String> {
    ok(p.start())?;
    ok(p.join_timeout(PATIENCE))?;
    match p.exitcode() {
        Some(c) => Ok(c),
        None => {
            let _ = p.kill();
            Err(format!("{} under {m:?} did not exit within {PATIENCE:?}", p.get_name()))
        }
    }
}

/// Joins a started child within `PATIENCE` and returns its exit code; kills
/// and reaps it if it hangs.
fn finish(p: &mut Process) -> Result<i32, String> {
    ok(p.join_timeout(PATIENCE))?;
    match p.exitcode() {
        Some(c) => Ok(c),
        None => {
            let _ = p.kill();
            let _ = p.join_timeout(PATIENCE);
            Err(format!("{} did not exit within {PATIENCE:?}", p.get_name()))
        }
    }
}

// ---- targets -------------------------------------------------------------

fn nothing() {}

fn fail(msg: String) -> Result<(), String> {
    Err(msg)
}

fn boom() {
    panic!("boom in the child");
}

fn exit_with(code: i32) {
    exit(code)
}

/// Runs until a signal ends the process: the workload of the tests that
/// terminate, kill or time out on a child.
fn until_killed() {
    loop {
        std::thread::park();
    }
}

fn six(a: u8, b: u16, c: u32, d: u64, e: String, f: Vec<i8>) -> Result<(), String> {
    let sum = u64::from(a) + u64::from(b) + u64::from(c) + d + e.len() as u64 + f.len() as u64;
    if sum == 1 + 2 + 3 + 4 + 5 + 6 {
        Ok(())
    } else {
        Err(format!("sum {sum}"))
    }
}

#[derive(Serialize, Deserialize)]
struct Shared(#[serde(with = "mp_codec::handle::region")] Region);

fn write_region(shared: Shared, text: String) {
    shared.0.write(0, text.as_bytes()).expect("write through the handle");
}

fn report_identity(shared: Shared) {
    let me = current_process();
    let parent = parent_process()
        .map(|p| format!("{}:{}", p.name(), p.is_alive()))
        .unwrap_or_default();
    let line = format!("{}|{}|{}|", me.name(), me.pid(), parent);
    shared.0.write(0, line.as_bytes()).expect("write");
}

fn leaf() {}

/// Python's test_recursion shape: children start children.
fn recurse(depth: u32, shared: Shared) -> Result<(), String> {
    let me = current_process().name().to_string();
    // Each process takes the next 64-byte slot after the counter at offset 0.
    let counter = shared.0.atomic_u32(0).map_err(|e| e.to_string())?;
    let slot = counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel) as usize;
    shared
        .0
        .write(64 + slot * 64, format!("{me};").as_bytes())
        .map_err(|e| e.to_string())?;
    if depth > 0 {
        let mut kids: Vec<Process> = (0..2)
            .map(|_| Process::new(recurse, (depth - 1, Shared(shared.0.try_clone().expect("clone")))))
            .collect();
        for k in &mut kids {
            k.start().map_err(|e| e.to_string())?;
        }
        for k in &mut kids {
            k.join().map_err(|e| e.to_string())?;
            if k.exitcode() != Some(0) {
                return Err(format!("{} exited {:?}", k.get_name(), k.exitcode()));
            }
        }
    }
    Ok(())
}

fn daemonic_tries_children() {
    match Process::new(leaf, ()).start() {
        Err(ProcessError::DaemonicParent) => exit(7),
        other => {
            eprintln!("unexpected: {other:?}");
            exit(8)
        }
    }
}

/// Exits with 10, 11 or 12 for the start method this child sees as its
/// process-wide one (fork, spawn, forkserver).
fn exit_with_method() {
    exit(match mp_process::get_start_method() {
        StartMethod::Fork => 10,
        StartMethod::Spawn => 11,
        StartMethod::ForkServer => 12,
    })
}

fn count_fds() {
    exit(mp_sys::fd::count_open_fds().map_or(-1, |n| n as i32))
}

/// This process's open descriptors, each as `N -> what /proc/self/fd/N
/// links to`.
fn fd_listing() -> Vec<String> {
    let mut v: Vec<(u32, String)> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().parse().ok()?;
                    let to = std::fs::read_link(e.path()).ok()?;
                    Some((n, to.display().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    // The directory listing itself was open while it was read.
    v.into_iter()
        .filter(|(n, _)| mp_sys::fd::is_valid(i32::try_from(*n).unwrap_or(-1)))
        .map(|(n, to)| format!("{n} -> {to}"))
        .collect()
}

/// Waits (at most `PATIENCE`) for the parent's go on `go`.
fn wait_for_go(go: &Connection) -> Check {
    if !ok(go.poll_timeout(PATIENCE))? {
        return Err(format!("no go from the parent within {PATIENCE:?}"));
    }
    ok(go.recv::<()>())
}

/// Once told to, sends this process's descriptor list through `out`.
fn report_fds(out: Connection, go: Connection) -> Check {
    wait_for_go(&go)?;
    ok(out.send(&fd_listing()))
}

/// Holds the write end `w` until told to go, then exits (closing it).
fn hold_until_go(w: Connection, go: Connection) -> Check {
    wait_for_go(&go)?;
    drop(w);
    Ok(())
}

/// Blocks until told to go.
fn block_until_go(go: Connection) -> Check {
    wait_for_go(&go)
}

#[derive(Serialize, Deserialize)]
struct Upper {
    text: String,
    out: Shared,
}

impl Run for Upper {
    fn run(self) {
        self.out.0.write(0, self.text.to_uppercase().as_bytes()).expect("write");
    }
}

// ---- scenarios -------------------------------------------------------------

fn exit_codes(m: StartMethod) -> Check {
    let ctx = get_context(m);
    check(run(m, &mut ctx.process(nothing, ()))? == 0, "return gives 0")?;
    check(run(m, &mut ctx.process(fail, ("no".to_string(),)))? == 1, "Err gives 1")?;
    check(run(m, &mut ctx.process(boom, ()))? == 1, "a panic gives 1")?;
    check(run(m, &mut ctx.process(exit_with, (42,)))? == 42, "exit(42) gives 42")?;
    let args = (1u8, 2u16, 3u32, 4u64, "abcde".to_string(), vec![0i8; 6]);
    check(run(m, &mut ctx.process(six, args))? == 0, "six arguments arrive")?;
    let code = run(
        m,
        &mut ctx.process(
            |x: i32| {
                if x != 5 {
                    exit(1)
                }
            },
            (5,),
        ),
    )?;
    check(code == 0, "a non-capturing closure runs")
}

fn terminate_and_kill(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let mut p = ctx.process(until_killed, ());
    ok(p.start())?;
    check(p.is_alive(), "alive after start")?;
    ok(p.terminate())?;
    ok(p.join_timeout(PATIENCE))?;
    check(
        p.exitcode() == Some(-15),
        format!("terminate: exitcode {:?}", p.exitcode()),
    )?;
    let mut p = ctx.process(until_killed, ());
    ok(p.start())?;
    ok(p.kill())?;
    ok(p.join_timeout(PATIENCE))?;
    check(p.exitcode() == Some(-9), format!("kill: exitcode {:?}", p.exitcode()))?;
    check(!p.is_alive(), "dead after kill")
}

fn lifecycle_errors(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let mut p = ctx.process(nothing, ());
    check(
        matches!(p.join(), Err(ProcessError::NotStarted(_))),
        "join before start is an error",
    )?;
    check(
        matches!(p.terminate(), Err(ProcessError::NotStarted(_))),
        "terminate before start is an error",
    )?;
    check(
        p.exitcode().is_none() && p.pid().is_none(),
        "no exitcode or pid before start",
    )?;
    ok(p.start())?;
    check(
        matches!(p.start(), Err(ProcessError::AlreadyStarted(_))),
        "a second start is an error",
    )?;
    ok(p.join())?;
    ok(p.close())?;
    ok(p.close())?;
    check(
        matches!(p.join(), Err(ProcessError::Closed(_))),
        "join after close is an error",
    )?;
    let mut running = ctx.process(until_killed, ());
    ok(running.start())?;
    check(
        matches!(running.close(), Err(ProcessError::StillRunning(_))),
        "close while running is an error",
    )?;
    ok(running.kill())?;
    ok(running.join())
}

fn join_timeout_returns_with_the_child_alive(m: StartMethod) -> Check {
    let mut p = get_context(m).process(until_killed, ());
    ok(p.start())?;
    let t = Duration::from_millis(500);
    let t0 = Instant::now();
    ok(p.join_timeout(t))?;
    let took = t0.elapsed();
    check(
        took >= t - Duration::from_millis(100) && took < t + Duration::from_millis(1500),
        format!("took {took:?}"),
    )?;
    check(p.is_alive() && p.exitcode().is_none(), "still alive after join_timeout")?;
    ok(p.kill())?;
    ok(p.join())
}

fn a_hundred_children(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let mut pids = Vec::new();
    let mut watches = Vec::new();
    for i in 0..100 {
        let mut p = ctx.process(nothing, ());
        ok(p.start())?;
        // Watched from the start; a child already reaped has nothing to watch.
        watches.extend(p.pid().and_then(|pid| PidFd::open(pid).ok()));
        ok(p.join_timeout(PATIENCE))?;
        let code = p.exitcode().ok_or_else(|| format!("child {i} did not exit"))?;
        check(code == 0, format!("child {i} exited {code}"))?;
        pids.extend(p.pid());
    }
    // Reaped: no /proc entry (a zombie keeps one). A fork server's child is
    // reaped by the server a moment after it exits; a pidfd reports the reap
    // as a hang-up (Linux 6.9 and later), so wait for those.
    let deadline = mp_sys::time::Deadline::nap(Duration::from_secs(2));
    while !watches.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut set: Vec<PollFd<'_>> = watches.iter().map(|w| PollFd::hangup(w.as_fd())).collect();
        if left.is_zero() || ok(poll(&mut set, Some(left)))? == 0 {
            break;
        }
        let reaped: Vec<bool> = set.iter().map(PollFd::is_hup).collect();
        drop(set);
        let mut reaped = reaped.into_iter();
        watches.retain(|_| !reaped.next().unwrap_or(false));
    }
    let zombies: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    check(
        zombies.is_empty(),
        format!("{} children left in /proc: {zombies:?}", zombies.len()),
    )?;
    check(active_children().is_empty(), "no active children left")
}

fn handles_travel(m: StartMethod) -> Check {
    let r = ok(Region::create("arg", 4096))?;
    let mut p = get_context(m).process(
        write_region,
        (Shared(ok(r.try_clone())?), "through a memfd".to_string()),
    );
    check(run(m, &mut p)? == 0, "child wrote")?;
    let mut got = [0u8; 15];
    ok(r.read(0, &mut got))?;
    check(
        &got == b"through a memfd",
        format!("parent read {:?}", String::from_utf8_lossy(&got)),
    )?;
    let out = ok(Region::create("out", 64))?;
    let mut p = get_context(m).process_from_run(Upper {
        text: "run me".into(),
        out: Shared(ok(out.try_clone())?),
    });
    check(run(m, &mut p)? == 0, "Run value ran")?;
    let mut got = [0u8; 6];
    ok(out.read(0, &mut got))?;
    check(&got == b"RUN ME", "Run value wrote")
}

fn names_and_identity(m: StartMethod) -> Check {
    let r = ok(Region::create("id", 4096))?;
    let mut p = get_context(m).process(report_identity, (Shared(ok(r.try_clone())?),));
    let expected_name = p.get_name().to_string();
    check(
        expected_name.starts_with("Process-"),
        format!("default name {expected_name}"),
    )?;
    let next = get_context(m).process(nothing, ());
    let n1: u32 = expected_name["Process-".len()..].parse().map_err(|_| "numbered name")?;
    check(next.get_name() == format!("Process-{}", n1 + 1), "names count up")?;
    check(run(m, &mut p)? == 0, "child ran")?;
    let mut buf = [0u8; 128];
    ok(r.read(0, &mut buf))?;
    let text = String::from_utf8_lossy(&buf);
    let parts: Vec<&str> = text.split('|').collect();
    check(parts[0] == expected_name, format!("child sees name {}", parts[0]))?;
    check(
        Some(parts[1].parse::<u32>().unwrap_or(0)) == p.pid(),
        "child sees its pid",
    )?;
    check(
        parts[2] == "MainProcess:true",
        format!("child sees parent {}", parts[2]),
    )?;
    let named = get_context(m).process(nothing, ()).name("custom");
    check(named.get_name() == "custom", "name() sets the name")
}

fn grandchildren(m: StartMethod) -> Check {
    let r = ok(Region::create("tree", 4096))?;
    let mut p = get_context(m).process(recurse, (2u32, Shared(ok(r.try_clone())?)));
    let top = p.get_name().to_string();
    check(run(m, &mut p)? == 0, "the tree completed")?;
    let mut buf = vec![0u8; 4096];
    ok(r.read(0, &mut buf))?;
    let text = String::from_utf8_lossy(&buf);
    for want in [
        top.clone(),
        format!("{top}:1"),
        format!("{top}:2"),
        format!("{top}:1:1"),
        format!("{top}:2:2"),
    ] {
        check(
            text.contains(&format!("{want};")),
            format!("{want} missing from {:?}", text.trim_matches('\0')),
        )?;
    }
    Ok(())
}

fn daemons_cannot_have_children(m: StartMethod) -> Check {
    let mut p = get_context(m).process(daemonic_tries_children, ()).daemon(true);
    check(p.is_daemon(), "daemon flag set")?;
    let code = run(m, &mut p)?;
    check(
        code == 7,
        format!("the daemonic child got {code}, not the DaemonicParent error"),
    )
}

fn closures_need_fork(m: StartMethod) -> Check {
    let data = String::from("abc");
    let mut p = Process::from_closure(move || {
        if data.len() != 3 {
            exit(3)
        }
    })
    .start_method(m);
    if m == StartMethod::Fork {
        check(run(m, &mut p)? == 0, "closure ran under fork")
    } else {
        match p.start() {
            Err(e @ ProcessError::ClosureNeedsFork(_)) => check(e.to_string().contains("fork"), e.to_string()),
            other => Err(format!("expected ClosureNeedsFork, got {other:?}")),
        }
    }
}

fn fds_do_not_grow(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let counts: Vec<i32> = (0..5)
        .map(|_| run(m, &mut ctx.process(count_fds, ())))
        .collect::<Result<_, _>>()?;
    check(
        counts.windows(2).all(|w| w[0] == w[1]),
        format!("fd counts in children: {counts:?}"),
    )?;
    let before = ok(mp_sys::fd::count_open_fds())?;
    for _ in 0..10 {
        run(m, &mut ctx.process(nothing, ()))?;
    }
    let after = ok(mp_sys::fd::count_open_fds())?;
    // The fork server keeps one socket open once it exists.
    check(after <= before + 1, format!("parent fds {before} -> {after}"))
}

/// Three children started together hold the same number of descriptors:
/// their own handles and the runtime's, nothing of a sibling's.
fn siblings_hold_the_same_descriptors(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let mut kids = Vec::new();
    let mut lines = Vec::new();
    for _ in 0..3 {
        let (out_r, out_w) = ok(pipe_simplex())?;
        let (go_r, go_w) = ok(pipe_simplex())?;
        kids.push(ctx.process(report_fds, (out_w, go_r)));
        lines.push((out_r, go_w));
    }
    let mut started = Vec::new();
    for k in &mut kids {
        match k.start() {
            Ok(()) => started.push(k),
            Err(e) => {
                for s in started {
                    let _ = s.kill();
                    let _ = finish(s);
                }
                return Err(format!("start: {e}"));
            }
        }
    }
    // Every child is started before any reports; a failed send ends the
    // children through EOF on their go pipe.
    let mut lists: Vec<Result<Vec<String>, String>> = Vec::new();
    for (_, go) in &lines {
        let _ = go.send(&());
    }
    for (out, _) in &lines {
        lists.push(match out.poll_timeout(PATIENCE) {
            Ok(true) => ok(out.recv::<Vec<String>>()),
            Ok(false) => Err(format!("no report within {PATIENCE:?}")),
            Err(e) => Err(e.to_string()),
        });
    }
    for k in &mut started {
        check(finish(k)? == 0, format!("{} failed", k.get_name()))?;
    }
    let mut lists: Vec<Vec<String>> = lists.into_iter().collect::<Result<_, _>>()?;
    if m == StartMethod::Fork {
        // A forked child inherits whatever its parent holds, as in Python:
        // here the later siblings' pipe ends, still in the parent when the
        // first child forks. Compare what the runtime makes, the pidfds:
        // each child has its parent's, and none of a sibling.
        for l in &mut lists {
            l.retain(|e| e.ends_with("[pidfd]"));
        }
    }
    let counts: Vec<usize> = lists.iter().map(Vec::len).collect();
    check(
        counts.windows(2).all(|w| w[0] == w[1]),
        format!("open descriptors in three sibling children under {m:?}: {counts:?}\n{lists:#?}"),
    )
}

/// The parent sees EOF on a pipe once the one child holding its write end
/// exits, while that child's siblings, started after it, still run: no
/// sibling holds a copy of the write end.
fn eof_when_the_writer_child_exits(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let (r, w) = ok(pipe_simplex())?;
    let gos: Vec<(Connection, Connection)> = (0..3)
        .map(|_| pipe_simplex())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut gos = gos.into_iter();
    let mut go_writers = Vec::new();
    let mut kids = Vec::new();
    if let Some((go_r, go_w)) = gos.next() {
        kids.push(ctx.process(hold_until_go, (w, go_r)));
        go_writers.push(go_w);
    }
    for (go_r, go_w) in gos {
        kids.push(ctx.process(block_until_go, (go_r,)));
        go_writers.push(go_w);
    }
    let mut started: Vec<&mut Process> = Vec::new();
    let mut result = Ok(());
    for k in &mut kids {
        match k.start() {
            Ok(()) => started.push(k),
            Err(e) => {
                result = Err(format!("start: {e}"));
                break;
            }
        }
    }
    if result.is_ok() {
        result = (|| {
            ok(go_writers[0].send(&()))?;
            let first = &mut started[0];
            check(finish(first)? == 0, "the writer child failed")?;
            check(
                ok(r.poll_timeout(PATIENCE))?,
                format!("no EOF on the pipe within {PATIENCE:?} after its only writer exited under {m:?}"),
            )?;
            match r.recv::<()>() {
                Err(e) if e.is_eof() => {}
                other => return Err(format!("expected EOF, got {other:?}")),
            }
            for k in &mut started[1..] {
                check(k.is_alive(), format!("{} ended early", k.get_name()))?;
            }
            Ok(())
        })();
    }
    // Release the siblings whatever happened, and reap them all.
    for go in &go_writers[1..] {
        let _ = go.send(&());
    }
    for k in started {
        let code = finish(k)?;
        if result.is_ok() {
            result = check(code == 0, format!("{} exited {code}", k.get_name()));
        }
    }
    result
}

/// A forked child holds none of the descriptors its parent keeps for the
/// children it started by the other methods (pidfds, a fork server child's
/// status pipe) nor the parent's fork server's: the parent's new descriptors
/// after starting those children appear in no forked child.
fn a_forked_child_holds_nothing_of_other_children(m: StartMethod) -> Check {
    let (out_r, out_w) = ok(pipe_simplex())?;
    let (go_r, go_w) = ok(pipe_simplex())?;
    let (s_go_r, s_go_w) = ok(pipe_simplex())?;
    let (f_go_r, f_go_w) = ok(pipe_simplex())?;
    let before = fd_listing();
    let mut siblings = [
        get_context(StartMethod::Spawn).process(block_until_go, (s_go_r,)),
        get_context(StartMethod::ForkServer).process(block_until_go, (f_go_r,)),
    ];
    let mut forked = get_context(m).process(report_fds, (out_w, go_r));
    let mut started: Vec<&mut Process> = Vec::new();
    let mut result = Ok(());
    for k in siblings.iter_mut() {
        match k.start() {
            Ok(()) => started.push(k),
            Err(e) => result = Err(format!("start: {e}")),
        }
    }
    let kept: Vec<String> = fd_listing().into_iter().filter(|l| !before.contains(l)).collect();
    if result.is_ok() {
        result = (|| {
            ok(forked.start())?;
            let _ = go_w.send(&());
            check(ok(out_r.poll_timeout(PATIENCE))?, "no report from the forked child")?;
            let got: Vec<String> = ok(out_r.recv())?;
            check(finish(&mut forked)? == 0, "the forked child failed")?;
            let stray: Vec<&String> = got.iter().filter(|l| kept.contains(l)).collect();
            check(
                stray.is_empty(),
                format!("the forked child holds {stray:?}, kept by its parent for other children: {got:#?}"),
            )
        })();
    }
    let _ = s_go_w.send(&());
    let _ = f_go_w.send(&());
    for k in started {
        let code = finish(k)?;
        if result.is_ok() {
            result = check(code == 0, format!("{} exited {code}", k.get_name()));
        }
    }
    result
}

/// Runs this binary as a driver for `scenario`; returns its stdout and
/// stderr, or a failure if it exits non-zero or runs past [`PATIENCE`].
fn drive(scenario: &str, m: StartMethod) -> Result<(String, String), String> {
    drive_with(scenario, m, None)
}

/// [`drive`], with `MP_START_METHOD` set to `env_method` in the driver.
fn drive_with(scenario: &str, m: StartMethod, env_method: Option<&str>) -> Result<(String, String), String> {
    let exe = ok(std::env::current_exe())?;
    let mut cmd = Command::new(exe);
    if let Some(v) = env_method {
        cmd.env("MP_START_METHOD", v);
    }
    let child = ok(cmd
        .args(["--scenario", scenario, "--method", &format!("{m:?}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn())?;
    let pid = child.id();
    // The output is read to its end while waiting, so a full pipe cannot
    // stall the driver; the wait itself has a timeout.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(PATIENCE) {
        Ok(out) => ok(out)?,
        Err(_) => {
            let _ = mp_sys::signal::kill(pid, mp_sys::signal::Signal::KILL);
            return Err(format!("driver {scenario} still running after {PATIENCE:?}"));
        }
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    check(
        out.status.success(),
        format!("driver {scenario} ended with {}: {stderr}", out.status),
    )?;
    Ok((stdout, stderr))
}

/// `MP_START_METHOD` naming no start method: a child started with the
/// process-wide method is an error that names the variable, its value and
/// the valid names; an explicit method (a context, `set_start_method`) still
/// starts children, with that method.
fn a_misspelt_start_method_is_an_error(m: StartMethod) -> Check {
    let (out, err) = drive_with("bad_env", m, Some("frok"))?;
    let default_start = out
        .lines()
        .find_map(|l| l.strip_prefix("default: "))
        .ok_or(format!("no default line: {out:?} {err}"))?;
    for want in ["MP_START_METHOD", "\"frok\"", "fork", "spawn", "forkserver"] {
        check(
            default_start.contains(want),
            format!("starting with MP_START_METHOD=frok gave {default_start:?}, which does not name {want}"),
        )?;
    }
    check(
        out.lines().any(|l| l.strip_prefix("checked: ") == Some(default_start)),
        format!("try_get_start_method does not give the same error: {out:?}"),
    )?;
    check(
        out.lines().any(|l| l == "context: exit 0"),
        format!("a context's child did not run: {out:?}"),
    )?;
    check(
        out.lines().any(|l| l == format!("set: {m:?}")),
        format!("after set_start_method({m:?}) the child did not run with it: {out:?} {err}"),
    )
}

fn errors_reach_stderr(m: StartMethod) -> Check {
    let (_, err) = drive("errors", m)?;
    check(
        err.contains("Process Process-1:\nthe target failed"),
        format!("Err message missing: {err}"),
    )?;
    check(
        err.contains("Process Process-2:\npanicked at") && err.contains("boom in the child"),
        format!("panic message missing: {err}"),
    )
}

fn main_returning_joins_and_terminates(m: StartMethod) -> Check {
    let t0 = Instant::now();
    let (out, err) = drive("atexit", m)?;
    let mut lines = out.lines();
    let daemon_pid: u32 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or(format!("no daemon pid in {out:?}"))?;
    check(
        lines.any(|l| l == "worker done"),
        format!("the non-daemonic child was not joined: {out:?} {err}"),
    )?;
    check(
        !std::path::Path::new(&format!("/proc/{daemon_pid}")).exists(),
        "the daemonic child outlived main",
    )?;
    check(t0.elapsed() < Duration::from_secs(20), "exit took too long")
}

fn bad_bootstrap(m: StartMethod) -> Check {
    let (out, err) = drive("corrupt", m)?;
    check(
        out.contains("parent error: the child process could not start"),
        format!("parent error: {out:?}"),
    )?;
    check(
        out.contains("different binary"),
        format!("the error does not say why: {out:?}"),
    )?;
    if m == StartMethod::Spawn {
        check(
            err.contains("multiprocessing: the child process cannot start"),
            format!("child stderr: {err:?}"),
        )?;
        check(
            out.contains("ended with exit code 1"),
            format!("child exit code: {out:?}"),
        )?;
        check(
            out.contains("garbage error: the child process could not start"),
            format!("garbage: {out:?}"),
        )?;
        check(
            err.contains("not an mp-codec frame"),
            format!("garbage stderr: {err:?}"),
        )?;
    }
    Ok(())
}

/// With another thread running, a forked copy could block on a lock that
/// thread holds: fork-method children start through the fork server (one
/// warning), and a closure, which only a real fork can run, is refused.
fn fork_with_threads_warns(m: StartMethod) -> Check {
    let (out, err) = drive("threads", m)?;
    let warnings = err
        .lines()
        .filter(|l| l.contains("warning: fork with 2 threads"))
        .count();
    check(warnings == 1, format!("expected one warning line, stderr: {err:?}"))?;
    check(
        out.contains("closure: ") && out.contains("threads") && !out.contains("closure: forked"),
        format!("a closure was forked from a threaded process: {out:?}"),
    )
}

/// A parent SIGKILLed right after `start()` takes its daemonic child with it,
/// however early in the child's start the kill lands (the child asks for its
/// parent-death signal first, then checks that its parent is still the one
/// that started it). 20 rounds: the race is narrow.
fn a_daemon_dies_with_a_parent_killed_at_once(m: StartMethod) -> Check {
    use std::io::BufRead;
    for round in 0..20 {
        let exe = ok(std::env::current_exe())?;
        let mut driver = ok(Command::new(exe)
            .args(["--scenario", "killed_at_once", "--method", &format!("{m:?}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn())?;
        let stdout = driver.stdout.take().ok_or("no stdout")?;
        // Only the first line: a surviving daemon would hold the pipe open.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // Once it has sent, the reader is joined: gone before the next
        // test runs (tests that fork count this process's threads).
        let line = match rx.recv_timeout(PATIENCE) {
            Ok(line) => {
                let _ = reader.join();
                line
            }
            Err(_) => String::new(),
        };
        let status = driver.wait();
        let daemon: u32 = line
            .trim()
            .parse()
            .map_err(|_| format!("round {round}: no daemon pid from the driver ({line:?}, {status:?})"))?;
        if let Ok(pidfd) = PidFd::open(daemon) {
            let mut set = [PollFd::readable(pidfd.as_fd())];
            let gone = poll(&mut set, Some(Duration::from_secs(10)))
                .map(|n| n > 0)
                .unwrap_or(false);
            if !gone {
                let _ = mp_sys::signal::kill(daemon, mp_sys::signal::Signal::KILL);
                return Err(format!(
                    "round {round}: the daemonic child {daemon} outlived its killed parent"
                ));
            }
        }
    }
    Ok(())
}

/// Prints once the daemonic child is gone, which happens only when the
/// driver's main has returned and the exit hook terminates it: so this worker
/// is certainly still running when main returns.
fn worker_prints(daemon_pid: u32) {
    if let Ok(daemon) = PidFd::open(daemon_pid) {
        let mut set = [PollFd::readable(daemon.as_fd())];
        let _ = poll(&mut set, Some(PATIENCE));
    }
    println!("worker done");
}

/// The driver side of the scenarios above.
fn driver(scenario: &str, m: StartMethod) -> ExitCode {
    let ctx = get_context(m);
    match scenario {
        "errors" => {
            let mut a = ctx.process(fail, ("the target failed".to_string(),));
            let mut b = ctx.process(boom, ());
            for p in [&mut a, &mut b] {
                p.start().expect("start");
                p.join().expect("join");
            }
            ExitCode::SUCCESS
        }
        "atexit" => {
            let mut d = ctx.process(until_killed, ()).daemon(true);
            d.start().expect("start daemon");
            println!("{}", d.pid().unwrap_or(0));
            let mut w = ctx.process(worker_prints, (d.pid().unwrap_or(0),));
            w.start().expect("start worker");
            let _ = std::io::stdout().flush();
            // main returns without joining either.
            ExitCode::SUCCESS
        }
        "killed_at_once" => {
            let mut d = ctx.process(until_killed, ()).daemon(true);
            d.start().expect("start daemon");
            println!("{}", d.pid().unwrap_or(0));
            let _ = std::io::stdout().flush();
            let _ = mp_sys::signal::kill(std::process::id(), mp_sys::signal::Signal::KILL);
            ExitCode::FAILURE
        }
        "corrupt" => {
            use mp_process::testing::{Corruption, start_corrupt};
            if let Err(e) = start_corrupt(m, Corruption::ForeignTarget) {
                println!("parent error: {e}");
            }
            if m == StartMethod::Spawn
                && let Err(e) = start_corrupt(m, Corruption::Garbage)
            {
                println!("garbage error: {e}");
            }
            ExitCode::SUCCESS
        }
        "bad_env" => {
            // MP_START_METHOD is misspelt: the default must not start.
            let mut p = Process::new(nothing, ());
            match p.start() {
                Ok(()) => {
                    let _ = p.join_timeout(PATIENCE);
                    println!("default: started a child anyway");
                }
                Err(e) => println!("default: {e}"),
            }
            match mp_process::try_get_start_method() {
                Ok(m) => println!("checked: {m:?}"),
                Err(e) => println!("checked: {e}"),
            }
            let mut p = ctx.process(nothing, ());
            match p.start().and_then(|()| p.join_timeout(PATIENCE)) {
                Ok(()) => println!("context: exit {}", p.exitcode().unwrap_or(-1000)),
                Err(e) => println!("context: {e}"),
            }
            if let Err(e) = mp_process::set_start_method(m) {
                println!("set: {e}");
                return ExitCode::SUCCESS;
            }
            let mut p = Process::new(exit_with_method, ());
            match p.start().and_then(|()| p.join_timeout(PATIENCE)) {
                Ok(()) => match p.exitcode() {
                    Some(10) => println!("set: Fork"),
                    Some(11) => println!("set: Spawn"),
                    Some(12) => println!("set: ForkServer"),
                    other => println!("set: exit {other:?}"),
                },
                Err(e) => println!("set: {e}"),
            }
            ExitCode::SUCCESS
        }
        "threads" => {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let helper = std::thread::spawn(move || rx.recv());
            for _ in 0..2 {
                let mut p = ctx.process(nothing, ());
                p.start().expect("start");
                p.join().expect("join");
            }
            // A closure only a real fork can run: refused while the helper
            // thread runs, with the reason.
            let mut p = Process::from_closure(|| {}).start_method(m);
            match p.start() {
                Ok(()) => {
                    let _ = p.join_timeout(PATIENCE);
                    println!("closure: forked");
                }
                Err(e) => println!("closure: {e}"),
            }
            let _ = tx.send(());
            let _ = helper.join();
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("unknown scenario {other}");
            ExitCode::from(2)
        }
    }
}

type Scenario = fn(StartMethod) -> Check;

/// A forked child gets no bootstrap message (nothing to corrupt), and only
/// the fork method warns about threads.
fn applies(name: &str, m: StartMethod) -> bool {
    match name {
        "bad_bootstrap" => m != StartMethod::Fork,
        "fork_with_threads_warns" | "a_forked_child_holds_nothing_of_other_children" => m == StartMethod::Fork,
        _ => true,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let (Some(i), Some(j)) = (
        args.iter().position(|a| a == "--scenario"),
        args.iter().position(|a| a == "--method"),
    ) {
        let m = match args.get(j + 1).map(String::as_str) {
            Some("Fork") => StartMethod::Fork,
            Some("Spawn") => StartMethod::Spawn,
            _ => StartMethod::ForkServer,
        };
        return driver(args.get(i + 1).map_or("", String::as_str), m);
    }
    let scenarios: [(&str, Scenario); 20] = [
        ("bad_bootstrap", bad_bootstrap),
        ("fork_with_threads_warns", fork_with_threads_warns),
        ("exit_codes", exit_codes),
        ("terminate_and_kill", terminate_and_kill),
        ("lifecycle_errors", lifecycle_errors),
        (
            "join_timeout_returns_with_the_child_alive",
            join_timeout_returns_with_the_child_alive,
        ),
        ("a_hundred_children", a_hundred_children),
        ("handles_travel", handles_travel),
        ("names_and_identity", names_and_identity),
        ("grandchildren", grandchildren),
        ("daemons_cannot_have_children", daemons_cannot_have_children),
        (
            "a_daemon_dies_with_a_parent_killed_at_once",
            a_daemon_dies_with_a_parent_killed_at_once,
        ),
        ("closures_need_fork", closures_need_fork),
        ("fds_do_not_grow", fds_do_not_grow),
        ("siblings_hold_the_same_descriptors", siblings_hold_the_same_descriptors),
        ("eof_when_the_writer_child_exits", eof_when_the_writer_child_exits),
        (
            "a_forked_child_holds_nothing_of_other_children",
            a_forked_child_holds_nothing_of_other_children,
        ),
        ("errors_reach_stderr", errors_reach_stderr),
        (
            "a_misspelt_start_method_is_an_error",
            a_misspelt_start_method_is_an_error,
        ),
        (
            "main_returning_joins_and_terminates",
            main_returning_joins_and_terminates,
        ),
    ];
    let total = METHODS
        .iter()
        .map(|&m| scenarios.iter().filter(|(n, _)| applies(n, m)).count())
        .sum();
    let mut harness = Harness::new(total);
    for m in METHODS {
        for (name, f) in scenarios {
            if applies(name, m) {
                harness.run(&format!("{name}::{m:?}"), || f(m));
            }
        }
    }
    harness.finish()
}
