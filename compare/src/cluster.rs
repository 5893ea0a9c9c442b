//! `cluster_*`: our side of `cargo xtask compare --cluster`, against Celery
//! and RQ on the same `redis-server` (`compare/python/cluster.py` is their
//! side). The xtask starts the server and our worker host (this binary with
//! `MP_CLUSTER_WORKER`, 2 local worker processes), and passes the server's
//! URL and our key namespace in [`URL_ENV`] and [`NAMESPACE_ENV`].
//!
//! - `cluster_ping_rtt`: the median `PING` round trip through the `redis`
//!   crate, the client mp-cluster itself uses (the floor of any round trip
//!   through Redis).
//! - `cluster_floor_rtt`: the median round trip of a bare echo through
//!   Redis, the path every task takes with no library code: the client
//!   `XADD`s and blocks in `XREAD`; a thread blocked in `XREADGROUP` answers
//!   with `XADD` (pipelined with its `XACK`, `XDEL` and next read, as a
//!   worker process does). Four wake-ups, where a `PING` has two.
//! - `cluster_apply_rtt`: the median round trip of a warm `pool.apply(noop)`
//!   (synchronous: the caller queues the task and reads its result).
//! - `cluster_tasks_chunksize1`: tasks per second of `map_chunked(noop,
//!   0..n, 1)`, one stream entry per task.
//! - `cluster_tasks_default_chunks`: the same with `map`'s default chunks
//!   (four per worker process).

use std::time::{Duration, Instant};

use multiprocessing::cluster::{Cluster, Pool};

use crate::common::{Mode, Result, TIMEOUT, ensure, median_time, micros, per_second};

/// The variable holding the Redis URL of the run (`redis://127.0.0.1:PORT/DB`).
pub(crate) const URL_ENV: &str = "MP_COMPARE_REDIS";
/// The variable holding the key namespace our worker host serves.
pub(crate) const NAMESPACE_ENV: &str = "MP_COMPARE_NAMESPACE";

/// Timed `PING`s, after [`PING_WARM`] untimed ones.
const PINGS: (usize, usize) = (5_000, 1_000);
const PING_WARM: usize = 200;
/// Timed `apply` round trips, after [`APPLY_WARM`] untimed ones.
const APPLIES: (usize, usize) = (1_000, 200);
const APPLY_WARM: usize = 50;
/// Tasks of the throughput rows.
const TASKS: (u64, u64) = (20_000, 5_000);
/// Items of the untimed warm-up map.
const WARM_ITEMS: u64 = 100;

/// The task: returns its argument.
fn noop(x: u64) -> u64 {
    x
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| {
        format!("{name} is not set: the cluster rows run under `cargo xtask compare --cluster`, which sets it").into()
    })
}

/// A pool on the run's cluster, warmed by a map of chunk size 1.
fn pool() -> Result<Pool> {
    let c = Cluster::builder(&env(URL_ENV)?)
        .namespace(env(NAMESPACE_ENV)?)
        .worker_wait(Duration::from_secs(30))
        .connect()?;
    let pool = c.pool()?;
    let out = pool.map_chunked(noop, 0..WARM_ITEMS, 1)?;
    ensure!(
        out == (0..WARM_ITEMS).collect::<Vec<_>>(),
        "the warm-up map answered wrong: {out:?}"
    );
    Ok(pool)
}

/// A client of the run's server with the TCP settings mp-cluster uses
/// (`TCP_NODELAY`).
fn client() -> Result<redis::Client> {
    let info = redis::IntoConnectionInfo::into_connection_info(env(URL_ENV)?)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    Ok(redis::Client::open(info)?)
}

/// The median `PING` round trip, in µs, through the `redis` crate.
pub(crate) fn ping_rtt(mode: Mode) -> Result<f64> {
    let client = client()?;
    let mut con = client.get_connection_with_timeout(TIMEOUT)?;
    con.set_read_timeout(Some(TIMEOUT))?;
    let n = mode.pick(PINGS.0, PINGS.1);
    let t = median_time(PING_WARM, n, |_| {
        let pong: String = redis::cmd("PING").query(&mut con)?;
        ensure!(pong == "PONG", "PING answered {pong:?}");
        Ok(())
    })?;
    Ok(micros(t))
}

/// An `XREAD`/`XREADGROUP` reply: (stream, [(entry id, fields)]), or nil.
type Read = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;

/// The entry ids of a read.
fn read_ids(got: Read) -> Vec<String> {
    got.into_iter()
        .flatten()
        .flat_map(|(_, e)| e)
        .map(|(id, _)| id)
        .collect()
}

/// The median round trip, in µs, of a bare echo through Redis (see the
/// module's list).
pub(crate) fn floor_rtt(mode: Mode) -> Result<f64> {
    let client = client()?;
    let ns = env(NAMESPACE_ENV)?;
    let (tasks, replies) = (
        format!("{ns}:floor:{}:tasks", std::process::id()),
        format!("{ns}:floor:{}:replies", std::process::id()),
    );
    let mut con = client.get_connection_with_timeout(TIMEOUT)?;
    con.set_read_timeout(Some(TIMEOUT))?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&tasks)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query::<()>(&mut con)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let echo = {
        let (tasks, replies, stop) = (tasks.clone(), replies.clone(), stop.clone());
        let mut con = client.get_connection_with_timeout(TIMEOUT)?;
        con.set_read_timeout(Some(TIMEOUT))?;
        std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut read: Vec<String> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut p = redis::pipe();
                if !read.is_empty() {
                    for _ in &read {
                        p.cmd("XADD").arg(&replies).arg("*").arg("r").arg("1").ignore();
                    }
                    p.cmd("XACK").arg(&tasks).arg("g").arg(&read).ignore();
                    p.cmd("XDEL").arg(&tasks).arg(&read).ignore();
                }
                p.cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg("echo")
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg(&tasks)
                    .arg(">");
                let (got,): (Read,) = p.query(&mut con)?;
                read = read_ids(got);
            }
            Ok(())
        })
    };
    let mut last = "0-0".to_string();
    let n = mode.pick(APPLIES.0, APPLIES.1);
    let t = median_time(APPLY_WARM, n, |_| {
        let mut p = redis::pipe();
        p.cmd("XADD").arg(&tasks).arg("*").arg("t").arg("1").ignore();
        p.cmd("XREAD")
            .arg("BLOCK")
            .arg(TIMEOUT.as_millis() as u64)
            .arg("STREAMS")
            .arg(&replies)
            .arg(&last);
        let (got,): (Read,) = p.query(&mut con)?;
        last = read_ids(got).pop().ok_or("the echo did not answer")?;
        Ok(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let echoed = echo.join().map_err(|_| "the echo thread panicked")?;
    redis::cmd("DEL").arg(&tasks).arg(&replies).query::<()>(&mut con)?;
    echoed?;
    Ok(micros(t?))
}

/// The median round trip, in µs, of a warm `pool.apply(noop, (i,))`.
pub(crate) fn apply_rtt(mode: Mode) -> Result<f64> {
    let pool = pool()?;
    let n = mode.pick(APPLIES.0, APPLIES.1);
    let t = median_time(APPLY_WARM, n, |i| {
        let r = pool.apply(noop, (i as u64,))?;
        ensure!(r == i as u64, "apply({i}) answered {r}");
        Ok(())
    })?;
    Ok(micros(t))
}

/// Tasks per second of `map(noop, 0..n)` with chunks of `chunksize` (the
/// default's when `None`).
fn tasks(mode: Mode, chunksize: Option<usize>) -> Result<f64> {
    let pool = pool()?;
    let n = mode.pick(TASKS.0, TASKS.1);
    let t0 = Instant::now();
    let out = match chunksize {
        Some(c) => pool.map_chunked(noop, 0..n, c)?,
        None => pool.map(noop, 0..n)?,
    };
    let took = t0.elapsed();
    ensure!(out.len() as u64 == n, "{} results for {n} tasks", out.len());
    let wrong = out.iter().zip(0..n).find(|&(&y, x)| y != x);
    ensure!(wrong.is_none(), "a wrong result: {wrong:?}");
    Ok(per_second(n as usize, took))
}

/// Tasks per second, one stream entry per task.
pub(crate) fn tasks_chunksize1(mode: Mode) -> Result<f64> {
    tasks(mode, Some(1))
}

/// Tasks per second with `map`'s default chunks.
pub(crate) fn tasks_default_chunks(mode: Mode) -> Result<f64> {
    tasks(mode, None)
}
