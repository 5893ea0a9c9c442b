//! A producer puts 0..9 on a `Queue`, a consumer prints what it gets until a
//! `None` sentinel. Twin of seed 001 (3.3, shared memory and queues).
//!
//! Run with `cargo run --example queue_producer_consumer`.

use std::error::Error;

use multiprocessing::{Process, Queue};

fn producer(q: Queue<Option<u32>>) -> Result<(), Box<dyn Error>> {
    for i in 0..10 {
        q.put(Some(i))?;
    }
    Ok(())
}

fn consumer(q: Queue<Option<u32>>) -> Result<(), Box<dyn Error>> {
    // `None` is the sentinel, as in the seed.
    while let Some(data) = q.get()? {
        println!("{data}");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let q = Queue::new()?;
    let mut p = Process::new(producer, (q.clone(),));
    let mut c = Process::new(consumer, (q.clone(),));
    p.start()?;
    c.start()?;
    p.join()?;
    q.put(None)?;
    c.join()?;
    println!(
        "producer exit code {:?}, consumer exit code {:?}",
        p.exitcode(),
        c.exitcode()
    );
    Ok(())
}
