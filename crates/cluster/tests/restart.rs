//! The cluster tier while its Redis restarts: each test has a
//! `redis-server` of its own (testkit's restartable one: a directory of its
//! own, an append-only file, the same port on every start) and worker
//! hosts that are copies of this binary started with `MP_CLUSTER_WORKER`.
//! The server is stopped (`SHUTDOWN SAVE`, waited for on its pidfd) and
//! started again with its data, or wiped in between so it comes back
//! empty.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mp_cluster::{Cluster, ClusterError, WorkerInfo};
use mp_pool::{ExecutorError, TaskError};
use mp_testkit::redis::{HostSpec, RestartableRedis, WorkerHost};
use mp_testkit::{Harness, check};

fn main() -> ExitCode {
    let tests: &[(&str, mp_testkit::Test)] = &[
        (
            "pending_map_finishes_after_a_restart_with_data",
            pending_map_finishes_after_a_restart_with_data,
        ),
        ("imap_through_a_restart_completes", imap_through_a_restart_completes),
        (
            "a_call_right_after_a_quick_restart_works",
            a_call_right_after_a_quick_restart_works,
        ),
        (
            "a_host_survives_a_restart_without_data",
            a_host_survives_a_restart_without_data,
        ),
        (
            "a_host_started_while_redis_is_down_waits",
            a_host_started_while_redis_is_down_waits,
        ),
        ("pending_calls_fail_with_data_lost", pending_calls_fail_with_data_lost),
        (
            "a_call_fails_within_its_timeout_while_redis_is_away",
            a_call_fails_within_its_timeout_while_redis_is_away,
        ),
        (
            "a_worker_in_code_stops_while_redis_is_away",
            a_worker_in_code_stops_while_redis_is_away,
        ),
    ];
    let mut h = Harness::new(tests.len() + 1);
    for &(name, f) in tests {
        h.run(name, f);
    }
    h.run("nothing_left_behind", nothing_left_behind);
    h.finish()
}

fn server() -> Result<RestartableRedis, String> {
    mp_testkit::redis::restartable()
}

/// Worker hosts: copies of this executable (testkit's `WorkerHost`),
/// killed and reaped when dropped.
struct Host;

impl Host {
    fn start(url: &str, ns: &str, processes: usize, label: &str, lease: Duration) -> Result<WorkerHost, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        WorkerHost::start(&HostSpec {
            exe: &exe,
            url,
            namespace: ns,
            processes,
            label,
            lease,
        })
    }
}

const LEASE: Duration = Duration::from_secs(10);

fn cluster(r: &RestartableRedis, ns: &str) -> Result<Cluster, String> {
    Cluster::builder(&r.url())
        .namespace(ns)
        .worker_wait(Duration::from_secs(10))
        .connect()
        .map_err(|e| e.to_string())
}

/// Waits (at most 20 s) until `n` workers are listed; how long that took.
fn wait_workers(c: &Cluster, n: usize) -> Result<(Vec<WorkerInfo>, Duration), String> {
    let t0 = Instant::now();
    c.wait_workers(Duration::from_secs(20), |w| w.len() >= n)
        .map_err(|e| format!("listing the workers: {e}"))?
        .map(|w| (w, t0.elapsed()))
        .ok_or(format!("fewer than {n} workers registered within 20 s"))
}

/// How many entries of the task stream some host holds.
fn pending(r: &RestartableRedis, c: &Cluster) -> usize {
    let stream = format!("{}:tasks:{:016x}", c.namespace(), c.build_id());
    // The first line of the XPENDING summary: `*4`, then `:N`; read N.
    let Ok(client) = redis::Client::open(r.url()) else {
        return 0;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return 0;
    };
    let _ = con.set_read_timeout(Some(Duration::from_secs(2)));
    match redis::cmd("XPENDING")
        .arg(&stream)
        .arg("workers")
        .query::<redis::Value>(&mut con)
    {
        Ok(redis::Value::Array(parts)) => match parts.first() {
            Some(redis::Value::Int(n)) => *n as usize,
            _ => 0,
        },
        _ => 0,
    }
}

fn square_slowly(x: u64) -> u64 {
    // A task's simulated work.
    std::thread::sleep(Duration::from_millis(1));
    x * x
}

fn sleepy(ms: u64) -> u64 {
    // A task's simulated work.
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn square(x: u64) -> u64 {
    x * x
}

/// Stops the server with its data, keeps it down for `outage`, starts it
/// again; how long it was away.
fn restart_with_data(r: &RestartableRedis, outage: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    r.stop()?;
    // The deliberate length of the outage.
    std::thread::sleep(outage);
    r.start()?;
    Ok(t0.elapsed())
}

fn pending_map_finishes_after_a_restart_with_data() -> Result<(), String> {
    let r = server()?;
    let ns = r.namespace("restart_map");
    let _a = Host::start(&r.url(), &ns, 2, "host-a", LEASE)?;
    let _b = Host::start(&r.url(), &ns, 2, "host-b", LEASE)?;
    let c = cluster(&r, &ns)?;
    wait_workers(&c, 2)?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    const N: u64 = 4000;
    let m = pool.map_async(square_slowly, 0..N).map_err(|e| e.to_string())?;
    check(
        mp_testkit::until(Duration::from_secs(10), || pending(&r, &c) > 0),
        "the hosts take tasks",
    )?;
    check(!m.ready(), "the map is still running at the restart")?;
    let outage = restart_with_data(&r, Duration::from_secs(1))?;
    let back = Instant::now();
    let v = m.get_timeout(Duration::from_secs(30)).map_err(|e| e.to_string())?;
    let finish = back.elapsed();
    check(v.len() == N as usize, format!("{} results of {N}", v.len()))?;
    check(
        v.iter().enumerate().all(|(i, &x)| x == (i as u64) * (i as u64)),
        "every result in its place",
    )?;
    println!(
        "    map of {N} over 2 hosts x 2 processes: server away {:.0} ms; finished {:.0} ms after it was back",
        outage.as_secs_f64() * 1e3,
        finish.as_secs_f64() * 1e3
    );
    Ok(())
}

fn echo_slowly(x: u32) -> u32 {
    // A task's simulated work.
    std::thread::sleep(Duration::from_millis(5));
    x
}

fn imap_through_a_restart_completes() -> Result<(), String> {
    let r = server()?;
    let ns = r.namespace("restart_imap");
    let _a = Host::start(&r.url(), &ns, 2, "host-i", LEASE)?;
    let c = cluster(&r, &ns)?;
    wait_workers(&c, 1)?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    const N: u32 = 400;
    let mut it = pool.imap(echo_slowly, 0..N).map_err(|e| e.to_string())?;
    let mut got = Vec::with_capacity(N as usize);
    let mut outage = Duration::ZERO;
    let mut back = Instant::now();
    while let Some(x) = it.next_timeout(Duration::from_secs(30)) {
        got.push(x.map_err(|e| format!("item {}: {e}", got.len()))?);
        if got.len() == 100 {
            outage = restart_with_data(&r, Duration::from_millis(500))?;
            back = Instant::now();
        }
    }
    let finish = back.elapsed();
    check(
        got == (0..N).collect::<Vec<_>>(),
        format!(
            "{} items, in order: {}",
            got.len(),
            got.windows(2).all(|w| w[1] == w[0] + 1)
        ),
    )?;
    println!(
        "    imap of {N}, restarted after 100: server away {:.0} ms; the other {} came {:.0} ms after it was back",
        outage.as_secs_f64() * 1e3,
        N - 100,
        finish.as_secs_f64() * 1e3
    );
    Ok(())
}

fn a_call_right_after_a_quick_restart_works() -> Result<(), String> {
    let r = server()?;
    let ns = r.namespace("quick");
    let _a = Host::start(&r.url(), &ns, 1, "host-q", LEASE)?;
    let c = cluster(&r, &ns)?;
    wait_workers(&c, 1)?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    check(pool.apply(square, (3,)).map_err(|e| e.to_string())? == 9, "before")?;
    let d: mp_cluster::Dict<String, u64> = c.dict("d").map_err(|e| e.to_string())?;
    d.insert("k".into(), 7).map_err(|e| e.to_string())?;
    let q: mp_cluster::Queue<u64> = c.queue("q").map_err(|e| e.to_string())?;
    q.put(11).map_err(|e| e.to_string())?;
    let outage = restart_with_data(&r, Duration::ZERO)?;
    // Every connection the client held is closed now: the calls reconnect.
    let t0 = Instant::now();
    let w = c.workers().map_err(|e| format!("workers() right after: {e}"))?;
    check(w.len() == 1, format!("{} workers", w.len()))?;
    check(
        pool.apply(square, (4,))
            .map_err(|e| format!("apply right after: {e}"))?
            == 16,
        "after",
    )?;
    check(
        d.get(&"k".into()).map_err(|e| format!("dict get right after: {e}"))? == Some(7),
        "the dict kept its entry",
    )?;
    check(
        q.get_timeout(Duration::from_secs(5))
            .map_err(|e| format!("queue get right after: {e}"))?
            == 11,
        "the queue kept its item",
    )?;
    println!(
        "    restart took {:.0} ms; workers(), apply, a dict get and a queue get right after it: {:.1} ms",
        outage.as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn a_host_survives_a_restart_without_data() -> Result<(), String> {
    let r = server()?;
    let ns = r.namespace("wiped");
    let host = Host::start(&r.url(), &ns, 1, "host-w", LEASE)?;
    let c = cluster(&r, &ns)?;
    let (w, _) = wait_workers(&c, 1)?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    check(pool.apply(square, (5,)).map_err(|e| e.to_string())? == 25, "before")?;
    r.stop()?;
    r.wipe()?;
    r.start()?;
    // The namespace's epoch (set by the apply) is gone with the data.
    let epoch = r.command(&format!("EXISTS {ns}:epoch"))?;
    check(
        epoch == ":0",
        format!("the server came back empty: EXISTS epoch {epoch}"),
    )?;
    let (again, took) = wait_workers(&c, 1)?;
    check(
        again[0].id == w[0].id && again[0].pid == host.pid(),
        format!("the same host: {:?} then {:?}", w[0].id, again[0].id),
    )?;
    let v = pool.map(square, 0..100u64).map_err(|e| e.to_string())?;
    check(v == (0..100u64).map(square).collect::<Vec<_>>(), "a map after")?;
    println!(
        "    the host registered again {:.0} ms after the empty server was back; a map of 100 after: right",
        took.as_secs_f64() * 1e3
    );
    Ok(())
}

fn a_host_started_while_redis_is_down_waits() -> Result<(), String> {
    let r = server()?;
    let ns = r.namespace("early");
    r.stop()?;
    let _a = Host::start(&r.url(), &ns, 1, "host-early", LEASE)?;
    // The deliberate length of the outage: the host starts into it.
    std::thread::sleep(Duration::from_secs(1));
    let up = Instant::now();
    r.start()?;
    let c = cluster(&r, &ns)?;
    let (w, _) = wait_workers(&c, 1)?;
    let took = up.elapsed();
    check(w[0].host == "host-early", format!("{:?}", w[0].host))?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    check(pool.apply(square, (6,)).map_err(|e| e.to_string())? == 36, "it serves")?;
    println!(
        "    a host started 1 s before the server registered {:.0} ms after the server was started again",
        took.as_secs_f64() * 1e3
    );
    Ok(())
}

fn pending_calls_fail_with_data_lost() -> Result<(), String> {
    let r = server()?;
    let ns = r.namespace("lost");
    let _a = Host::start(&r.url(), &ns, 1, "host-l", LEASE)?;
    let c = cluster(&r, &ns)?;
    wait_workers(&c, 1)?;
    let e = |e: ClusterError| e.to_string();
    let pool = c.pool().map_err(e)?;
    let ex = c.executor().map_err(e)?;
    let m = pool.map_async(sleepy, vec![400u64; 8]).map_err(e)?;
    let one = pool.apply_async(sleepy, (3000,)).map_err(e)?;
    let f = ex.submit(sleepy, (3000,)).map_err(e)?;
    let mut it = pool.imap(sleepy, vec![300u64; 6]).map_err(e)?;
    // imap queues lazily: a first (timed-out) call queues its window.
    let first = it.next_timeout(Duration::from_millis(10));
    check(
        matches!(first, Some(Err(ClusterError::Task(TaskError::Timeout)))),
        format!("imap's first call: {first:?}"),
    )?;
    check(
        mp_testkit::until(Duration::from_secs(10), || pending(&r, &c) > 0),
        "the host takes tasks",
    )?;
    r.stop()?;
    r.wipe()?;
    let back = Instant::now();
    let start = r.start()?;
    let got = m.get_timeout(Duration::from_secs(20));
    let after = back.elapsed();
    match &got {
        Err(e @ ClusterError::DataLost { .. }) => check(e.to_string().contains("appendonly"), e.to_string())?,
        other => return Err(format!("map: expected DataLost, got {other:?}")),
    }
    check(
        one.wait_timeout(Duration::from_secs(20)) && one.ready() && one.successful() == Some(false),
        "a lost task is ready, and not successful",
    )?;
    let got = one.get_timeout(Duration::from_secs(20));
    check(
        matches!(got, Err(ClusterError::DataLost { .. })),
        format!("apply: {got:?}"),
    )?;
    let got = f.result_timeout(Duration::from_secs(20));
    check(
        matches!(&got, Err(ExecutorError::Task(TaskError::Lost(m))) if m.contains("without the data")),
        format!("executor future: {got:?}"),
    )?;
    let mut items = Vec::new();
    while let Some(x) = it.next_timeout(Duration::from_secs(20)) {
        items.push(x);
    }
    check(
        items
            .last()
            .is_some_and(|x| matches!(x, Err(ClusterError::DataLost { .. }))),
        format!("imap ends with DataLost: {items:?}"),
    )?;
    // New work runs.
    wait_workers(&c, 1)?;
    check(
        pool.map(square, 0..50u64).map_err(e)? == (0..50u64).map(square).collect::<Vec<_>>(),
        "a map after",
    )?;
    check(ex.submit(square, (7,)).map_err(e)?.result() == Ok(49), "a future after")?;
    println!(
        "    the server came back empty: the pending map failed with DataLost {:.0} ms after it was started \
         (its start took {:.0} ms)",
        after.as_secs_f64() * 1e3,
        start.as_secs_f64() * 1e3
    );
    Ok(())
}

fn a_call_fails_within_its_timeout_while_redis_is_away() -> Result<(), String> {
    let r = server()?;
    let ns = r.namespace("away");
    let _a = Host::start(&r.url(), &ns, 1, "host-x", LEASE)?;
    let wait = Duration::from_secs(1);
    let c = Cluster::builder(&r.url())
        .namespace(&ns)
        .worker_wait(wait)
        .connect()
        .map_err(|e| e.to_string())?;
    wait_workers(&c, 1)?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    let slow = pool.apply_async(sleepy, (1500,)).map_err(|e| e.to_string())?;
    check(
        mp_testkit::until(Duration::from_secs(10), || pending(&r, &c) > 0),
        "the host takes the task",
    )?;
    r.stop()?;
    let away = Instant::now();
    let timeout = Duration::from_millis(500);
    let t0 = Instant::now();
    let got = slow.get_timeout(timeout);
    let took_get = t0.elapsed();
    match &got {
        Err(e @ (ClusterError::Redis { .. } | ClusterError::Connect { .. })) => {
            check(e.to_string().contains("Redis"), e.to_string())?
        }
        other => return Err(format!("get_timeout: expected a Redis error, got {other:?}")),
    }
    check(
        took_get < timeout + Duration::from_millis(300),
        format!("get_timeout({timeout:?}) took {took_get:?}"),
    )?;
    let t0 = Instant::now();
    let got = pool.map(square, 0..10u64);
    let took_map = t0.elapsed();
    check(
        matches!(got, Err(ClusterError::Connect { .. } | ClusterError::Redis { .. })),
        format!("map: {got:?}"),
    )?;
    check(
        took_map < wait + Duration::from_millis(700),
        format!("map with worker_wait {wait:?} took {took_map:?}"),
    )?;
    let t0 = Instant::now();
    let got = c.workers();
    let took_workers = t0.elapsed();
    check(
        matches!(got, Err(ClusterError::Connect { .. })),
        format!("workers: {got:?}"),
    )?;
    // Back with its data: the task held through the outage finishes.
    r.start()?;
    let outage = away.elapsed();
    let v = slow.get_timeout(Duration::from_secs(20)).map_err(|e| e.to_string())?;
    check(v == 1500, "the task's value")?;
    println!(
        "    server away: get_timeout({} ms) failed in {:.0} ms, map (worker_wait 1 s) in {:.0} ms, workers() in {:.1} ms; \
         after {:.0} ms away the held task finished",
        timeout.as_millis(),
        took_get.as_secs_f64() * 1e3,
        took_map.as_secs_f64() * 1e3,
        took_workers.as_secs_f64() * 1e3,
        outage.as_secs_f64() * 1e3
    );
    Ok(())
}

/// A worker host started in code, in a spawned child, with a short lease,
/// serving for `serve_ms`.
fn serve_in_code(url: String, ns: String, serve_ms: u64) -> Result<(), String> {
    mp_cluster::Worker::builder(&url)
        .namespace(ns)
        .processes(1)
        .host("in-code")
        .lease(Duration::from_millis(500))
        .run_timeout(Duration::from_millis(serve_ms))
        .map_err(|e| e.to_string())
}

fn a_worker_in_code_stops_while_redis_is_away() -> Result<(), String> {
    let r = server()?;
    let ns = r.namespace("stop_away");
    let serve = Duration::from_millis(1500);
    let mut p = mp_process::get_context(mp_process::StartMethod::Spawn)
        .process(serve_in_code, (r.url(), ns.clone(), serve.as_millis() as u64));
    p.start().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let c = cluster(&r, &ns)?;
    let result = (|| {
        wait_workers(&c, 1)?;
        let pool = c.pool().map_err(|e| e.to_string())?;
        // Done while the server is away: its result cannot be sent when
        // the host's time is up.
        let _held = pool.apply_async(sleepy, (300,)).map_err(|e| e.to_string())?;
        check(
            mp_testkit::until(Duration::from_secs(10), || pending(&r, &c) > 0),
            "the host takes the task",
        )?;
        r.stop().map(|_| ())
    })();
    let code = mp_testkit::finish(&mut p)?;
    let took = started.elapsed();
    result?;
    check(code == 0, format!("the worker host exited with {code}"))?;
    // Its time, then a lease for the task it holds, then a lease for the
    // result it cannot send (without a bound, it would wait for ever).
    check(
        took < serve + Duration::from_secs(3),
        format!("the host stopped {took:?} after its start (serving {serve:?}, lease 500 ms)"),
    )?;
    println!(
        "    a host serving {} ms (lease 500 ms) stopped {:.0} ms after its start with the server away",
        serve.as_millis(),
        took.as_secs_f64() * 1e3
    );
    Ok(())
}

/// No worker host, server or local process outlives its test.
fn nothing_left_behind() -> Result<(), String> {
    mp_testkit::nothing_left_behind(&[], |_| false)
}
