//! mp-queue's queues shared with child processes under every start method,
//! from a single-threaded main (the fork method needs one; see docs/ARCHITECTURE.md,
//! fork safety).
//!
//! Run with `cargo test -p mp-queue --test queue [filter]`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mp_process::{Process, StartMethod, get_context};
use mp_queue::{GetError, JoinableQueue, PutError, Queue, QueueError, SimpleQueue};
use mp_shared::RawArray;
use mp_sync::{Event, Lock};
use mp_testkit::{METHODS, PATIENCE, Test, check, finish, ok, shm_entries, suite};
use serde::{Deserialize, Serialize};

type Check = Result<(), String>;

fn run(p: &mut Process) -> Result<i32, String> {
    ok(p.start())?;
    finish(p)
}

fn start(m: StartMethod, p: impl FnOnce(mp_process::Context) -> Process) -> Result<Process, String> {
    let mut p = p(get_context(m));
    ok(p.start())?;
    Ok(p)
}

// ---- child targets ---------------------------------------------------------

fn put_range(q: Queue<u32>, from: u32, to: u32) -> Result<(), String> {
    for i in from..to {
        ok(q.put(i))?;
    }
    Ok(())
}

/// Seed 002: a child puts its argument.
fn put_arg(q: Queue<u32>, i: u32) -> Result<(), String> {
    ok(q.put(i))
}

/// Fills a queue of maxsize 2, then shows that a third put times out.
fn fill_then_time_out(q: Queue<u32>, report: Queue<(bool, u64)>) -> Result<(), String> {
    ok(q.put(1))?;
    ok(q.put(2))?;
    let t0 = Instant::now();
    let full = matches!(q.put_timeout(3, Duration::from_millis(500)), Err(PutError::Full(3)));
    ok(report.put((full, t0.elapsed().as_millis() as u64)))
}

/// Takes items until the queue is closed; sends what it took.
fn consume(q: Queue<u32>, results: Queue<Vec<u32>>) -> Result<(), String> {
    let mut got = Vec::new();
    loop {
        match q.get() {
            Ok(x) => got.push(x),
            Err(GetError::Closed) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    ok(results.put(got))
}

#[derive(Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

fn checksum(b: &[u8]) -> u64 {
    b.iter().enumerate().fold(0u64, |h, (i, &x)| {
        h.wrapping_mul(31).wrapping_add(u64::from(x) ^ i as u64)
    })
}

/// Echoes the length and checksum of each blob.
fn blob_sums(q: Queue<Blob>, out: Queue<(usize, u64)>, n: u32) -> Result<(), String> {
    for _ in 0..n {
        let b = ok(q.get())?;
        ok(out.put((b.0.len(), checksum(&b.0))))?;
    }
    Ok(())
}

/// Takes items as fast as it can, marking each one taken, until killed.
fn consume_marking(q: Queue<u32>, taken: RawArray<u8>, started: Event) -> Result<(), String> {
    let mut n = 0u32;
    loop {
        let x = ok(q.get())?;
        ok(taken.set(x as usize, 1))?;
        n += 1;
        if n == 10_000 {
            started.set();
        }
    }
}

/// Puts 0, 1, 2... as fast as it can until killed.
fn produce_forever(q: Queue<u32>, started: Event) -> Result<(), String> {
    for i in 0u32.. {
        ok(q.put(i))?;
        if i == 10_000 {
            started.set();
        }
    }
    Ok(())
}

/// Takes handles out of a queue and uses them.
fn use_handles(events: Queue<Event>, queues: Queue<Queue<String>>, locks: Queue<Lock>) -> Result<(), String> {
    let inner = ok(queues.get())?;
    ok(inner.put("through a queue in a queue".to_string()))?;
    let lock = ok(locks.get())?;
    drop(ok(lock.try_acquire())?.ok_or("the lock that came through the queue is held")?);
    ok(events.get())?.set();
    Ok(())
}

/// A JoinableQueue worker: each item taken is marked done.
fn worker(q: JoinableQueue<u32>, done: Queue<u32>) -> Result<(), String> {
    loop {
        match q.get() {
            Ok(x) => {
                ok(done.put(x * 10))?;
                ok(q.task_done())?;
            }
            Err(GetError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Blocks in `get` until the queue is closed; exits 7 when it saw Closed.
fn wait_for_close(q: Queue<u8>, waiting: Event) -> Result<(), String> {
    waiting.set();
    match q.get() {
        Err(GetError::Closed) => mp_process::exit(7),
        other => Err(format!("expected Closed, got {other:?}")),
    }
}

fn simple_child(q: SimpleQueue<String>) -> Result<(), String> {
    let s = ok(q.get())?;
    ok(q.put(s.to_uppercase()))
}

// ---- scenarios with a start method -----------------------------------------

/// Python's test_fork shape: the parent's 0..9, then a child's 10..19, in
/// order.
fn order_parent_then_child(m: StartMethod) -> Check {
    let q = ok(Queue::new())?;
    for i in 0..10 {
        ok(q.put(i))?;
    }
    check(
        run(&mut get_context(m).process(put_range, (q.clone(), 10, 20)))? == 0,
        "child failed",
    )?;
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(ok(q.get_timeout(PATIENCE))?);
    }
    check(got == (0..20).collect::<Vec<_>>(), format!("{got:?}"))?;
    check(q.get_nowait() == Err(GetError::Empty), "one item too many")
}

fn five_children_put_their_argument(m: StartMethod) -> Check {
    let q = ok(Queue::new())?;
    let mut ps = Vec::new();
    for i in 0..5 {
        ps.push(start(m, |c| c.process(put_arg, (q.clone(), i)))?);
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(ok(q.get_timeout(PATIENCE))?);
    }
    for p in &mut ps {
        check(finish(p)? == 0, "child failed")?;
    }
    got.sort();
    check(got == [0, 1, 2, 3, 4], format!("{got:?}"))
}

fn maxsize_full_and_empty_after_their_timeouts(m: StartMethod) -> Check {
    let q = ok(Queue::with_maxsize(2))?;
    let report = ok(Queue::new())?;
    check(
        run(&mut get_context(m).process(fill_then_time_out, (q.clone(), report.clone())))? == 0,
        "child failed",
    )?;
    let (full, ms) = ok(report.get_timeout(PATIENCE))?;
    check(full, "the child's third put did not report Full")?;
    check(
        (400..2000).contains(&ms),
        format!("put_timeout(0.5 s) returned after {ms} ms"),
    )?;
    check(q.qsize() == 2 && q.is_full(), format!("qsize {}", q.qsize()))?;
    let t0 = Instant::now();
    let e = q.put_timeout(3, Duration::from_millis(500));
    let t = t0.elapsed();
    check(matches!(e, Err(PutError::Full(3))), format!("{e:?}"))?;
    check(
        t >= Duration::from_millis(400) && t < Duration::from_millis(2000),
        format!("{t:?}"),
    )?;
    check(ok(q.get_nowait())? == 1 && ok(q.get_nowait())? == 2, "order")?;
    let t0 = Instant::now();
    let e = q.get_timeout(Duration::from_millis(500));
    let t = t0.elapsed();
    check(e == Err(GetError::Empty), format!("{e:?}"))?;
    check(
        t >= Duration::from_millis(400) && t < Duration::from_millis(2000),
        format!("{t:?}"),
    )?;
    check(q.is_empty() && !q.is_full(), "empty after the gets")
}

/// Four producers and four consumers over 100,000 items each: every item
/// received exactly once.
fn four_producers_four_consumers(m: StartMethod) -> Check {
    const PER: u32 = 100_000;
    let q = ok(Queue::with_maxsize(10_000))?;
    let results = ok(Queue::new())?;
    let mut consumers = Vec::new();
    for _ in 0..4 {
        consumers.push(start(m, |c| c.process(consume, (q.clone(), results.clone())))?);
    }
    let mut producers = Vec::new();
    for k in 0..4 {
        producers.push(start(m, |c| c.process(put_range, (q.clone(), k * PER, (k + 1) * PER)))?);
    }
    for p in &mut producers {
        check(finish(p)? == 0, "producer failed")?;
    }
    q.close();
    let mut all = Vec::new();
    for _ in 0..4 {
        let part: Vec<u32> = ok(results.get_timeout(PATIENCE))?;
        // FIFO per producer: each producer's items arrive in order.
        for k in 0..4 {
            let mine: Vec<u32> = part.iter().copied().filter(|x| x / PER == k).collect();
            check(mine.is_sorted(), format!("producer {k}'s items out of order"))?;
        }
        all.extend(part);
    }
    for p in &mut consumers {
        check(finish(p)? == 0, "consumer failed")?;
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    check(n == all.len(), format!("{} items received twice", n - all.len()))?;
    check(
        all.len() == 4 * PER as usize,
        format!("{} of {} items", all.len(), 4 * PER),
    )?;
    check(all.iter().copied().eq(0..4 * PER), "items changed")
}

/// An item of 32 MiB (larger than the ring, through the side path), one of
/// 1 MiB (grows the ring) and small ones around them.
fn items_larger_than_the_ring(m: StartMethod) -> Check {
    let q = ok(Queue::new())?;
    let out = ok(Queue::new())?;
    let mut p = start(m, |c| c.process(blob_sums, (q.clone(), out.clone(), 4)))?;
    let blobs: Vec<Vec<u8>> = [1usize, 32 << 20, 1 << 20, 0]
        .into_iter()
        .map(|n| (0..n).map(|i| (i * 7 + i / 4096) as u8).collect())
        .collect();
    for b in &blobs {
        ok(q.put(Blob(b.clone())))?;
    }
    for b in &blobs {
        let (len, sum) = ok(out.get_timeout(PATIENCE))?;
        check(
            len == b.len() && sum == checksum(b),
            format!("blob of {} came back as {len}", b.len()),
        )?;
    }
    check(finish(&mut p)? == 0, "child failed")
}

/// SIGKILL of a consumer in the middle of a stream: the queue stays usable
/// and only what that consumer had taken is gone.
fn killed_consumer_loses_only_its_items(m: StartMethod) -> Check {
    const N: u32 = 200_000;
    let q = ok(Queue::new())?;
    for i in 0..N {
        ok(q.put(i))?;
    }
    let taken = ok(RawArray::<u8>::new(N as usize))?;
    let started = ok(Event::new())?;
    let mut p = start(m, |c| {
        c.process(consume_marking, (q.clone(), taken.clone(), started.clone()))
    })?;
    check(started.wait_timeout(PATIENCE), "the consumer did not start")?;
    ok(p.kill())?;
    check(finish(&mut p)? == -9, "the consumer was not killed")?;
    let mut got = Vec::new();
    while let Ok(x) = q.get_nowait() {
        got.push(x);
    }
    check(got.is_sorted(), "the rest came out of order")?;
    let marks = taken.to_vec();
    let mut missing = 0;
    let mut seen = vec![false; N as usize];
    for &x in &got {
        check(marks[x as usize] == 0, format!("item {x} was taken twice"))?;
        seen[x as usize] = true;
    }
    for (i, s) in seen.iter().enumerate() {
        if !s && marks[i] == 0 {
            missing += 1;
        }
    }
    // The one item the consumer may have taken but not yet marked.
    check(
        missing <= 1,
        format!("{missing} items lost that the consumer never had"),
    )?;
    check(
        got.len() + marks.iter().filter(|&&t| t == 1).count() + missing == N as usize,
        "the count does not add up",
    )?;
    ok(q.put(7))?;
    check(
        ok(q.get_timeout(PATIENCE))? == 7,
        "the queue is not usable after the kill",
    )
}

/// SIGKILL of a producer in the middle of a stream: what it put comes out
/// whole and in order, and the queue stays usable.
fn killed_producer_leaves_a_clean_prefix(m: StartMethod) -> Check {
    let q = ok(Queue::new())?;
    let started = ok(Event::new())?;
    let mut p = start(m, |c| c.process(produce_forever, (q.clone(), started.clone())))?;
    check(started.wait_timeout(PATIENCE), "the producer did not start")?;
    ok(p.kill())?;
    check(finish(&mut p)? == -9, "the producer was not killed")?;
    let mut n = 0u32;
    while let Ok(x) = q.get_nowait() {
        check(x == n, format!("item {n} came out as {x}"))?;
        n += 1;
    }
    check(n > 10_000, format!("only {n} items"))?;
    check(q.is_empty(), "qsize is off after the kill")?;
    ok(q.put(u32::MAX))?;
    check(
        ok(q.get_timeout(PATIENCE))? == u32::MAX,
        "the queue is not usable after the kill",
    )
}

fn handles_travel_inside_items(m: StartMethod) -> Check {
    let events = ok(Queue::new())?;
    let queues = ok(Queue::new())?;
    let locks = ok(Queue::new())?;
    let ev = ok(Event::new())?;
    let inner = ok(Queue::<String>::new())?;
    ok(events.put(ev.clone()))?;
    ok(queues.put(inner.clone()))?;
    ok(locks.put(ok(Lock::new())?))?;
    check(
        run(&mut get_context(m).process(use_handles, (events, queues, locks)))? == 0,
        "child failed",
    )?;
    check(ev.is_set(), "the event that went through the queue was not set")?;
    let s = ok(inner.get_timeout(PATIENCE))?;
    check(s == "through a queue in a queue", s)
}

fn joinable_queue_with_workers(m: StartMethod) -> Check {
    let q = ok(JoinableQueue::new())?;
    let done = ok(Queue::new())?;
    let mut ps = Vec::new();
    for _ in 0..2 {
        ps.push(start(m, |c| c.process(worker, (q.clone(), done.clone())))?);
    }
    for i in 0..20 {
        ok(q.put(i))?;
    }
    check(ok(q.join_timeout(PATIENCE))?, "join timed out")?;
    check(q.unfinished_tasks() == 0, "unfinished tasks after join")?;
    let mut got: Vec<u32> = (0..20)
        .map(|_| ok(done.get_timeout(PATIENCE)))
        .collect::<Result<_, _>>()?;
    got.sort();
    check(got == (0..20).map(|i| i * 10).collect::<Vec<_>>(), format!("{got:?}"))?;
    q.close();
    for p in &mut ps {
        check(finish(p)? == 0, "worker failed")?;
    }
    check(
        matches!(q.task_done(), Err(QueueError::TaskDoneTooOften)),
        "extra task_done",
    )
}

fn close_wakes_a_waiting_get(m: StartMethod) -> Check {
    let q = ok(Queue::<u8>::new())?;
    let waiting = ok(Event::new())?;
    let mut p = start(m, |c| c.process(wait_for_close, (q.clone(), waiting.clone())))?;
    check(waiting.wait_timeout(PATIENCE), "the child did not start")?;
    q.close();
    let code = finish(&mut p)?;
    check(
        code == 7,
        format!("the child's get ended with exit code {code}, not Closed"),
    )
}

fn simple_queue_in_a_child(m: StartMethod) -> Check {
    let q = ok(SimpleQueue::new())?;
    ok(q.put("shout".to_string()))?;
    let mut p = get_context(m).process(simple_child, (q.clone(),));
    check(run(&mut p)? == 0, "child failed")?;
    let s = ok(q.get_timeout(PATIENCE))?;
    check(s == "SHOUT", s)
}

// ---- scenarios within one process ------------------------------------------

fn close_drains_then_reports_closed() -> Check {
    let q = ok(Queue::new())?;
    ok(q.put(1u8))?;
    ok(q.put(2))?;
    q.close();
    check(q.is_closed(), "is_closed")?;
    check(matches!(q.put(3), Err(PutError::Closed(3))), "put after close")?;
    check(
        matches!(q.put_nowait(3), Err(PutError::Closed(3))),
        "put_nowait after close",
    )?;
    check(ok(q.get())? == 1 && ok(q.get_nowait())? == 2, "drain")?;
    check(q.get() == Err(GetError::Closed), "get after drain")?;
    check(
        q.get_timeout(PATIENCE) == Err(GetError::Closed),
        "get_timeout after drain",
    )?;
    check(q.get_nowait() == Err(GetError::Closed), "get_nowait after drain")
}

/// A value whose encoding or decoding fails.
#[derive(Debug, PartialEq)]
struct Picky(u32);

impl Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("13 is unlucky"));
        }
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 2 == 1 {
            return Err(serde::de::Error::custom(format!("{n} is odd")));
        }
        Ok(Picky(n))
    }
}

/// A `Connection` keeps the messages of failing `Serialize` and
/// `Deserialize` impls too.
fn connection_keeps_serde_messages() -> Check {
    let (a, b) = ok(mp_connection::pipe())?;
    let e = a.send(&Picky(13)).err().map(|e| e.to_string()).unwrap_or_default();
    check(e.contains("13 is unlucky"), format!("send: {e:?}"))?;
    ok(a.send(&Picky(3)))?;
    let e = b.recv::<Picky>().err().map(|e| e.to_string()).unwrap_or_default();
    check(e.contains("3 is odd"), format!("recv: {e:?}"))?;
    ok(a.send(&Picky(4)))?;
    check(ok(b.recv::<Picky>())? == Picky(4), "the connection goes on")
}

fn bad_items_are_errors() -> Check {
    let q = ok(Queue::new())?;
    match q.put(Picky(13)) {
        Err(PutError::Encode(item, msg)) => {
            check(item == Picky(13), "the item came back changed")?;
            check(msg.contains("cannot encode"), msg.clone())?;
            // The Serialize impl's own words, not postcard's fixed text.
            check(msg.contains("13 is unlucky"), msg)?;
        }
        other => return Err(format!("expected Encode, got {other:?}")),
    }
    check(q.is_empty(), "a failed put left an item")?;
    ok(q.put(Picky(3)))?;
    ok(q.put(Picky(4)))?;
    match q.get() {
        Err(GetError::Decode(msg)) => check(msg.contains("cannot decode") && msg.contains("3 is odd"), msg)?,
        other => return Err(format!("expected Decode, got {other:?}")),
    }
    check(ok(q.get())? == Picky(4), "the queue goes on after a bad item")?;
    // A handle decoded as another item type or kind.
    let e = mp_codec::decode::<Queue<String>>(ok(mp_codec::encode(&q))?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check(e.contains("another item type"), format!("wrong item type: {e:?}"))?;
    let sq = ok(SimpleQueue::<u8>::new())?;
    let e = mp_codec::decode::<Queue<u8>>(ok(mp_codec::encode(&sq))?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check(e.contains("got a SimpleQueue"), format!("wrong kind: {e:?}"))?;
    let jq = ok(JoinableQueue::<u8>::new())?;
    let as_plain: Queue<u8> = ok(mp_codec::decode(ok(mp_codec::encode(&jq))?))?;
    ok(as_plain.put(1))?;
    check(
        jq.unfinished_tasks() == 1,
        "a joinable queue used as a plain one counts tasks",
    )?;
    let big = Queue::<u8>::with_maxsize(usize::MAX);
    check(matches!(big, Err(QueueError::InvalidArgument(_))), "maxsize too large")
}

fn no_leaks() -> Check {
    let shm_before = shm_entries();
    let fds_before = ok(mp_sys::fd::count_open_fds())?;
    for i in 0..1000u32 {
        let q = ok(Queue::with_maxsize(4))?;
        ok(q.put(i))?;
        check(ok(q.get())? == i, "round trip")?;
        let j = ok(JoinableQueue::new())?;
        ok(j.put(Blob(vec![1; 100])))?;
        let s = ok(SimpleQueue::new())?;
        ok(s.put(q.clone()))?; // an item holding descriptors
        let back: Queue<u32> = ok(s.get())?;
        check(back == q, "the queue that went through a queue")?;
    }
    // One item through the side path, left unread: its memory goes with the queue.
    let q = ok(Queue::new())?;
    ok(q.put(Blob(vec![0; 5 << 20])))?;
    drop(q);
    let fds_after = ok(mp_sys::fd::count_open_fds())?;
    check(fds_after == fds_before, format!("fds {fds_before} -> {fds_after}"))?;
    check(shm_entries() == shm_before, "/dev/shm changed")
}

fn handle_bounds() -> Check {
    fn handle<T: Clone + Send + Sync + Serialize + for<'de> Deserialize<'de> + 'static>() {}
    handle::<Queue<String>>();
    handle::<JoinableQueue<Vec<u8>>>();
    handle::<SimpleQueue<(u8, f64)>>();
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    error::<QueueError>();
    error::<GetError>();
    error::<PutError<String>>();
    let q = ok(Queue::<u8>::with_maxsize(3))?;
    let d = format!("{q:?}");
    check(d.contains("maxsize: 3"), d)
}

type Scenario = fn(StartMethod) -> Check;

fn main() -> ExitCode {
    let with_method: [(&str, Scenario); 11] = [
        ("order_parent_then_child", order_parent_then_child),
        ("five_children_put_their_argument", five_children_put_their_argument),
        (
            "maxsize_full_and_empty_after_their_timeouts",
            maxsize_full_and_empty_after_their_timeouts,
        ),
        ("four_producers_four_consumers", four_producers_four_consumers),
        ("items_larger_than_the_ring", items_larger_than_the_ring),
        (
            "killed_consumer_loses_only_its_items",
            killed_consumer_loses_only_its_items,
        ),
        (
            "killed_producer_leaves_a_clean_prefix",
            killed_producer_leaves_a_clean_prefix,
        ),
        ("handles_travel_inside_items", handles_travel_inside_items),
        ("joinable_queue_with_workers", joinable_queue_with_workers),
        ("close_wakes_a_waiting_get", close_wakes_a_waiting_get),
        ("simple_queue_in_a_child", simple_queue_in_a_child),
    ];
    let local: [(&str, Test); 5] = [
        ("close_drains_then_reports_closed", close_drains_then_reports_closed),
        ("bad_items_are_errors", bad_items_are_errors),
        ("connection_keeps_serde_messages", connection_keeps_serde_messages),
        ("no_leaks", no_leaks),
        ("handle_bounds", handle_bounds),
    ];
    suite(&local, &with_method, &METHODS)
}
