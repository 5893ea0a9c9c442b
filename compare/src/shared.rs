//! `array_child_sum_1M`: a forked child sums a shared `Array<f64>` of a
//! million elements the parent filled; `array_child_sum_1M_guard` (and its
//! floor row `array_child_sum_1M_vec_floor`): the same through the locked
//! guard, in place; `array_locked_update_256MiB`: a child updates one
//! element of a 256 MiB array under its lock.

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

/// Sums the array through its guard: the shared memory itself, no copy.
fn child_sum_guard(arr: Array<f64>, report: Connection) -> Result<()> {
    let t0 = Instant::now();
    let sum: f64 = arr.lock().map_err(|e| e.to_string())?.iter().sum();
    report.send(&(sum, t0.elapsed()))?;
    Ok(())
}

/// The median time, in ms, a child takes to sum `0..N`; checks each sum.
pub(crate) fn array_child_sum_1m(mode: Mode) -> Result<f64> {
    child_sums(mode, child_sum)
}

/// [`array_child_sum_1m`] with the child summing through the guard.
pub(crate) fn array_child_sum_1m_guard(mode: Mode) -> Result<f64> {
    child_sums(mode, child_sum_guard)
}

fn child_sums(mode: Mode, sum: fn(Array<f64>, Connection) -> Result<()>) -> Result<f64> {
    let ctx = get_context(StartMethod::Fork);
    let arr = Array::<f64>::new(N)?;
    arr.set_slice(0, &(0..N).map(|i| i as f64).collect::<Vec<_>>())?;
    // Every partial sum is an integer below 2^53, so the sum is exact.
    let expected = (N * (N - 1) / 2) as f64;
    let mut times = Vec::new();
    for i in 0..WARM_UPS + mode.pick(5, 3) {
        let (reader, writer) = pipe_simplex()?;
        let mut child = start(ctx.process(sum, (arr.clone(), writer)))?;
        let (sum, took): (f64, Duration) = recv_report(&reader)?;
        join(&mut child)?;
        ensure!(sum == expected, "the child summed {sum}, not {expected}");
        if i >= WARM_UPS {
            times.push(took);
        }
    }
    Ok(millis(median(times)))
}

/// Elements of the 256 MiB array.
const BIG: usize = 256 << 20 >> 3;

/// Adds 1 to element 7 `n` times, each under the lock; reports the value
/// and the time of the loop.
fn child_update(arr: Array<f64>, n: u32, report: Connection) -> Result<()> {
    let t0 = Instant::now();
    for _ in 0..n {
        let mut g = arr.lock().map_err(|e| e.to_string())?;
        g[7] += 1.0;
    }
    let took = t0.elapsed();
    report.send(&(arr.get(7).unwrap_or(-1.0), took))?;
    Ok(())
}

/// The time, in us, of one locked update of one element of a 256 MiB array
/// in a forked child (the mean over the child's loop); checks the count.
pub(crate) fn array_locked_update_256mib(mode: Mode) -> Result<f64> {
    let n: u32 = mode.pick(100_000, 20_000);
    let arr = Array::<f64>::new(BIG)?;
    let (reader, writer) = pipe_simplex()?;
    let mut child = start(get_context(StartMethod::Fork).process(child_update, (arr.clone(), n, writer)))?;
    let (seen, took): (f64, Duration) = recv_report(&reader)?;
    join(&mut child)?;
    ensure!(
        seen == f64::from(n) && arr.get(7) == Some(f64::from(n)),
        "the child counted to {seen}, not {n}"
    );
    Ok(took.as_secs_f64() * 1e6 / f64::from(n))
}
