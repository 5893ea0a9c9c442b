//! Shared-memory benchmarks; IDs match `../shared/bench/python/bench_shared.py`
//! (`value_array_*`, 1M doubles) and `bench_lock.py`'s contended Value
//! increment, here as `value_incr_get_lock_2proc` (Python's
//! `with v.get_lock(): v.value += 1`) and `value_incr_guard_2proc`
//! (`*v.lock()? += 1`). One iteration of the increment benches is one
//! increment, so elements/s is ops/s.
//!
//! Run with `cargo xtask bench shared`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use mp_process::{StartMethod, get_context};
use mp_shared::{Array, Value};
use mp_sync::Barrier;

const N: usize = 1_000_000;

fn child_sum(arr: Array<f64>, out: Value<f64>, took_ns: Value<u64>) {
    let t0 = Instant::now();
    let s: f64 = arr.to_vec().iter().sum();
    took_ns.set(t0.elapsed().as_nanos() as u64);
    out.set(s);
}

fn child_iter_sum(arr: Array<f64>, out: Value<f64>, took_ns: Value<u64>) {
    let t0 = Instant::now();
    let s: f64 = arr.iter().sum();
    took_ns.set(t0.elapsed().as_nanos() as u64);
    out.set(s);
}

fn incr_get_lock(v: Value<u64>, start: Barrier, n: u64) {
    start.wait().unwrap();
    for _ in 0..n {
        let _held = v.get_lock().acquire().unwrap();
        v.set(v.get() + 1);
    }
}

fn incr_guard(v: Value<u64>, start: Barrier, n: u64) {
    start.wait().unwrap();
    for _ in 0..n {
        *v.lock().unwrap() += 1;
    }
}

fn value_array(c: &mut Criterion) {
    let mut g = c.benchmark_group("value_array");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("value_array_create_1M_doubles", |b| {
        b.iter(|| Array::<f64>::new(N).unwrap())
    });
    let arr = Array::<f64>::new(N).unwrap();
    g.bench_function("value_array_fill_slice_assign", |b| {
        b.iter(|| {
            let v: Vec<f64> = (0..N).map(|i| i as f64).collect();
            arr.set_slice(0, &v).unwrap();
        })
    });
    // The filled array, whichever benches the filter selects.
    arr.set_slice(0, &(0..N).map(|i| i as f64).collect::<Vec<_>>()).unwrap();
    let expected = (N * (N - 1) / 2) as f64;
    let ctx = get_context(StartMethod::Fork);
    let out = Value::new(0.0f64).unwrap();
    let took = Value::new(0u64).unwrap();
    g.bench_function("value_array_child_slice_sum", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut p = ctx.process(child_sum, (arr.clone(), out.clone(), took.clone()));
                p.start().unwrap();
                p.join().unwrap();
                assert_eq!(out.get(), expected);
                total += Duration::from_nanos(took.get());
            }
            total
        })
    });
    g.bench_function("value_array_child_iter_sum", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut p = ctx.process(child_iter_sum, (arr.clone(), out.clone(), took.clone()));
                p.start().unwrap();
                p.join().unwrap();
                assert_eq!(out.get(), expected);
                total += Duration::from_nanos(took.get());
            }
            total
        })
    });
    g.bench_function("value_array_child_e2e_start_sum_join", |b| {
        b.iter(|| {
            let mut p = ctx.process(child_iter_sum, (arr.clone(), out.clone(), took.clone()));
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(out.get(), expected);
        })
    });
    g.finish();
}

fn two_proc(n: u64, f: fn(Value<u64>, Barrier, u64)) -> Duration {
    let v = Value::new(0u64).unwrap();
    let start = Barrier::new(3).unwrap();
    let ctx = get_context(StartMethod::Fork);
    let mut kids: Vec<_> = (0..2)
        .map(|_| ctx.process(f, (v.clone(), start.clone(), n / 2)))
        .collect();
    for k in &mut kids {
        k.start().unwrap();
    }
    start.wait().unwrap();
    let t0 = Instant::now();
    for k in &mut kids {
        k.join().unwrap();
        assert_eq!(k.exitcode(), Some(0));
    }
    let took = t0.elapsed();
    assert_eq!(v.get(), n / 2 * 2, "increments lost");
    took
}

fn value_incr(c: &mut Criterion) {
    let mut g = c.benchmark_group("value_incr");
    g.throughput(Throughput::Elements(1)).sample_size(20);
    g.bench_function("value_incr_get_lock_2proc", |b| {
        b.iter_custom(|n| two_proc(n.max(2), incr_get_lock))
    });
    g.bench_function("value_incr_guard_2proc", |b| {
        b.iter_custom(|n| two_proc(n.max(2), incr_guard))
    });
    // One process, no contention: the lock's own cost and the value's
    // access, without the other process's cache traffic.
    let v = Value::new(0u64).unwrap();
    g.bench_function("value_incr_get_lock_1proc", |b| {
        b.iter(|| {
            let _g = v.get_lock().acquire().unwrap();
            v.set(v.get() + 1);
        })
    });
    g.finish();
}

criterion_group!(benches, value_array, value_incr);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
