//! A tour of the cluster tier on one machine: a private `redis-server`, two
//! worker "hosts" (copies of this binary diverted by `MP_CLUSTER_WORKER`,
//! each with its own host label), a `map` over 10,000 items, a host killed
//! mid-task whose tasks move to the other within the lease, and a
//! `cluster::Queue` and a `cluster::Dict` shared with tasks, and the
//! executor's futures going through `executor::as_completed`.
//!
//! Needs `redis-server` on `PATH` (`cargo xtask` skips it otherwise). It
//! starts the server on a free port of 127.0.0.1 without persistence, and
//! kills and reaps the server and the hosts when it ends, also on an error.
//!
//! Run with `cargo run -p examples --example cluster_tour` (the examples
//! package turns on the `cluster` feature).

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiprocessing::cluster::{Cluster, Dict, HOST_ENV, LEASE_ENV, PROCESSES_ENV, Queue, WORKER_ENV};
use multiprocessing::executor::as_completed;

type Res<T> = Result<T, Box<dyn Error>>;

/// The lease of the worker hosts: a task held this long by a host that
/// stopped renewing it is taken over by another.
const LEASE: Duration = Duration::from_secs(1);

/// A child process killed and reaped when dropped (on every way out).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `redis-server` on a free port of 127.0.0.1, with no persistence,
/// and waits until it answers.
fn start_redis() -> Res<(Reaped, String)> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
    let dir = std::env::temp_dir();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-server (is it installed?): {e}"))?;
    let server = Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(port) {
        if Instant::now() >= deadline {
            return Err(format!("redis-server on 127.0.0.1:{port} did not answer within 10 s").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, format!("redis://127.0.0.1:{port}/0")))
}

/// Whether a server on `port` answers `PING`.
fn ping(port: u16) -> bool {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let mut reply = [0u8; 7];
    s.set_read_timeout(Some(Duration::from_millis(500))).is_ok()
        && s.write_all(b"PING\r\n").is_ok()
        && s.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A worker host: this binary again, diverted before `main` by
/// `MP_CLUSTER_WORKER`, with two local worker processes.
fn start_host(exe: &Path, url: &str, label: &str) -> Res<Reaped> {
    let child = Command::new(exe)
        .env(WORKER_ENV, url)
        .env(PROCESSES_ENV, "2")
        .env(HOST_ENV, label)
        .env(LEASE_ENV, LEASE.as_millis().to_string())
        .stdin(Stdio::null())
        .spawn()?;
    Ok(Reaped(child))
}

fn square(x: u64) -> u64 {
    x * x
}

/// The host label of the worker host running this task.
fn my_host() -> String {
    std::env::var(HOST_ENV).unwrap_or_else(|_| "?".into())
}

/// Says on `started` that a task began on this host, works for 3 s, and
/// says which host finished it.
fn slow_task(started: Queue<String>, _i: u32) -> String {
    started.put(my_host()).expect("the queue is reachable");
    // Long enough that host-a is killed before it finishes one, even on a
    // loaded machine (it is killed as soon as one of its tasks starts).
    std::thread::sleep(Duration::from_secs(3));
    my_host()
}

/// Puts `n` numbers on the shared queue.
fn produce(q: Queue<u32>, base: u32, n: u32) -> u32 {
    for i in 0..n {
        q.put(base + i).expect("the queue is reachable");
    }
    n
}

/// Counts the letters of `word` into the shared dict.
fn count_letters(d: Dict<String, usize>, word: String) -> usize {
    let n = word.chars().count();
    d.insert(word, n).expect("the dict is reachable");
    n
}

fn main() -> Res<()> {
    let (server, url) = start_redis()?;
    let exe = std::env::current_exe()?;
    let mut host_a = Some(start_host(&exe, &url, "host-a")?);
    let _host_b = start_host(&exe, &url, "host-b")?;
    let result = tour(&url, &mut host_a);
    // The hosts, then the server, are killed and reaped here, whatever
    // `tour` returned.
    drop(host_a);
    drop(_host_b);
    drop(server);
    result
}

fn tour(url: &str, host_a: &mut Option<Reaped>) -> Res<()> {
    // The tasks' lease: how long a host may hold one without renewing it.
    let c = Cluster::builder(url)
        .lease(LEASE)
        .worker_wait(Duration::from_secs(20))
        .connect()?;

    // 1. The worker hosts register themselves.
    let workers = c
        .wait_workers(Duration::from_secs(20), |w| w.len() == 2)?
        .ok_or("the 2 worker hosts did not register within 20 s")?;
    println!("workers:");
    for w in &workers {
        let same = if w.build == c.build_id() {
            "this build"
        } else {
            "another build"
        };
        println!("  {} (pid {}, {} processes, {same})", w.host, w.pid, w.processes);
    }

    // 2. A map over 10,000 items, in chunks spread over both hosts.
    let pool = c.pool()?;
    let squares = pool.map(square, 0..10_000u64)?;
    println!(
        "map: {} squares, sum {}, squares[9999] = {}",
        squares.len(),
        squares.iter().sum::<u64>(),
        squares[9999]
    );

    // 3. host-a is killed (SIGKILL) while it runs tasks; host-b takes them
    //    over once their lease runs out.
    let started: Queue<String> = c.queue("started")?;
    let jobs: Vec<_> = (0..8u32).map(|i| (started.clone(), i)).collect();
    let running = pool.starmap_async(slow_task, jobs)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match started.get_timeout(left) {
            Ok(h) if h == "host-a" => break,
            Ok(_) => {}
            Err(_) => return Err("host-a started no task within 20 s".into()),
        }
    }
    let killed = Instant::now();
    drop(host_a.take());
    println!("killed host-a while it ran a task (lease {} s)", LEASE.as_secs());
    let finished_by = running.get_timeout(Duration::from_secs(60))?;
    let mut by_host = BTreeMap::new();
    for h in &finished_by {
        *by_host.entry(h.as_str()).or_insert(0) += 1;
    }
    println!("all {} tasks finished, by host: {by_host:?}", finished_by.len());
    println!(
        "host-b finished host-a's tasks {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    // A dead host's registration expires (it no longer renews it).
    let workers: Vec<String> = match c.wait_workers(Duration::from_secs(20), |w| w.len() == 1)? {
        Some(w) => w,
        None => c.workers()?,
    }
    .into_iter()
    .map(|w| w.host)
    .collect();
    println!("workers now: {workers:?}");

    // 4. A queue and a dict shared with tasks on the worker hosts.
    let q: Queue<u32> = c.queue("numbers")?;
    let batches = (0..3u32)
        .map(|b| Ok((c.queue("numbers")?, b * 100, 4u32)))
        .collect::<Res<Vec<_>>>()?;
    let put = pool.starmap(produce, batches)?;
    let mut got = (0..put.iter().sum::<u32>())
        .map(|_| q.get_timeout(Duration::from_secs(10)))
        .collect::<Result<Vec<_>, _>>()?;
    got.sort_unstable();
    println!("queue: tasks put {put:?}, the client got {got:?}");

    let d: Dict<String, usize> = c.dict("letters")?;
    let words = ["redis", "stream", "lease", "worker", "host"];
    let jobs = words
        .iter()
        .map(|w| Ok((c.dict("letters")?, w.to_string())))
        .collect::<Res<Vec<_>>>()?;
    let total: usize = pool.starmap(count_letters, jobs)?.iter().sum();
    let mut items = d.items()?;
    items.sort();
    println!("dict: {items:?} ({total} letters)");
    pool.close();
    pool.join_timeout(Duration::from_secs(10))?;

    // 5. The executor: its futures are the local executor's, so
    //    `executor::as_completed` and `executor::wait` take them.
    let ex = c.executor()?;
    let futures = (1..=5u64)
        .map(|i| ex.submit(square, (i,)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut values = as_completed(&futures)
        .map(|f| f.result())
        .collect::<Result<Vec<u64>, _>>()?;
    values.sort_unstable();
    println!("executor: as_completed gave {values:?}");
    ex.shutdown(true, false);
    println!("done");
    Ok(())
}
