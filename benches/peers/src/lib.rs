//! The warm 100k map three ways: this library's `Pool`, `procspawn`'s
//! pool given the same chunks cut by hand, and the floor under both, two
//! threads of `std::thread::scope`.
//!
//! Each function runs one map of `x*x` over `0..n` (`u64`) and returns the
//! squares in order; the callers (the `mp-peers` binary for
//! `cargo xtask compare`, and the criterion bench) time them.

use std::error::Error;

/// A run's outcome.
pub type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Workers in every pool, and threads of the floor.
pub const WORKERS: usize = 2;

/// Items in the map.
pub const ITEMS: u64 = 100_000;

/// The chunks procspawn gets: as many as this library's default chunk size
/// cuts `ITEMS` into for two workers (Python's rule: four per worker).
pub const CHUNKS: usize = 4 * WORKERS;

/// The task.
pub fn square(x: u64) -> u64 {
    x * x
}

/// Checks that `out` is `square` over `0..n`, in order.
pub fn check_squares(out: &[u64], n: u64) -> Result<()> {
    if out.len() as u64 != n {
        return Err(format!("{} results for {n} items", out.len()).into());
    }
    if let Some((x, y)) = (0..n).zip(out).find(|&(x, &y)| y != square(x)) {
        return Err(format!("a wrong square: {y} for {x}").into());
    }
    Ok(())
}

/// This library: `pool.map(square, 0..n)`.
pub fn ours(pool: &multiprocessing::Pool, n: u64) -> Result<Vec<u64>> {
    Ok(pool.map(square, 0..n)?)
}

/// A chunk's work in a procspawn worker: a plain `fn`, as procspawn needs.
fn square_all(items: Vec<u64>) -> Vec<u64> {
    items.into_iter().map(square).collect()
}

/// procspawn: `0..n` cut by hand into [`CHUNKS`] `Vec<u64>`, each sent to
/// the pool as one call that returns its `Vec<u64>`, joined in order and
/// put together.
pub fn procspawn(pool: &procspawn::Pool, n: u64) -> Result<Vec<u64>> {
    let size = (n as usize).div_ceil(CHUNKS).max(1) as u64;
    let handles: Vec<_> = (0..n)
        .step_by(size as usize)
        .map(|lo| pool.spawn((lo..(lo + size).min(n)).collect::<Vec<u64>>(), square_all))
        .collect();
    let mut out = Vec::with_capacity(n as usize);
    for h in handles {
        out.extend(h.join()?);
    }
    Ok(out)
}

/// The floor: two threads of `std::thread::scope`, each squaring its half
/// of the items into its half of the output.
pub fn floor_thread_scope(n: u64) -> Vec<u64> {
    let items: Vec<u64> = (0..n).collect();
    let mut out = vec![0u64; items.len()];
    let half = items.len().div_ceil(WORKERS).max(1);
    std::thread::scope(|s| {
        for (i, o) in items.chunks(half).zip(out.chunks_mut(half)) {
            s.spawn(move || {
                for (x, y) in i.iter().zip(o) {
                    *y = square(*x);
                }
            });
        }
    });
    out
}
