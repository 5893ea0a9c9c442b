//! A writer and a reader started one after the other share a `Queue` passed
//! as an argument. Twin of seed 004's process-pool example, which needs
//! `Manager().Queue()` in Python because a plain `multiprocessing.Queue`
//! cannot be passed to pool workers ("Queue objects should only be shared
//! between processes through inheritance"). Here a `Queue` is a handle and
//! travels as an argument under every start method; this version uses plain
//! processes run one at a time, as `po.apply` does, until the pool lands.
//!
//! Run with `cargo run --example queue_to_workers`.

use std::error::Error;

use multiprocessing::{Process, Queue, StartMethod, current_process, get_context, parent_process};

fn writer(queue: Queue<String>) -> Result<(), Box<dyn Error>> {
    let parent = parent_process().map(|p| p.pid()).unwrap_or_default();
    println!("writer started ({}), parent ({parent})", current_process().pid());
    for i in ["Message1", "Message2", "Message3", "Message4"] {
        queue.put(i.to_string())?;
    }
    Ok(())
}

fn reader(queue: Queue<String>) -> Result<(), Box<dyn Error>> {
    let parent = parent_process().map(|p| p.pid()).unwrap_or_default();
    println!("reader started ({}), parent ({parent})", current_process().pid());
    for _ in 0..queue.qsize() {
        println!("reader got from the Queue: {}", queue.get()?);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("({}) start", std::process::id());
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        println!("{method:?}:");
        let q = Queue::new()?;
        let ctx = get_context(method);
        // apply(writer, (q,)) then apply(reader, (q,)): one task at a time.
        let mut w: Process = ctx.process(writer, (q.clone(),));
        w.start()?;
        w.join()?;
        let mut r = ctx.process(reader, (q.clone(),));
        r.start()?;
        r.join()?;
    }
    println!("({}) End", std::process::id());
    Ok(())
}
