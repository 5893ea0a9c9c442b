//! `apply` in a loop: each task runs in a pool worker and the parent waits
//! for it before going on, so the tasks run one at a time. Twin of seed 000
//! (4.(1), "apply模块的使用,每个任务是排队执行的").
//!
//! The seed loops five times over a `Pool(5)`; each task sleeps 2 s and
//! prints its argument, and the parent prints `你好` after each `apply`.
//! Here the task sleeps 50 ms: `apply` blocks until the task is done, so
//! the lines alternate in order however long it takes. As in the seed,
//! `close` comes before `join` (`join` on a running pool is an error,
//! `PoolError::StillRunning`, where Python fails an assertion).
//!
//! Run with `cargo run --example pool_apply_loop`.

use std::error::Error;
use std::thread::sleep;
use std::time::Duration;

use multiprocessing::Pool;

fn f1(a: u32) {
    sleep(Duration::from_millis(50));
    println!("{a}");
}

fn main() -> Result<(), Box<dyn Error>> {
    let pool = Pool::new(5)?;
    for i in 0..5 {
        // Each call takes a worker from the pool and waits for the task.
        pool.apply(f1, (i,))?;
        // Printed only after the task has finished.
        println!("你好");
    }
    // No new tasks after close; join waits for the workers to exit.
    pool.close();
    pool.join()?;
    Ok(())
}
