//! Connections between processes, under the fork, spawn and fork-server
//! start methods, from a single-threaded main (so the fork method is safe
//! here; see docs/ARCHITECTURE.md, fork safety).
//!
//! Run with `cargo test -p mp-connection --test processes [filter]`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mp_connection::{Connection, ConnectionError, pipe, pipe_simplex, wait};
use mp_process::{Process, Run, StartMethod, exit, get_context};
use mp_sys::signal::{Signal, interrupt_on, kill};
use mp_testkit::{Harness, METHODS, PATIENCE, check, finish, ok};
use serde::{Deserialize, Serialize};

type Check = Result<(), String>;

/// Receives within [`PATIENCE`], or fails.
fn recv<T: serde::de::DeserializeOwned>(c: &Connection) -> Result<T, String> {
    check(ok(c.poll_timeout(PATIENCE))?, "nothing arrived in time")?;
    ok(c.recv())
}

fn started(mut p: Process) -> Result<Process, String> {
    ok(p.start())?;
    Ok(p)
}

// ---- targets -------------------------------------------------------------

/// Seed 001, 2.2: the sender.
fn sender(conn: Connection) -> Result<(), ConnectionError> {
    conn.send(&"Hello, child process")
}

/// Seed 001, 2.2: the receiver, reporting what it got on `report`.
fn receiver(conn: Connection, report: Connection) -> Result<(), ConnectionError> {
    let msg: String = conn.recv()?;
    report.send(&msg)
}

fn echo(conn: Connection) -> Result<(), ConnectionError> {
    loop {
        match conn.recv::<Option<String>>()? {
            Some(s) => conn.send(&s.to_uppercase())?,
            None => return Ok(()),
        }
    }
}

/// Receives a connection on `inbox`, and answers through it.
fn answer_through_sent(inbox: Connection) -> Result<(), ConnectionError> {
    let (question, reply): (String, Connection) = inbox.recv()?;
    reply.send(&format!("re: {question}"))
}

fn write_ten(w: Connection, id: u32) -> Result<(), ConnectionError> {
    for k in 0..10u32 {
        w.send(&(id, k))?;
    }
    Ok(())
}

fn until_killed(_keep: Connection) {
    loop {
        std::thread::park();
    }
}

fn sink(data: Connection, report: Connection) -> Result<(), ConnectionError> {
    let mut buf = vec![0u8; 64 << 20];
    let n = data.recv_bytes_into(&mut buf)?;
    let sum: u64 = buf[..n].iter().map(|&b| u64::from(b)).sum();
    report.send(&(n, sum))?;
    let v = data.recv_bytes()?;
    report.send(&(v.len(), v.iter().map(|&b| u64::from(b)).sum::<u64>()))
}

/// Blocks in a receive while the parent interrupts it with signals.
fn interrupted(conn: Connection) -> Result<(), ConnectionError> {
    interrupt_on(Signal::USR1)?;
    conn.send(&"ready")?;
    let got: String = conn.recv()?;
    // Then block in a send: 8 MiB does not fit the socket's buffer.
    conn.send_bytes(&vec![1u8; 8 << 20])?;
    conn.send(&got)
}

/// Writes a whole message, then half a frame through `raw` (a duplicate of
/// the connection's socket), then exits.
fn dies_mid_frame(conn: Connection, raw: mp_codec::Fd) -> Result<(), ConnectionError> {
    conn.send(&"whole")?;
    // A frame announcing 1 MiB, of which 10 bytes are written.
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(b"mpF1");
    head[4..8].copy_from_slice(&(1u32 << 20).to_le_bytes());
    head[10] = 1;
    mp_sys::fd::write_all(std::os::fd::AsFd::as_fd(&raw), &[&head[..], &[7u8; 10][..]].concat())?;
    exit(0)
}

/// A duplicate of the socket under `c`, taken the way a handle travels.
fn raw_dup(c: &Connection) -> Result<mp_codec::Fd, String> {
    // The socket's descriptor travels first (a pipe's region after it).
    let (_, fds) = ok(mp_codec::encode(c))?.into_parts();
    fds.into_iter()
        .next()
        .map(mp_codec::Fd)
        .ok_or_else(|| "no descriptor".to_string())
}

/// Receives numbers until a negative one, then reports those it got.
fn take_until_stop(r: Connection, report: Connection) -> Result<(), ConnectionError> {
    let mut got = Vec::new();
    loop {
        let k: i64 = r.recv()?;
        if k < 0 {
            return report.send(&got);
        }
        got.push(k);
    }
}

/// Sends 500 numbered messages as writer `id`, every tenth a big one (it
/// takes the socket).
fn send_numbered(w: Connection, id: u32) -> Result<(), ConnectionError> {
    for k in 0..500u32 {
        let pad = if k % 10 == 9 {
            vec![id as u8; 20_000]
        } else {
            Vec::new()
        };
        w.send(&(id, k, pad))?;
    }
    Ok(())
}

/// Sends 100 small messages and ends.
fn hundred_then_end(w: Connection) -> Result<(), ConnectionError> {
    for k in 0..100u32 {
        w.send(&k)?;
    }
    Ok(())
}

/// Python's `test_subclassing` shape: a process value that owns a pipe end
/// and echoes upper-case.
#[derive(Serialize, Deserialize)]
struct UpperEcho {
    conn: Connection,
}

impl Run for UpperEcho {
    fn run(self) {
        while let Ok(Some(s)) = self.conn.recv::<Option<String>>() {
            if self.conn.send(&s.to_uppercase()).is_err() {
                exit(2);
            }
        }
    }
}

// ---- scenarios -------------------------------------------------------------

fn sender_and_receiver_over_a_pipe(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let (parent_conn, child_conn) = ok(pipe())?;
    let (report_r, report_w) = ok(pipe_simplex())?;
    let mut p1 = started(ctx.process(sender, (child_conn,)))?;
    let mut p2 = started(ctx.process(receiver, (parent_conn, report_w)))?;
    let got: String = recv(&report_r)?;
    check(got == "Hello, child process", format!("got {got:?}"))?;
    check(finish(&mut p1)? == 0, "sender failed")?;
    check(finish(&mut p2)? == 0, "receiver failed")
}

fn the_parent_closing_its_copy_leaves_the_child_its_own(m: StartMethod) -> Check {
    let (mut a, b) = ok(pipe())?;
    let mut b_copy = b.clone();
    let mut p = started(get_context(m).process(echo, (b,)))?;
    // The child has its own descriptor now: closing every copy here leaves
    // the child's open.
    ok(b_copy.close())?;
    ok(a.send(&Some("abc".to_string())))?;
    check(recv::<String>(&a)? == "ABC", "echo")?;
    ok(a.send(&None::<String>))?;
    check(finish(&mut p)? == 0, "echo child failed")?;
    // The child is gone and the parent holds no copy of its end: EOF.
    check(ok(a.poll_timeout(PATIENCE))?, "eof is ready")?;
    let e = a.recv::<String>().err().ok_or("recv after the child ended succeeded")?;
    check(e.is_eof(), format!("not an eof: {e}"))?;
    ok(a.close())
}

fn a_connection_travels_through_a_connection(m: StartMethod) -> Check {
    let (inbox_w, inbox_r) = ok(pipe())?;
    let mut p = started(get_context(m).process(answer_through_sent, (inbox_r,)))?;
    let (mine, theirs) = ok(pipe())?;
    ok(inbox_w.send(&("question".to_string(), theirs)))?;
    check(recv::<String>(&mine)? == "re: question", "answer through the sent end")?;
    check(finish(&mut p)? == 0, "child failed")
}

fn eof_when_the_peer_dies(m: StartMethod) -> Check {
    let (a, b) = ok(pipe())?;
    let mut p = started(get_context(m).process(until_killed, (b,)))?;
    check(
        !ok(a.poll_timeout(Duration::from_millis(50)))?,
        "nothing before the death",
    )?;
    ok(p.kill())?;
    check(finish(&mut p)? == -9, "killed")?;
    check(ok(a.poll_timeout(PATIENCE))?, "eof is ready")?;
    let e = a.recv::<u8>().err().ok_or("recv from a dead peer succeeded")?;
    check(e.is_eof() && matches!(e, ConnectionError::Eof), format!("{e:?}"))?;
    let e = a.send(&1u8).err().ok_or("send to a dead peer succeeded")?;
    check(e.is_eof(), format!("send: {e:?}"))
}

fn four_writers_collected_with_wait(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let mut readers = Vec::new();
    let mut procs = Vec::new();
    for id in 0..4u32 {
        let (r, w) = ok(pipe_simplex())?;
        procs.push(started(ctx.process(write_ten, (w, id)))?);
        readers.push(Some(r));
    }
    let mut got = Vec::new();
    let deadline = mp_sys::time::Deadline::nap(PATIENCE);
    while readers.iter().any(Option::is_some) {
        let live: Vec<(usize, &Connection)> = readers
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
            .collect();
        let objects: Vec<&dyn mp_connection::Waitable> =
            live.iter().map(|(_, r)| *r as &dyn mp_connection::Waitable).collect();
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = ok(wait(&objects, Some(left)))?;
        check(!ready.is_empty(), "wait timed out before every writer ended")?;
        let mut ended = Vec::new();
        for k in ready {
            match live[k].1.recv::<(u32, u32)>() {
                Ok(msg) => got.push(msg),
                Err(e) if e.is_eof() => ended.push(live[k].0),
                Err(e) => return Err(e.to_string()),
            }
        }
        drop((objects, live));
        for i in ended {
            readers[i] = None;
        }
    }
    for p in &mut procs {
        check(finish(p)? == 0, "writer failed")?;
    }
    got.sort_unstable();
    let want: Vec<(u32, u32)> = (0..4).flat_map(|id| (0..10).map(move |k| (id, k))).collect();
    check(got == want, format!("{} messages: {got:?}", got.len()))
}

fn wait_on_processes_and_connections(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let (a, b) = ok(pipe())?;
    let mut sleeper = started(ctx.process(until_killed, (b,)))?;
    let (_keep, b2) = ok(pipe())?;
    let mut quick = started(ctx.process(write_ten, (b2, 0)))?;
    let ready = ok(wait(&[&sleeper, &quick, &a], Some(PATIENCE)))?;
    check(ready == vec![1], format!("ready: {ready:?}"))?;
    check(finish(&mut quick)? == 0, "quick failed")?;
    check(
        ok(wait(&[&quick], Some(Duration::ZERO)))? == vec![0],
        "an exited process stays ready",
    )?;
    ok(sleeper.kill())?;
    let ready = ok(wait(&[&sleeper, &a], Some(PATIENCE)))?;
    check(!ready.is_empty(), "the killed process is ready")?;
    check(finish(&mut sleeper)? == -9, "killed")?;
    check(
        ok(wait(&[&sleeper, &a], Some(PATIENCE)))? == vec![0, 1],
        "dead process and eof",
    )?;
    let unstarted = ctx.process(write_ten, (ok(pipe())?.0, 1));
    check(
        wait(&[&unstarted], Some(Duration::ZERO)).is_err(),
        "an unstarted process is an error",
    )
}

fn sixty_four_mib_to_a_child(m: StartMethod) -> Check {
    let (data_r, data_w) = ok(pipe_simplex())?;
    let (report_r, report_w) = ok(pipe_simplex())?;
    let mut p = started(get_context(m).process(sink, (data_r, report_w)))?;
    let data: Vec<u8> = (0..64usize << 20).map(|i| (i % 253) as u8).collect();
    let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
    ok(data_w.send_bytes(&data))?;
    check(recv::<(usize, u64)>(&report_r)? == (data.len(), sum), "recv_bytes_into")?;
    ok(data_w.send_bytes(&data))?;
    check(recv::<(usize, u64)>(&report_r)? == (data.len(), sum), "recv_bytes")?;
    check(finish(&mut p)? == 0, "sink failed")
}

fn eintr_is_retried(m: StartMethod) -> Check {
    let (a, b) = ok(pipe())?;
    let mut p = started(get_context(m).process(interrupted, (b,)))?;
    check(recv::<String>(&a)? == "ready", "child ready")?;
    let pid = p.pid().ok_or("no pid")?;
    // Signals while the child blocks in recv, each after a 2 ms wait on the
    // child itself (which returns early only if it dies)...
    for _ in 0..20 {
        ok(kill(pid, Signal::USR1))?;
        ok(p.join_timeout(Duration::from_millis(2)))?;
    }
    ok(a.send(&"after the signals".to_string()))?;
    // ...and while it blocks in a send of 8 MiB that nobody reads yet.
    check(ok(a.poll_timeout(PATIENCE))?, "the big message began")?;
    for _ in 0..20 {
        ok(kill(pid, Signal::USR1))?;
        ok(p.join_timeout(Duration::from_millis(2)))?;
    }
    let big = ok(a.recv_bytes())?;
    check(
        big.len() == 8 << 20 && big.iter().all(|&b| b == 1),
        "the big message is whole",
    )?;
    check(recv::<String>(&a)? == "after the signals", "the message survived")?;
    check(finish(&mut p)? == 0, "child failed")
}

fn a_peer_dying_mid_frame_is_truncated(m: StartMethod) -> Check {
    let (a, b) = ok(pipe())?;
    let raw = raw_dup(&b)?;
    let mut p = started(get_context(m).process(dies_mid_frame, (b, raw)))?;
    check(recv::<String>(&a)? == "whole", "first message")?;
    check(finish(&mut p)? == 0, "child failed")?;
    let e = a.recv_bytes().err().ok_or("a truncated frame was accepted")?;
    check(
        matches!(e, ConnectionError::Truncated { expected, got } if expected == 12 + (1 << 20) && got == 22),
        format!("{e:?}"),
    )?;
    check(e.is_eof(), "truncated counts as eof")
}

fn a_run_value_owns_a_pipe(m: StartMethod) -> Check {
    let (a, b) = ok(pipe())?;
    let mut p = started(get_context(m).process_from_run(UpperEcho { conn: b }))?;
    for word in ["hello", "world"] {
        ok(a.send(&Some(word.to_string())))?;
        check(recv::<String>(&a)? == word.to_uppercase(), "upper-case echo")?;
    }
    ok(a.send(&None::<String>))?;
    check(finish(&mut p)? == 0, "child failed")
}

type Scenario = fn(StartMethod) -> Check;

fn a_sleeping_child_is_woken_by_a_message_in_the_ring(m: StartMethod) -> Check {
    let (a, b) = ok(pipe())?;
    let mut p = started(get_context(m).process(echo, (b,)))?;
    for word in ["one", "two", "three"] {
        // A wait on the child itself (returns early only if it dies): the
        // child's receive has gone past its spin and sleeps.
        ok(p.join_timeout(Duration::from_millis(5)))?;
        ok(a.send(&Some(word.to_string())))?;
        check(recv::<String>(&a)? == word.to_uppercase(), "echo")?;
    }
    ok(a.send(&None::<String>))?;
    check(finish(&mut p)? == 0, "echo child failed")
}

fn readers_in_two_processes_share_one_end(m: StartMethod) -> Check {
    let (r, w) = ok(pipe_simplex())?;
    // 1,000 numbers and a stop for each reader, all in the ring before the
    // readers start: each must go to exactly one of them.
    for k in 0..1000i64 {
        ok(w.send(&k))?;
    }
    ok(w.send(&-1i64))?;
    ok(w.send(&-1i64))?;
    let ctx = get_context(m);
    let (report_r, report_w) = ok(pipe_simplex())?;
    let mut p1 = started(ctx.process(take_until_stop, (r.clone(), report_w.clone())))?;
    let mut p2 = started(ctx.process(take_until_stop, (r, report_w)))?;
    let mut all: Vec<i64> = recv(&report_r)?;
    all.extend(recv::<Vec<i64>>(&report_r)?);
    check(finish(&mut p1)? == 0, "reader 1 failed")?;
    check(finish(&mut p2)? == 0, "reader 2 failed")?;
    all.sort_unstable();
    check(
        all == (0..1000).collect::<Vec<i64>>(),
        format!("{} numbers, each once expected", all.len()),
    )
}

fn writers_in_two_processes_share_one_end(m: StartMethod) -> Check {
    // One child writes the ring, the other the socket (it is not the ring's
    // writer); the parent gets each child's messages whole and in order.
    let (r, w) = ok(pipe_simplex())?;
    let ctx = get_context(m);
    let mut p1 = started(ctx.process(send_numbered, (w.clone(), 0)))?;
    let mut p2 = started(ctx.process(send_numbered, (w, 1)))?;
    let mut next = [0u32; 2];
    for _ in 0..1000 {
        let (id, k, pad): (u32, u32, Vec<u8>) = recv(&r)?;
        let i = usize::try_from(id).map_err(|e| e.to_string())?;
        check(
            i < 2 && k == next[i],
            format!("writer {id} sent {k}, {} expected", next[i % 2]),
        )?;
        let want = if k % 10 == 9 { 20_000 } else { 0 };
        check(pad.len() == want && pad.iter().all(|&b| b == id as u8), "padding")?;
        next[i] += 1;
    }
    check(finish(&mut p1)? == 0, "writer 0 failed")?;
    check(finish(&mut p2)? == 0, "writer 1 failed")?;
    let e = r.recv::<u8>().err().ok_or("a message after the last")?;
    check(e.is_eof(), format!("not an eof: {e}"))
}

fn ring_messages_outlive_their_writer(m: StartMethod) -> Check {
    let (r, w) = ok(pipe_simplex())?;
    let mut p = started(get_context(m).process(hundred_then_end, (w,)))?;
    check(finish(&mut p)? == 0, "writer failed")?;
    for k in 0..100u32 {
        check(recv::<u32>(&r)? == k, format!("message {k}"))?;
    }
    let e = r.recv::<u32>().err().ok_or("a message after the last")?;
    check(e.is_eof(), format!("not an eof: {e}"))
}

fn main() -> ExitCode {
    let scenarios: [(&str, Scenario); 14] = [
        ("sender_and_receiver_over_a_pipe", sender_and_receiver_over_a_pipe),
        (
            "the_parent_closing_its_copy_leaves_the_child_its_own",
            the_parent_closing_its_copy_leaves_the_child_its_own,
        ),
        (
            "a_connection_travels_through_a_connection",
            a_connection_travels_through_a_connection,
        ),
        ("eof_when_the_peer_dies", eof_when_the_peer_dies),
        ("four_writers_collected_with_wait", four_writers_collected_with_wait),
        ("wait_on_processes_and_connections", wait_on_processes_and_connections),
        ("sixty_four_mib_to_a_child", sixty_four_mib_to_a_child),
        ("eintr_is_retried", eintr_is_retried),
        (
            "a_peer_dying_mid_frame_is_truncated",
            a_peer_dying_mid_frame_is_truncated,
        ),
        ("a_run_value_owns_a_pipe", a_run_value_owns_a_pipe),
        (
            "a_sleeping_child_is_woken_by_a_message_in_the_ring",
            a_sleeping_child_is_woken_by_a_message_in_the_ring,
        ),
        (
            "readers_in_two_processes_share_one_end",
            readers_in_two_processes_share_one_end,
        ),
        (
            "writers_in_two_processes_share_one_end",
            writers_in_two_processes_share_one_end,
        ),
        ("ring_messages_outlive_their_writer", ring_messages_outlive_their_writer),
    ];
    let mut harness = Harness::new(scenarios.len() * METHODS.len() + 1);
    // The fork server, once started, keeps its socket and pidfd open: start
    // it before counting.
    let mut warm = get_context(StartMethod::ForkServer).process(write_ten, (pipe().expect("pipe").1, 0));
    let warmed = warm.start().map_err(|e| e.to_string()).and_then(|()| finish(&mut warm));
    let before = mp_sys::fd::count_open_fds();
    for m in METHODS {
        for (name, f) in scenarios {
            harness.run(&format!("{name}::{m:?}"), || f(m));
        }
    }
    harness.run("no_descriptor_is_leaked", || {
        warmed?;
        let before = ok(before)?;
        let after = ok(mp_sys::fd::count_open_fds())?;
        // The fork server keeps one socket open once it exists.
        let names: Vec<String> = ok(mp_sys::fd::open_fds())?
            .iter()
            .map(|fd| {
                let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
                format!("{fd}:{}", link.display())
            })
            .collect();
        check(
            after <= before + 1,
            format!("open descriptors {before} -> {after}: {names:?}"),
        )
    });
    harness.finish()
}
