//! `array_child_sum_1M`: a forked child sums a shared `Array<f64>` of a
//! million elements the parent filled.

use std::time::{Duration, Instant};

use multiprocessing::{Array, Connection, StartMethod, get_context, pipe_simplex};

use crate::common::{Mode, Result, ensure, join, median, millis, recv_report, start};

/// Elements in the array.
const N: usize = 1_000_000;

/// Untimed summing children before the timed ones.
const WARM_UPS: usize = 1;

/// Sums the array (under its lock) and reports the sum and the time of the
/// sum alone.
fn child_sum(arr: Array<f64>, report: Connection) -> Result<()> {
    let t0 = Instant::now();
    let sum: f64 = arr.iter().sum();
    report.send(&(sum, t0.elapsed()))?;
    Ok(())
}

/// The median time, in ms, a child takes to sum `0..N`; checks each sum.
pub(crate) fn array_child_sum_1m(mode: Mode) -> Result<f64> {
    let ctx = get_context(StartMethod::Fork);
    let arr = Array::<f64>::new(N)?;
    arr.set_slice(0, &(0..N).map(|i| i as f64).collect::<Vec<_>>())?;
    // Every partial sum is an integer below 2^53, so the sum is exact.
    let expected = (N * (N - 1) / 2) as f64;
    let mut times = Vec::new();
    for i in 0..WARM_UPS + mode.pick(5, 3) {
        let (reader, writer) = pipe_simplex()?;
        let mut child = start(ctx.process(child_sum, (arr.clone(), writer)))?;
        let (sum, took): (f64, Duration) = recv_report(&reader)?;
        join(&mut child)?;
        ensure!(sum == expected, "the child summed {sum}, not {expected}");
        if i >= WARM_UPS {
            times.push(took);
        }
    }
    Ok(millis(median(times)))
}
