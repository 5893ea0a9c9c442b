//! `pool_*` and `ppe_*`: throughput of a warmed `Pool(2)` and
//! `ProcessPoolExecutor(2)` on `x*x`, and a pool's start-up and shutdown;
//! `pool_map_100k_*`: our side of the rows against Rust peers, the time of
//! a warm map of 100,000 items.

use std::ops::Range;
use std::time::Instant;

use multiprocessing::pool::TaskError;
use multiprocessing::{Pool, PoolContext, ProcessPoolExecutor, StartMethod, active_children, get_context};

use crate::common::{Mode, Result, TIMEOUT, ensure, median, millis, per_second};

/// Items in the map of the rows against Rust peers.
const MAP_100K: u64 = 100_000;

/// Workers in every pool.
const WORKERS: usize = 2;

/// Items in the untimed warm-up map.
const WARM_UP_ITEMS: u64 = 100;

/// Untimed pool start-ups before the timed ones.
const STARTUP_WARM_UPS: usize = 1;

fn square(x: u64) -> u64 {
    x * x
}

/// Checks that `out` is `square` over `0..n`, in order.
fn check_squares(out: &[u64], n: u64) -> Result<()> {
    ensure!(out.len() as u64 == n, "{} results for {n} items", out.len());
    let wrong = (0..n).zip(out).find(|&(x, &y)| y != square(x));
    ensure!(wrong.is_none(), "a wrong square: {wrong:?}");
    Ok(())
}

/// Runs `work` on a fork `Pool(2)` warmed with a map of chunk size 1 (both
/// workers busy), then closes and joins the pool.
fn with_pool(work: impl FnOnce(&Pool) -> Result<f64>) -> Result<f64> {
    let pool = get_context(StartMethod::Fork).pool(WORKERS)?;
    check_squares(&pool.map_chunked(square, 0..WARM_UP_ITEMS, 1)?, WARM_UP_ITEMS)?;
    let rate = work(&pool)?;
    pool.close();
    pool.join_timeout(TIMEOUT)?;
    Ok(rate)
}

/// Tasks per second of `map(pool, 0..n)`, a map of `x*x` over `0..n`.
fn timed_map(n: u64, map: impl FnOnce(&Pool, Range<u64>) -> Result<Vec<u64>, TaskError>) -> Result<f64> {
    with_pool(|pool| {
        let t0 = Instant::now();
        let out = map(pool, 0..n)?;
        let took = t0.elapsed();
        check_squares(&out, n)?;
        Ok(per_second(n as usize, took))
    })
}

/// Tasks per second of `map(x*x, 0..n)` with the default chunk size.
pub(crate) fn map_default_chunksize(mode: Mode) -> Result<f64> {
    timed_map(mode.pick(1_000_000, 200_000), |pool, items| pool.map(square, items))
}

/// Tasks per second of `map(x*x, 0..n, chunksize=1)`.
pub(crate) fn map_chunksize1(mode: Mode) -> Result<f64> {
    timed_map(mode.pick(20_000, 5_000), |pool, items| {
        pool.map_chunked(square, items, 1)
    })
}

/// Tasks per second of `n` `apply_async(x*x)`, then `get()` of each.
pub(crate) fn apply_async(mode: Mode) -> Result<f64> {
    let n = mode.pick(20_000, 5_000);
    with_pool(|pool| {
        let t0 = Instant::now();
        let pending = (0..n)
            .map(|x| pool.apply_async(square, (x,)))
            .collect::<Result<Vec<_>, _>>()?;
        let out = pending
            .iter()
            .map(|r| r.get_timeout(TIMEOUT))
            .collect::<Result<Vec<_>, _>>()?;
        let took = t0.elapsed();
        check_squares(&out, n)?;
        Ok(per_second(n as usize, took))
    })
}

/// Tasks per second of a warmed fork `ProcessPoolExecutor(2)`'s
/// `map(x*x, 0..n)`, all results collected.
pub(crate) fn ppe_map_default_chunksize(mode: Mode) -> Result<f64> {
    let n = mode.pick(20_000, 5_000);
    let ex = ProcessPoolExecutor::builder()
        .max_workers(WORKERS)
        .start_method(StartMethod::Fork)
        .build()?;
    let warm = ex.map_timeout(square, 0..WARM_UP_ITEMS, TIMEOUT)?;
    check_squares(&warm.collect::<Result<Vec<_>, _>>()?, WARM_UP_ITEMS)?;
    let t0 = Instant::now();
    let out = ex.map_timeout(square, 0..n, TIMEOUT)?.collect::<Result<Vec<_>, _>>()?;
    let took = t0.elapsed();
    check_squares(&out, n)?;
    // Every task is done: this only waits for the idle workers to exit.
    ex.shutdown(true, false);
    Ok(per_second(n as usize, took))
}

/// The median time, in ms, to create a fork `Pool(2)`, `close()` it and
/// `join()` it; checks that no worker outlives the join.
pub(crate) fn startup_close_join(mode: Mode) -> Result<f64> {
    let ctx = get_context(StartMethod::Fork);
    let mut times = Vec::new();
    for i in 0..STARTUP_WARM_UPS + mode.pick(20, 5) {
        let t0 = Instant::now();
        let pool = ctx.pool(WORKERS)?;
        pool.close();
        pool.join_timeout(TIMEOUT)?;
        let took = t0.elapsed();
        let left = active_children();
        ensure!(left.is_empty(), "pool workers alive after join: {left:?}");
        if i >= STARTUP_WARM_UPS {
            times.push(took);
        }
    }
    Ok(millis(median(times)))
}

/// The median time, in ms, of a warm fork `Pool(2)`'s `map(x*x, 0..100000)`
/// (default chunk size: 8 chunks of 12,500), over 20 / 5 timed maps after
/// an untimed one; checks every square. Our side of both
/// `pool_map_100k_procspawn` and `pool_map_100k_thread_scope`.
pub(crate) fn map_100k(mode: Mode) -> Result<f64> {
    with_pool(|pool| {
        check_squares(&pool.map(square, 0..MAP_100K)?, MAP_100K)?;
        let mut times = Vec::new();
        for _ in 0..mode.pick(20, 5) {
            let t0 = Instant::now();
            let out = pool.map(square, 0..MAP_100K)?;
            times.push(t0.elapsed());
            check_squares(&out, MAP_100K)?;
        }
        Ok(millis(median(times)))
    })
}
