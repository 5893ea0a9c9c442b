//! Pool benchmarks, IDs as in `../shared/bench/python/bench_pool.py`:
//! `pool_map_default_chunksize` (x*x over 1M ints), `pool_map_chunksize1`
//! and `pool_apply_async` (20k tasks), `ppe_map_default_chunksize` (an
//! executor's map over 20k), and `pool_startup_close_join` (Pool(2)
//! created, closed and joined, no work) per start method.
//!
//! `pool_map_100k`: one warm `Pool(2)` map of `x*x` over 100,000 `u64`,
//! beside its floor, `pool_map_100k_floor_thread_scope` (two threads of
//! `std::thread::scope`, each squaring half into the output); the
//! `procspawn` peer with the same 8 chunks cut by hand is in `peers/`, a
//! package of its own outside the workspace.
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

/// Items in the warm map of `pool_map_100k`.
const N_100K: u64 = 100_000;

/// `x*x` over `0..n` on two threads of `std::thread::scope`, each writing
/// its half of the output: the floor under any pool's map.
fn floor_thread_scope(n: u64) -> Vec<u64> {
    let items: Vec<u64> = (0..n).collect();
    let mut out = vec![0u64; items.len()];
    let half = items.len().div_ceil(2).max(1);
    std::thread::scope(|s| {
        for (i, o) in items.chunks(half).zip(out.chunks_mut(half)) {
            s.spawn(move || {
                for (x, y) in i.iter().zip(o) {
                    *y = sq(*x);
                }
            });
        }
    });
    out
}

fn map_100k(c: &mut Criterion) {
    let pool = Pool::new(2).expect("pool");
    pool.map(sq, 0..N_100K).expect("warm-up");
    let mut g = c.benchmark_group("pool");
    g.sample_size(50).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(N_100K));
    g.bench_function("pool_map_100k", |b| {
        b.iter(|| {
            let out = pool.map(sq, 0..N_100K).expect("map");
            assert_eq!(out[out.len() - 1], (N_100K - 1) * (N_100K - 1));
        })
    });
    g.bench_function("pool_map_100k_floor_thread_scope", |b| {
        b.iter(|| {
            let out = floor_thread_scope(N_100K);
            assert_eq!(out[out.len() - 1], (N_100K - 1) * (N_100K - 1));
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

criterion_group!(benches, map_100k, throughput, startup);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
