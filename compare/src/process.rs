//! `process_start_join_*`: `start()` + `join()` of a child whose target
//! returns at once, one workload per start method.

use std::time::Instant;

use multiprocessing::{StartMethod, get_context};

use crate::common::{Mode, Result, join, median, micros};

/// Untimed start+join rounds before the timed ones (the fork server starts
/// on the first).
const WARM_UPS: usize = 3;

fn noop() {}

/// The median time, in µs, of `start()` + `join()` of a `noop` child with
/// start method `m`, over `n` children; each must exit with 0.
fn start_join(m: StartMethod, n: usize) -> Result<f64> {
    let ctx = get_context(m);
    let mut times = Vec::with_capacity(n);
    for i in 0..WARM_UPS + n {
        let mut p = ctx.process(noop, ());
        let t0 = Instant::now();
        p.start()?;
        join(&mut p)?;
        if i >= WARM_UPS {
            times.push(t0.elapsed());
        }
    }
    Ok(micros(median(times)))
}

pub(crate) fn start_join_fork(mode: Mode) -> Result<f64> {
    start_join(StartMethod::Fork, mode.pick(100, 30))
}

pub(crate) fn start_join_forkserver(mode: Mode) -> Result<f64> {
    start_join(StartMethod::ForkServer, mode.pick(50, 15))
}

pub(crate) fn start_join_spawn(mode: Mode) -> Result<f64> {
    start_join(StartMethod::Spawn, mode.pick(20, 8))
}
