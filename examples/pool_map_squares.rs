//! `Pool::map`: square numbers in the workers, results in input order.
//! Twin of seed 001 (3.2, "进程池的使用": `Pool(processes=4)` maps `x*x`
//! over `range(10)`; 5.1, "并行计算与任务分发": `complex_calculation` over
//! `[1, 2, 3, 4, 5]`) and seed 003 (part 1: `Pool(5)` maps `f` over
//! `[1, 2, 3]`).
//!
//! Python's `with Pool(...) as pool:` becomes a scope: dropping the pool
//! terminates it, as leaving the `with` block does. Rust prints a `Vec`
//! with `{:?}` as Python prints a list.
//!
//! Run with `cargo run --example pool_map_squares`.

use std::error::Error;

use multiprocessing::Pool;

fn f(x: u64) -> u64 {
    x * x
}

/// Seed 001, 5.1: "a complex task to compute".
fn complex_calculation(num: u64) -> u64 {
    num * num
}

fn main() -> Result<(), Box<dyn Error>> {
    // Seed 001, 3.2: `with multiprocessing.Pool(processes=4) as pool:`.
    {
        let pool = Pool::builder().processes(4).build()?;
        let result = pool.map(f, 0..10)?;
        println!("{result:?}");
    }

    // Seed 001, 5.1: a pool of 4 and a list of tasks.
    let pool = Pool::builder().processes(4).build()?;
    let nums = vec![1, 2, 3, 4, 5];
    let results = pool.map(complex_calculation, nums)?;
    println!("{results:?}");
    pool.close();
    pool.join()?;

    // Seed 003, part 1: `p = Pool(5); print(p.map(f, [1, 2, 3]))`.
    let p = Pool::new(5)?;
    println!("{:?}", p.map(f, [1, 2, 3])?);
    p.close();
    p.join()?;
    Ok(())
}
