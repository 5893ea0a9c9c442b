//! Two workers share a Semaphore of one slot, so they work one at a time.
//! Twin of seed 001 (4.2, "信号量与事件的应用").
//!
//! Run with `cargo run --example semaphore_workers`.

use std::error::Error;

use multiprocessing::{Process, Semaphore};

fn worker(n: u32, semaphore: Semaphore) -> Result<(), Box<dyn Error>> {
    semaphore.acquire()?;
    println!("Worker {n} is working with the semaphore.");
    // Do something in the one slot.
    semaphore.release()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let semaphore = Semaphore::new(1)?;
    let mut p1 = Process::new(worker, (1, semaphore.clone()));
    let mut p2 = Process::new(worker, (2, semaphore.clone()));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    println!("slots free at the end: {}", semaphore.get_value());
    Ok(())
}
