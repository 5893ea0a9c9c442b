//! Two workers take turns with one Lock: each acquires it, reports, and
//! releases it. Twin of seed 001 (4.1, "进程锁的使用").
//!
//! Run with `cargo run --example lock_workers`.

use std::error::Error;

use multiprocessing::{Lock, Process};

fn worker(n: u32, lock: Lock) -> Result<(), Box<dyn Error>> {
    let guard = lock.acquire()?;
    println!("Worker {n} acquired the lock.");
    // Do something while holding it.
    guard.release();
    println!("Worker {n} released the lock.");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let lock = Lock::new()?;
    let mut p1 = Process::new(worker, (1, lock.clone()));
    let mut p2 = Process::new(worker, (2, lock.clone()));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}
