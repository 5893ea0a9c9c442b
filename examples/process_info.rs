//! Who am I, who is my parent: names and pids in the parent and a child.
//! Twin of seed 003, part 2 (`info(title)` printing the parent and own pid).
//!
//! Run with `cargo run --example process_info`.

use std::error::Error;

use multiprocessing::{Process, current_process, parent_process};

fn info(title: &str) {
    let me = current_process();
    let parent = parent_process().map_or_else(|| "none".to_string(), |p| format!("{} ({})", p.name(), p.pid()));
    println!("{title}: {} pid {}, parent {parent}", me.name(), me.pid());
}

fn f(name: String) {
    info("function f");
    println!("hello {name}");
}

fn main() -> Result<(), Box<dyn Error>> {
    info("main line");
    let mut p = Process::new(f, ("bob".to_string(),));
    p.start()?;
    p.join()?;
    Ok(())
}
