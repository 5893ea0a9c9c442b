//! Synchronization benchmarks; IDs match `../shared/bench/python/bench_lock.py`
//! and `bench_event.py`, beside baselines (std's Mutex in one process).
//!
//! - `lock_uncontended_acquire_release`: acquire + release in one process.
//! - `lock_contended_value_incr_2proc` (and the RLock form Python's
//!   `Value.get_lock()` uses): 2 processes each increment a shared counter
//!   under the lock; one iteration is one increment, so elements/s is ops/s.
//! - `event_pingpong_rtt_median`, `semaphore_pingpong_rtt_median`: a round
//!   trip between two processes through two Events (set/wait/clear) or two
//!   Semaphores (release/acquire).
//!
//! Run with `cargo xtask bench sync` (add `taskset -c 0` in front to compare
//! pinned figures).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use mp_process::{Process, StartMethod, get_context};
use mp_sync::{Barrier, Event, Lock, RLock, Semaphore};
use mp_sys::region::Region;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Counter(#[serde(with = "mp_codec::handle::region")] Region);

fn bump(c: &Counter) {
    let cell = &c.0.atomics_u64()[0];
    cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

fn incr_lock(lock: Lock, counter: Counter, start: Barrier, n: u64) {
    start.wait().unwrap();
    for _ in 0..n {
        let _g = lock.acquire().unwrap();
        bump(&counter);
    }
}

fn incr_rlock(lock: RLock, counter: Counter, start: Barrier, n: u64) {
    start.wait().unwrap();
    for _ in 0..n {
        let _g = lock.acquire().unwrap();
        bump(&counter);
    }
}

fn event_child(e1: Event, e2: Event, n: u64) {
    for _ in 0..n {
        e1.wait();
        e1.clear();
        e2.set();
    }
}

fn sem_child(s1: Semaphore, s2: Semaphore, n: u64) {
    for _ in 0..n {
        s1.acquire().unwrap();
        s2.release().unwrap();
    }
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_uncontended");
    let lock = Lock::new().unwrap();
    g.bench_function("lock_uncontended_acquire_release", |b| {
        b.iter(|| drop(lock.acquire().unwrap()))
    });
    let rlock = RLock::new().unwrap();
    g.bench_function("rlock_uncontended_acquire_release", |b| {
        b.iter(|| drop(rlock.acquire().unwrap()))
    });
    let std_mutex = std::sync::Mutex::new(());
    g.bench_function("baseline_std_mutex_lock_unlock", |b| {
        b.iter(|| drop(std_mutex.lock().unwrap()))
    });
    g.finish();
}

/// Runs `n` increments split over two child processes; the time from the
/// barrier that all three pass to both children's exit.
fn two_proc_increments<L>(lock: &L, n: u64, f: fn(L, Counter, Barrier, u64)) -> Duration
where
    L: Clone + Serialize + for<'de> Deserialize<'de> + Send + 'static,
{
    let counter = Region::create("counter", 64).unwrap();
    let start = Barrier::new(3).unwrap();
    let ctx = get_context(StartMethod::Fork);
    let mut kids: Vec<Process> = (0..2)
        .map(|_| {
            ctx.process(
                f,
                (
                    lock.clone(),
                    Counter(counter.try_clone().unwrap()),
                    start.clone(),
                    n / 2,
                ),
            )
        })
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
    assert_eq!(
        counter.atomics_u64()[0].load(Ordering::Relaxed),
        n / 2 * 2,
        "increments lost"
    );
    took
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_contended");
    g.throughput(Throughput::Elements(1)).sample_size(20);
    let lock = Lock::new().unwrap();
    g.bench_function("lock_contended_value_incr_2proc", |b| {
        b.iter_custom(|n| two_proc_increments(&lock, n.max(2), incr_lock))
    });
    let rlock = RLock::new().unwrap();
    g.bench_function("rlock_contended_value_incr_2proc", |b| {
        b.iter_custom(|n| two_proc_increments(&rlock, n.max(2), incr_rlock))
    });
    g.finish();
}

fn pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("pingpong");
    g.sample_size(20);
    let ctx = get_context(StartMethod::Fork);
    g.bench_function("event_pingpong_rtt_median", |b| {
        b.iter_custom(|n| {
            let (e1, e2) = (Event::new().unwrap(), Event::new().unwrap());
            let mut p = ctx.process(event_child, (e1.clone(), e2.clone(), n));
            p.start().unwrap();
            let t0 = Instant::now();
            for _ in 0..n {
                e1.set();
                e2.wait();
                e2.clear();
            }
            let took = t0.elapsed();
            p.join().unwrap();
            took
        })
    });
    g.bench_function("semaphore_pingpong_rtt_median", |b| {
        b.iter_custom(|n| {
            let (s1, s2) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
            let mut p = ctx.process(sem_child, (s1.clone(), s2.clone(), n));
            p.start().unwrap();
            let t0 = Instant::now();
            for _ in 0..n {
                s1.release().unwrap();
                s2.acquire().unwrap();
            }
            let took = t0.elapsed();
            p.join().unwrap();
            took
        })
    });
    g.finish();
}

criterion_group!(benches, uncontended, contended, pingpong);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
