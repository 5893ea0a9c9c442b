//! `join` makes the parent wait: the child's lines come before the
//! parent's. Twin of seed 002 (`start`, `sleep` or `join`, then the parent
//! prints) and seed 001 3.1.
//!
//! Run with `cargo run --example join_order`.

use std::error::Error;
use std::time::Duration;

use multiprocessing::Process;

fn f(n: i32) {
    println!("{n}");
    println!("子进程");
}

fn hello(name: String) {
    println!("hello {name}");
    std::thread::sleep(Duration::from_secs(1));
    println!("子进程");
}

fn task(mut n: i32) {
    n += 1;
    println!("{n}");
}

fn main() -> Result<(), Box<dyn Error>> {
    // The parent sleeps long enough for the child to print first.
    let mut p = Process::new(f, (666,));
    p.start()?;
    std::thread::sleep(Duration::from_secs(1));
    println!("主进程");
    p.join()?;

    // join: the parent waits for the child.
    let mut p = Process::new(hello, ("bob".to_string(),));
    p.start()?;
    p.join()?;
    println!("父进程");

    // Three children, each joined before the next starts.
    for i in 0..3 {
        let mut p = Process::new(task, (i,));
        p.start()?;
        p.join()?;
    }
    Ok(())
}
