//! `queue_*` and `simplequeue_*`: throughput of small integers between
//! producer and consumer processes, and a round trip through two queues.
//!
//! Throughput runs from the barrier that every child and the parent wait on
//! (after one warm-up item per producer went through the queue) to the last
//! consumer's last item, read on a clock common to the parent
//! and its forked children ([`common::now`](crate::common::now)).

use std::ops::Range;

use multiprocessing::{Barrier, Connection, Queue, SimpleQueue, StartMethod, get_context, pipe_simplex};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::common::{
    Mode, Result, Span, TIMEOUT, ensure, join, join_all, median_time, micros, now, overall, per_second, recv_report,
    start, start_clock,
};

/// An item: `Some(i)`, or `None`, the sentinel that ends a consumer.
type Item = Option<u64>;

/// `Queue` and `SimpleQueue` under one face, so the same producer and
/// consumer drive both.
trait Channel: Clone + Serialize + DeserializeOwned + Send + 'static {
    fn create() -> Result<Self>;
    fn send(&self, item: Item) -> Result<()>;
    fn recv(&self) -> Result<Item>;
}

impl Channel for Queue<Item> {
    fn create() -> Result<Self> {
        Ok(Queue::new()?)
    }
    fn send(&self, item: Item) -> Result<()> {
        Ok(self.put(item)?)
    }
    fn recv(&self) -> Result<Item> {
        Ok(self.get()?)
    }
}

impl Channel for SimpleQueue<Item> {
    fn create() -> Result<Self> {
        Ok(SimpleQueue::new()?)
    }
    fn send(&self, item: Item) -> Result<()> {
        Ok(self.put(item)?)
    }
    fn recv(&self) -> Result<Item> {
        Ok(self.get()?)
    }
}

/// Each producer's first item, put before the barrier: each consumer takes
/// one before the barrier too, so the queue has carried an item before the
/// clock starts.
const WARM_UP_ITEM: Item = Some(u64::MAX);

/// Puts [`WARM_UP_ITEM`], waits at the barrier, puts `items`, then one
/// sentinel.
fn producer<Q: Channel>(q: Q, items: Range<u64>, start: Barrier) -> Result<()> {
    q.send(WARM_UP_ITEM)?;
    start.wait_timeout(TIMEOUT)?;
    for i in items {
        q.send(Some(i))?;
    }
    q.send(None)
}

/// What a consumer reports.
#[derive(Debug, Serialize, Deserialize)]
struct Tally {
    /// The item taken before the barrier.
    warm_up: Item,
    /// How many items it took after the barrier, up to its sentinel.
    count: u64,
    /// Their sum.
    sum: u64,
    /// From the barrier to its last item.
    span: Span,
}

/// Takes one warm-up item, waits at the barrier, then takes the items up to
/// its first sentinel and reports its [`Tally`].
fn consumer<Q: Channel>(q: Q, start: Barrier, report: Connection) -> Result<()> {
    let warm_up = q.recv()?;
    start.wait_timeout(TIMEOUT)?;
    let t0 = now();
    let (mut count, mut sum) = (0, 0);
    while let Some(x) = q.recv()? {
        count += 1;
        sum += x;
    }
    let span = Span { start: t0, end: now() };
    report.send(&Tally {
        warm_up,
        count,
        sum,
        span,
    })?;
    Ok(())
}

/// Messages per second through a `Q` from `pairs` producers (`total`
/// items, split evenly) to `pairs` consumers (a sentinel for each from one
/// producer); checks that the consumers got every item once.
fn throughput<Q: Channel>(pairs: u64, total: u64) -> Result<f64> {
    ensure!(
        total.is_multiple_of(pairs),
        "{total} items do not split evenly over {pairs} producers"
    );
    let ctx = get_context(StartMethod::Fork);
    start_clock();
    let q = Q::create()?;
    let barrier = Barrier::new(2 * pairs as usize + 1)?;
    let share = total / pairs;
    let mut children = Vec::new();
    for k in 0..pairs {
        let items = k * share..(k + 1) * share;
        children.push(start(ctx.process(producer::<Q>, (q.clone(), items, barrier.clone())))?);
    }
    let mut reports = Vec::new();
    for _ in 0..pairs {
        let (reader, writer) = pipe_simplex()?;
        children.push(start(ctx.process(consumer::<Q>, (q.clone(), barrier.clone(), writer)))?);
        reports.push(reader);
    }
    barrier.wait_timeout(TIMEOUT)?;
    let t0 = now();
    let tallies = reports.iter().map(recv_report::<Tally>).collect::<Result<Vec<_>>>()?;
    join_all(&mut children)?;
    ensure!(
        tallies.iter().all(|t| t.warm_up == WARM_UP_ITEM),
        "a consumer's first item was not the warm-up item: {tallies:?}"
    );
    let count: u64 = tallies.iter().map(|t| t.count).sum();
    ensure!(count == total, "the consumers got {count} items, not {total}");
    let sum: u64 = tallies.iter().map(|t| t.sum).sum();
    let expected = total * (total - 1) / 2;
    ensure!(
        sum == expected,
        "the items the consumers got sum to {sum}, not {expected}"
    );
    let spans: Vec<Span> = tallies.iter().map(|t| t.span).collect();
    Ok(per_second(total as usize, overall(t0, &spans)?))
}

pub(crate) fn throughput_1p1c(mode: Mode) -> Result<f64> {
    throughput::<Queue<Item>>(1, mode.pick(200_000, 50_000))
}

pub(crate) fn throughput_2p2c(mode: Mode) -> Result<f64> {
    throughput::<Queue<Item>>(2, mode.pick(200_000, 50_000))
}

pub(crate) fn simplequeue_throughput_1p1c(mode: Mode) -> Result<f64> {
    throughput::<SimpleQueue<Item>>(1, mode.pick(200_000, 50_000))
}

/// Puts back on `back` every item of `there` until the sentinel.
fn echo(there: Queue<Item>, back: Queue<Item>) -> Result<()> {
    while let Some(x) = there.get()? {
        back.put(Some(x))?;
    }
    Ok(())
}

/// Median round trip, in µs, of an integer to an echo child and back
/// through two queues.
pub(crate) fn pingpong_rtt(mode: Mode) -> Result<f64> {
    let (there, back) = (Queue::new()?, Queue::new()?);
    let mut child = start(get_context(StartMethod::Fork).process(echo, (there.clone(), back.clone())))?;
    let median = median_time(200, mode.pick(10_000, 2_000), |i| {
        let x = i as u64;
        there.put(Some(x))?;
        let got = back.get_timeout(TIMEOUT)?;
        ensure!(got == Some(x), "sent {x}, the echo sent back {got:?}");
        Ok(())
    })?;
    there.put(None)?;
    join(&mut child)?;
    Ok(micros(median))
}
