//! A writer task and a reader task run one after the other in a pool and
//! share a plain `Queue` passed as an argument, under each start method.
//! Twin of seed 004's process-pool example ("进程池通信Queue"), which needs
//! `Manager().Queue()` in Python because a plain `multiprocessing.Queue`
//! cannot be passed to pool workers ("Queue objects should only be shared
//! between processes through inheritance"). Here a `Queue` is a handle and
//! travels as a task's argument to a pool's workers under every start
//! method: fork, spawn and forkserver. `pool_manager_queue` is the seed's
//! own version, with the manager's queue.
//!
//! Tasks return values that cross back to the parent, so they report
//! errors as `Result<(), String>`: the library's error types are not
//! serializable.
//!
//! Run with `cargo run --example queue_to_workers`.

use std::error::Error;

use multiprocessing::{Pool, Queue, StartMethod, current_process, parent_process};

fn writer(queue: Queue<String>) -> Result<(), String> {
    let parent = parent_process().map(|p| p.pid()).unwrap_or_default();
    println!("writer started ({}), parent ({parent})", current_process().pid());
    for i in ["Message1", "Message2", "Message3", "Message4"] {
        queue.put(i.to_string()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn reader(queue: Queue<String>) -> Result<(), String> {
    let parent = parent_process().map(|p| p.pid()).unwrap_or_default();
    println!("reader started ({}), parent ({parent})", current_process().pid());
    for _ in 0..queue.qsize() {
        println!("reader got from the Queue: {}", queue.get().map_err(|e| e.to_string())?);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("({}) start", std::process::id());
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        println!("{method:?}:");
        let q = Queue::new()?;
        let pool = Pool::builder().processes(2).start_method(method).build()?;
        // Blocking: the writer has finished before the reader starts. The
        // outer `?` is the pool's error, the inner one the task's own.
        pool.apply(writer, (q.clone(),))??;
        pool.apply(reader, (q.clone(),))??;
        pool.close();
        pool.join()?;
    }
    println!("({}) End", std::process::id());
    Ok(())
}
