//! Pool benchmarks, IDs as in `../shared/bench/python/bench_pool.py`:
//! `pool_map_default_chunksize` (x*x over 1M ints), `pool_map_chunksize1`
//! and `pool_apply_async` (20k tasks), `ppe_map_default_chunksize` (an
//! executor's map over 20k), and `pool_startup_close_join` (Pool(2)
//! created, closed and joined, no work) per start method.
//!
//! Throughput rows report elements per second (tasks/s, as Python's
//! figures). Pools are created and warmed before timing, as in Python.
//! Run with `cargo xtask bench pool`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use mp_pool::{Pool, ProcessPoolExecutor};
use mp_process::StartMethod;

fn sq(x: u64) -> u64 {
    x * x
}

fn throughput(c: &mut Criterion) {
    let pool = Pool::new(2).expect("pool");
    pool.map(sq, 0..100).expect("warm-up");
    let mut g = c.benchmark_group("pool");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let n_map = 1_000_000u64;
    g.throughput(Throughput::Elements(n_map));
    g.bench_function("pool_map_default_chunksize", |b| {
        b.iter(|| {
            let out = pool.map(sq, 0..n_map).expect("map");
            assert_eq!(out[out.len() - 1], (n_map - 1) * (n_map - 1));
        })
    });
    let n_small = 20_000u64;
    g.throughput(Throughput::Elements(n_small));
    g.bench_function("pool_map_chunksize1", |b| {
        b.iter(|| pool.map_chunked(sq, 0..n_small, 1).expect("map"))
    });
    g.bench_function("pool_apply_async", |b| {
        b.iter(|| {
            let rs: Vec<_> = (0..n_small)
                .map(|i| pool.apply_async(sq, (i,)).expect("apply_async"))
                .collect();
            for r in rs {
                r.get().expect("get");
            }
        })
    });
    g.finish();
    drop(pool);

    let ex = ProcessPoolExecutor::new(2).expect("executor");
    ex.map(sq, 0..100).expect("warm-up").for_each(drop);
    let mut g = c.benchmark_group("pool");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(n_small));
    g.bench_function("ppe_map_default_chunksize", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for r in ex.map(sq, 0..n_small).expect("map") {
                r.expect("result");
                n += 1;
            }
            assert_eq!(n, n_small);
        })
    });
    g.finish();
}

fn startup(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (m, name) in [
        (StartMethod::Fork, "pool_startup_close_join/fork"),
        (StartMethod::ForkServer, "pool_startup_close_join/forkserver"),
        (StartMethod::Spawn, "pool_startup_close_join/spawn"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let p = Pool::builder().processes(2).start_method(m).build().expect("pool");
                p.close();
                p.join().expect("join");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, throughput, startup);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
