//! A writer task and a reader task run one after the other in a pool and
//! share a manager queue. Twin of seed 004 ("进程池通信Queue": `po.apply`
//! a writer, then a reader, with `Manager().Queue()`).
//!
//! Python needs the manager's queue here: a `multiprocessing.Queue` passed
//! to a pool task fails ("Queue objects should only be shared between
//! processes through inheritance"). The manager's proxy works the same way
//! here; so does a plain `Queue` (see `queue_to_workers`). Tasks return
//! values that cross back to the parent, so they report errors as
//! `Result<(), String>`: the library's error types are not serializable.
//! The seed's output shows the two tasks in two workers; here the pool
//! hands a task to the first idle worker, so both usually run in the same
//! one (the pids vary anyway). The seed's trailing space after each
//! message is left out.
//!
//! Run with `cargo run --example pool_manager_queue`.

use std::error::Error;

use multiprocessing::{Manager, Pool, QueueProxy, current_process, parent_process};

fn reader(queue: QueueProxy<String>) -> Result<(), String> {
    let parent = parent_process().map(|p| p.pid()).unwrap_or_default();
    println!("reader启动({}),父进程为({parent})", current_process().pid());
    for _ in 0..queue.qsize().map_err(|e| e.to_string())? {
        let message = queue.get().map_err(|e| e.to_string())?;
        println!("reader从Queue获取到消息:{message}");
    }
    Ok(())
}

fn writer(queue: QueueProxy<String>) -> Result<(), String> {
    let parent = parent_process().map(|p| p.pid()).unwrap_or_default();
    println!("writer启动({}),父进程为({parent})", current_process().pid());
    for i in ["Message1", "Message2", "Message3", "Message4"] {
        queue.put(i.to_string()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("({}) start", std::process::id());
    // Initialised with the manager's queue.
    let manager = Manager::new()?;
    let q = manager.queue::<String>()?;
    // Python's `Pool()`: one worker per CPU.
    let po = Pool::builder().build()?;
    // Blocking, so the reader needs no loop: the writer has finished
    // before the reader starts. The outer `?` is the pool's error, the
    // inner one the task's own.
    po.apply(writer, (q.clone(),))??;
    po.apply(reader, (q.clone(),))??;
    po.close();
    po.join()?;
    println!("({}) End", std::process::id());
    Ok(())
}
