//! Five children each put their argument on one `Queue`; the parent takes
//! the five values. Twin of seed 002 (sharing data between processes:
//! Queue).
//!
//! The seed's parent loops on `q.get()` forever; here it takes exactly five
//! values, each with a timeout, and prints them in arrival order and sorted
//! (the arrival order depends on which child runs first).
//!
//! Run with `cargo run --example queue_five_children`.

use std::error::Error;
use std::time::Duration;

use multiprocessing::{Process, Queue};

fn task(arg: u32, q: Queue<u32>) -> Result<(), Box<dyn Error>> {
    q.put(arg)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let q = Queue::new()?;
    let mut children = Vec::new();
    for i in 0..5 {
        let mut p = Process::new(task, (i, q.clone()));
        p.start()?;
        children.push(p);
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let v = q.get_timeout(Duration::from_secs(30))?;
        println!("{v}");
        got.push(v);
    }
    for p in &mut children {
        p.join()?;
    }
    got.sort();
    println!("sorted: {got:?}");
    Ok(())
}
