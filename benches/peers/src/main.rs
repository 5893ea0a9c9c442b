//! `mp-peers`: the peer side of `cargo xtask compare`'s rows against other
//! Rust crates (`compare/WORKLOADS.md`, "Rows against Rust peers").
//!
//! The same command line and output as `mp-compare`, whose same-named
//! workloads are this library's side:
//!
//! ```text
//! mp-peers --list              # the workload names, in table order
//! mp-peers <name> [--quick]    # one workload; prints name<TAB>value<TAB>unit
//! ```
//!
//! An unknown name exits with status 2; a failed check or error exits with
//! status 1.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mp_peers::{ITEMS, Result, WORKERS, check_squares};

/// The workloads, in the table's order.
const WORKLOADS: &[&str] = &[
    "pool_map_100k_procspawn",
    "pool_map_100k_thread_scope",
    "array_child_sum_1M_vec_floor",
];

/// Timed maps after the untimed warm-up: full and quick.
const TIMED: (usize, usize) = (20, 5);

/// The median of `times` (of the middle two for an even count, as
/// `mp-compare`'s), in milliseconds.
fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort_unstable();
    let n = times.len();
    let m = match n {
        0 => Duration::ZERO,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2,
    };
    m.as_secs_f64() * 1e3
}

/// Runs `map` once untimed, then `count` times timed, checking every
/// result; the median time in ms.
fn timed(count: usize, mut map: impl FnMut() -> Result<Vec<u64>>) -> Result<f64> {
    check_squares(&map()?, ITEMS)?;
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        let out = map()?;
        times.push(t0.elapsed());
        check_squares(&out, ITEMS)?;
    }
    Ok(median_ms(times))
}

fn run(name: &str, count: usize) -> Result<f64> {
    match name {
        "pool_map_100k_procspawn" => {
            let pool = procspawn::Pool::new(WORKERS)?;
            let ms = timed(count, || mp_peers::procspawn(&pool, ITEMS));
            pool.shutdown();
            ms
        }
        "pool_map_100k_thread_scope" => timed(count, || Ok(mp_peers::floor_thread_scope(ITEMS))),
        "array_child_sum_1M_vec_floor" => vec_sum_floor(count),
        _ => Err(format!("no workload {name}").into()),
    }
}

/// The floor of `array_child_sum_1M_guard`: the median time, in ms, to sum
/// a local `Vec<f64>` of `0..1_000_000` (filled untimed, as the shared array
/// is), as the child sums the array through its guard; checks each sum.
fn vec_sum_floor(count: usize) -> Result<f64> {
    const N: usize = 1_000_000;
    let expected = (N * (N - 1) / 2) as f64;
    let mut times = Vec::with_capacity(count);
    for i in 0..=count {
        let v: Vec<f64> = (0..N).map(|i| i as f64).collect();
        let t0 = Instant::now();
        let sum: f64 = std::hint::black_box(&v).iter().sum();
        let took = t0.elapsed();
        if sum != expected {
            return Err(format!("summed {sum}, not {expected}").into());
        }
        if i > 0 {
            times.push(took);
        }
    }
    Ok(median_ms(times))
}

fn main() -> ExitCode {
    // procspawn's workers re-enter `main`: this must come first.
    procspawn::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (name, count) = match args.as_slice() {
        ["--list"] => {
            for w in WORKLOADS {
                println!("{w}");
            }
            return ExitCode::SUCCESS;
        }
        [name] if !name.starts_with('-') => (*name, TIMED.0),
        [name, "--quick"] | ["--quick", name] if !name.starts_with('-') => (*name, TIMED.1),
        _ => {
            eprintln!("usage: mp-peers --list | mp-peers <name> [--quick]");
            return ExitCode::from(2);
        }
    };
    if !WORKLOADS.contains(&name) {
        eprintln!("mp-peers: unknown workload {name:?} (`mp-peers --list` lists them)");
        return ExitCode::from(2);
    }
    match run(name, count) {
        Ok(ms) => {
            println!("{name}\t{ms:.4}\tms");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mp-peers: {name}: {e}");
            ExitCode::FAILURE
        }
    }
}
