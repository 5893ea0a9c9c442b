//! A `Value` and an `Array` in shared memory, changed by a child process:
//! it sets the number to 3.1415927 and negates every element. Twin of seed
//! 003 (part 5, "inter-process memory sharing: Value, Array").
//!
//! Run with `cargo run --example value_array`.

use std::error::Error;

use multiprocessing::{Array, Process, Value};

#[allow(clippy::approx_constant, reason = "the seed's literal, not pi")]
fn f(n: Value<f64>, a: Array<i32>) -> Result<(), Box<dyn Error>> {
    n.set(3.1415927);
    for x in a.lock()?.iter_mut() {
        *x = -*x;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let num = Value::new(0.0f64)?;
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>())?;
    println!("{:?}", num.get());
    println!("{:?}", arr.to_vec());
    let mut p = Process::new(f, (num.clone(), arr.clone()));
    p.start()?;
    p.join()?;
    println!("{:?}", num.get());
    println!("{:?}", arr.to_vec());
    Ok(())
}
