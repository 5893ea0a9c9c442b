//! A writer process puts `Message1..3` on a `Queue`; after it has finished, a
//! reader process takes them while the queue is not empty. Twin of seed 004
//! (a Queue example: one child writes, one reads).
//!
//! The seed sleeps 2 s after each message to make the interleaving visible;
//! the order here is fixed by joining the writer before starting the reader,
//! as the seed does, so the sleeps are left out.
//!
//! Run with `cargo run --example queue_writer_reader`.

use std::error::Error;

use multiprocessing::{Process, Queue};

fn write_data(queue: Queue<String>) -> Result<(), Box<dyn Error>> {
    for value in ["Message1", "Message2", "Message3"] {
        println!("Put {value} to queue...");
        queue.put(value.to_string())?;
    }
    Ok(())
}

fn read_data(queue: Queue<String>) -> Result<(), Box<dyn Error>> {
    while !queue.is_empty() {
        let value = queue.get()?;
        println!("Get {value} to queue...");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    // Created by the parent, shared by the two children.
    let q = Queue::new()?;
    let mut pw = Process::new(write_data, (q.clone(),));
    let mut pr = Process::new(read_data, (q.clone(),));
    pw.start()?;
    pw.join()?;
    pr.start()?;
    pr.join()?;
    println!("...Done");
    Ok(())
}
