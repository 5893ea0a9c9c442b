//! Ten tasks submitted to a `ProcessPoolExecutor` of five workers. Twin of
//! seed 002's process-pool example (`pool.submit(task, i)` for ten `i`).
//!
//! Python's script ends with the executor still working and its exit hook
//! waits for the tasks; here `shutdown(true, false)` says so (dropping the
//! executor does the same). The tasks sleep 0.1 s instead of 2 s, and the
//! futures are kept to show each task's value coming back.
//!
//! Run with `cargo run --example executor_submit`.

use std::error::Error;
use std::time::Duration;

use multiprocessing::ProcessPoolExecutor;

fn task(arg: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(100));
    println!("{arg}");
    arg * 10
}

fn main() -> Result<(), Box<dyn Error>> {
    let pool = ProcessPoolExecutor::new(5)?;
    let futures = (0..10)
        .map(|i| pool.submit(task, (i,)))
        .collect::<Result<Vec<_>, _>>()?;
    pool.shutdown(true, false);
    let values = futures.iter().map(|f| f.result()).collect::<Result<Vec<_>, _>>()?;
    println!("values: {values:?}");
    Ok(())
}
