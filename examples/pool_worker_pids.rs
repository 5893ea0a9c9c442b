//! Ten tasks on a pool of three: the same three worker processes run them
//! all, each taking a new task when it is done with one. Twin of seed 004
//! ("进程池Pool": `Pool(3)`, ten `apply_async(worker, (i,))`, each task
//! printing its pid and number).
//!
//! The seed's task sleeps 2 s; here 100 ms, long enough that each of the
//! three workers gets a share of the tasks. The parent queues all ten
//! before it waits, so its lines and the workers' interleave, and the
//! workers take the tasks in no fixed order. Each task also returns its
//! pid, so that the parent can count the workers that ran them: three,
//! every one of them among `pool.pids()`.
//!
//! Run with `cargo run --example pool_worker_pids`.

use std::collections::BTreeSet;
use std::error::Error;
use std::thread::sleep;
use std::time::Duration;

use multiprocessing::Pool;

fn worker(num: u32) -> u32 {
    let pid = std::process::id();
    println!("---进程号: {pid} ---num={num}----");
    sleep(Duration::from_millis(100));
    pid
}

fn main() -> Result<(), Box<dyn Error>> {
    // A pool of three processes.
    let pool = Pool::new(3)?;
    let workers: BTreeSet<u32> = pool.pids().into_iter().collect();
    let mut results = Vec::new();
    for i in 0..10 {
        println!("----添加任务:{i}-----");
        // Non-blocking; `pool.apply(worker, (i,))` would block.
        results.push(pool.apply_async(worker, (i,))?);
    }
    // No new tasks; wait for the workers to finish and exit.
    pool.close();
    pool.join()?;

    let mut used = BTreeSet::new();
    for r in &results {
        used.insert(r.get()?);
    }
    println!("10 tasks ran in {} worker processes", used.len());
    println!("all of them the pool's own: {}", used.is_subset(&workers));
    Ok(())
}
