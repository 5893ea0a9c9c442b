//! A counter in shared memory incremented by 10 processes, each holding the
//! value's lock for its read-modify-write, so no increment is lost.
//!
//! Run with `cargo run --example shared_counter`.

use std::error::Error;

use multiprocessing::{Process, Value};

fn work(counter: Value<u64>) -> Result<(), Box<dyn Error>> {
    for _ in 0..1000 {
        // Python: `with counter.get_lock(): counter.value += 1`
        let _held = counter.get_lock().acquire()?;
        counter.set(counter.get() + 1);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let counter = Value::new(0u64)?;
    let mut ps: Vec<Process> = (0..10).map(|_| Process::new(work, (counter.clone(),))).collect();
    for p in &mut ps {
        p.start()?;
    }
    for p in &mut ps {
        p.join()?;
    }
    println!("10 processes x 1000 increments: counter = {}", counter.get());
    Ok(())
}
