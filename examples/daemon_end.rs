//! Daemonic children do not hold the parent back: `end` is printed and the
//! program ends; the daemons, still sleeping, are terminated with it.
//! Twin of seed 000, part 1.
//!
//! Run with `cargo run --example daemon_end`.

use std::error::Error;
use std::time::Duration;

use multiprocessing::Process;

fn f0(a1: i32) {
    std::thread::sleep(Duration::from_secs(3));
    println!("{a1}");
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut t = Process::new(f0, (12,)).daemon(true);
    t.start()?;
    let mut t2 = Process::new(f0, (13,)).daemon(true);
    t2.start()?;
    println!("end");
    // Returning from main terminates the daemonic children (Python's rule).
    Ok(())
}
