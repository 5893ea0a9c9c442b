//! Daemonic children do not hold the parent back: `end` is printed and the
//! program ends; the daemons, still working, are terminated with it.
//! Twin of seed 000, part 1.
//!
//! Run with `cargo run --example daemon_end`.

use std::error::Error;

use multiprocessing::{Event, Process};

/// The seed sleeps 3 s before printing; here the daemon waits for an event
/// nobody sets, so it is certainly still working when main returns.
fn f0(a1: i32, never: Event) {
    never.wait();
    println!("{a1}");
}

fn main() -> Result<(), Box<dyn Error>> {
    let never = Event::new()?;
    let mut t = Process::new(f0, (12, never.clone())).daemon(true);
    t.start()?;
    let mut t2 = Process::new(f0, (13, never)).daemon(true);
    t2.start()?;
    println!("end");
    // Returning from main terminates the daemonic children (Python's rule).
    Ok(())
}
