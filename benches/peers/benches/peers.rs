//! `pool_map_100k`: a warm two-worker pool mapping `x*x` over 100,000
//! `u64`, three ways side by side: this library's `Pool::new(2).map`,
//! procspawn's `Pool::new(2)` given the same 8 chunks by hand, and the
//! floor, two threads of `std::thread::scope`.
//!
//! ```text
//! cargo bench --manifest-path benches/peers/Cargo.toml
//! ```

use std::time::Duration;

use criterion::{Criterion, Throughput};
use mp_peers::{ITEMS, WORKERS, check_squares};

fn map_100k(c: &mut Criterion) {
    let ours = multiprocessing::Pool::new(WORKERS).expect("pool");
    let peer = procspawn::Pool::new(WORKERS).expect("procspawn pool");
    // Warm both: every worker has run a whole map.
    check_squares(&mp_peers::ours(&ours, ITEMS).expect("map"), ITEMS).expect("squares");
    check_squares(&mp_peers::procspawn(&peer, ITEMS).expect("map"), ITEMS).expect("squares");
    let mut g = c.benchmark_group("pool_map_100k");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(ITEMS));
    g.bench_function("ours", |b| b.iter(|| mp_peers::ours(&ours, ITEMS).expect("map")));
    g.bench_function("procspawn_8_chunks", |b| {
        b.iter(|| mp_peers::procspawn(&peer, ITEMS).expect("map"))
    });
    g.bench_function("floor_thread_scope", |b| b.iter(|| mp_peers::floor_thread_scope(ITEMS)));
    g.finish();
    peer.shutdown();
}

fn main() {
    // procspawn's workers re-enter `main`: this must come first.
    procspawn::init();
    let mut c = Criterion::default().configure_from_args();
    map_100k(&mut c);
    c.final_summary();
}
