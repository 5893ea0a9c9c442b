//! Helpers shared by several bench targets (each includes this file with
//! `mod common;`).

use std::time::{Duration, Instant};

/// Times each of `iters` round trips and returns the median times `iters`:
/// a criterion `iter_custom` body that reports medians, as Python's
/// ping-pong figures are.
pub(crate) fn median_of(iters: u64, mut round_trip: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            round_trip();
            t0.elapsed()
        })
        .collect();
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    median * u32::try_from(iters).unwrap_or(u32::MAX)
}
