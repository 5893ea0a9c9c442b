//! `apply_async` with a callback: ten tasks return `i + 50` and the
//! callback prints each value as it arrives. Twin of seed 000 (4.(2),
//! "apply_async模块,会比apply模块多个回调函数,同时是异步的").
//!
//! As in Python, the callback runs in the parent (on the pool's result
//! thread, in completion order), `apply_async` does not wait, so the ten
//! `你好` come first, and `close` then `join` waits for every task and
//! callback. The seed's tasks sleep 1 s; here 100 ms, enough for the ten
//! `你好` to come before the results. The workers finish in no fixed order,
//! so neither do the callbacks. `apply_async_with` takes an error callback
//! too (Python's `error_callback`); here it reports a failed task.
//!
//! Run with `cargo run --example pool_apply_async_callback`.

use std::error::Error;
use std::thread::sleep;
use std::time::Duration;

use multiprocessing::{Pool, TaskError};

fn foo(i: u32) -> u32 {
    sleep(Duration::from_millis(100));
    i + 50
}

fn bar(arg: &u32) {
    println!("{arg}");
}

fn main() -> Result<(), Box<dyn Error>> {
    let pool = Pool::new(5)?;
    for i in 0..10 {
        // Asynchronous: queues the task and returns at once; `bar` gets
        // foo's return value when the task is done.
        pool.apply_async_with(foo, (i,), bar, move |e: &TaskError| eprintln!("task {i} failed: {e}"))?;
        println!("你好");
    }
    // Without close, join fails (Python: an assertion in join). join waits
    // for the tasks and their callbacks.
    pool.close();
    pool.join()?;
    Ok(())
}
