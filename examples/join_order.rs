//! `join` makes the parent wait: the child's lines come before the
//! parent's. Twin of seed 002 (`start`, `sleep` or `join`, then the parent
//! prints) and seed 001 3.1.
//!
//! Run with `cargo run --example join_order`.

use std::error::Error;
use std::io::Write;
use std::time::Duration;

use multiprocessing::{Event, Process};

fn f(n: i32, printed: Event) -> Result<(), Box<dyn Error>> {
    println!("{n}");
    println!("子进程");
    std::io::stdout().flush()?;
    printed.set();
    Ok(())
}

/// Prints, works for a while (the seed sleeps a second; here: waits on an
/// event nobody sets, for 200 ms), prints again.
fn hello(name: String, work: Event) {
    println!("hello {name}");
    work.wait_timeout(Duration::from_millis(200));
    println!("子进程");
}

fn task(mut n: i32) {
    n += 1;
    println!("{n}");
}

fn main() -> Result<(), Box<dyn Error>> {
    // The seed's parent sleeps so that the child prints first; here it waits
    // until the child says it has printed.
    let printed = Event::new()?;
    let mut p = Process::new(f, (666, printed.clone()));
    p.start()?;
    if !printed.wait_timeout(Duration::from_secs(30)) {
        return Err("the child did not print".into());
    }
    println!("主进程");
    p.join()?;

    // join: the parent waits for the child.
    let mut p = Process::new(hello, ("bob".to_string(), Event::new()?));
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
