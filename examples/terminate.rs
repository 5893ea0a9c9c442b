//! Terminating a child that is still working: Python's exit code `-15`.
//! Twin of seed 001, 2.3.
//!
//! The seed's child prints at 0, 1, 2.. s and the parent terminates it at
//! 2 s, which races with the third print; here the child starts half a
//! second late, so exactly two lines come out every time.
//!
//! Run with `cargo run --example terminate`.

use std::error::Error;
use std::time::Duration;

use multiprocessing::Process;

fn func() {
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        println!("Child process");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut p = Process::new(func, ());
    p.start()?;
    std::thread::sleep(Duration::from_secs(2));
    p.terminate()?;
    p.join()?;
    println!("exitcode {:?}", p.exitcode());
    Ok(())
}
