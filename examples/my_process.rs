//! Python's `Process` subclass with a `run()` method: a value that travels to
//! the child, where `run` is called. Twin of seed 001 (2.1, method two) and
//! seed 002 (inheritance).
//!
//! Run with `cargo run --example my_process`.

use std::error::Error;

use multiprocessing::{Process, Run, current_process};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct MyProcess {
    name: String,
}

impl Run for MyProcess {
    fn run(self) {
        println!("Child process {} ({})", self.name, current_process().name());
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut p = Process::from_run(MyProcess { name: "messi".into() });
    p.start()?;
    p.join()?;
    let mut ps: Vec<Process> = ["c罗", "salah"]
        .iter()
        .map(|n| Process::from_run(MyProcess { name: (*n).into() }))
        .collect();
    for p in &mut ps {
        p.start()?;
        p.join()?;
    }
    println!("parent {}", current_process().name());
    Ok(())
}
