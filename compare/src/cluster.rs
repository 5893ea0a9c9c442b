//! `cluster_*`: our side of `cargo xtask compare --cluster`, against Celery
//! and RQ on the same `redis-server` (`compare/python/cluster.py` is their
//! side). The xtask starts the server and our worker host (this binary with
//! `MP_CLUSTER_WORKER`, 2 local worker processes), and passes the server's
//! URL and our key namespace in [`URL_ENV`] and [`NAMESPACE_ENV`].
//!
//! - `cluster_ping_rtt`: the median `PING` round trip through the `redis`
//!   crate, the client mp-cluster itself uses (the floor of any round trip
//!   through Redis).
//! - `cluster_apply_rtt`: the median round trip of a warm `pool.apply(noop)`.
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

/// The median `PING` round trip, in µs, through the `redis` crate.
pub(crate) fn ping_rtt(mode: Mode) -> Result<f64> {
    let client = redis::Client::open(env(URL_ENV)?)?;
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

/// The median round trip, in µs, of a warm `pool.apply(noop, (i,))`.
pub(crate) fn apply_rtt(mode: Mode) -> Result<f64> {
    let pool = pool()?;
    let n = mode.pick(APPLIES.0, APPLIES.1);
    let t = median_time(APPLY_WARM, n, |i| {
        let r = pool.apply_async(noop, (i as u64,))?.get_timeout(TIMEOUT)?;
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
