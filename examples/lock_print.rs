//! Ten processes print under one Lock, so their lines never interleave
//! ("Lock: only for screen sharing"). Twin of seed 003 (part 4).
//!
//! Run with `cargo run --example lock_print`.

use std::error::Error;
use std::io::Write;

use multiprocessing::{Lock, Process};

fn f(lock: Lock, i: u32) -> Result<(), Box<dyn Error>> {
    let _guard = lock.acquire()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "hello world {i}")?;
    out.flush()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let lock = Lock::new()?;
    let mut ps: Vec<Process> = (0..10).map(|num| Process::new(f, (lock.clone(), num))).collect();
    for p in &mut ps {
        p.start()?;
    }
    for p in &mut ps {
        p.join()?;
    }
    Ok(())
}
