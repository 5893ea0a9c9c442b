//! Process start+join benchmarks, one per start method; IDs match
//! `../shared/bench/python/bench_process_start.py` (`process_start_join_*`),
//! beside the floors: a bare fork+exit+wait and a bare re-exec of this binary.
//!
//! Run with `cargo xtask bench process`.

use std::time::Duration;

use criterion::{Criterion, criterion_group};
use mp_process::{StartMethod, get_context};
use mp_sys::process::{SpawnOptions, spawn_self};

fn noop() {}

fn start_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("process_start");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    for (id, m) in [
        ("process_start_join_fork", StartMethod::Fork),
        ("process_start_join_forkserver", StartMethod::ForkServer),
        ("process_start_join_spawn", StartMethod::Spawn),
    ] {
        let ctx = get_context(m);
        // Warm up: the fork server starts on first use.
        let mut p = ctx.process(noop, ());
        p.start().unwrap();
        p.join().unwrap();
        g.bench_function(id, |b| {
            b.iter(|| {
                let mut p = ctx.process(noop, ());
                p.start().unwrap();
                p.join().unwrap();
                assert_eq!(p.exitcode(), Some(0));
            })
        });
    }
    g.bench_function("baseline_fork_exit_wait", |b| {
        b.iter(|| {
            let mut c = mp_sys::process::fork_run(|| 0).unwrap();
            c.wait().unwrap()
        })
    });
    g.bench_function("baseline_reexec_exit_wait", |b| {
        b.iter(|| {
            let mut c = spawn_self(&SpawnOptions::new().env("MP_BENCH_EXIT_AT_ONCE", "1")).unwrap();
            c.wait().unwrap()
        })
    });
    g.finish();
}

fn exit_at_once() {
    // The bare re-exec baseline: its child exits as soon as main starts.
    if std::env::var_os("MP_BENCH_EXIT_AT_ONCE").is_some() {
        mp_sys::process::exit_now(0);
    }
}

criterion_group!(benches, start_join);

fn main() {
    exit_at_once();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
