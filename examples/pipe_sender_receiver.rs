//! Two processes talk over a `Pipe`: one sends, the other receives and
//! prints. Twin of seed 001 (2.2, communication between processes).
//!
//! Run with `cargo run --example pipe_sender_receiver`.

use std::error::Error;

use multiprocessing::{Connection, ConnectionError, Process, pipe};

fn sender(conn: Connection) -> Result<(), ConnectionError> {
    conn.send(&"Hello, child process")
}

fn receiver(conn: Connection) -> Result<(), ConnectionError> {
    let msg: String = conn.recv()?;
    println!("{msg}");
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let (parent_conn, child_conn) = pipe()?;
    let mut p1 = Process::new(sender, (child_conn,));
    let mut p2 = Process::new(receiver, (parent_conn,));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    println!(
        "sender exit code {:?}, receiver exit code {:?}",
        p1.exitcode(),
        p2.exitcode()
    );
    Ok(())
}
