//! Four pool workers fill a shared 2-D `f64` array, each its band of rows,
//! through an `ndarray` view of the shared memory itself; the parent checks
//! the row sums through the same kind of view. Nothing copies the array: the
//! peak resident memory of each process stays near the array's size (the
//! parent's, which reads all of it) or its band's (a worker's).
//!
//! Python's counterpart keeps a NumPy array over shared memory:
//!
//! ```python
//! arr = multiprocessing.Array('d', ROWS * COLS)
//! def fill(band):
//!     with arr.get_lock():
//!         a = np.frombuffer(arr.get_obj()).reshape(ROWS, COLS)
//!         a[band * BAND:(band + 1) * BAND] = ...
//! ```
//!
//! Here `arr.lock()` is the lock and the memory at once, and
//! `guard.view_mut(&[ROWS, COLS])` is the `reshape`. (Without a lock,
//! `SharedMemory::ndarray_view_mut` is `np.ndarray(shape, dtype,
//! buffer=shm.buf)`.) Peak memory is each process's `VmHWM` from
//! `/proc/self/status`.
//!
//! Run with `cargo run --example ndarray_bands`.

use std::error::Error;

use multiprocessing::shared::ndarray::{Axis, s};
use multiprocessing::{Array, Pool};

const ROWS: usize = 2048;
const COLS: usize = 4096;
const WORKERS: usize = 4;
const BAND: usize = ROWS / WORKERS;
const MIB: f64 = 1024.0 * 1024.0;

/// This process's peak resident memory in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Element `[r, c]`: what the workers write and the parent checks.
fn value(r: usize, c: usize) -> f64 {
    r as f64 + c as f64 / COLS as f64
}

/// Fills rows `band * BAND..(band + 1) * BAND` in place; returns the band and
/// this worker's peak resident memory.
fn fill_band((arr, band): (Array<f64>, usize)) -> Result<(usize, u64), String> {
    let mut guard = arr.lock().map_err(|e| e.to_string())?;
    let mut grid = guard.view_mut(&[ROWS, COLS]).map_err(|e| e.to_string())?;
    let mut rows = grid.slice_mut(s![band * BAND..(band + 1) * BAND, ..]);
    for (i, mut row) in rows.axis_iter_mut(Axis(0)).enumerate() {
        let r = band * BAND + i;
        for (c, x) in row.iter_mut().enumerate() {
            *x = value(r, c);
        }
    }
    Ok((band, peak_rss()))
}

fn main() -> Result<(), Box<dyn Error>> {
    let bytes = (ROWS * COLS * size_of::<f64>()) as f64;
    let arr = Array::<f64>::new(ROWS * COLS)?;
    println!("a {ROWS} x {COLS} array of f64: {} MiB", bytes / MIB);

    let pool = Pool::new(WORKERS)?;
    let tasks = (0..WORKERS).map(|band| (arr.clone(), band));
    let results = pool.map(fill_band, tasks)?;
    pool.close();
    pool.join()?;
    let mut worker_peak = 0u64;
    for r in results {
        let (band, peak) = r?;
        println!(
            "band {band}: rows {}..{} filled by a worker",
            band * BAND,
            (band + 1) * BAND
        );
        worker_peak = worker_peak.max(peak);
    }

    let guard = arr.lock().map_err(|e| e.to_string())?;
    let grid = guard.view(&[ROWS, COLS])?;
    let col_part: f64 = (0..COLS).map(|c| c as f64 / COLS as f64).sum();
    let wrong = grid
        .axis_iter(Axis(0))
        .enumerate()
        .filter(|(r, row)| row.sum() != *r as f64 * COLS as f64 + col_part)
        .count();
    println!("row sums checked: {wrong} of {ROWS} wrong");
    let total = grid.sum();
    drop(guard);

    let parent_peak = peak_rss();
    println!(
        "peak RSS: parent {:.1} MiB, largest worker {:.1} MiB, for a {:.0} MiB array (total {total:.0})",
        parent_peak as f64 / MIB,
        worker_peak as f64 / MIB,
        bytes / MIB
    );
    // No copy: the parent holds the array once (plus its own few MiB), a
    // worker its band and less than the whole array.
    let near = parent_peak as f64 <= bytes * 1.1 + 32.0 * MIB && (worker_peak as f64) < bytes;
    println!("no process holds a copy of the array: {near}");
    if wrong != 0 || !near {
        return Err("the array or the memory use is not what it should be".into());
    }
    Ok(())
}
