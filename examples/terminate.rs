//! Terminating a child that is still working: Python's exit code `-15`.
//! Twin of seed 001, 2.3.
//!
//! The seed's child prints at 0, 1, 2.. s and the parent terminates it at
//! 2 s, which races with the third print; here the child counts its prints
//! on a Semaphore and the parent terminates it after the second, so exactly
//! two lines come out every time.
//!
//! Run with `cargo run --example terminate`.

use std::error::Error;
use std::io::Write;
use std::time::Duration;

use multiprocessing::{Event, Process, Semaphore};

/// Prints five times, a second of work apart (the work: waiting on an event
/// that is never set), and counts each print on `printed`.
fn func(printed: Semaphore, work: Event) -> Result<(), Box<dyn Error>> {
    for _ in 0..5 {
        println!("Child process");
        std::io::stdout().flush()?;
        printed.release()?;
        work.wait_timeout(Duration::from_secs(1));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let printed = Semaphore::new(0)?;
    let mut p = Process::new(func, (printed.clone(), Event::new()?));
    p.start()?;
    for _ in 0..2 {
        if !printed.acquire_timeout(Duration::from_secs(30))? {
            return Err("the child did not print".into());
        }
    }
    p.terminate()?;
    p.join()?;
    println!("exitcode {:?}", p.exitcode());
    Ok(())
}
