//! Ten `apply_async` tasks, then `get` with a timeout on each result, in
//! order. Twin of seed 003 (the "异步" part: `pool.apply_async(f, [i])` for
//! `i` in `range(10)`, then `r.get(timeout=10)` on each).
//!
//! Each task prints `x*x` in its worker, sleeps, and returns it; the parent
//! prints the results in submission order. The seed's task sleeps 2 s; here
//! 100 ms. The workers' lines and the parent's interleave differently from
//! run to run (the seed's output shows one such mix), so the two are
//! labelled here. `get_timeout` returns `Err(TaskError::Timeout)` when the
//! time is up, as Python raises `TimeoutError`; the task goes on and `get`
//! can be called again.
//!
//! Run with `cargo run --example pool_get_timeout`.

use std::error::Error;
use std::thread::sleep;
use std::time::Duration;

use multiprocessing::Pool;

fn f(x: u64) -> u64 {
    println!("worker: {}", x * x);
    sleep(Duration::from_millis(100));
    x * x
}

fn main() -> Result<(), Box<dyn Error>> {
    let pool = Pool::new(4)?;
    let mut res_list = Vec::new();
    for i in 0..10 {
        let res = pool.apply_async(f, (i,))?;
        res_list.push(res);
    }
    for r in &res_list {
        // The timeout.
        println!("result: {}", r.get_timeout(Duration::from_secs(10))?);
    }
    pool.close();
    pool.join()?;
    Ok(())
}
