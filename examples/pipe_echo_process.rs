//! A `Process` subclass that owns one end of a `Pipe` and echoes every
//! string back in upper case until it receives `None` (the shape of
//! Python's `test_subclassing`).
//!
//! Run with `cargo run --example pipe_echo_process`.

use std::error::Error;

use multiprocessing::{Connection, Process, Run, pipe};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct UpperEcho {
    conn: Connection,
}

impl Run for UpperEcho {
    fn run(self) {
        while let Ok(Some(text)) = self.conn.recv::<Option<String>>() {
            if self.conn.send(&text.to_uppercase()).is_err() {
                break;
            }
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let (mine, theirs) = pipe()?;
    let mut p = Process::from_run(UpperEcho { conn: theirs });
    p.start()?;
    for word in ["hello", "multiprocessing", "in rust"] {
        mine.send(&Some(word))?;
        let echoed: String = mine.recv()?;
        println!("{word} -> {echoed}");
    }
    mine.send(&None::<String>)?;
    p.join()?;
    println!("echo process exit code {:?}", p.exitcode());
    Ok(())
}
