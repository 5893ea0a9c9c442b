//! The cluster tier against a real `redis-server` (testkit starts one for
//! this binary): worker hosts are copies of this binary started as child
//! processes with `MP_CLUSTER_WORKER`, diverted before `main`, and killed
//! and reaped at the end of each test.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mp_cluster::{Cluster, ClusterError};
use mp_pool::TaskError;
use mp_testkit::{Harness, check};

mod common;
use common::{Host, cluster, me, one_host, pending, raw, redis, tasks_stream, wait_workers};

fn main() -> ExitCode {
    let tests: &[(&str, mp_testkit::Test)] = &[
        ("connect_error_names_the_address", connect_error_names_the_address),
        ("no_workers_after_a_bounded_wait", no_workers_after_a_bounded_wait),
        (
            "workers_register_and_map_ten_thousand",
            workers_register_and_map_ten_thousand,
        ),
        ("pool_methods", pool_methods),
        ("a_panicking_task_is_a_task_error", a_panicking_task_is_a_task_error),
        (
            "a_crashing_task_costs_a_process_not_the_host",
            a_crashing_task_costs_a_process_not_the_host,
        ),
        ("another_build_is_refused", another_build_is_refused),
        (
            "garbage_entries_do_not_stop_the_work",
            garbage_entries_do_not_stop_the_work,
        ),
        (
            "a_handle_of_one_host_is_an_encode_error",
            a_handle_of_one_host_is_an_encode_error,
        ),
        (
            "a_killed_host_s_tasks_move_within_the_lease",
            a_killed_host_s_tasks_move_within_the_lease,
        ),
        ("queue_across_hosts", queue_across_hosts),
        ("dict_across_hosts", dict_across_hosts),
        ("executor_across_hosts", executor_across_hosts),
        (
            "a_worker_in_code_serves_then_deregisters",
            a_worker_in_code_serves_then_deregisters,
        ),
    ];
    let mut h = Harness::new(tests.len() + 2);
    for &(name, f) in tests {
        h.run(name, f);
    }
    // Stops the shared server: runs after every test that needs it.
    h.run("redis_gone_is_a_clear_error", redis_gone_is_a_clear_error);
    h.run("nothing_left_behind", nothing_left_behind);
    h.finish()
}

fn square(x: u64) -> u64 {
    x * x
}

fn connect_error_names_the_address() -> Result<(), String> {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let t0 = Instant::now();
    match Cluster::connect(&url) {
        Err(e @ ClusterError::Connect { .. }) => {
            let msg = e.to_string();
            check(
                msg.contains(&format!("127.0.0.1:{port}")),
                format!("no address in: {msg}"),
            )?;
            check(
                t0.elapsed() < Duration::from_secs(11),
                "connect took longer than its timeout",
            )?;
            check(std::error::Error::source(&e).is_some(), "the error keeps its source")
        }
        other => Err(format!("expected a Connect error, got {other:?}")),
    }?;
    match Cluster::connect("not a url") {
        Err(ClusterError::Connect { addr, .. }) => check(addr == "not a url", format!("addr {addr}")),
        other => Err(format!("expected a Connect error for a bad URL, got {other:?}")),
    }
}

fn no_workers_after_a_bounded_wait() -> Result<(), String> {
    let ns = redis()?.namespace("no_workers");
    let c = cluster(&ns, Duration::from_millis(300))?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let r = pool.map(square, 0..10u64);
    check(
        matches!(r, Err(ClusterError::NoWorkers { .. })),
        format!("expected NoWorkers, got {r:?}"),
    )?;
    check(
        t0.elapsed() < Duration::from_secs(5),
        format!("waited {:?}", t0.elapsed()),
    )?;
    let r = pool.apply(square, (3,));
    check(
        matches!(r, Err(ClusterError::NoWorkers { .. })),
        format!("expected NoWorkers from apply, got {r:?}"),
    )
}

fn workers_register_and_map_ten_thousand() -> Result<(), String> {
    let ns = redis()?.namespace("map");
    let host = Host::start(&me(), &ns, 2, "host-a")?;
    let c = cluster(&ns, Duration::from_secs(10))?;
    let workers = wait_workers(&c, 1)?;
    let w = &workers[0];
    check(w.host == "host-a", format!("host label {:?}", w.host))?;
    check(w.pid == host.pid(), format!("pid {} vs {}", w.pid, host.pid()))?;
    check(w.processes == 2, format!("processes {}", w.processes))?;
    check(w.build == c.build_id(), "the worker runs this build")?;
    check(w.since_heartbeat() < Duration::from_secs(3), "a recent heartbeat")?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let v = pool.map(square, 0..10_000u64).map_err(|e| e.to_string())?;
    let took = t0.elapsed();
    check(v.len() == 10_000, format!("{} results", v.len()))?;
    check(
        v.iter().enumerate().all(|(i, &r)| r == (i as u64) * (i as u64)),
        "every result in its place",
    )?;
    println!(
        "    map of 10,000 over 1 host x 2 processes: {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    drop(host);
    // Its registration lapses with its heartbeat.
    check(
        mp_testkit::until(Duration::from_secs(10), || c.workers().is_ok_and(|w| w.is_empty())),
        "a killed worker host leaves the list within its registration's lifetime",
    )
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn slow_echo(x: u32) -> u32 {
    // Later items finish first, so completion order differs from item order.
    std::thread::sleep(Duration::from_millis(u64::from(20 - x.min(20)) * 5));
    x
}

fn pool_methods() -> Result<(), String> {
    let (_, _host, c) = one_host("methods", 2, "host-b")?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    let e = |e: ClusterError| e.to_string();
    check(pool.apply(add, (2, 40)).map_err(e)? == 42, "apply")?;
    let r = pool.apply_async(square, (9,)).map_err(e)?;
    check(r.get_timeout(Duration::from_secs(20)).map_err(e)? == 81, "apply_async")?;
    check(r.ready() && r.successful() == Some(true), "ready and successful")?;
    check(
        pool.starmap(add, vec![(1, 2), (3, 4), (5, 6)]).map_err(e)? == vec![3, 7, 11],
        "starmap",
    )?;
    check(
        pool.map_chunked(square, 0..100u64, 7).map_err(e)? == (0..100u64).map(|x| x * x).collect::<Vec<_>>(),
        "map_chunked",
    )?;
    check(
        pool.map(square, Vec::<u64>::new()).map_err(e)?.is_empty(),
        "an empty map",
    )?;
    let ordered: Vec<u32> = pool
        .imap(slow_echo, 0..20u32)
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    check(
        ordered == (0..20).collect::<Vec<_>>(),
        format!("imap keeps order: {ordered:?}"),
    )?;
    let mut unordered: Vec<u32> = pool
        .imap_unordered(slow_echo, 0..20u32)
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    unordered.sort_unstable();
    check(
        unordered == (0..20).collect::<Vec<_>>(),
        "imap_unordered yields every item",
    )?;
    let chunked: Vec<u64> = pool
        .imap_chunked(square, 0..50u64, 8)
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    check(chunked == (0..50u64).map(|x| x * x).collect::<Vec<_>>(), "imap_chunked")?;
    // A lazy, endless input: imap reads only what it needs.
    let first: Vec<u64> = pool
        .imap(square, 0u64..)
        .map_err(e)?
        .take(5)
        .collect::<Result<_, _>>()
        .map_err(e)?;
    check(first == vec![0, 1, 4, 9, 16], "imap over an endless input")?;
    let m = pool.map_async(square, 0..10u64).map_err(e)?;
    check(m.wait_timeout(Duration::from_secs(20)), "map_async becomes ready")?;
    check(m.get().map_err(e)?.len() == 10, "map_async")?;
    pool.close();
    check(matches!(pool.apply(square, (1,)), Err(ClusterError::Closed)), "closed")?;
    pool.join_timeout(Duration::from_secs(20)).map_err(e)
}

fn boom(x: u32) -> u32 {
    if x == 3 {
        panic!("item {x} is cursed");
    }
    x
}

fn a_panicking_task_is_a_task_error() -> Result<(), String> {
    let (_, _host, c) = one_host("panic", 1, "host-c")?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    let r = pool.apply(boom, (3,));
    check(
        matches!(&r, Err(ClusterError::Task(TaskError::Panicked(m))) if m.contains("item 3 is cursed")),
        format!("apply: {r:?}"),
    )?;
    let r = pool.map(boom, 0..10u32);
    check(
        matches!(&r, Err(ClusterError::Task(TaskError::Panicked(m))) if m.contains("item 3")),
        format!("map: {r:?}"),
    )?;
    // imap gives the neighbours of the failed item.
    let items: Vec<_> = pool.imap(boom, 0..6u32).map_err(|e| e.to_string())?.collect();
    check(
        items.len() == 6 && items[3].is_err() && items[4].as_ref().ok() == Some(&4),
        format!("imap: {items:?}"),
    )?;
    check(
        pool.apply(boom, (1,)).map_err(|e| e.to_string())? == 1,
        "the host goes on",
    )
}

fn crash(x: u32) -> u32 {
    if x == 0 {
        std::process::abort();
    }
    x
}

fn a_crashing_task_costs_a_process_not_the_host() -> Result<(), String> {
    let (ns, host, c) = one_host("crash", 1, "host-d")?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    let r = pool.apply(crash, (0,));
    check(
        matches!(r, Err(ClusterError::Task(TaskError::WorkerLost { exitcode: -6 }))),
        format!("expected WorkerLost(-6), got {r:?}"),
    )?;
    check(
        pool.apply(crash, (7,)).map_err(|e| e.to_string())? == 7,
        "the host goes on",
    )?;
    let w = c.workers().map_err(|e| e.to_string())?;
    check(w.len() == 1 && w[0].pid == host.pid(), "the same host serves")?;
    // A crash in the middle of a read: with max_deliveries(1), the chunk
    // that ran before it in the same read is answered once and never runs
    // again (the host queues again only what did not run).
    let c1 = Cluster::builder(&redis()?.url())
        .namespace(&ns)
        .max_deliveries(1)
        .connect()
        .map_err(|e| e.to_string())?;
    let pool1 = c1.pool().map_err(|e| e.to_string())?;
    let runs: mp_cluster::Queue<u32> = c1.queue("runs").map_err(|e| e.to_string())?;
    let gate: mp_cluster::Queue<bool> = c1.queue("gate").map_err(|e| e.to_string())?;
    let busy = pool1
        .apply_async(note_then_crash, (runs.clone(), 9, Some(gate.clone())))
        .map_err(|e| e.to_string())?;
    check(
        mp_testkit::until(Duration::from_secs(10), || {
            pending(&tasks_stream(&c1)).is_ok_and(|n| n == 1)
        }),
        "the host runs the busy task",
    )?;
    // Both wait in the stream while it runs, and are read together once
    // the gate lets it finish.
    let ran = pool1
        .apply_async(note_then_crash, (runs.clone(), 1, None))
        .map_err(|e| e.to_string())?;
    let crashed = pool1
        .apply_async(note_then_crash, (runs.clone(), 0, None))
        .map_err(|e| e.to_string())?;
    gate.put(true).map_err(|e| e.to_string())?;
    let wait = Duration::from_secs(20);
    check(busy.get_timeout(wait).map_err(|e| e.to_string())? == 9, "the busy task")?;
    check(
        ran.get_timeout(wait).map_err(|e| e.to_string())? == 1,
        "the task before the crash",
    )?;
    let r = crashed.get_timeout(wait);
    check(
        matches!(r, Err(ClusterError::Task(TaskError::WorkerLost { exitcode: -6 }))),
        format!("expected WorkerLost(-6), got {r:?}"),
    )?;
    // A last task: whatever was queued again before it has run by now.
    check(
        pool1
            .apply(note_then_crash, (runs.clone(), 5, None))
            .map_err(|e| e.to_string())?
            == 5,
        "a task after the crash",
    )?;
    let mut seen = Vec::new();
    while let Ok(v) = runs.get_nowait() {
        seen.push(v);
    }
    seen.sort_unstable();
    check(seen == vec![0, 1, 5, 9], format!("each ran once: {seen:?}"))
}

/// Records `x` (once `gate`, if any, opens), then crashes the process when `x` is 0.
fn note_then_crash(runs: mp_cluster::Queue<u32>, x: u32, gate: Option<mp_cluster::Queue<bool>>) -> u32 {
    if let Some(gate) = gate {
        // Busy until the test opens the gate.
        gate.get_timeout(Duration::from_secs(20)).expect("the gate opens");
    }
    runs.put(x).expect("recording a run");
    if x == 0 {
        std::process::abort();
    }
    x
}

fn another_build_is_refused() -> Result<(), String> {
    // Another build: this binary with another linker build id, as another
    // link of the same code would have.
    let other = std::env::temp_dir().join(format!("mp-cluster-other-build-{}", std::process::id()));
    let mut bytes = std::fs::read(me()).map_err(|e| e.to_string())?;
    let at = mp_sys::code::build_note(&bytes).ok_or("this binary has no build-id note")?;
    bytes[at.start] ^= 0xff;
    std::fs::write(&other, bytes).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    }
    let result = (|| {
        let ns = redis()?.namespace("mismatch");
        let _host = Host::start(&other, &ns, 1, "old-build")?;
        let c = cluster(&ns, Duration::from_millis(500))?;
        let w = wait_workers(&c, 1)?;
        check(w[0].build != c.build_id(), "the copy is another build")?;
        let pool = c.pool().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        match pool.map(square, 0..10u64) {
            Err(e @ ClusterError::BuildMismatch { .. }) => {
                let ClusterError::BuildMismatch { ours, ref theirs } = e else {
                    unreachable!()
                };
                check(ours == c.build_id() && theirs == &vec![w[0].build], format!("{e}"))?;
                check(e.to_string().contains("same binary"), e.to_string())?;
            }
            other => return Err(format!("expected BuildMismatch, got {other:?}")),
        }
        check(t0.elapsed() < Duration::from_secs(5), "a bounded wait")
    })();
    let _ = std::fs::remove_file(&other);
    result
}

fn garbage_entries_do_not_stop_the_work() -> Result<(), String> {
    let r = redis()?;
    let ns = r.namespace("garbage");
    let _host = Host::start(&me(), &ns, 1, "host-e")?;
    let c = cluster(&ns, Duration::from_secs(10))?;
    wait_workers(&c, 1)?;
    // Entries written by hand, as with redis-cli: no fields the worker
    // knows, a task field of garbage, and a worker registration of garbage.
    let stream = format!("{ns}:tasks:{:016x}", c.build_id());
    for line in [
        format!("XADD {stream} * hello world"),
        format!("XADD {stream} * b {:016x} t garbage", c.build_id()),
        format!("SET {ns}:worker:fake garbage"),
        format!("SADD {ns}:workers fake"),
    ] {
        let reply = r.command(&line)?;
        check(!reply.starts_with('-'), format!("{line}: {reply}"))?;
    }
    let pool = c.pool().map_err(|e| e.to_string())?;
    check(
        pool.map(square, 0..100u64).map_err(|e| e.to_string())? == (0..100u64).map(|x| x * x).collect::<Vec<_>>(),
        "the map runs past the garbage",
    )?;
    check(
        c.workers().map_err(|e| e.to_string())?.len() == 1,
        "garbage is not a worker",
    )?;
    // The garbage tasks were taken off the stream.
    check(
        mp_testkit::until(Duration::from_secs(5), || {
            r.command(&format!("XLEN {stream}")).is_ok_and(|n| n == ":0")
        }),
        "the stream is empty",
    )
}

fn len_of(q: mp_queue::Queue<u32>) -> usize {
    q.qsize()
}

fn a_handle_of_one_host_is_an_encode_error() -> Result<(), String> {
    let (_, _host, c) = one_host("handle", 1, "host-f")?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    let q = mp_queue::Queue::<u32>::new().map_err(|e| e.to_string())?;
    match pool.apply(len_of, (q,)) {
        Err(e @ ClusterError::Encode(_)) => check(e.to_string().contains("cluster::Queue"), e.to_string()),
        other => Err(format!("expected an Encode error, got {other:?}")),
    }
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn a_killed_host_s_tasks_move_within_the_lease() -> Result<(), String> {
    let ns = redis()?.namespace("lease");
    let lease = Duration::from_secs(1);
    let mut a = Host::start_with_lease(&me(), &ns, 1, "doomed", lease)?;
    // The client's lease travels with its tasks and governs takeover.
    let c = Cluster::builder(&redis()?.url())
        .namespace(&ns)
        .lease(lease)
        .connect()
        .map_err(|e| e.to_string())?;
    wait_workers(&c, 1)?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    // Long enough to outlast the second host's start and a lease and a half
    // on a loaded machine: a task that is ready before the kill would say
    // nothing about leases.
    let task = Duration::from_secs(4);
    let r = pool
        .apply_async(sleepy, (task.as_millis() as u64,))
        .map_err(|e| e.to_string())?;
    check(
        mp_testkit::until(Duration::from_secs(10), || {
            pending(&tasks_stream(&c)).is_ok_and(|n| n == 1)
        }),
        "the first host takes the task",
    )?;
    let b = Host::start_with_lease(&me(), &ns, 1, "survivor", lease)?;
    wait_workers(&c, 2)?;
    // Past a lease: the first host renews what it holds, so the task stays
    // (its result does not come within a lease and a half).
    check(
        !r.wait_timeout(lease + lease / 2),
        "a task whose host lives is not taken over",
    )?;
    a.kill();
    let killed = Instant::now();
    let v = r.get_timeout(Duration::from_secs(20)).map_err(|e| e.to_string())?;
    let moved = killed.elapsed();
    println!(
        "    the killed host's task finished elsewhere {:.1} s after the kill",
        moved.as_secs_f64()
    );
    check(v == task.as_millis() as u64, "its value")?;
    check(
        moved < lease * 2 + task + Duration::from_secs(3),
        format!("took {moved:?}"),
    )?;
    // At most once: with max_deliveries(1), the task of a lost host fails.
    let c1 = Cluster::builder(&redis()?.url())
        .namespace(&ns)
        .lease(lease)
        .max_deliveries(1)
        .connect()
        .map_err(|e| e.to_string())?;
    let pool1 = c1.pool().map_err(|e| e.to_string())?;
    let r1 = pool1.apply_async(sleepy, (3000,)).map_err(|e| e.to_string())?;
    check(
        mp_testkit::until(Duration::from_secs(10), || {
            pending(&tasks_stream(&c)).is_ok_and(|n| n == 1)
        }),
        "the survivor takes the task",
    )?;
    let _d = Host::start_with_lease(&me(), &ns, 1, "heir", lease)?;
    check(
        mp_testkit::until(Duration::from_secs(10), || {
            c.workers().is_ok_and(|w| w.iter().any(|w| w.host == "heir"))
        }),
        "the heir registers",
    )?;
    drop(b);
    match r1.get_timeout(Duration::from_secs(20)) {
        Err(ClusterError::Task(TaskError::WorkerLost { .. })) => {}
        other => return Err(format!("expected WorkerLost with max_deliveries(1), got {other:?}")),
    }
    // The killed host's processes left consumers in the group; holding
    // nothing and silent, they are swept out by a living host.
    check(
        mp_testkit::until(Duration::from_secs(30), || {
            consumers(&c).is_ok_and(|names| !names.iter().any(|n| n.starts_with("doomed:")))
        }),
        format!("the killed host's consumers are swept: {:?}", consumers(&c)),
    )
}

/// The names of the consumers in the workers' group.
fn consumers(c: &Cluster) -> Result<Vec<String>, String> {
    let mut con = raw()?;
    let stream = tasks_stream(c);
    let rows: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&stream)
        .arg("workers")
        .query(&mut con)
        .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match row.get(1) {
            Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        })
        .collect())
}

fn produce(q: mp_cluster::Queue<u64>, n: u64) -> u64 {
    for i in 0..n {
        q.put(i * 10).expect("put");
    }
    n
}

fn queue_across_hosts() -> Result<(), String> {
    let r = redis()?;
    let ns = r.namespace("queue");
    let _host = Host::start(&me(), &ns, 1, "host-q")?;
    let c = cluster(&ns, Duration::from_secs(10))?;
    wait_workers(&c, 1)?;
    let q: mp_cluster::Queue<u64> = c.queue("numbers").map_err(|e| e.to_string())?;
    // The handle travels to a task on the worker host, which fills it.
    let pool = c.pool().map_err(|e| e.to_string())?;
    check(
        pool.apply(produce, (q, 5)).map_err(|e| e.to_string())? == 5,
        "the task ran",
    )?;
    let q: mp_cluster::Queue<u64> = c.queue("numbers").map_err(|e| e.to_string())?;
    check(q.qsize().map_err(|e| e.to_string())? == 5, "five queued")?;
    let got: Vec<u64> = (0..5)
        .map(|_| q.get_timeout(Duration::from_secs(5)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    check(got == vec![0, 10, 20, 30, 40], format!("FIFO: {got:?}"))?;
    let t0 = Instant::now();
    check(
        q.get_timeout(Duration::from_millis(300)) == Err(mp_queue::GetError::Empty),
        "empty after the timeout",
    )?;
    check(t0.elapsed() < Duration::from_secs(3), "a bounded wait")?;
    check(q.get_nowait() == Err(mp_queue::GetError::Empty), "get_nowait on empty")?;
    // A bound enforced by the server.
    let b: mp_cluster::Queue<u64> = c.queue_with_maxsize("bounded", 2).map_err(|e| e.to_string())?;
    b.put(1).map_err(|e| e.to_string())?;
    b.put_nowait(2).map_err(|e| e.to_string())?;
    match b.put_nowait(3) {
        Err(e) if e.is_full() => check(e.into_inner() == 3, "the item comes back")?,
        other => return Err(format!("expected Full, got {other:?}")),
    }
    check(b.is_full().map_err(|e| e.to_string())?, "is_full")?;
    check(
        b.put_timeout(3, Duration::from_millis(100)).is_err(),
        "put_timeout on a full queue",
    )?;
    check(b.get().map_err(|e| e.to_string())? == 1, "get frees a place")?;
    b.put_timeout(3, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    // Garbage pushed by hand is a decode error for that item alone.
    let reply = r.command(&format!("RPUSH {ns}:queue:numbers garbage-bytes"))?;
    check(reply == ":1", reply)?;
    q.put(7).map_err(|e| e.to_string())?;
    check(
        matches!(
            q.get_timeout(Duration::from_secs(5)),
            Err(mp_queue::GetError::Decode(_))
        ),
        "garbage is a decode error",
    )?;
    check(q.get_timeout(Duration::from_secs(5)) == Ok(7), "its neighbour arrives")?;
    Ok(())
}

fn count_into(d: mp_cluster::Dict<String, u64>, word: String) -> Option<u64> {
    let n = d.get(&word).expect("get").unwrap_or(0) + 1;
    d.insert(word, n).expect("insert");
    Some(n)
}

fn dict_across_hosts() -> Result<(), String> {
    let r = redis()?;
    let ns = r.namespace("dict");
    let _host = Host::start(&me(), &ns, 1, "host-d")?;
    let c = cluster(&ns, Duration::from_secs(10))?;
    wait_workers(&c, 1)?;
    let e = |e: ClusterError| e.to_string();
    let d: mp_cluster::Dict<String, u64> = c.dict("counts").map_err(e)?;
    check(d.is_empty().map_err(e)?, "a new dict is empty")?;
    check(d.insert("a".into(), 1).map_err(e)?.is_none(), "first insert")?;
    check(
        d.insert("a".into(), 2).map_err(e)? == Some(1),
        "insert gives the old value",
    )?;
    let pool = c.pool().map_err(e)?;
    let dd: mp_cluster::Dict<String, u64> = c.dict("counts").map_err(e)?;
    check(
        pool.apply(count_into, (dd, "a".to_string())).map_err(e)? == Some(3),
        "a task updates it",
    )?;
    check(d.get(&"a".into()).map_err(e)? == Some(3), "and the client sees it")?;
    d.update(vec![("b".to_string(), 20), ("c".to_string(), 30)])
        .map_err(e)?;
    check(
        d.len().map_err(e)? == 3 && d.contains_key(&"b".into()).map_err(e)?,
        "update",
    )?;
    let mut keys = d.keys().map_err(e)?;
    keys.sort();
    check(keys == ["a", "b", "c"], format!("keys {keys:?}"))?;
    let mut items = d.items().map_err(e)?;
    items.sort();
    check(
        items == [("a".into(), 3), ("b".into(), 20), ("c".into(), 30)],
        format!("{items:?}"),
    )?;
    check(d.values().map_err(e)?.iter().sum::<u64>() == 53, "values")?;
    check(d.remove(&"b".into()).map_err(e)? == Some(20), "remove")?;
    check(d.get(&"b".into()).map_err(e)?.is_none(), "removed")?;
    // A value written by hand is a decode error, and the others stay.
    let field = String::from_utf8(
        mp_codec::encode(&"x".to_string())
            .map_err(|e| e.to_string())?
            .into_payload(),
    )
    .map_err(|e| e.to_string())?;
    let reply = r.command(&format!("HSET {ns}:dict:counts {field} garbage"))?;
    check(reply == ":1", reply)?;
    check(
        matches!(d.get(&"x".into()), Err(ClusterError::Decode(_))),
        "garbage value",
    )?;
    check(d.get(&"c".into()).map_err(e)? == Some(30), "its neighbour")?;
    d.clear().map_err(e)?;
    check(d.is_empty().map_err(e)?, "cleared")
}

fn executor_across_hosts() -> Result<(), String> {
    use mp_pool::ExecutorError;
    use mp_pool::executor::{ReturnWhen, as_completed, wait};
    let (_, _host, c) = one_host("executor", 2, "host-x")?;
    let e = |e: ClusterError| e.to_string();
    let ex = c.executor().map_err(e)?;
    // Its futures are the local executor's: as_completed and wait take them.
    let fs = (0..20u64)
        .map(|i| ex.submit(square, (i,)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let mut got: Vec<u64> = as_completed(&fs)
        .map(|f| f.result())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    got.sort_unstable();
    check(got == (0..20u64).map(square).collect::<Vec<_>>(), format!("{got:?}"))?;
    let r = wait(&fs, Some(Duration::from_secs(10)), ReturnWhen::AllCompleted);
    check(r.done.len() == 20 && r.not_done.is_empty(), format!("{r:?}"))?;
    check(
        !fs[0].cancel() && !fs[0].cancelled(),
        "a finished future stays finished",
    )?;
    // A panicking task fails its future alone.
    let bad = ex.submit(boom, (3,)).map_err(e)?;
    let good = ex.submit(boom, (4,)).map_err(e)?;
    match bad.result_timeout(Duration::from_secs(20)) {
        Err(ExecutorError::Task(TaskError::Panicked(m))) => check(m.contains("cursed"), m)?,
        other => return Err(format!("expected Panicked, got {other:?}")),
    }
    check(good.result_timeout(Duration::from_secs(20)) == Ok(4), "its neighbour")?;
    // map: in order, an Err for the failed item only.
    let v: Vec<u64> = ex
        .map(square, 0..1000u64)
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    check(v == (0..1000u64).map(square).collect::<Vec<_>>(), "map in order")?;
    let m: Vec<Result<u32, ExecutorError>> = ex.map(boom, 0..6u32).map_err(e)?.collect();
    check(
        m.iter().enumerate().all(|(i, r)| match r {
            Ok(v) => i != 3 && *v == i as u32,
            Err(ExecutorError::Task(TaskError::Panicked(_))) => i == 3,
            Err(_) => false,
        }),
        format!("{m:?}"),
    )?;
    // shutdown(cancel_futures): the tasks no host claimed are cancelled,
    // the claimed ones finish, and nothing new is taken.
    let slow = (0..8)
        .map(|_| ex.submit(sleepy, (500,)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let t0 = Instant::now();
    ex.shutdown(true, true);
    check(
        t0.elapsed() < Duration::from_secs(5),
        format!("shutdown took {:?}", t0.elapsed()),
    )?;
    check(
        slow.iter().all(|f| {
            f.done() && (f.result() == Ok(500) || (f.cancelled() && f.result() == Err(ExecutorError::Cancelled)))
        }),
        format!("{slow:?}"),
    )?;
    check(
        slow.iter().any(|f| f.cancelled()),
        format!("some are cancelled: {slow:?}"),
    )?;
    check(
        matches!(ex.submit(square, (1,)), Err(ClusterError::Closed)),
        "no task after shutdown",
    )?;
    // An executor dropped with tasks queued waits for them.
    let ex2 = c.executor().map_err(e)?;
    let f = ex2.submit(sleepy, (200,)).map_err(e)?;
    drop(ex2);
    check(f.done() && f.result() == Ok(200), format!("{f:?}"))?;
    // With no worker host of this build left, the futures fail (Python's
    // BrokenProcessPool) once the cluster's worker_wait has passed.
    let ns2 = redis()?.namespace("executor_broken");
    let host = Host::start(&me(), &ns2, 1, "host-y")?;
    let c2 = cluster(&ns2, Duration::from_secs(1))?;
    wait_workers(&c2, 1)?;
    let ex3 = c2.executor().map_err(e)?;
    let f = ex3.submit(sleepy, (30_000,)).map_err(e)?;
    drop(host);
    match f.result_timeout(Duration::from_secs(20)) {
        Err(ExecutorError::BrokenProcessPool) => Ok(()),
        other => Err(format!("expected BrokenProcessPool, got {other:?}")),
    }
}

/// A worker host started in code, in a spawned child (so its local
/// processes and their fork server end with it).
fn serve_in_code(url: String, ns: String) -> Result<(), String> {
    mp_cluster::Worker::builder(&url)
        .namespace(ns)
        .processes(1)
        .host("in-code")
        .run_timeout(Duration::from_secs(3))
        .map_err(|e| e.to_string())
}

fn a_worker_in_code_serves_then_deregisters() -> Result<(), String> {
    let ns = redis()?.namespace("in_code");
    let mut p =
        mp_process::get_context(mp_process::StartMethod::Spawn).process(serve_in_code, (redis()?.url(), ns.clone()));
    p.start().map_err(|e| e.to_string())?;
    let c = cluster(&ns, Duration::from_secs(10))?;
    let served = (|| {
        let w = wait_workers(&c, 1)?;
        check(w[0].host == "in-code" && Some(w[0].pid) == p.pid(), format!("{w:?}"))?;
        let pool = c.pool().map_err(|e| e.to_string())?;
        check(pool.apply(square, (7,)).map_err(|e| e.to_string())? == 49, "it serves")
    })();
    let code = mp_testkit::finish(&mut p)?;
    served?;
    check(code == 0, format!("the worker host exited with {code}"))?;
    check(
        c.workers().map_err(|e| e.to_string())?.is_empty(),
        "it deregistered as it stopped",
    )
}

fn redis_gone_is_a_clear_error() -> Result<(), String> {
    let r = redis()?;
    let ns = r.namespace("gone");
    let c = cluster(&ns, Duration::from_secs(1))?;
    let pool = c.pool().map_err(|e| e.to_string())?;
    mp_testkit::redis::stop_now();
    let t0 = Instant::now();
    match c.workers() {
        Err(e @ (ClusterError::Connect { .. } | ClusterError::Redis { .. })) => {
            check(e.to_string().contains("Redis"), e.to_string())?;
        }
        other => return Err(format!("expected a Connect or Redis error, got {other:?}")),
    }
    match pool.apply(square, (2,)) {
        Err(ClusterError::Connect { .. } | ClusterError::Redis { .. }) => {}
        other => return Err(format!("expected a Connect or Redis error from apply, got {other:?}")),
    }
    match Cluster::connect(&r.url()) {
        Err(e @ ClusterError::Connect { .. }) => check(
            e.to_string().contains(&format!("127.0.0.1:{}", r.port())),
            e.to_string(),
        )?,
        other => return Err(format!("expected a Connect error, got {other:?}")),
    }
    drop(pool);
    check(
        t0.elapsed() < Duration::from_secs(15),
        format!("took {:?}", t0.elapsed()),
    )
}

/// No worker host (nor any of its processes) outlives its test.
fn nothing_left_behind() -> Result<(), String> {
    mp_testkit::nothing_left_behind(&[redis()?.pid()], |exe| {
        exe.to_string_lossy().contains("mp-cluster-other-build")
    })
}
