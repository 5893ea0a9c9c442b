//! The `Queue` methods listed in seed 004, one after another: `qsize`,
//! `empty`, `full`, `put`/`get` with and without blocking or a timeout,
//! `put_nowait`/`get_nowait`, and what comes back when a queue is full or
//! empty.
//!
//! Run with `cargo run --example queue_api`.

use std::error::Error;
use std::time::{Duration, Instant};

use multiprocessing::{GetError, PutError, Queue};

fn main() -> Result<(), Box<dyn Error>> {
    // Queue(3): at most three messages (Queue() is unbounded).
    let q = Queue::with_maxsize(3)?;
    println!(
        "maxsize {}, qsize {}, empty {}, full {}",
        q.maxsize(),
        q.qsize(),
        q.is_empty(),
        q.is_full()
    );

    q.put("message 1".to_string())?;
    q.put("message 2".to_string())?;
    q.put_nowait("message 3".to_string())?;
    println!(
        "after three puts: qsize {}, empty {}, full {}",
        q.qsize(),
        q.is_empty(),
        q.is_full()
    );

    // put(block=False) on a full queue: Queue.Full at once, and the item comes back.
    match q.put_nowait("message 4".to_string()) {
        Err(PutError::Full(item)) => println!("put_nowait on a full queue: Full, {item:?} handed back"),
        other => println!("unexpected: {other:?}"),
    }
    // put(block=True, timeout=0.2): Full after the timeout.
    let t0 = Instant::now();
    let e = q
        .put_timeout("message 4".to_string(), Duration::from_millis(200))
        .unwrap_err();
    println!(
        "put_timeout(0.2 s) on a full queue: {} after >= 0.2 s: {}",
        e,
        t0.elapsed() >= Duration::from_millis(200)
    );

    println!("get: {}", q.get()?);
    println!("get_timeout(1 s): {}", q.get_timeout(Duration::from_secs(1))?);
    println!("get_nowait: {}", q.get_nowait()?);
    println!("qsize {}, empty {}", q.qsize(), q.is_empty());

    // get(block=False) on an empty queue: Queue.Empty at once.
    match q.get_nowait() {
        Err(GetError::Empty) => println!("get_nowait on an empty queue: Empty"),
        other => println!("unexpected: {other:?}"),
    }
    let t0 = Instant::now();
    let e = q.get_timeout(Duration::from_millis(200)).unwrap_err();
    println!(
        "get_timeout(0.2 s) on an empty queue: {} after >= 0.2 s: {}",
        e,
        t0.elapsed() >= Duration::from_millis(200)
    );

    // Beyond the seed: close ends consumers without a sentinel.
    q.put("last".to_string())?;
    q.close();
    println!("after close: put gives {:?}", q.put("late".to_string()).unwrap_err());
    println!("get drains: {}", q.get()?);
    println!("then get gives {:?}", q.get().unwrap_err());
    Ok(())
}
