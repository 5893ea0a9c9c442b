//! The cluster tier's task control and hostile input against a real
//! `redis-server` (testkit starts one for this binary): cancelling tasks,
//! terminating pools, callbacks, closing queues, the queue's hand-off, and
//! entries written by hand. Worker hosts are copies of this binary started
//! as child processes with `MP_CLUSTER_WORKER`, killed and reaped at the
//! end of each test.

use std::collections::{HashMap, HashSet};

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mp_cluster::{Cluster, ClusterError};
use mp_testkit::{Harness, check};

mod common;
use common::{Host, cluster, me, one_host, pending, raw, redis, tasks_stream, wait_workers};

fn main() -> ExitCode {
    let tests: &[(&str, mp_testkit::Test)] = &[
        ("cancel_succeeds_before_a_claim", cancel_succeeds_before_a_claim),
        ("cancel_races_claims", cancel_races_claims),
        (
            "executor_shutdown_cancels_only_unclaimed",
            executor_shutdown_cancels_only_unclaimed,
        ),
        (
            "terminate_stops_running_tasks_everywhere",
            terminate_stops_running_tasks_everywhere,
        ),
        (
            "terminating_a_pool_spares_another_pool_s_task_on_the_same_process",
            terminating_a_pool_spares_another_pool_s_task_on_the_same_process,
        ),
        ("callbacks_as_python_s", callbacks_as_python_s),
        ("queue_close_holds_everywhere", queue_close_holds_everywhere),
        (
            "a_consumer_killed_holding_an_item_gives_it_back",
            a_consumer_killed_holding_an_item_gives_it_back,
        ),
        (
            "oversized_and_lying_entries_fail_alone",
            oversized_and_lying_entries_fail_alone,
        ),
        (
            "the_client_s_lease_governs_takeover",
            the_client_s_lease_governs_takeover,
        ),
        ("per_task_throughput", per_task_throughput),
    ];
    let mut h = Harness::new(tests.len() + 1);
    for &(name, f) in tests {
        h.run(name, f);
    }
    h.run("nothing_left_behind", nothing_left_behind);
    h.finish()
}

fn xlen(key: &str) -> Result<i64, String> {
    redis::cmd("XLEN")
        .arg(key)
        .query(&mut raw()?)
        .map_err(|e| e.to_string())
}

fn e(e: ClusterError) -> String {
    e.to_string()
}

/// What a task that must stay busy does: waits until the test opens
/// `gate` (a token per task), or its process is killed (a minute at most).
fn hold(gate: &mp_cluster::Queue<u64>) {
    let _ = gate.get_timeout(Duration::from_secs(60));
}

/// Returns `v` once `gate` lets it.
fn held(gate: mp_cluster::Queue<u64>, v: u64) -> u64 {
    hold(&gate);
    v
}

/// Returns `v` at once.
fn same(v: u64) -> u64 {
    v
}

/// Records that task `i` ran (in a cluster queue), once `gate` (if any)
/// lets it.
fn record(runs: mp_cluster::Queue<u64>, i: u64, gate: Option<mp_cluster::Queue<u64>>) -> u64 {
    if let Some(gate) = gate {
        hold(&gate);
    }
    runs.put(i).expect("recording a run");
    i
}

/// Every item of `q` (without waiting for more).
fn drain(q: &mp_cluster::Queue<u64>) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    loop {
        match q.get_nowait() {
            Ok(v) => out.push(v),
            Err(mp_queue::GetError::Empty) => return Ok(out),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn cancel_succeeds_before_a_claim() -> Result<(), String> {
    let (_, _host, c) = one_host("cancel", 1, "host-cancel")?;
    let pool = c.pool().map_err(e)?;
    let runs: mp_cluster::Queue<u64> = c.queue("runs").map_err(e)?;
    let gate: mp_cluster::Queue<u64> = c.queue("gate").map_err(e)?;
    // A local process reads the next tasks only once it has answered the
    // one it runs: while the first runs (held on the gate), the second and
    // third wait in the stream.
    let stream = tasks_stream(&c);
    let first = pool
        .apply_async(record, (runs.clone(), 1, Some(gate.clone())))
        .map_err(e)?;
    check(
        mp_testkit::until(Duration::from_secs(10), || pending(&stream).is_ok_and(|n| n == 1)),
        "the host runs the first task",
    )?;
    let second = pool.apply_async(record, (runs.clone(), 2, None)).map_err(e)?;
    let third = pool.apply_async(record, (runs.clone(), 3, None)).map_err(e)?;
    check(third.cancel().map_err(e)?, "the unclaimed task is cancelled")?;
    check(third.cancelled() && third.ready(), "cancelled and ready")?;
    check(third.successful() == Some(false), "not successful")?;
    check(
        matches!(third.get(), Err(ClusterError::Cancelled)),
        format!("get after cancel: {:?}", third.get()),
    )?;
    check(third.cancel().map_err(e)?, "cancel again: still cancelled")?;
    check(!first.cancel().map_err(e)?, "a claimed task is not cancelled")?;
    gate.put(1).map_err(|e| e.to_string())?;
    check(
        first.get_timeout(Duration::from_secs(20)).map_err(e)? == 1,
        "its result",
    )?;
    check(
        second.get_timeout(Duration::from_secs(20)).map_err(e)? == 2,
        "the second",
    )?;
    check(!second.cancel().map_err(e)?, "a finished task is not cancelled")?;
    // A task queued after it runs: the cancelled one, ahead of it, did not.
    check(
        pool.apply(record, (runs.clone(), 4, None)).map_err(e)? == 4,
        "a later task",
    )?;
    let mut ran = drain(&runs)?;
    ran.sort_unstable();
    check(ran == vec![1, 2, 4], format!("runs {ran:?}"))?;
    // The executor's futures: cancel() while the host is busy.
    let ex = c.executor().map_err(e)?;
    let busy = ex.submit(held, (gate.clone(), 1200)).map_err(e)?;
    check(
        mp_testkit::until(Duration::from_secs(10), || pending(&stream).is_ok_and(|n| n == 1)),
        "the host runs the busy one",
    )?;
    // Its host says so once it has run for 50 ms.
    check(
        mp_testkit::until(Duration::from_secs(5), || busy.running()),
        "a future whose task runs reads as running",
    )?;
    let behind = ex.submit(same, (0,)).map_err(e)?;
    let queued = ex.submit(record, (runs.clone(), 5, None)).map_err(e)?;
    check(!queued.running(), "a queued future is pending")?;
    check(!busy.cancel(), "a running future is not cancelled")?;
    check(queued.cancel(), "the executor's queued future is cancelled")?;
    check(
        queued.cancelled() && queued.result() == Err(mp_pool::ExecutorError::Cancelled),
        format!("{queued:?}"),
    )?;
    gate.put(1).map_err(|e| e.to_string())?;
    check(busy.result_timeout(Duration::from_secs(20)) == Ok(1200), "the busy one")?;
    check(
        behind.result_timeout(Duration::from_secs(20)) == Ok(0),
        "the one behind",
    )?;
    ex.shutdown(true, false);
    check(drain(&runs)?.is_empty(), "the cancelled future's task never ran")
}

fn cancel_races_claims() -> Result<(), String> {
    let ns = redis()?.namespace("cancel_race");
    let _a = Host::start(&me(), &ns, 1, "race-a")?;
    let _b = Host::start(&me(), &ns, 1, "race-b")?;
    let c = cluster(&ns, Duration::from_secs(10))?;
    wait_workers(&c, 2)?;
    let pool = c.pool().map_err(e)?;
    let runs: mp_cluster::Queue<u64> = c.queue("runs").map_err(e)?;
    let gate: mp_cluster::Queue<u64> = c.queue("gate").map_err(e)?;
    let n = 200u64;
    let results = (0..n)
        .map(|i| pool.apply_async(record, (runs.clone(), i, Some(gate.clone()))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    // Cancel every task, from the first, while both hosts claim them: the
    // gate lets the tasks finish one by one meanwhile.
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || (0..n).try_for_each(|i| gate.put(i)))
    };
    let t0 = Instant::now();
    let mut cancelled = HashSet::new();
    for (i, r) in results.iter().enumerate() {
        if r.cancel().map_err(e)? {
            cancelled.insert(i as u64);
        }
    }
    let cancelling = t0.elapsed();
    opener
        .join()
        .map_err(|_| "the gate's opener panicked".to_string())?
        .map_err(|e| e.to_string())?;
    for (i, r) in results.iter().enumerate() {
        let i = i as u64;
        let got = r.get_timeout(Duration::from_secs(30));
        if cancelled.contains(&i) {
            check(
                matches!(got, Err(ClusterError::Cancelled)),
                format!("task {i} was cancelled: {got:?}"),
            )?;
        } else {
            check(got.as_ref().ok() == Some(&i), format!("task {i}: {got:?}"))?;
        }
    }
    pool.close();
    pool.join_timeout(Duration::from_secs(20)).map_err(e)?;
    // Nothing is left to run: every entry is answered or withdrawn.
    let stream = tasks_stream(&c);
    check(
        mp_testkit::until(Duration::from_secs(10), || xlen(&stream).is_ok_and(|n| n == 0)),
        "the task stream is empty",
    )?;
    let mut count: HashMap<u64, usize> = HashMap::new();
    for i in drain(&runs)? {
        *count.entry(i).or_default() += 1;
    }
    println!(
        "    {n} tasks over 2 hosts: {} cancelled, {} ran (cancelling took {:.1} ms)",
        cancelled.len(),
        count.len(),
        cancelling.as_secs_f64() * 1e3
    );
    for i in 0..n {
        let ran = count.get(&i).copied().unwrap_or(0);
        if cancelled.contains(&i) {
            check(ran == 0, format!("cancelled task {i} ran {ran} times"))?;
        } else {
            check(ran == 1, format!("task {i} ran {ran} times"))?;
        }
    }
    check(
        !cancelled.is_empty() && cancelled.len() < n as usize,
        format!("a race needs both outcomes: {} of {n} cancelled", cancelled.len()),
    )
}

fn executor_shutdown_cancels_only_unclaimed() -> Result<(), String> {
    use mp_pool::ExecutorError;
    let (_, _host, c) = one_host("shutdown_cancel", 2, "host-shutdown")?;
    let ex = c.executor().map_err(e)?;
    let runs: mp_cluster::Queue<u64> = c.queue("runs").map_err(e)?;
    let gate: mp_cluster::Queue<u64> = c.queue("gate").map_err(e)?;
    let fs = (0..10u64)
        .map(|i| ex.submit(record, (runs.clone(), i, Some(gate.clone()))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    // Two processes hold four chunks: wait until the host has claimed them.
    let stream = tasks_stream(&c);
    check(
        mp_testkit::until(Duration::from_secs(10), || pending(&stream).is_ok_and(|n| n == 4)),
        "the host holds four tasks",
    )?;
    // The held tasks may finish once shutdown has cancelled the others
    // (taken off the stream): the gate opens then.
    let opener = {
        let (gate, stream) = (gate.clone(), stream.clone());
        std::thread::spawn(move || {
            let cancelled = mp_testkit::until(Duration::from_secs(20), || xlen(&stream).is_ok_and(|n| n <= 4));
            for i in 0..10 {
                let _ = gate.put(i);
            }
            cancelled
        })
    };
    let t0 = Instant::now();
    ex.shutdown(true, true);
    let took = t0.elapsed();
    check(
        opener.join().unwrap_or(false),
        "shutdown takes the unclaimed tasks off the stream",
    )?;
    let ran: Vec<usize> = (0..fs.len()).filter(|&i| !fs[i].cancelled()).collect();
    println!(
        "    shutdown(wait, cancel_futures): {} ran, {} cancelled, {:.0} ms",
        ran.len(),
        fs.len() - ran.len(),
        took.as_secs_f64() * 1e3
    );
    // The four held at the call, and any claimed while it ran.
    check(
        ran.len() >= 4 && ran.len() < fs.len(),
        format!("the claimed tasks finish, the others are cancelled: {ran:?}"),
    )?;
    for (i, f) in fs.iter().enumerate() {
        if ran.contains(&i) {
            check(f.result() == Ok(i as u64), format!("future {i}: {f:?}"))?;
        } else {
            check(
                f.result() == Err(ExecutorError::Cancelled),
                format!("future {i}: {f:?}"),
            )?;
        }
    }
    let mut recorded = drain(&runs)?;
    recorded.sort_unstable();
    check(
        recorded == ran.iter().map(|&i| i as u64).collect::<Vec<_>>(),
        format!("runs {recorded:?} vs {ran:?}"),
    )
}

/// No worker host (nor any of its processes) outlives its test.
fn nothing_left_behind() -> Result<(), String> {
    mp_testkit::nothing_left_behind(&[redis()?.pid()], |_| false)
}

/// Records the local process it runs in, then stays busy until `gate`
/// lets it (or the process is killed).
fn long(started: mp_cluster::Queue<u32>, gate: mp_cluster::Queue<u64>) -> u64 {
    started.put(std::process::id()).expect("recording a start");
    hold(&gate);
    0
}

/// Whether `pid` has ended (gone, or a zombie not yet reaped).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Starts long tasks of `pool` until two run at once on two hosts of one
/// process each; their local pids.
fn two_running(
    pool: &mp_cluster::Pool,
    started: &mp_cluster::Queue<u32>,
    gate: &mp_cluster::Queue<u64>,
) -> Result<(Vec<mp_cluster::AsyncResult<u64>>, Vec<u32>), String> {
    let mut results = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..6 {
        results.push(pool.apply_async(long, (started.clone(), gate.clone())).map_err(e)?);
        if let Ok(pid) = started.get_timeout(Duration::from_secs(3)) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        if pids.len() == 2 {
            return Ok((results, pids));
        }
    }
    Err(format!("two long tasks did not start on two hosts: {pids:?}"))
}

/// Waits (at most 10 s) until every pid has ended; how long that took.
fn until_ended(pids: &[u32]) -> Result<Duration, String> {
    let t0 = Instant::now();
    check(
        mp_testkit::until(Duration::from_secs(10), || pids.iter().all(|&p| ended(p))),
        format!("the local processes {pids:?} still run 10 s later"),
    )?;
    Ok(t0.elapsed())
}

fn terminate_stops_running_tasks_everywhere() -> Result<(), String> {
    let ns = redis()?.namespace("terminate");
    let _a = Host::start(&me(), &ns, 1, "term-a")?;
    let _b = Host::start(&me(), &ns, 1, "term-b")?;
    let c = cluster(&ns, Duration::from_secs(10))?;
    let hosts: Vec<u32> = wait_workers(&c, 2)?.iter().map(|w| w.pid).collect();
    let started: mp_cluster::Queue<u32> = c.queue("started").map_err(e)?;
    let gate: mp_cluster::Queue<u64> = c.queue("gate").map_err(e)?;
    let pool = c.pool().map_err(e)?;
    let (results, pids) = two_running(&pool, &started, &gate)?;
    let t0 = Instant::now();
    pool.terminate();
    let call = t0.elapsed();
    until_ended(&pids)?;
    let stopped = t0.elapsed();
    println!(
        "    terminate: the 2 running tasks (one per host) stopped {:.0} ms after terminate() was called \
         (the call took {:.1} ms)",
        stopped.as_secs_f64() * 1e3,
        call.as_secs_f64() * 1e3
    );
    check(stopped < Duration::from_secs(2), format!("took {stopped:?}"))?;
    for r in &results {
        check(
            matches!(r.get_timeout(Duration::from_secs(5)), Err(ClusterError::Closed)),
            "a terminated pool's result is Closed",
        )?;
    }
    // The hosts live on and serve other pools.
    let other = c.pool().map_err(e)?;
    check(
        other.map(same, vec![50; 8]).map_err(e)? == vec![50; 8],
        "another pool runs on the same hosts",
    )?;
    let now: Vec<u32> = c.workers().map_err(e)?.iter().map(|w| w.pid).collect();
    check(now == hosts, format!("the same hosts serve: {hosts:?} then {now:?}"))?;
    // A task the first host had claimed and queued behind the killed one
    // may start in the replacement process: it is stopped as well.
    let late: Vec<u32> = std::iter::from_fn(|| started.get_nowait().ok()).collect();
    until_ended(&late)?;
    // Dropping a pool without close and join terminates it too.
    let dropped = c.pool().map_err(e)?;
    let (_results, pids) = two_running(&dropped, &started, &gate)?;
    let t0 = Instant::now();
    drop(dropped);
    until_ended(&pids)?;
    let stopped = t0.elapsed();
    println!(
        "    drop without close/join: the 2 running tasks stopped {:.0} ms after the drop began",
        stopped.as_secs_f64() * 1e3
    );
    check(stopped < Duration::from_secs(2), format!("took {stopped:?}"))?;
    check(other.apply(same, (1,)).map_err(e)? == 1, "the hosts still serve")
}

/// A host of one local process runs a task of one pool while a task of
/// another pool waits for that same process. Terminating the first pool
/// kills the process; the waiting task still gives its result, not
/// `WorkerLost` (the local pool hands it to the replacement process; in the
/// narrow race where the killed process had already started it, the host
/// runs it again).
fn terminating_a_pool_spares_another_pool_s_task_on_the_same_process() -> Result<(), String> {
    let (_, _host, c) = one_host("spare_neighbour", 1, "one-process")?;
    let started: mp_cluster::Queue<u32> = c.queue("started").map_err(e)?;
    let doomed = c.pool().map_err(e)?;
    let gate: mp_cluster::Queue<u64> = c.queue("gate").map_err(e)?;
    let _held = doomed.apply_async(long, (started.clone(), gate)).map_err(e)?;
    let pid = started
        .get_timeout(Duration::from_secs(10))
        .map_err(|e| format!("the long task did not start: {e}"))?;
    let other = c.pool().map_err(e)?;
    let waiting = other.apply_async(square, (7,)).map_err(e)?;
    // The host's one process runs the long task: the other pool's task waits
    // (in the stream, or read together with it and queued again when the
    // process stops).
    doomed.terminate();
    until_ended(&[pid])?;
    let t0 = Instant::now();
    let got = waiting.get_timeout(Duration::from_secs(10));
    println!(
        "    the other pool's task: {got:?}, {:.0} ms after the kill",
        t0.elapsed().as_secs_f64() * 1e3
    );
    check(matches!(got, Ok(49)), format!("the other pool's task gave {got:?}"))
}

fn square(x: u64) -> u64 {
    x * x
}

fn boom(x: u32) -> u32 {
    if x == 3 {
        panic!("item {x} is cursed");
    }
    x
}

fn callbacks_as_python_s() -> Result<(), String> {
    use std::sync::mpsc;
    let (_, _host, c) = one_host("callbacks", 1, "host-callbacks")?;
    let pool = c.pool().map_err(e)?;
    let wait = Duration::from_secs(20);
    // The value goes to the callback before get returns.
    let (tx, rx) = mpsc::channel::<Result<u64, String>>();
    let tx2 = tx.clone();
    let r = pool
        .apply_async_with(
            square,
            (7,),
            move |v: &u64| tx.send(Ok(*v)).expect("send"),
            move |err: &ClusterError| tx2.send(Err(err.to_string())).expect("send"),
        )
        .map_err(e)?;
    check(r.get_timeout(wait).map_err(e)? == 49, "apply_async_with's value")?;
    check(rx.try_recv() == Ok(Ok(49)), "the callback ran before get returned")?;
    check(rx.try_recv().is_err(), "once")?;
    // A failure goes to the error callback.
    let (tx, rx) = mpsc::channel::<String>();
    let r = pool
        .apply_async_with(
            boom,
            (3,),
            |_: &u32| panic!("no value expected"),
            move |err: &ClusterError| tx.send(err.to_string()).expect("send"),
        )
        .map_err(e)?;
    check(r.get_timeout(wait).is_err(), "the task failed")?;
    let got = rx.try_recv().map_err(|e| e.to_string())?;
    check(got.contains("cursed"), format!("error_callback got {got}"))?;
    // map_async_with: every result, in order; or the first failure.
    let (tx, rx) = mpsc::channel::<Vec<u64>>();
    let m = pool
        .map_async_with(
            square,
            0..50u64,
            move |v: &Vec<u64>| tx.send(v.clone()).expect("send"),
            |err: &ClusterError| panic!("unexpected {err}"),
        )
        .map_err(e)?;
    let v = m.get_timeout(wait).map_err(e)?;
    check(
        v == (0..50u64).map(square).collect::<Vec<_>>(),
        "map_async_with's value",
    )?;
    check(rx.try_recv().ok() == Some(v), "map's callback")?;
    let (tx, rx) = mpsc::channel::<String>();
    let m = pool
        .map_async_with(
            boom,
            0..6u32,
            |_: &Vec<u32>| panic!("no value expected"),
            move |err: &ClusterError| tx.send(err.to_string()).expect("send"),
        )
        .map_err(e)?;
    check(m.get_timeout(wait).is_err(), "the map failed")?;
    let got = rx.try_recv().map_err(|e| e.to_string())?;
    check(got.contains("item 3"), format!("map's error_callback got {got}"))?;
    // An empty map calls back at once.
    let (tx, rx) = mpsc::channel::<usize>();
    let m = pool
        .map_async_with(
            square,
            Vec::<u64>::new(),
            move |v: &Vec<u64>| tx.send(v.len()).expect("send"),
            |_| {},
        )
        .map_err(e)?;
    check(m.get().map_err(e)?.is_empty() && rx.try_recv() == Ok(0), "empty map")?;
    // A cancelled task and a terminated pool reach the error callback.
    let gate: mp_cluster::Queue<u64> = c.queue("gate").map_err(e)?;
    let busy = pool.apply_async(held, (gate, 5000)).map_err(e)?;
    let stream = tasks_stream(&c);
    check(
        mp_testkit::until(Duration::from_secs(10), || pending(&stream).is_ok_and(|n| n == 1)),
        "the host runs the busy task",
    )?;
    let behind = pool.apply_async(same, (0,)).map_err(e)?;
    let (tx, rx) = mpsc::channel::<String>();
    let tx2 = tx.clone();
    let queued = pool
        .apply_async_with(
            square,
            (2,),
            |_: &u64| {},
            move |err: &ClusterError| tx2.send(format!("{err:?}")).expect("send"),
        )
        .map_err(e)?;
    check(queued.cancel().map_err(e)?, "cancelled")?;
    check(rx.try_recv().as_deref() == Ok("Cancelled"), "error_callback(Cancelled)")?;
    let last = pool
        .apply_async_with(
            square,
            (3,),
            |_: &u64| {},
            move |err: &ClusterError| tx.send(format!("{err:?}")).expect("send"),
        )
        .map_err(e)?;
    pool.terminate();
    check(
        rx.try_recv().as_deref() == Ok("Closed"),
        "error_callback(Closed) on terminate",
    )?;
    check(matches!(last.get(), Err(ClusterError::Closed)), "get: Closed")?;
    check(
        matches!(busy.get(), Err(ClusterError::Closed)) && matches!(behind.get(), Err(ClusterError::Closed)),
        "pending results: Closed",
    )
}

/// On a worker host: puts `x`; what came of it.
fn put_there(q: mp_cluster::Queue<u64>, x: u64) -> String {
    match q.put(x) {
        Ok(()) => "put".into(),
        Err(e) if e.is_closed() => "closed".into(),
        Err(e) => format!("{e}"),
    }
}

/// On a worker host: gets one item; what came of it.
fn get_there(q: mp_cluster::Queue<u64>) -> String {
    match q.get_timeout(Duration::from_secs(5)) {
        Ok(v) => format!("got {v}"),
        Err(mp_queue::GetError::Closed) => "closed".into(),
        Err(e) => format!("{e}"),
    }
}

fn queue_close_holds_everywhere() -> Result<(), String> {
    use mp_queue::GetError;
    let (_, _host, c) = one_host("queue_close", 1, "host-close")?;
    let pool = c.pool().map_err(e)?;
    let q: mp_cluster::Queue<u64> = c.queue("closing").map_err(e)?;
    check(
        pool.apply(put_there, (q.clone(), 1)).map_err(e)? == "put",
        "a host puts",
    )?;
    q.put(2).map_err(|e| e.to_string())?;
    q.put(3).map_err(|e| e.to_string())?;
    check(!q.is_closed().map_err(e)?, "open")?;
    // A getter blocked on another queue that closes while it waits.
    let idle: mp_cluster::Queue<u64> = c.queue("idle").map_err(e)?;
    let idle2 = idle.clone();
    let blocked = std::thread::spawn(move || {
        let r = idle2.get_timeout(Duration::from_secs(10));
        (r, Instant::now())
    });
    // A putter waiting on a full bounded queue that closes while it waits.
    let full: mp_cluster::Queue<u64> = c.queue_with_maxsize("full", 1).map_err(e)?;
    full.put(1).map_err(|e| e.to_string())?;
    let full2 = full.clone();
    let (putting_tx, putting) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let _ = putting_tx.send(());
        full2.put_timeout(2, Duration::from_secs(10))
    });
    // The getter is blocked in Redis (a blocked client there), and the
    // putter has begun its put (it polls a full queue: nothing shows in
    // Redis while it waits).
    check(
        mp_testkit::until(Duration::from_secs(10), || blocked_getters().is_ok_and(|n| n >= 1)),
        "the getter blocks",
    )?;
    check(
        putting.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the putter begins",
    )?;
    q.close().map_err(e)?;
    idle.close().map_err(e)?;
    let idle_closed = Instant::now();
    full.close().map_err(e)?;
    check(q.is_closed().map_err(e)?, "closed")?;
    // Every handle, here and on the host, sees it.
    match q.put(4) {
        Err(err) if err.is_closed() => check(err.into_inner() == 4, "the item comes back")?,
        other => return Err(format!("put after close: {other:?}")),
    }
    let other: mp_cluster::Queue<u64> = c.queue("closing").map_err(e)?;
    check(other.put_nowait(5).is_err_and(|e| e.is_closed()), "another handle")?;
    check(
        pool.apply(put_there, (q.clone(), 6)).map_err(e)? == "closed",
        "a handle on the worker host",
    )?;
    // Gets drain what is left, then Closed, on every handle.
    check(q.get_timeout(Duration::from_secs(5)) == Ok(1), "first left")?;
    check(
        pool.apply(get_there, (q.clone(),)).map_err(e)? == "got 2",
        "the host drains",
    )?;
    check(other.get_nowait() == Ok(3), "third left")?;
    check(
        q.get_timeout(Duration::from_secs(5)) == Err(GetError::Closed),
        "then Closed",
    )?;
    check(q.get_nowait() == Err(GetError::Closed), "get_nowait: Closed")?;
    check(
        pool.apply(get_there, (q.clone(),)).map_err(e)? == "closed",
        "Closed on the host",
    )?;
    let (r, returned) = blocked.join().map_err(|_| "the getter thread panicked".to_string())?;
    let woke = returned.saturating_duration_since(idle_closed);
    check(r == Err(GetError::Closed), format!("the blocked get: {r:?}"))?;
    println!(
        "    a get blocked on an empty queue ended with Closed within {:.0} ms of close()",
        woke.as_secs_f64() * 1e3
    );
    check(woke < Duration::from_secs(2), format!("took {woke:?}"))?;
    match waiting.join().map_err(|_| "the putter thread panicked".to_string())? {
        Err(err) if err.is_closed() => {}
        other => return Err(format!("the waiting put: {other:?}")),
    }
    check(full.get_nowait() == Ok(1), "a full queue drains after close")?;
    check(full.get_nowait() == Err(GetError::Closed), "then Closed")
}

/// A consumer in a child process: takes an item and, before it can
/// acknowledge it, says so and waits to be killed.
fn take_and_hold(url: String, ns: String) -> Result<(), String> {
    let c = Cluster::builder(&url)
        .namespace(ns)
        .lease(Duration::from_secs(1))
        .connect()
        .map_err(|e| e.to_string())?;
    let q: mp_cluster::Queue<String> = c.queue("handoff").map_err(|e| e.to_string())?;
    let said: mp_cluster::Queue<bool> = c.queue("took").map_err(|e| e.to_string())?;
    let took = q.take_without_ack(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    said.put(took).map_err(|e| e.to_string())?;
    // Held until the parent kills this process: a wait on a queue nobody
    // fills, bounded.
    let never: mp_cluster::Queue<bool> = c.queue("never").map_err(|e| e.to_string())?;
    let _ = never.get_timeout(Duration::from_secs(60));
    Ok(())
}

/// Starts a consumer child that takes the head of the queue "handoff" and
/// kills it once it says it took it (before it could acknowledge); when.
fn kill_a_holder(ns: &str, said: &mp_cluster::Queue<bool>) -> Result<Instant, String> {
    let mut p = mp_process::get_context(mp_process::StartMethod::Spawn)
        .process(take_and_hold, (redis()?.url(), ns.to_string()));
    p.start().map_err(|e| e.to_string())?;
    let took = said.get_timeout(Duration::from_secs(20));
    p.kill().map_err(|e| e.to_string())?;
    let killed = Instant::now();
    p.join_timeout(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    check(took == Ok(true), format!("the consumer took an item: {took:?}"))?;
    Ok(killed)
}

/// How many clients of the server are blocked in `BLMOVE` (a queue's get;
/// `CLIENT LIST`).
fn blocked_getters() -> Result<usize, String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut raw()?)
        .map_err(|e| e.to_string())?;
    Ok(list
        .lines()
        .filter(|l| l.contains(" flags=b ") && l.contains(" cmd=blmove "))
        .count())
}

/// Whether every taker of queue `name` has let its lease lapse.
fn takers_lapsed(ns: &str, name: &str) -> bool {
    let Ok(mut con) = raw() else { return false };
    let takers: Vec<String> = match redis::cmd("SMEMBERS")
        .arg(format!("{ns}:queue:{name}:takers"))
        .query(&mut con)
    {
        Ok(t) => t,
        Err(_) => return false,
    };
    takers.iter().all(|t| {
        redis::cmd("EXISTS")
            .arg(format!("{t}:lease"))
            .query::<bool>(&mut con)
            .is_ok_and(|live| !live)
    })
}

fn a_consumer_killed_holding_an_item_gives_it_back() -> Result<(), String> {
    let ns = redis()?.namespace("handoff");
    let lease = Duration::from_secs(1);
    let c = Cluster::builder(&redis()?.url())
        .namespace(&ns)
        .lease(lease)
        .connect()
        .map_err(e)?;
    let q: mp_cluster::Queue<String> = c.queue("handoff").map_err(e)?;
    let said: mp_cluster::Queue<bool> = c.queue("took").map_err(e)?;
    // A getter waiting on the queue gets the item once the lease lapses.
    q.put("a".to_string()).map_err(|e| e.to_string())?;
    let killed = kill_a_holder(&ns, &said)?;
    check(q.qsize().map_err(e)? == 0, "the item is held")?;
    let got = q.get_timeout(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let back = killed.elapsed();
    println!(
        "    an item held by a consumer killed before its ack came back {:.0} ms after the kill (lease {} ms)",
        back.as_secs_f64() * 1e3,
        lease.as_millis()
    );
    check(got == "a", format!("the held item, got {got:?}"))?;
    check(back < lease + Duration::from_secs(1), format!("took {back:?}"))?;
    // It goes back to the head: before the items queued behind it.
    for s in ["x", "y", "z"] {
        q.put(s.to_string()).map_err(|e| e.to_string())?;
    }
    kill_a_holder(&ns, &said)?;
    // Until the dead consumer's lease has lapsed (the next get gives its
    // item back).
    check(
        mp_testkit::until(Duration::from_secs(10), || takers_lapsed(&ns, "handoff")),
        "the dead consumer's lease lapses",
    )?;
    let order: Vec<String> = (0..3)
        .map(|_| q.get_timeout(Duration::from_secs(5)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    check(order == ["x", "y", "z"], format!("order {order:?}"))?;
    check(q.get_nowait() == Err(mp_queue::GetError::Empty), "nothing twice")
}

/// 16 MiB of garbage (a fixed pseudo-random sequence).
fn garbage_16mib() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..16 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The LEB128 varint of `v`, as the codec writes lengths.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A few bytes that declare a sequence of 2^40 elements.
fn lying() -> Vec<u8> {
    let mut b = varint(1 << 40);
    b.extend_from_slice(&[1, 2, 3]);
    b
}

/// The peak resident size of a process, in MiB (VmHWM).
fn peak_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn oversized_and_lying_entries_fail_alone() -> Result<(), String> {
    use mp_queue::GetError;
    let ns = redis()?.namespace("hostile");
    let host = Host::start(&me(), &ns, 1, "host-hostile")?;
    let c = cluster(&ns, Duration::from_secs(10))?;
    let before = wait_workers(&c, 1)?[0].pid;
    let big = garbage_16mib();
    let mut con = raw()?;
    let q_err = |e: redis::RedisError| e.to_string();
    // The task stream: two entries the host cannot decode, then real work.
    let stream = tasks_stream(&c);
    let build = format!("{:016x}", c.build_id());
    let t0 = Instant::now();
    for t in [&big, &lying()] {
        redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("b")
            .arg(&build)
            .arg("t")
            .arg(t.as_slice())
            .query::<String>(&mut con)
            .map_err(q_err)?;
    }
    let pool = c.pool().map_err(e)?;
    check(
        pool.map(square, 0..20u64).map_err(e)? == (0..20u64).map(square).collect::<Vec<_>>(),
        "the work behind the garbage tasks",
    )?;
    check(
        mp_testkit::until(Duration::from_secs(10), || xlen(&stream).is_ok_and(|n| n == 0)),
        "the garbage tasks were dropped",
    )?;
    let tasks_took = t0.elapsed();
    // A result stream: garbage, and a result for a waiting task whose value
    // declares 2^40 items. That task fails with a decode error; the others
    // come through.
    let fresh = c.pool().map_err(e)?;
    let gate: mp_cluster::Queue<u64> = c.queue("gate").map_err(e)?;
    let waiting = fresh.apply_async(held, (gate.clone(), 1500)).map_err(e)?; // task id 0
    // Its result stream is named in its task entry (field `r`).
    check(
        mp_testkit::until(Duration::from_secs(10), || pending(&stream).is_ok_and(|n| n == 1)),
        "the host holds the task",
    )?;
    let held: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .map_err(q_err)?;
    let replies: Vec<String> = held
        .iter()
        .filter_map(|(_, f)| {
            let at = f.iter().position(|k| k.as_slice() == b"r")?;
            String::from_utf8(f.get(at + 1)?.clone()).ok()
        })
        .collect();
    check(
        replies.len() == 1,
        format!("the held task names its result stream: {replies:?}"),
    )?;
    let t0 = Instant::now();
    // A result message by hand: id 0, worker "", Ok(bytes) whose bytes
    // declare 2^40 results.
    let mut msg = vec![0u8, 0, 0];
    let inner = lying();
    msg.extend(varint(inner.len() as u64));
    msg.extend(&inner);
    let mut sent = 0;
    for reply in &replies {
        for r in [&big, &msg] {
            redis::cmd("XADD")
                .arg(reply)
                .arg("*")
                .arg("r")
                .arg(r.as_slice())
                .query::<String>(&mut con)
                .map_err(q_err)?;
            sent += 1;
        }
    }
    check(sent >= 2, format!("no result stream among {replies:?}"))?;
    match waiting.get_timeout(Duration::from_secs(20)) {
        Err(ClusterError::Task(mp_pool::TaskError::Decode(m))) => check(!m.is_empty(), "a message")?,
        other => return Err(format!("the lying result: expected a decode error, got {other:?}")),
    }
    // The held task finishes; its real result finds no waiter.
    gate.put(0).map_err(|e| e.to_string())?;
    check(fresh.apply(square, (3,)).map_err(e)? == 9, "the next result")?;
    check(pool.apply(square, (4,)).map_err(e)? == 16, "the other pool's")?;
    let results_took = t0.elapsed();
    // A queue: each garbage item is a decode error, its neighbours arrive.
    let q: mp_cluster::Queue<Vec<u64>> = c.queue("hostile").map_err(e)?;
    q.put(vec![1]).map_err(|e| e.to_string())?;
    for item in [&big, &lying()] {
        redis::cmd("RPUSH")
            .arg(format!("{ns}:queue:hostile"))
            .arg(item.as_slice())
            .query::<i64>(&mut con)
            .map_err(q_err)?;
    }
    q.put(vec![2]).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let wait = Duration::from_secs(5);
    check(q.get_timeout(wait) == Ok(vec![1]), "the item before")?;
    check(
        matches!(q.get_timeout(wait), Err(GetError::Decode(_))),
        "16 MiB of garbage",
    )?;
    check(
        matches!(q.get_timeout(wait), Err(GetError::Decode(_))),
        "2^40 declared items",
    )?;
    check(q.get_timeout(wait) == Ok(vec![2]), "the item after")?;
    let queue_took = t0.elapsed();
    // A dict: each garbage value is a decode error for its key alone.
    let d: mp_cluster::Dict<String, Vec<u64>> = c.dict("hostile").map_err(e)?;
    d.insert("a".into(), vec![1]).map_err(e)?;
    let field = |k: &str| mp_codec::encode(&k.to_string()).map(|f| f.into_payload());
    for (k, v) in [("b", &big), ("c", &lying())] {
        redis::cmd("HSET")
            .arg(format!("{ns}:dict:hostile"))
            .arg(field(k).map_err(|e| e.to_string())?)
            .arg(v.as_slice())
            .query::<i64>(&mut con)
            .map_err(q_err)?;
    }
    let t0 = Instant::now();
    check(d.get(&"a".into()).map_err(e)? == Some(vec![1]), "a")?;
    check(matches!(d.get(&"b".into()), Err(ClusterError::Decode(_))), "b: 16 MiB")?;
    check(
        matches!(d.get(&"c".into()), Err(ClusterError::Decode(_))),
        "c: 2^40 items",
    )?;
    check(
        matches!(d.items(), Err(ClusterError::Decode(_))),
        "items() names the damage",
    )?;
    d.insert("d".into(), vec![4]).map_err(e)?;
    check(d.get(&"d".into()).map_err(e)? == Some(vec![4]), "d")?;
    check(d.remove(&"b".into()).is_err(), "removing b gives its decode error")?;
    check(!d.contains_key(&"b".into()).map_err(e)?, "and removes it")?;
    let dict_took = t0.elapsed();
    let after = c.workers().map_err(e)?;
    check(
        after.len() == 1 && after[0].pid == before,
        "the same host serves after the garbage",
    )?;
    let host_peak = peak_mib(host.pid()).unwrap_or(0);
    let my_peak = peak_mib(std::process::id()).unwrap_or(0);
    println!(
        "    garbage (16 MiB, and 2^40 declared items): tasks {:.0} ms, results {:.0} ms, queue {:.0} ms, \
         dict {:.0} ms; peak RSS host {host_peak} MiB, client {my_peak} MiB",
        tasks_took.as_secs_f64() * 1e3,
        results_took.as_secs_f64() * 1e3,
        queue_took.as_secs_f64() * 1e3,
        dict_took.as_secs_f64() * 1e3
    );
    check(host_peak < 512 && my_peak < 1024, "no huge allocation")
}

/// [`long`] on its first run; a rerun records its start and returns at
/// once. Its value is `v`.
fn long_once(
    started: mp_cluster::Queue<u32>,
    runs: mp_cluster::Dict<String, u32>,
    gate: mp_cluster::Queue<u64>,
    v: u64,
) -> u64 {
    let n = runs.get(&"n".to_string()).expect("reading runs").unwrap_or(0) + 1;
    runs.insert("n".to_string(), n).expect("counting runs");
    if n == 1 {
        long(started, gate);
    } else {
        started.put(std::process::id()).expect("recording a start");
    }
    v
}

fn the_client_s_lease_governs_takeover() -> Result<(), String> {
    let ns = redis()?.namespace("client_lease");
    // The hosts' own lease is the default 10 s: only the client's 1 s lease
    // can explain a takeover within a couple of seconds.
    let mut a = Host::start(&me(), &ns, 1, "lease-doomed")?;
    let lease = Duration::from_secs(1);
    let c = Cluster::builder(&redis()?.url())
        .namespace(&ns)
        .lease(lease)
        .connect()
        .map_err(e)?;
    wait_workers(&c, 1)?;
    let started: mp_cluster::Queue<u32> = c.queue("started").map_err(e)?;
    let pool = c.pool().map_err(e)?;
    let runs: mp_cluster::Dict<String, u32> = c.dict("runs").map_err(e)?;
    let gate: mp_cluster::Queue<u64> = c.queue("gate").map_err(e)?;
    let r = pool
        .apply_async(long_once, (started.clone(), runs, gate, 3000))
        .map_err(e)?;
    let first = started
        .get_timeout(Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    let _b = Host::start(&me(), &ns, 1, "lease-heir")?;
    wait_workers(&c, 2)?;
    // Past the lease: the living host renews it every third of the
    // client's lease, so nobody takes the task over (no second start comes
    // within a lease and a half).
    check(
        started.get_timeout(lease + lease / 2) == Err(mp_queue::GetError::Empty),
        "a task whose host lives stays there",
    )?;
    a.kill();
    let killed = Instant::now();
    let second = started
        .get_timeout(Duration::from_secs(20))
        .map_err(|e| e.to_string())?;
    let restarted = killed.elapsed();
    println!(
        "    with the client's 1 s lease (hosts' own: 10 s), the killed host's task restarted elsewhere \
         {:.0} ms after the kill",
        restarted.as_secs_f64() * 1e3
    );
    check(second != first, "it restarted in another process")?;
    check(
        restarted < lease + Duration::from_millis(1500),
        format!("took {restarted:?}"),
    )?;
    check(r.get_timeout(Duration::from_secs(20)).map_err(e)? == 3000, "its result")
}

/// Tasks of one item each, through the claim step: prints tasks/s.
fn per_task_throughput() -> Result<(), String> {
    let (_, _host, c) = one_host("throughput", 2, "host-rate")?;
    let pool = c.pool().map_err(e)?;
    let n = 1000u64;
    let t0 = Instant::now();
    let rs = (0..n)
        .map(|i| pool.apply_async(square, (i,)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    for (i, r) in rs.iter().enumerate() {
        check(
            r.get_timeout(Duration::from_secs(30)).map_err(e)? == square(i as u64),
            "a value",
        )?;
    }
    let apply = n as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let got = pool
        .imap_unordered(square, 0..n)
        .map_err(e)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let imap = n as f64 / t0.elapsed().as_secs_f64();
    check(got.len() == n as usize, "every result")?;
    println!(
        "    1 host x 2 processes, one item per task: apply_async {apply:.0} tasks/s, imap_unordered {imap:.0} tasks/s"
    );
    Ok(())
}
