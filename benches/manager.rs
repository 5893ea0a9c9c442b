//! Manager benchmarks: start-up and shutdown of a manager, and a managed
//! dict's set and get from a child process; IDs match
//! `../shared/bench/python/bench_manager.py` (`manager_startup`,
//! `manager_shutdown`, `manager_dict_set_from_child`,
//! `manager_dict_get_from_child`).
//!
//! As in the Python script, the dict operations run in a child and are
//! timed there: each timed round tells the child how many operations to do
//! (keys `0..n`), and the child sends back the time they took.
//!
//! Run with `cargo xtask bench manager`; compare under the same CPU
//! placement as Python (`taskset -c 0 cargo xtask bench manager` against
//! `taskset -c 0 python3 bench_manager.py`).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use mp_connection::{Connection, pipe};
use mp_manager::{DictProxy, Manager};
use mp_process::Process;

/// Runs timed rounds of dict operations for the parent: `(true, n)` sets
/// keys `0..n`, `(false, n)` gets them; `(_, 0)` ends.
fn dict_child(d: DictProxy<u64, u64>, cmd: Connection) {
    loop {
        let (set, n): (bool, u64) = cmd.recv().expect("command");
        if n == 0 {
            return;
        }
        let t0 = Instant::now();
        if set {
            for k in 0..n {
                d.insert(k, k).expect("insert");
            }
        } else {
            for k in 0..n {
                assert_eq!(d.get(&k).expect("get"), Some(k));
            }
        }
        cmd.send(&(t0.elapsed().as_nanos() as u64)).expect("report");
    }
}

fn startup(c: &mut Criterion) {
    let mut g = c.benchmark_group("manager");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    // The first manager also starts the fork server; not timed.
    drop(Manager::new().expect("manager"));
    g.bench_function("manager_startup", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                let m = Manager::new().expect("manager");
                total += t0.elapsed();
                drop(m);
            }
            total
        })
    });
    g.bench_function("manager_shutdown", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = Manager::new().expect("manager");
                let t0 = Instant::now();
                m.shutdown().expect("shutdown");
                total += t0.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn dict_from_child(c: &mut Criterion) {
    let m = Manager::new().expect("manager");
    let d = m.dict::<u64, u64>().expect("dict");
    let (mine, theirs) = pipe().expect("pipe");
    let mut child = Process::new(dict_child, (d.clone(), theirs));
    child.start().expect("start");
    let round = |set: bool, n: u64| -> Duration {
        mine.send(&(set, n)).expect("command");
        Duration::from_nanos(mine.recv::<u64>().expect("report"))
    };
    round(true, 1000);
    round(false, 1000);
    let mut g = c.benchmark_group("manager_dict");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("manager_dict_set_from_child", |b| {
        b.iter_custom(|iters| round(true, iters))
    });
    g.bench_function("manager_dict_get_from_child", |b| {
        b.iter_custom(|iters| round(false, iters))
    });
    g.finish();
    mine.send(&(true, 0u64)).expect("stop");
    child.join().expect("join");
}

criterion_group!(benches, startup, dict_from_child);

fn main() {
    // The children are started before criterion's threads exist.
    benches();
    Criterion::default().configure_from_args().final_summary();
}
