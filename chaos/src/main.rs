//! The fault suite `cargo xtask chaos` runs (and `.ci/run` with it):
//! processes killed at the worst moments, and many processes and objects
//! made and dropped, each followed by a check that nothing was left behind.
//!
//! Every scenario runs from this single-threaded `main` (the fork method
//! needs one; docs/ARCHITECTURE.md, fork safety). Before each, the runner takes a
//! [`Snapshot`] of this process: open fds, memfd mappings, `/dev/shm`, live
//! children and zombie children. After each, the same snapshot must come
//! back. The scenario itself checks that every operation that survived the
//! fault completed with the right result. The runner prints one Markdown
//! table: scenario, outcome, and what was checked.
//!
//! The cluster scenarios run worker hosts that are this binary started
//! again with `MP_CLUSTER_WORKER` (mp-cluster diverts them before `main`)
//! against a restartable `redis-server` of their own (testkit); without
//! `redis-server` on `PATH` they say `skipped: no redis-server on PATH`.
//!
//! ```text
//! cargo xtask chaos                   # all scenarios
//! cargo xtask chaos lock queue        # those whose names contain a filter
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mp_testkit::redis::RestartableRedis;
use mp_testkit::{METHODS, PATIENCE, check, ok, shm_entries, until};
use multiprocessing::cluster::Cluster;
use multiprocessing::pool::{ExecutorError, Pool, ProcessPoolExecutor, TaskError};
use multiprocessing::sys::signal::{Signal, kill};
use multiprocessing::{
    Connection, Event, GetError, JoinableQueue, Lock, LockError, Manager, Process, Queue, SimpleQueue, StartMethod,
    Value, get_context, pipe,
};

type Outcome = Result<String, String>;

/// A fault and what its run must show.
struct Scenario {
    name: &'static str,
    /// What the scenario asserts, beyond the leak checks every one gets.
    asserts: &'static str,
    run: fn() -> Outcome,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "pool workers killed mid-map",
        asserts: "items run by the killed workers are WorkerLost(-9), every other item right; 2 new workers; the pool maps again",
        run: pool_workers_killed_mid_map,
    },
    Scenario {
        name: "executor worker killed",
        asserts: "every future ends, Ok or BrokenProcessPool; submit after is BrokenProcessPool; shutdown reaps",
        run: executor_worker_killed,
    },
    Scenario {
        name: "lock holder killed",
        asserts: "holder exits -9; of the two waiters and the parent exactly one gets OwnerDied; all three hold the lock in turn",
        run: lock_holder_killed,
    },
    Scenario {
        name: "queue consumer killed mid-stream",
        asserts: "producer finishes; the parent gets every item after the dead consumer's last, in order; at most 1 item lost",
        run: queue_consumer_killed,
    },
    Scenario {
        name: "manager server killed mid-call",
        asserts: "the child's next call and the parent's call fail with ServerGone, no hang; the manager drops cleanly",
        run: manager_server_killed,
    },
    Scenario {
        name: "parent killed with daemonic children",
        asserts: "its 3 daemonic children (fork, spawn, forkserver) die with it",
        run: parent_killed_with_daemons,
    },
    Scenario {
        name: "1,000 processes started and joined",
        asserts: "each exit code is the one its target chose (i % 7), under the 3 start methods in turn",
        run: thousand_processes,
    },
    Scenario {
        name: "10,000 queues, locks and values",
        asserts: "each of 10,000 Queues, SimpleQueues, JoinableQueues, Locks and Values made, used once and dropped, 100 alive at a time",
        run: ten_thousand_objects,
    },
    // The cluster scenarios come last: their pools' threads are gone when
    // they end, but the fork-based scenarios above want a process that never
    // had any.
    Scenario {
        name: "cluster host killed mid-run",
        asserts: "10,000 tasks over 3 worker hosts (processes of their own), one SIGKILLed after 3,000 results: each task id has exactly one result, the right value; the killed host's tasks are taken over (XPENDING) within lease (1 s) + 3 s and all are done within lease + 5 s; its local workers exit; the server is gone after",
        run: cluster_host_killed,
    },
    Scenario {
        name: "cluster redis restarted mid-run",
        asserts: "10,000 tasks by map and 10,000 by imap over 2 worker hosts, redis-server stopped (SHUTDOWN SAVE, append-only file) and started again mid-run: every result exactly once and right; outage and recovery printed; the server is gone after",
        run: cluster_redis_restarted,
    },
];

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = warm_up() {
        eprintln!("chaos: the warm-up failed: {e}");
        return ExitCode::FAILURE;
    }
    let t0 = Instant::now();
    println!("| scenario | outcome | checked |");
    println!("|---|---|---|");
    let mut failed = 0;
    for s in SCENARIOS {
        if !filters.is_empty() && !filters.iter().any(|f| s.name.contains(f.as_str())) {
            continue;
        }
        let before = Snapshot::take();
        let started = Instant::now();
        let outcome = (s.run)();
        let took = started.elapsed();
        let leaks = before.settled();
        let (verdict, text) = match (&outcome, &leaks) {
            (Ok(o), Ok(kept)) => (
                "ok",
                format!("{o} ({} ms)", took.as_millis()) + &format!("<br>left behind: {kept}"),
            ),
            (Err(e), _) => ("FAILED", e.clone()),
            (Ok(_), Err(leak)) => ("FAILED", format!("leaked: {leak}")),
        };
        if verdict != "ok" {
            failed += 1;
        }
        println!("| {} | **{verdict}**: {text} | {} |", s.name, s.asserts);
    }
    println!(
        "\nchaos: {} failed; finished in {:.1} s",
        failed,
        t0.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Starts a child under each method first: the fork server, and the
/// descriptor on itself that a process opens at its first fork (for its
/// children to watch it), stay for the life of the process, so they belong
/// to every baseline.
fn warm_up() -> Result<(), String> {
    for m in METHODS {
        let mut p = get_context(m).process(return_at_once, ());
        ok(p.start())?;
        check(joined(&mut p)? == 0, format!("the {m:?} warm-up child failed"))?;
    }
    // Pipes take their shared rings from a region that the process keeps
    // handing out (one memfd for many pipes): it belongs to the baseline.
    drop(ok(pipe())?);
    Ok(())
}

fn return_at_once() {}

// ---- leak checks -----------------------------------------------------------

/// What a scenario must give back: this process's resources.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    fds: usize,
    memfd_maps: usize,
    shm: Vec<String>,
    live_children: usize,
    zombies: usize,
}

impl Snapshot {
    fn take() -> Snapshot {
        let (live_children, zombies) = children();
        Snapshot {
            fds: std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
            memfd_maps: std::fs::read_to_string("/proc/self/maps")
                .map(|m| m.lines().filter(|l| l.contains("/memfd:")).count())
                .unwrap_or(0),
            shm: shm_entries(),
            live_children,
            zombies,
        }
    }

    /// Waits (up to a few seconds, for reparented processes to go) until
    /// the process is back to `self`; what it found, or the difference.
    fn settled(&self) -> Result<String, String> {
        let mut now = Snapshot::take();
        let back = until(Duration::from_secs(5), || {
            now = Snapshot::take();
            now == *self
        });
        let summary = format!(
            "zombies {}, fds {}→{}, memfd maps {}→{}, /dev/shm +0, live children {}→{}",
            now.zombies, self.fds, now.fds, self.memfd_maps, now.memfd_maps, self.live_children, now.live_children
        );
        if back {
            Ok(summary)
        } else {
            let new_shm: Vec<&String> = now.shm.iter().filter(|s| !self.shm.contains(s)).collect();
            Err(format!("{summary}, new in /dev/shm: {new_shm:?}"))
        }
    }
}

/// This process's children: (alive, zombies).
fn children() -> (usize, usize) {
    let me = std::process::id();
    let mut live = 0;
    let mut zombies = 0;
    for (state, ppid) in proc_states() {
        if ppid == me {
            if state == 'Z' { zombies += 1 } else { live += 1 }
        }
    }
    (live, zombies)
}

/// (state, parent pid) of every process in `/proc`.
fn proc_states() -> Vec<(char, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse_stat(&s))
        .collect()
}

fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let after_name = stat.rsplit_once(')')?.1;
    let mut f = after_name.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is gone: no such process, or only its zombie.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => matches!(parse_stat(&s), Some(('Z' | 'X', _)) | None),
        Err(_) => true,
    }
}

fn joined(p: &mut Process) -> Result<i32, String> {
    mp_testkit::finish(p)
}

// ---- pool and executor -----------------------------------------------------

static GATES: std::sync::OnceLock<(Event, Event)> = std::sync::OnceLock::new();

/// Each worker keeps the two events: `reached` (item 5000 has started)
/// and `gate` (never set: item 5000 waits until its worker is killed).
fn keep_gates(reached: Event, gate: Event) {
    let _ = GATES.set((reached, gate));
}

fn square_but_hold_5000(x: u64) -> u64 {
    if x == 5000
        && let Some((reached, gate)) = GATES.get()
    {
        reached.set();
        gate.wait_timeout(PATIENCE);
    }
    x * x
}

fn square(x: u64) -> u64 {
    x * x
}

fn pool_workers_killed_mid_map() -> Outcome {
    const N: u64 = 20_000;
    let (reached, gate) = (ok(Event::new())?, ok(Event::new())?);
    let pool = ok(Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .initializer(keep_gates, (reached.clone(), gate.clone()))
        .build())?;
    let victims = pool.pids();
    let mut results = ok(pool.imap_chunked(square_but_hold_5000, 0..N, 100))?;
    let mut got = Vec::with_capacity(N as usize);
    // Items before 5000 arrive while item 5000's worker waits at the gate.
    while got.len() < 5000 {
        got.push(results.next_timeout(PATIENCE).ok_or("the map ended early")?);
    }
    check(reached.wait_timeout(PATIENCE), "item 5000 never started")?;
    for &pid in &victims {
        ok(kill(pid, Signal::KILL))?;
    }
    while let Some(r) = results.next_timeout(PATIENCE) {
        got.push(r);
    }
    drop(results);
    check(got.len() == N as usize, format!("{} results of {N}", got.len()))?;
    let mut lost = Vec::new();
    for (i, r) in got.iter().enumerate() {
        match r {
            Ok(v) => check(*v == (i as u64).pow(2), format!("item {i} gave {v}"))?,
            Err(TaskError::WorkerLost { exitcode: -9 }) => lost.push(i),
            Err(e) => return Err(format!("item {i}: {e}")),
        }
    }
    check(
        lost.contains(&5000) && lost.len() <= victims.len(),
        format!("lost items {lost:?}"),
    )?;
    let now = pool.pids();
    check(
        now.len() == 2 && now.iter().all(|p| !victims.contains(p)),
        format!("workers {victims:?} then {now:?}"),
    )?;
    let again = ok(pool.map(square, 0..1000u64))?;
    check(
        again.iter().enumerate().all(|(i, v)| *v == (i as u64).pow(2)),
        "the second map",
    )?;
    pool.close();
    ok(pool.join_timeout(PATIENCE))?;
    Ok(format!(
        "killed both workers at item 5000 of {N}: lost {lost:?}, {} right; map of 1,000 after: right",
        N as usize - lost.len()
    ))
}

fn report_pid_and_wait(pids: Queue<u32>, gate: Event) -> u64 {
    let _ = pids.put(std::process::id());
    gate.wait_timeout(PATIENCE);
    1
}

fn executor_worker_killed() -> Outcome {
    let ex = ok(ProcessPoolExecutor::builder()
        .max_workers(2)
        .start_method(StartMethod::Fork)
        .build())?;
    let (pids, gate) = (ok(Queue::<u32>::new())?, ok(Event::new())?);
    let mut futures = Vec::new();
    for i in 0..20u64 {
        futures.push(ok(ex.submit(square, (i,)))?);
    }
    for f in &futures {
        ok(f.result_timeout(PATIENCE))?;
    }
    futures.push(ok(ex.submit(report_pid_and_wait, (pids.clone(), gate.clone())))?);
    for i in 20..50u64 {
        futures.push(ok(ex.submit(square, (i,)))?);
    }
    let victim = ok(pids.get_timeout(PATIENCE))?;
    ok(kill(victim, Signal::KILL))?;
    let (mut done, mut broken) = (0, 0);
    for f in &futures {
        match f.result_timeout(PATIENCE) {
            Ok(_) => done += 1,
            Err(ExecutorError::BrokenProcessPool) => broken += 1,
            Err(e) => return Err(format!("a future: {e}")),
        }
    }
    check(done >= 20 && broken >= 1, format!("{done} Ok, {broken} broken"))?;
    let late = ex.submit(square, (3,));
    check(
        matches!(late, Err(ExecutorError::BrokenProcessPool)),
        format!("submit after the break: {:?}", late.map(|_| ())),
    )?;
    ex.shutdown(true, false);
    check(ex.pids().is_empty(), format!("workers left: {:?}", ex.pids()))?;
    Ok(format!(
        "51 futures: {done} Ok, {broken} BrokenProcessPool; late submit refused"
    ))
}

// ---- lock ------------------------------------------------------------------

fn hold_forever(lock: Lock, held: Event, never: Event) -> Result<(), String> {
    let _guard = ok(lock.acquire())?;
    held.set();
    never.wait_timeout(PATIENCE);
    Err("the holder was not killed".into())
}

/// Takes the lock (or its dead holder's place), counts itself, and counts
/// an owner death if it saw one.
fn take_turn(lock: Lock, turns: Value<u64>, deaths: Value<u64>) -> Result<(), String> {
    let guard = match lock.acquire_timeout(PATIENCE) {
        Ok(Some(g)) => g,
        Ok(None) => return Err("timed out waiting for the lock".into()),
        Err(LockError::OwnerDied(g)) => {
            deaths.set(deaths.get() + 1);
            g
        }
        Err(e) => return Err(e.to_string()),
    };
    turns.set(turns.get() + 1);
    drop(guard);
    Ok(())
}

fn lock_holder_killed() -> Outcome {
    let ctx = get_context(StartMethod::Fork);
    let lock = ok(Lock::new())?;
    let (held, never) = (ok(Event::new())?, ok(Event::new())?);
    let (turns, deaths) = (ok(Value::new(0u64))?, ok(Value::new(0u64))?);
    let mut holder = ctx.process(hold_forever, (lock.clone(), held.clone(), never.clone()));
    ok(holder.start())?;
    check(held.wait_timeout(PATIENCE), "the holder never took the lock")?;
    let mut waiters: Vec<Process> = (0..2)
        .map(|_| ctx.process(take_turn, (lock.clone(), turns.clone(), deaths.clone())))
        .collect();
    for w in &mut waiters {
        ok(w.start())?;
    }
    ok(holder.kill())?;
    let code = joined(&mut holder)?;
    check(code == -9, format!("holder exit code {code}"))?;
    for w in &mut waiters {
        let code = joined(w)?;
        check(code == 0, format!("a waiter exited with {code}"))?;
    }
    ok(take_turn(lock.clone(), turns.clone(), deaths.clone()))?;
    check(turns.get() == 3, format!("{} turns", turns.get()))?;
    check(deaths.get() == 1, format!("{} owner deaths seen", deaths.get()))?;
    Ok("holder SIGKILLed while holding; 2 waiters and the parent each took a turn; 1 saw OwnerDied".into())
}

// ---- queue -----------------------------------------------------------------

const STREAM: u64 = 100_000;

fn produce(q: Queue<u64>) -> Result<(), String> {
    for i in 0..STREAM {
        q.put_timeout(i, PATIENCE).map_err(|e| format!("put {i}: {e}"))?;
    }
    Ok(())
}

/// Records `item + 1` after each get, so the parent knows what was taken.
fn consume(q: Queue<u64>, seen: Value<u64>) -> Result<(), String> {
    loop {
        let i = ok(q.get_timeout(PATIENCE))?;
        seen.set(i + 1);
    }
}

fn queue_consumer_killed() -> Outcome {
    let ctx = get_context(StartMethod::Fork);
    let q = ok(Queue::<u64>::with_maxsize(1000))?;
    let seen = ok(Value::new(0u64))?;
    let mut producer = ctx.process(produce, (q.clone(),));
    let mut consumer = ctx.process(consume, (q.clone(), seen.clone()));
    ok(producer.start())?;
    ok(consumer.start())?;
    check(
        until(PATIENCE, || seen.get() >= STREAM / 3),
        "the consumer did not get going",
    )?;
    ok(consumer.kill())?;
    let code = joined(&mut consumer)?;
    check(code == -9, format!("consumer exit code {code}"))?;
    let taken = seen.get();
    let mut rest = Vec::new();
    loop {
        match q.get_timeout(PATIENCE) {
            Ok(i) => {
                rest.push(i);
                if i == STREAM - 1 {
                    break;
                }
            }
            Err(GetError::Empty) => return Err(format!("timed out after {} items", rest.len())),
            Err(e) => return Err(e.to_string()),
        }
    }
    let code = joined(&mut producer)?;
    check(code == 0, format!("producer exit code {code}"))?;
    let first = *rest.first().ok_or("nothing left")?;
    check(rest.windows(2).all(|w| w[1] == w[0] + 1), "the rest is not in order")?;
    check(
        first >= taken && first <= taken + 1,
        format!("consumer recorded {taken}, parent's first {first}"),
    )?;
    check(q.get_nowait().is_err(), "an item after the last")?;
    Ok(format!(
        "consumer SIGKILLed after {taken} of {STREAM}; parent got the next {} in order; lost {}",
        rest.len(),
        first - taken
    ))
}

// ---- manager ---------------------------------------------------------------

fn write_until_gone(
    d: multiprocessing::DictProxy<u64, u64>,
    progress: Value<u64>,
    report: Connection,
) -> Result<(), String> {
    for i in 0..10_000_000u64 {
        if let Err(e) = d.insert(i, i) {
            return ok(report.send(&(e.is_server_gone(), e.to_string())));
        }
        progress.set(i + 1);
    }
    Err("the server never went away".into())
}

fn manager_server_killed() -> Outcome {
    let m = ok(Manager::with_start_method(StartMethod::Fork))?;
    let server = m.pid().ok_or("no server pid")?;
    let d = ok(m.dict::<u64, u64>())?;
    let progress = ok(Value::new(0u64))?;
    let (report, theirs) = ok(pipe())?;
    let mut writer = get_context(StartMethod::Fork).process(write_until_gone, (d.clone(), progress.clone(), theirs));
    ok(writer.start())?;
    check(
        until(PATIENCE, || progress.get() >= 1000),
        "the writer did not get going",
    )?;
    ok(kill(server, Signal::KILL))?;
    check(ok(report.poll_timeout(PATIENCE))?, "the writer never reported")?;
    let (gone, message): (bool, String) = ok(report.recv())?;
    check(gone, format!("the writer's error: {message}"))?;
    check(joined(&mut writer)? == 0, "the writer failed")?;
    let t = Instant::now();
    let mine = d.len();
    check(
        matches!(&mine, Err(e) if e.is_server_gone()),
        format!("the parent's call: {mine:?}"),
    )?;
    let call = t.elapsed();
    drop(d);
    drop(m);
    check(is_dead(server), "the server is still there")?;
    Ok(format!(
        "server SIGKILLed after {} inserts; child got \"{message}\"; parent's call failed in {} µs",
        progress.get(),
        call.as_micros()
    ))
}

// ---- parent death ----------------------------------------------------------

fn idle(never: Event) {
    never.wait_timeout(PATIENCE);
}

/// Starts a daemonic child under each start method, reports their pids,
/// and waits to be killed.
fn parent_of_daemons(report: Connection, never: Event) -> Result<(), String> {
    let mut kids = Vec::new();
    for m in METHODS {
        let mut p = get_context(m).process(idle, (never.clone(),)).daemon(true);
        ok(p.start())?;
        kids.push(p);
    }
    let pids: Vec<u32> = kids.iter().filter_map(|p| p.pid()).collect();
    ok(report.send(&pids))?;
    never.wait_timeout(PATIENCE);
    Err("the parent was not killed".into())
}

fn parent_killed_with_daemons() -> Outcome {
    let never = ok(Event::new())?;
    let (report, theirs) = ok(pipe())?;
    let mut parent = get_context(StartMethod::Fork).process(parent_of_daemons, (theirs, never.clone()));
    ok(parent.start())?;
    check(ok(report.poll_timeout(PATIENCE))?, "the parent never reported")?;
    let pids: Vec<u32> = ok(report.recv())?;
    check(pids.len() == 3, format!("pids {pids:?}"))?;
    check(pids.iter().all(|&p| !is_dead(p)), "a daemon died early")?;
    let t = Instant::now();
    ok(parent.kill())?;
    check(joined(&mut parent)? == -9, "the parent's exit code")?;
    check(
        until(PATIENCE, || pids.iter().all(|&p| is_dead(p))),
        format!(
            "still alive: {:?}",
            pids.iter().filter(|&&p| !is_dead(p)).collect::<Vec<_>>()
        ),
    )?;
    Ok(format!(
        "parent SIGKILLed; its daemons {pids:?} were gone {} ms later",
        t.elapsed().as_millis()
    ))
}

// ---- many processes and objects ---------------------------------------------

fn exit_with(code: i32) {
    multiprocessing::exit(code)
}

fn thousand_processes() -> Outcome {
    let mut per_method = [Duration::ZERO; 3];
    for i in 0..1000usize {
        let m = i % 3;
        let t = Instant::now();
        let want = (i % 7) as i32;
        let mut p = get_context(METHODS[m]).process(exit_with, (want,));
        ok(p.start())?;
        let code = joined(&mut p)?;
        check(code == want, format!("process {i} exited with {code}, not {want}"))?;
        per_method[m] += t.elapsed();
    }
    let each = |m: usize| per_method[m].as_secs_f64() * 1e6 / if m == 0 { 334.0 } else { 333.0 };
    Ok(format!(
        "1,000 exit codes right; mean start+join fork {:.0} µs, spawn {:.0} µs, forkserver {:.0} µs",
        each(0),
        each(1),
        each(2)
    ))
}

fn ten_thousand_objects() -> Outcome {
    const BATCH: u64 = 100;
    for b in 0..10_000 / BATCH {
        let mut alive = Vec::with_capacity(BATCH as usize);
        for j in 0..BATCH {
            let i = b * BATCH + j;
            let q = ok(Queue::<u64>::new())?;
            ok(q.put(i))?;
            let sq = ok(SimpleQueue::<u64>::new())?;
            ok(sq.put(i))?;
            let jq = ok(JoinableQueue::<u64>::new())?;
            ok(jq.put(i))?;
            let lock = ok(Lock::new())?;
            drop(ok(lock.try_acquire())?.ok_or("a new lock is held")?);
            let v = ok(Value::new(i))?;
            v.set(v.get() + 1);
            alive.push((q, sq, jq, lock, v, i));
        }
        for (q, sq, jq, lock, v, i) in alive {
            check(ok(q.get_nowait())? == i, "queue item")?;
            check(ok(sq.get_timeout(PATIENCE))? == i, "simple queue item")?;
            check(ok(jq.get_nowait())? == i, "joinable queue item")?;
            ok(jq.task_done())?;
            check(ok(jq.join_timeout(Duration::ZERO))?, "joinable queue join")?;
            check(ok(lock.try_acquire())?.is_some(), "lock free again")?;
            check(v.get() == i + 1, "value")?;
        }
    }
    Ok("50,000 objects made, used and dropped; all 10,000 of each kind answered right".into())
}

// ---- cluster -----------------------------------------------------------------

/// A worker host of the cluster scenarios: this binary started again with
/// `MP_CLUSTER_WORKER` (mp-cluster diverts it to a worker host before
/// `main`), its stderr appended to the scenario's log; killed and reaped
/// when dropped.
struct ClusterHost {
    host: mp_testkit::redis::WorkerHost,
    label: String,
}

impl ClusterHost {
    fn start(url: &str, ns: &str, label: &str, lease: Duration, log: &std::fs::File) -> Result<ClusterHost, String> {
        let exe = ok(std::env::current_exe())?;
        let stderr = ok(log.try_clone())?;
        let spec = mp_testkit::redis::HostSpec {
            exe: &exe,
            url,
            namespace: ns,
            processes: 2,
            label,
            lease,
        };
        let host = mp_testkit::redis::WorkerHost::start_with(&spec, |cmd| {
            cmd.stdout(std::process::Stdio::null()).stderr(stderr);
        })?;
        Ok(ClusterHost {
            host,
            label: label.to_string(),
        })
    }
}

/// What the cluster scenarios share: a restartable server of their own, a
/// log for the hosts' stderr (removed when the scenario passes), a
/// namespace.
struct ClusterRig {
    redis: RestartableRedis,
    log_path: std::path::PathBuf,
    log: std::fs::File,
    ns: String,
}

impl ClusterRig {
    fn new(name: &str) -> Result<ClusterRig, String> {
        let redis = mp_testkit::redis::restartable()?;
        let ns = redis.namespace(name);
        let log_path = std::env::temp_dir().join(format!("mp-chaos-{ns}.log"));
        let log = ok(std::fs::File::create(&log_path))?;
        Ok(ClusterRig {
            redis,
            log_path,
            log,
            ns,
        })
    }

    fn host(&self, label: &str, lease: Duration) -> Result<ClusterHost, String> {
        ClusterHost::start(&self.redis.url(), &self.ns, label, lease, &self.log)
    }

    /// A client whose tasks carry `lease`, once `n` worker hosts are up.
    fn client(&self, n: usize, lease: Duration) -> Result<Cluster, String> {
        let c = ok(Cluster::builder(&self.redis.url())
            .namespace(&self.ns)
            .lease(lease)
            .worker_wait(Duration::from_secs(10))
            .connect())?;
        let up = ok(c.wait_workers(PATIENCE, |w| w.len() >= n))?;
        check(up.is_some(), format!("{n} worker hosts did not register"))?;
        Ok(c)
    }

    /// `outcome`, with the hosts' log named when it failed (and removed
    /// when it passed).
    fn finish(self, outcome: Outcome) -> Outcome {
        match outcome {
            Ok(o) => {
                let _ = std::fs::remove_file(&self.log_path);
                Ok(o)
            }
            Err(e) => Err(format!("{e} (the worker hosts' stderr: {})", self.log_path.display())),
        }
    }
}

/// A cluster task: `x`, its square, and the label of the host that ran it.
fn labelled_square(x: u64) -> (u64, u64, String) {
    // A task's simulated work.
    std::thread::sleep(Duration::from_micros(300));
    (x, x * x, std::env::var("MP_CLUSTER_HOST").unwrap_or_default())
}

const CLUSTER_TASKS: u64 = 10_000;

/// Counts each result by task id (checking its value) and by host.
struct Tally {
    seen: Vec<u32>,
    per_host: std::collections::BTreeMap<String, usize>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            seen: vec![0; CLUSTER_TASKS as usize],
            per_host: Default::default(),
        }
    }

    fn add(&mut self, (x, sq, host): (u64, u64, String)) -> Result<(), String> {
        check(x < CLUSTER_TASKS && sq == x * x, format!("task {x} gave {sq}"))?;
        self.seen[x as usize] += 1;
        *self.per_host.entry(host).or_default() += 1;
        Ok(())
    }

    /// Every task id exactly once.
    fn exactly_once(&self) -> Result<(), String> {
        let missing = self.seen.iter().filter(|&&n| n == 0).count();
        let twice = self.seen.iter().filter(|&&n| n > 1).count();
        check(
            missing == 0 && twice == 0,
            format!("{missing} task ids without a result, {twice} with more than one"),
        )
    }

    fn hosts(&self) -> String {
        self.per_host
            .iter()
            .map(|(h, n)| format!("{h} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The pids of the children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|(_, ppid)| ppid == pid)
        })
        .collect()
}

/// How many task entries of `c`'s stream the local processes of worker
/// host `host` hold (those of every host without one). A host's processes
/// are the group's consumers named `{host id}/{n}`.
fn held_by(r: &RestartableRedis, c: &Cluster, host: Option<&str>) -> Result<usize, String> {
    let stream = format!("{}:tasks:{:016x}", c.namespace(), c.build_id());
    let client = redis::Client::open(r.url()).map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    con.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // The extended form: (entry, consumer, idle ms, deliveries) per task.
    let held: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(100_000)
        .query(&mut con)
        .map_err(|e| format!("XPENDING: {e}"))?;
    Ok(match host {
        None => held.len(),
        Some(id) => {
            let prefix = format!("{id}/");
            held.iter()
                .filter(|(_, owner, _, _)| owner.starts_with(&prefix))
                .count()
        }
    })
}

fn cluster_host_killed() -> Outcome {
    if !mp_testkit::redis::available() {
        return Ok("skipped: no redis-server on PATH".into());
    }
    let rig = ClusterRig::new("chaos-kill")?;
    let outcome = host_killed_in(&rig);
    rig.finish(outcome)
}

fn host_killed_in(rig: &ClusterRig) -> Outcome {
    let lease = Duration::from_secs(1);
    let mut hosts = (0..3)
        .map(|i| rig.host(&format!("host-{i}"), lease))
        .collect::<Result<Vec<_>, _>>()?;
    let c = rig.client(3, lease)?;
    let pool = ok(c.pool())?;
    let t0 = Instant::now();
    let mut tally = Tally::new();
    let mut results = ok(pool.imap_unordered_chunked(labelled_square, 0..CLUSTER_TASKS, 50))?;
    let mut killed: Option<(Instant, String, String, usize, Vec<u32>)> = None;
    let mut taken_over: Option<Duration> = None;
    let mut got = 0;
    let mut last_result = Instant::now();
    // Short waits, so that the victim's held tasks are looked at while the
    // others wait for them.
    while let Some(r) = results.next_timeout(Duration::from_millis(50)) {
        match r {
            Err(multiprocessing::cluster::ClusterError::Task(TaskError::Timeout)) => {
                check(last_result.elapsed() < PATIENCE, "no result for 30 s")?;
            }
            r => {
                tally.add(ok(r)?)?;
                got += 1;
                last_result = Instant::now();
            }
        }
        if let Some((at, _, id, _, _)) = &killed
            && taken_over.is_none()
            && held_by(&rig.redis, &c, Some(id))? == 0
        {
            taken_over = Some(at.elapsed());
        }
        if got == 3000 && killed.is_none() {
            let victim = hosts.pop().ok_or("no host")?;
            let pid = victim.host.pid();
            let id = ok(c.workers())?
                .into_iter()
                .find(|w| w.pid == pid)
                .map(|w| w.id)
                .ok_or("the victim is not registered")?;
            let workers = children_of(pid);
            let held = held_by(&rig.redis, &c, Some(&id))?;
            let label = victim.label.clone();
            // SIGKILL, reaped.
            drop(victim);
            killed = Some((Instant::now(), label, id, held, workers));
        }
    }
    drop(results);
    let total = t0.elapsed();
    let (at, victim, _, held, workers) = killed.ok_or("the run ended before the kill")?;
    let after = at.elapsed();
    let taken_over = taken_over.ok_or("the killed host's tasks were never taken over")?;
    tally.exactly_once()?;
    check(
        tally.per_host.len() == 3 && tally.per_host.get(&victim).is_some_and(|&n| n < 3000),
        format!("per host: {}", tally.hosts()),
    )?;
    check(
        taken_over < lease + Duration::from_secs(3) && after < lease + Duration::from_secs(5),
        format!(
            "the killed host's tasks were taken over {taken_over:?} after the kill, all done {after:?} after (lease {lease:?})"
        ),
    )?;
    // The killed host's local worker processes end with it.
    check(
        until(Duration::from_secs(5), || workers.iter().all(|&p| is_dead(p))),
        format!("the killed host's workers {workers:?} outlived it"),
    )?;
    drop(pool);
    drop(hosts);
    let server = rig.redis.pid();
    rig.redis.kill()?;
    check(server.is_some_and(is_dead), "the server is gone")?;
    Ok(format!(
        "10,000 tasks, each id once and right; {victim} SIGKILLed after 3,000 results holding {held} chunks of 50: \
         taken over by the others {:.2} s after the kill, all done {:.2} s after it (lease {} s), {:.2} s in all; \
         per host: {}",
        taken_over.as_secs_f64(),
        after.as_secs_f64(),
        lease.as_secs(),
        total.as_secs_f64(),
        tally.hosts()
    ))
}

fn cluster_redis_restarted() -> Outcome {
    if !mp_testkit::redis::available() {
        return Ok("skipped: no redis-server on PATH".into());
    }
    let rig = ClusterRig::new("chaos-restart")?;
    let outcome = redis_restarted_in(&rig);
    rig.finish(outcome)
}

/// Stops the server with its data, keeps it away for `outage`, starts it
/// again; how long it was away.
fn restart(r: &RestartableRedis, outage: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    r.stop()?;
    // The deliberate length of the outage.
    std::thread::sleep(outage);
    r.start()?;
    Ok(t0.elapsed())
}

fn redis_restarted_in(rig: &ClusterRig) -> Outcome {
    let lease = Duration::from_secs(10);
    let hosts = (0..2)
        .map(|i| rig.host(&format!("host-{i}"), lease))
        .collect::<Result<Vec<_>, _>>()?;
    let c = rig.client(2, lease)?;
    let pool = ok(c.pool())?;
    let outage = Duration::from_secs(1);

    // map: the server restarts while the hosts hold its chunks.
    let t0 = Instant::now();
    let m = ok(pool.map_async(labelled_square, 0..CLUSTER_TASKS))?;
    check(
        until(PATIENCE, || held_by(&rig.redis, &c, None).is_ok_and(|n| n > 0)),
        "the hosts take tasks",
    )?;
    check(!m.ready(), "the map finished before the restart")?;
    let map_away = restart(&rig.redis, outage)?;
    let back = Instant::now();
    let v = ok(m.get_timeout(PATIENCE))?;
    let map_recovery = back.elapsed();
    let map_total = t0.elapsed();
    let mut map_tally = Tally::new();
    check(v.len() == CLUSTER_TASKS as usize, format!("{} map results", v.len()))?;
    for (i, r) in v.into_iter().enumerate() {
        check(r.0 == i as u64, format!("map result {i} is task {}'s", r.0))?;
        map_tally.add(r)?;
    }
    map_tally.exactly_once()?;

    // imap: iterated through a restart made by another thread.
    let t0 = Instant::now();
    let mut imap_tally = Tally::new();
    let (imap_away, imap_back) = std::thread::scope(|s| -> Result<(Duration, Instant), String> {
        let mut results = ok(pool.imap_chunked(labelled_square, 0..CLUSTER_TASKS, 50))?;
        let mut restarter = None;
        let mut i = 0u64;
        while let Some(r) = results.next_timeout(PATIENCE) {
            let r = ok(r)?;
            check(r.0 == i, format!("imap result {i} is task {}'s", r.0))?;
            imap_tally.add(r)?;
            i += 1;
            if i == 3000 {
                restarter = Some(s.spawn(|| restart(&rig.redis, outage).map(|d| (d, Instant::now()))));
            }
        }
        restarter
            .ok_or("the imap ended before the restart")?
            .join()
            .map_err(|_| "the restarting thread panicked".to_string())?
    })?;
    let imap_recovery = imap_back.elapsed();
    let imap_total = t0.elapsed();
    imap_tally.exactly_once()?;
    drop(pool);
    drop(hosts);
    let server = rig.redis.pid();
    rig.redis.kill()?;
    check(server.is_some_and(is_dead), "the server is gone")?;
    Ok(format!(
        "map of 10,000: server away {:.2} s mid-run, done {:.2} s after it was back ({:.2} s in all; {}); \
         imap of 10,000 (chunks of 50): away {:.2} s after 3,000 results, done {:.2} s after it was back \
         ({:.2} s in all; {}); every task id once and right",
        map_away.as_secs_f64(),
        map_recovery.as_secs_f64(),
        map_total.as_secs_f64(),
        map_tally.hosts(),
        imap_away.as_secs_f64(),
        imap_recovery.as_secs_f64(),
        imap_total.as_secs_f64(),
        imap_tally.hosts(),
    ))
}
