//! Processes do not share memory: every child appends to its own copy of
//! the list, so each prints a list of one element. Twin of seed 000, part 2
//! and seed 003, part 3.
//!
//! Run with `cargo run --example no_shared_memory`.

use std::error::Error;
use std::sync::Mutex;

use multiprocessing::Process;

static LI: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn f1(i: i32) {
    let mut li = LI.lock().unwrap_or_else(|e| e.into_inner());
    li.push(i);
    println!("你好 {li:?}");
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut children = Vec::new();
    for i in 0..10 {
        let mut p = Process::new(f1, (i,));
        p.start()?;
        children.push(p);
    }
    for p in &mut children {
        p.join()?;
    }
    println!(
        "the parent's list is still {:?}",
        LI.lock().map(|l| l.clone()).unwrap_or_default()
    );
    Ok(())
}
