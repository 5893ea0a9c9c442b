//! A warm fork `Pool(2)` mapping `x*x` over `0..items`, `rounds` times, for
//! a profiler (`perf record -g`, `valgrind --tool=callgrind`): prints the
//! median time of one map.
//!
//! ```text
//! cargo run --release -p mp-pool --example map_profile -- [items] [rounds]
//! ```

use std::time::{Duration, Instant};

use mp_pool::Pool;
use mp_process::StartMethod;

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let items: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    pool.map_chunked(square, 0..100u64, 1)?;
    let mut times: Vec<Duration> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        let out = pool.map(square, 0..items)?;
        times.push(t0.elapsed());
        if out.len() as u64 != items || out.iter().enumerate().any(|(i, &y)| y != square(i as u64)) {
            return Err("a wrong result".into());
        }
    }
    times.sort_unstable();
    println!(
        "map of {items}: median {:?} (min {:?}, max {:?}) over {rounds}",
        times[rounds / 2],
        times[0],
        times[rounds - 1]
    );
    pool.close();
    pool.join_timeout(Duration::from_secs(30))?;
    Ok(())
}
