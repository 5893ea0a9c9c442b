//! Queue benchmarks: throughput of small ints with 1 producer / 1 consumer
//! and 2 / 2, SimpleQueue 1 / 1, a ping-pong through two queues, and the
//! bandwidth of 4 KiB and 1 MiB items; IDs match
//! `../shared/bench/python/bench_queue.py` (`queue_throughput_1p1c`,
//! `queue_throughput_2p2c`, `simplequeue_throughput_1p1c`,
//! `queue_pingpong_rtt_median`).
//!
//! As in the Python script, the producers and consumers are started once
//! (process start is not timed); each timed round tells the producers how
//! many items to put, each producer ends its share with a `None` sentinel, each
//! consumer stops at its first `None` and reports its count, and the round ends
//! when every consumer has reported.
//!
//! Run with `cargo xtask bench queue`; compare under the same CPU placement
//! as Python (`taskset -c 0 cargo xtask bench queue` against
//! `taskset -c 0 python3 bench_queue.py`).

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use mp_process::{Process, StartMethod, get_context};
use mp_queue::{Queue, SimpleQueue};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Items per timed round, as in `bench_queue.py`.
const TOTAL: u64 = 200_000;

/// The two queue types under one face, so the same producer and consumer
/// drive both.
trait Channel<T>: Clone + Serialize + DeserializeOwned + Send + 'static {
    fn make() -> Self;
    fn send(&self, x: T);
    fn take(&self) -> T;
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Channel<T> for Queue<T> {
    fn make() -> Self {
        Queue::new().expect("queue")
    }
    fn send(&self, x: T) {
        self.put(x).expect("put");
    }
    fn take(&self) -> T {
        self.get().expect("get")
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Channel<T> for SimpleQueue<T> {
    fn make() -> Self {
        SimpleQueue::new().expect("queue")
    }
    fn send(&self, x: T) {
        self.put(x).expect("put");
    }
    fn take(&self) -> T {
        self.get().expect("get")
    }
}

/// Puts `n` items then a sentinel for every `n` it is told; stops at 0.
fn producer<Q: Channel<Option<u64>>>(ctrl: Queue<u64>, q: Q) {
    loop {
        let n = ctrl.get().expect("ctrl");
        if n == 0 {
            return;
        }
        for i in 0..n {
            q.send(Some(i));
        }
        q.send(None);
    }
}

/// Counts items up to its first sentinel and reports the count; stops when
/// told (a `u64::MAX` in `ctrl`).
fn consumer<Q: Channel<Option<u64>>>(ctrl: Queue<u64>, q: Q, done: Queue<u64>) {
    while ctrl.get().expect("ctrl") != u64::MAX {
        let mut c = 0;
        while q.take().is_some() {
            c += 1;
        }
        done.put(c).expect("done");
    }
}

#[derive(Serialize, Deserialize, Clone)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

/// Puts `count` blobs of `size` bytes then an empty one, per round.
fn blob_producer(ctrl: Queue<(u64, usize)>, q: Queue<Blob>) {
    loop {
        let (count, size) = ctrl.get().expect("ctrl");
        if count == 0 {
            return;
        }
        let blob = Blob(vec![7; size]);
        for _ in 0..count {
            q.put(blob.clone()).expect("put");
        }
        q.put(Blob(Vec::new())).expect("put");
    }
}

fn blob_consumer(q: Queue<Blob>, done: Queue<u64>) {
    loop {
        let mut bytes = 0;
        loop {
            let b = q.get().expect("get");
            if b.0.is_empty() {
                break;
            }
            bytes += b.0.len() as u64;
        }
        if bytes == 0 {
            return;
        }
        done.put(bytes).expect("done");
    }
}

fn echo(a: Queue<Option<u64>>, b: Queue<Option<u64>>) {
    while let Some(x) = a.get().expect("get") {
        b.put(Some(x)).expect("put");
    }
}

fn started(mut p: Process) -> Process {
    p.start().expect("start a bench child");
    p
}

/// `nprod` producers and `ncons` consumers of `Q`, started once; each
/// iteration is one round of [`TOTAL`] items.
fn throughput<Q: Channel<Option<u64>>>(c: &mut Criterion, id: &str, nprod: u64, ncons: usize) {
    let ctx = get_context(StartMethod::Fork);
    let q = Q::make();
    let done = Queue::new().expect("queue");
    let pctrl: Vec<Queue<u64>> = (0..nprod).map(|_| Queue::new().expect("queue")).collect();
    let cctrl = Queue::new().expect("queue");
    let mut children: Vec<Process> = pctrl
        .iter()
        .map(|ctrl| started(ctx.process(producer::<Q>, (ctrl.clone(), q.clone()))))
        .collect();
    children.extend((0..ncons).map(|_| started(ctx.process(consumer::<Q>, (cctrl.clone(), q.clone(), done.clone())))));
    let mut g = c.benchmark_group("queue_throughput");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(TOTAL));
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                for _ in 0..ncons {
                    cctrl.put(0).expect("ctrl");
                }
                for ctrl in &pctrl {
                    ctrl.put(TOTAL / nprod).expect("ctrl");
                }
                let got: u64 = (0..ncons).map(|_| done.get().expect("done")).sum();
                total += t0.elapsed();
                assert_eq!(got, TOTAL);
            }
            total
        })
    });
    g.finish();
    for ctrl in &pctrl {
        ctrl.put(0).expect("stop");
    }
    for _ in 0..ncons {
        cctrl.put(u64::MAX).expect("stop");
    }
    for p in &mut children {
        p.join().expect("join");
    }
}

fn throughputs(c: &mut Criterion) {
    throughput::<Queue<Option<u64>>>(c, "queue_throughput_1p1c", 1, 1);
    throughput::<Queue<Option<u64>>>(c, "queue_throughput_2p2c", 2, 2);
    throughput::<SimpleQueue<Option<u64>>>(c, "simplequeue_throughput_1p1c", 1, 1);
}

fn bandwidth(c: &mut Criterion) {
    let ctx = get_context(StartMethod::Fork);
    let ctrl = Queue::new().expect("queue");
    let q = Queue::new().expect("queue");
    let done = Queue::new().expect("queue");
    let mut prod = started(ctx.process(blob_producer, (ctrl.clone(), q.clone())));
    let mut cons = started(ctx.process(blob_consumer, (q.clone(), done.clone())));
    let mut g = c.benchmark_group("queue_bandwidth");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (id, size, count) in [
        ("queue_bandwidth_4KiB", 4096usize, 20_000u64),
        ("queue_bandwidth_1MiB", 1 << 20, 200),
    ] {
        g.throughput(Throughput::Bytes(size as u64 * count));
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    ctrl.put((count, size)).expect("ctrl");
                    let bytes = done.get().expect("done");
                    total += t0.elapsed();
                    assert_eq!(bytes, size as u64 * count);
                }
                total
            })
        });
    }
    g.finish();
    ctrl.put((0, 0)).expect("stop");
    q.put(Blob(Vec::new())).expect("stop");
    prod.join().expect("join");
    cons.join().expect("join");
}

fn pingpong(c: &mut Criterion) {
    let (a, b) = (Queue::new().expect("queue"), Queue::new().expect("queue"));
    let mut child = started(get_context(StartMethod::Fork).process(echo, (a.clone(), b.clone())));
    for i in 0..200 {
        a.put(Some(i)).expect("put");
        b.get().expect("get");
    }
    let mut g = c.benchmark_group("queue_pingpong");
    g.sample_size(30).measurement_time(Duration::from_secs(3));
    let mut i = 0;
    g.bench_function("queue_pingpong_rtt_median", |bch| {
        bch.iter_custom(|iters| {
            common::median_of(iters, || {
                i += 1;
                a.put(Some(i)).expect("put");
                assert_eq!(b.get().expect("get"), Some(i));
            })
        })
    });
    g.finish();
    a.put(None).expect("stop");
    child.join().expect("join");
}

criterion_group!(benches, throughputs, pingpong, bandwidth);

fn main() {
    // The children are forked: start them before criterion's threads exist.
    benches();
    Criterion::default().configure_from_args().final_summary();
}
