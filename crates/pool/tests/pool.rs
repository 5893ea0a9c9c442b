//! mp-pool's Pool under every start method, from a single-threaded main
//! (the fork method needs one; see docs/ARCHITECTURE.md, fork safety).
//!
//! Run with `cargo test -p mp-pool --test pool [filter]`.

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mp_manager::{DictProxy, Manager};
use mp_pool::executor::{ReturnWhen, as_completed_timeout, wait};
use mp_pool::{ExecutorError, Pool, PoolError, ProcessPoolExecutor, TaskError};
use mp_process::StartMethod;
use mp_queue::Queue;
use mp_shared::Value;
use mp_sync::{Event, Lock};
use mp_sys::signal::{Signal, kill};
use mp_testkit::{METHODS, PATIENCE, Test, check, ok, suite};

type Check = Result<(), String>;

fn pool(m: StartMethod, n: usize) -> Result<Pool, String> {
    ok(Pool::builder().processes(n).start_method(m).build())
}

// ---- tasks -----------------------------------------------------------------

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn pid() -> u32 {
    std::process::id()
}

fn checked_half(x: u32) -> Result<u32, String> {
    if x.is_multiple_of(2) {
        Ok(x / 2)
    } else {
        Err(format!("{x} is odd"))
    }
}

fn panic_on_13(x: u32) -> u32 {
    if x == 13 {
        panic!("unlucky {x}");
    }
    x + 1
}

/// Kills its own worker with SIGKILL at item 5000.
fn die_at_5000(x: u32) -> u32 {
    if x == 5000 {
        let _ = kill(std::process::id(), Signal::KILL);
        loop {
            std::thread::park(); // until the signal lands
        }
    }
    x * 3
}

/// Reports its pid, then waits for `go` (which never comes: the test kills
/// the worker).
fn report_and_wait(pids: Queue<u32>, go: Event) -> u32 {
    pids.put(std::process::id()).expect("put");
    go.wait_timeout(PATIENCE);
    7
}

fn exit_with(code: i32) {
    mp_process::exit(code)
}

fn abort() {
    std::process::abort()
}

fn put_value(q: Queue<String>, s: String) {
    q.put(s).expect("put");
}

fn add_under_lock(lock: Lock, v: Value<u64>, n: u64) {
    for _ in 0..n {
        let g = lock.acquire().expect("lock");
        v.set(v.get() + 1);
        drop(g);
    }
}

fn insert_into(d: DictProxy<u32, String>, k: u32) -> Result<(), String> {
    d.insert(k, format!("worker {}", std::process::id()))
        .map(drop)
        .map_err(|e| e.to_string())
}

static GREETING: AtomicU32 = AtomicU32::new(0);

fn init_greeting(n: u32) {
    GREETING.store(n, Ordering::SeqCst);
}

fn greeting() -> u32 {
    GREETING.load(Ordering::SeqCst)
}

fn failing_init() -> Result<(), String> {
    Err("no database".into())
}

fn echo(x: u64) -> u64 {
    x
}

/// Returns `x` once `gate` is set: a task that runs as long as the test
/// wants.
fn held(x: u64, gate: Event) -> u64 {
    gate.wait_timeout(PATIENCE);
    x
}

/// [`held`] for maps: one argument.
fn held_item((x, gate): (u64, Event)) -> u64 {
    held(x, gate)
}

fn fail(x: u64) -> u64 {
    panic!("failed on {x}");
}

/// Takes `ms` milliseconds, then returns it: work that lasts a while.
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Item `0` panics at once; any other item sleeps that many milliseconds
/// and sets `done` as its last act.
fn sleep_then_panic((ms, done): (u64, Event)) -> u64 {
    if ms == 0 {
        panic!("fast failure");
    }
    std::thread::sleep(Duration::from_millis(ms));
    done.set();
    ms
}

/// [`sleep_then_panic`] with two arguments, for `starmap`.
fn sleep_then_panic2(ms: u64, done: Event) -> u64 {
    sleep_then_panic((ms, done))
}

/// Item `0` sets `started` and panics; any other item waits for `gate`,
/// then sets `done`.
fn fail_or_hold((x, started, gate, done): (u64, Event, Event, Event)) -> u64 {
    if x == 0 {
        started.set();
        panic!("failed at once");
    }
    gate.wait_timeout(PATIENCE);
    done.set();
    x
}

/// Sleeps `ms` milliseconds, then panics with it: a late failure.
fn panic_after(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    panic!("failed after {ms} ms");
}

/// Panics on every multiple of 3: several failed items in one chunk, at
/// its first and last places too.
fn panic_on_thirds(x: u32) -> u32 {
    if x.is_multiple_of(3) {
        panic!("third {x}");
    }
    x * 2
}

/// Values of every width and sign, for the chunk codec.
fn widen(x: i64) -> (i64, u64, String) {
    let big = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (
        x.wrapping_mul(-1_000_003),
        big,
        "é".repeat((x.unsigned_abs() % 5) as usize),
    )
}

/// An item that cannot be encoded when its number is 99.
#[derive(serde::Deserialize)]
struct Picky(u64, Event);

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 99 {
            return Err(serde::ser::Error::custom("item 99 cannot travel"));
        }
        (self.0, &self.1).serialize(s)
    }
}

/// Sleeps `ms` milliseconds, then sets `done`.
fn picky_nap(Picky(ms, done): Picky) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    done.set();
    ms
}

// ---- scenarios, each under every start method ------------------------------

fn results_come_back(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    check(ok(p.apply(add, (2, 40)))? == 42, "apply")?;
    let r = ok(p.apply_async(square, (9,)))?;
    check(ok(r.get_timeout(PATIENCE))? == 81, "apply_async")?;
    check(r.successful() == Some(true) && r.ready(), "successful/ready")?;
    let v = ok(p.map(square, 0..1000u64))?;
    check(v == (0..1000u64).map(|x| x * x).collect::<Vec<_>>(), "map keeps order")?;
    check(ok(p.map(square, Vec::<u64>::new()))?.is_empty(), "map over nothing")?;
    check(
        ok(p.map_chunked(square, 0..10u64, 3))? == (0..10u64).map(|x| x * x).collect::<Vec<_>>(),
        "map_chunked",
    )?;
    check(
        ok(p.starmap(add, vec![(1, 2), (3, 4), (5, 6)]))? == vec![3, 7, 11],
        "starmap",
    )?;
    let a = ok(p.map_async(square, 0..5u64))?;
    check(ok(a.get_timeout(PATIENCE))? == vec![0, 1, 4, 9, 16], "map_async")?;
    check(ok(a.get())? == vec![0, 1, 4, 9, 16], "map_async get twice")?;
    let halves = ok(p.map(checked_half, 0..4u32))?;
    check(
        halves == vec![Ok(0), Err("1 is odd".to_string()), Ok(1), Err("3 is odd".to_string())],
        format!("a task's Result comes back as it is: {halves:?}"),
    )?;
    let ordered: Vec<u64> = ok(ok(p.imap_chunked(square, 0..100u64, 7))?.collect::<Result<Vec<_>, _>>())?;
    check(
        ordered == (0..100u64).map(|x| x * x).collect::<Vec<_>>(),
        "imap_chunked in order",
    )?;
    let mut any: Vec<u64> = ok(ok(p.imap_unordered(square, 0..100u64))?.collect::<Result<Vec<_>, _>>())?;
    any.sort_unstable();
    check(
        any == (0..100u64).map(|x| x * x).collect::<Vec<_>>(),
        "imap_unordered, all of them",
    )?;
    check(
        ok(p.imap(square, Vec::<u64>::new()))?.next().is_none(),
        "imap over nothing",
    )
}

fn panics_are_errors(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let r = p.map(panic_on_13, 0..40u32);
    check(
        matches!(&r, Err(TaskError::Panicked(msg)) if msg == "unlucky 13"),
        format!("map: {r:?}"),
    )?;
    let each: Vec<Result<u32, TaskError>> = ok(p.imap_chunked(panic_on_13, 0..40u32, 6))?.collect();
    for (i, r) in each.iter().enumerate() {
        let i = i as u32;
        if i == 13 {
            check(matches!(r, Err(TaskError::Panicked(_))), format!("item 13: {r:?}"))?;
        } else {
            check(r == &Ok(i + 1), format!("item {i}: {r:?}"))?;
        }
    }
    let a = ok(p.apply_async(panic_on_13, (13,)))?;
    let r = a.get_timeout(PATIENCE);
    check(
        matches!(&r, Err(TaskError::Panicked(m)) if m == "unlucky 13"),
        format!("apply: {r:?}"),
    )?;
    check(a.successful() == Some(false), "successful() after a panic")?;
    check(ok(p.apply(panic_on_13, (1,)))? == 2, "the pool goes on")
}

/// Python's `MapResult` is ready only once every chunk is done: when `map`
/// returns, even with an error, no task of it still runs.
fn map_waits_for_every_chunk(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let done = ok(Event::new())?;
    let items = vec![(0, done.clone()), (1000, done.clone())];
    let r = p.map_chunked(sleep_then_panic, items.clone(), 1);
    check(
        matches!(&r, Err(TaskError::Panicked(msg)) if msg == "fast failure"),
        format!("map_chunked: {r:?}"),
    )?;
    check(done.is_set(), "map_chunked returned while its slow chunk still ran")?;
    done.clear();
    let items = vec![(0, done.clone()), (300, done.clone())];
    let r = p.map(sleep_then_panic, items);
    check(matches!(r, Err(TaskError::Panicked(_))), format!("map: {r:?}"))?;
    check(done.is_set(), "map returned while its slow chunk still ran")?;
    done.clear();
    let r = p.starmap(sleep_then_panic2, vec![(0, done.clone()), (300, done.clone())]);
    check(matches!(r, Err(TaskError::Panicked(_))), format!("starmap: {r:?}"))?;
    check(done.is_set(), "starmap returned while its slow chunk still ran")?;

    // map_async: not ready while a chunk is held, even after another failed.
    let (started, gate, done) = (ok(Event::new())?, ok(Event::new())?, ok(Event::new())?);
    let items: Vec<_> = (0..2u64)
        .map(|x| (x, started.clone(), gate.clone(), done.clone()))
        .collect();
    let a = ok(p.map_async(fail_or_hold, items))?;
    check(started.wait_timeout(PATIENCE), "the failing item ran")?;
    let early = a.wait_timeout(Duration::from_millis(500));
    let early_success = a.successful();
    gate.set();
    check(!early, "map_async was ready while a chunk was still running")?;
    check(
        early_success.is_none(),
        format!("successful() before ready: {early_success:?}"),
    )?;
    let r = a.get_timeout(PATIENCE);
    check(
        matches!(&r, Err(TaskError::Panicked(msg)) if msg == "failed at once"),
        format!("map_async: {r:?}"),
    )?;
    check(done.is_set(), "map_async was ready before its last chunk finished")?;
    check(a.successful() == Some(false), "successful() once ready")?;

    // starmap_async likewise.
    let (started, gate, done) = (ok(Event::new())?, ok(Event::new())?, ok(Event::new())?);
    let items: Vec<_> = (0..2u64)
        .map(|x| ((x, started.clone(), gate.clone(), done.clone()),))
        .collect();
    let a = ok(p.starmap_async(fail_or_hold, items))?;
    check(started.wait_timeout(PATIENCE), "the failing item ran")?;
    let early = a.wait_timeout(Duration::from_millis(500));
    gate.set();
    check(!early, "starmap_async was ready while a chunk was still running")?;
    check(
        matches!(a.get_timeout(PATIENCE), Err(TaskError::Panicked(_))),
        "starmap_async",
    )?;
    check(done.is_set(), "starmap_async was ready before its last chunk finished")?;

    // The error is that of the first failed item in item order, not the
    // first to fail in time.
    let r = p.map_chunked(panic_after, [300, 0], 1);
    check(
        matches!(&r, Err(TaskError::Panicked(msg)) if msg == "failed after 300 ms"),
        format!("the error of the first item: {r:?}"),
    )?;
    check(ok(p.map(square, 0..10u64))?.len() == 10, "the pool goes on")
}

/// A chunk's items run under one `catch_unwind` per run of items, its
/// values are encoded by mp-codec's own writer and decoded straight into
/// the map's output: every item still gets its own result, in order.
fn chunks_keep_each_items_result(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let each: Vec<Result<u32, TaskError>> = ok(p.imap_chunked(panic_on_thirds, 0..40u32, 7))?.collect();
    check(each.len() == 40, format!("{} results for 40 items", each.len()))?;
    for (i, r) in each.iter().enumerate() {
        let i = i as u32;
        if i.is_multiple_of(3) {
            check(
                matches!(r, Err(TaskError::Panicked(msg)) if *msg == format!("third {i}")),
                format!("item {i}: {r:?}"),
            )?;
        } else {
            check(r == &Ok(i * 2), format!("item {i}: {r:?}"))?;
        }
    }
    let r = p.map_chunked(panic_on_thirds, 1..40u32, 5);
    check(
        matches!(&r, Err(TaskError::Panicked(msg)) if msg == "third 3"),
        format!("the first failed item's error: {r:?}"),
    )?;
    let items: Vec<i64> = (-3000..3000).chain([i64::MIN, i64::MAX, 0, -1]).collect();
    let want: Vec<_> = items.iter().map(|&x| widen(x)).collect();
    check(ok(p.map(widen, items.clone()))? == want, "map of every width")?;
    let a = ok(p.map_async(widen, items))?;
    check(ok(a.get_timeout(PATIENCE))? == want, "map_async")?;
    check(ok(a.get_timeout(PATIENCE))? == want, "map_async, again")?;
    let big: Vec<u64> = ok(p.map(square, 0..100_000u64))?;
    check(
        big.len() == 100_000 && big.iter().enumerate().all(|(i, &y)| y == (i as u64) * (i as u64)),
        "the 100k map",
    )
}

/// Chunks are queued as they are encoded; when a later one cannot be
/// encoded, `map` returns the error only once the chunks already queued are
/// done: no task of it still runs after it returns.
fn encode_error_waits_for_queued_chunks(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let done = ok(Event::new())?;
    let r = p.map_chunked(picky_nap, vec![Picky(300, done.clone()), Picky(99, done.clone())], 1);
    let at_return = done.is_set();
    check(matches!(&r, Err(TaskError::Encode(_))), format!("map_chunked: {r:?}"))?;
    check(
        at_return || !done.wait_timeout(Duration::from_millis(600)),
        "a task of the failed map ran on after it returned",
    )?;
    // Likewise when the caller's iterator panics part-way: an exact-size
    // iterator is read chunk by chunk while the first chunks already run.
    done.clear();
    let d = done.clone();
    let items = (0..3u64).map(move |x| {
        if x == 2 {
            panic!("the input failed at {x}");
        }
        Picky(300 * (1 - x), d.clone())
    });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.map_chunked(picky_nap, items, 1)));
    let at_return = done.is_set();
    check(r.is_err(), "the iterator's panic reaches the caller")?;
    check(
        at_return || !done.wait_timeout(Duration::from_millis(600)),
        "a task of the map ran on after the caller's iterator panicked",
    )?;
    check(ok(p.map(square, 0..10u64))?.len() == 10, "the pool goes on")
}

fn killed_worker_mid_map(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let t0 = Instant::now();
    let each: Vec<Result<u32, TaskError>> = ok(p.imap_chunked(die_at_5000, 0..10_000u32, 250))?.collect();
    let lost: Vec<usize> = each
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    check(lost == vec![5000], format!("lost items {lost:?}"))?;
    check(
        each[5000] == Err(TaskError::WorkerLost { exitcode: -9 }),
        format!("item 5000: {:?}", each[5000]),
    )?;
    for (i, r) in each.iter().enumerate() {
        if i != 5000 {
            check(r == &Ok(i as u32 * 3), format!("item {i}: {r:?}"))?;
        }
    }
    let r = p.map(die_at_5000, 0..10_000u32);
    check(r == Err(TaskError::WorkerLost { exitcode: -9 }), format!("map: {r:?}"))?;
    check(t0.elapsed() < PATIENCE, format!("took {:?}", t0.elapsed()))?;
    check(p.pids().len() == 2, format!("workers now: {:?}", p.pids()))?;
    check(ok(p.apply(square, (3,)))? == 9, "the pool goes on")
}

fn reversed(mut v: Vec<u64>) -> Vec<u64> {
    v.reverse();
    v
}

/// Payloads of 4 KiB and more go through each worker's shared rings (4 MiB
/// each way); larger ones, and those that find a ring full, through the
/// socket. Either way every value comes back whole, in order, and a worker
/// killed with chunks in its ring loses only its item.
fn large_payloads_cross_in_shared_memory_and_past_it(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let t0 = Instant::now();
    // Words of 10 bytes each, encoded (a task's integers are varints).
    let words = |n: usize, k: usize| -> Vec<u64> { (0..n).map(|i| u64::MAX - (i * 7 + k) as u64).collect() };
    for n in [300, 500, 10_000, 450_000] {
        let v = words(n, n);
        let mut want = v.clone();
        want.reverse();
        check(
            ok(p.apply(reversed, (v,)))? == want,
            format!("{n} words there and back"),
        )?;
    }
    eprintln!("    one at a time: {:?}", t0.elapsed());
    // Several at once, two or more in flight per worker: more than its
    // rings hold, so some find them full.
    let sent: Vec<Vec<u64>> = (0..4).map(|k| words(250_000, k)).collect();
    let pending = sent
        .iter()
        .map(|v| ok(p.apply_async(reversed, (v.clone(),))))
        .collect::<Result<Vec<_>, _>>()?;
    for (k, (r, v)) in pending.iter().zip(&sent).enumerate() {
        let mut want = v.clone();
        want.reverse();
        check(ok(r.get_timeout(PATIENCE))? == want, format!("task {k} of 4"))?;
    }
    eprintln!("    many at once: {:?}", t0.elapsed());
    // A chunk of 4.8 MB (past the ring) and chunks of 0.4 MB (in it).
    let n = 600_000u64;
    let want: Vec<u64> = (0..n).map(|x| x * x).collect();
    check(
        ok(p.map_chunked(square, 0..n, 600_000))? == want,
        "a chunk past the ring",
    )?;
    check(ok(p.map_chunked(square, 0..n, 50_000))? == want, "chunks in the ring")?;
    eprintln!("    maps: {:?}", t0.elapsed());
    let each: Vec<Result<u32, TaskError>> = ok(p.imap_chunked(die_at_5000, 0..20_000u32, 2000))?.collect();
    eprintln!("    killed: {:?}", t0.elapsed());
    let lost: Vec<usize> = (0..each.len()).filter(|&i| each[i].is_err()).collect();
    check(lost == vec![5000], format!("lost items {lost:?}"))?;
    check(
        each.iter()
            .enumerate()
            .all(|(i, r)| i == 5000 || r == &Ok(i as u32 * 3)),
        "every other item's result",
    )?;
    check(ok(p.map(square, 0..n))? == want, "default chunks, a new worker's rings")
}

fn killed_from_outside(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let pids = ok(Queue::<u32>::new())?;
    let go = ok(Event::new())?;
    let before = p.pids();
    let r = ok(p.apply_async(report_and_wait, (pids.clone(), go.clone())))?;
    let victim = ok(pids.get_timeout(PATIENCE))?;
    check(before.contains(&victim), "the task ran in a worker of the pool")?;
    ok(kill(victim, Signal::KILL))?;
    let got = r.get_timeout(PATIENCE);
    check(got == Err(TaskError::WorkerLost { exitcode: -9 }), format!("{got:?}"))?;
    check(ok(p.map(square, 0..100u64))?.len() == 100, "the pool goes on")?;
    let after = p.pids();
    check(
        after.len() == 2 && !after.contains(&victim),
        format!("{before:?} then {after:?}"),
    )
}

fn exits_and_aborts_are_worker_lost(m: StartMethod) -> Check {
    let p = pool(m, 1)?;
    let r = ok(p.apply_async(exit_with, (3,)))?.get_timeout(PATIENCE);
    check(
        r == Err(TaskError::WorkerLost { exitcode: 3 }),
        format!("exit(3): {r:?}"),
    )?;
    let r = ok(p.apply_async(abort, ()))?.get_timeout(PATIENCE);
    check(
        r == Err(TaskError::WorkerLost { exitcode: -6 }),
        format!("abort: {r:?}"),
    )?;
    check(ok(p.apply(add, (1, 1)))? == 2, "the pool goes on")
}

fn callbacks_on_one_thread(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rs = Vec::new();
    for i in 0..20u32 {
        let (s, e) = (seen.clone(), seen.clone());
        rs.push(ok(p.apply_async_with(
            panic_on_13,
            (i,),
            move |v: &u32| {
                let t = std::thread::current().name().unwrap_or("").to_string();
                s.lock().unwrap().push((Ok(*v), t));
            },
            move |err: &TaskError| {
                let t = std::thread::current().name().unwrap_or("").to_string();
                e.lock().unwrap().push((Err(err.to_string()), t));
            },
        ))?);
    }
    for r in &rs {
        check(r.wait_timeout(PATIENCE), "a result")?;
    }
    let seen = seen.lock().unwrap();
    check(seen.len() == 20, format!("{} callbacks", seen.len()))?;
    check(
        seen.iter().all(|(_, t)| t == "mp-pool"),
        "callbacks run on the pool's thread",
    )?;
    let mut values: Vec<u32> = seen.iter().filter_map(|(v, _)| v.clone().ok()).collect();
    values.sort_unstable();
    check(
        values == (0..20).filter(|i| *i != 13).map(|i| i + 1).collect::<Vec<_>>(),
        "values",
    )?;
    let errors: Vec<&String> = seen.iter().filter_map(|(v, _)| v.as_ref().err()).collect();
    check(
        errors.len() == 1 && errors[0].contains("unlucky 13"),
        format!("errors {errors:?}"),
    )
}

fn handles_reach_workers(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let q = ok(Queue::<String>::new())?;
    ok(ok(p.apply_async(put_value, (q.clone(), "hello".to_string())))?.get_timeout(PATIENCE))?;
    check(ok(q.get_timeout(PATIENCE))? == "hello", "a queue")?;
    let (lock, v) = (ok(Lock::new())?, ok(Value::new(0u64))?);
    let rs: Vec<_> = (0..4)
        .map(|_| p.apply_async(add_under_lock, (lock.clone(), v.clone(), 250)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for r in rs {
        ok(r.get_timeout(PATIENCE))?;
    }
    check(v.get() == 1000, format!("a lock and a value: {}", v.get()))?;
    let mgr = ok(Manager::with_start_method(m))?;
    let d = ok(mgr.dict::<u32, String>())?;
    let rs: Vec<_> = (0..6)
        .map(|k| p.apply_async(insert_into, (d.clone(), k)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for r in rs {
        ok(ok(r.get_timeout(PATIENCE))?)?;
    }
    check(ok(d.len())? == 6, "a manager proxy")
}

fn initializer_and_maxtasks(m: StartMethod) -> Check {
    let p = ok(Pool::builder()
        .processes(1)
        .start_method(m)
        .initializer(init_greeting, (17,))
        .maxtasksperchild(2)
        .build())?;
    let mut pids = Vec::new();
    for _ in 0..6 {
        check(ok(p.apply(greeting, ()))? == 17, "the initializer ran in this worker")?;
        pids.push(ok(p.apply(pid, ()))?);
    }
    // Each worker runs two tasks (greeting, pid), then a fresh one starts.
    pids.dedup();
    check(pids.len() == 6, format!("six workers in turn: {pids:?}"))?;
    let bad = ok(Pool::builder()
        .processes(2)
        .start_method(m)
        .initializer(failing_init, ())
        .build())?;
    // The workers may fail before the task is submitted (then `apply_async`
    // refuses it) or after (then `get` reports it).
    let r = bad.apply_async(square, (2,)).and_then(|a| a.get_timeout(PATIENCE));
    check(
        matches!(&r, Err(TaskError::Initializer(msg)) if msg.contains("no database")),
        format!("a failing initializer: {r:?}"),
    )?;
    let r = bad.apply_async(square, (2,)).and_then(|a| a.get_timeout(PATIENCE));
    check(matches!(r, Err(TaskError::Initializer(_))), format!("and later: {r:?}"))
}

fn close_join_terminate(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    check(matches!(p.join(), Err(PoolError::StillRunning)), "join before close")?;
    let rs: Vec<_> = (0..6u64)
        .map(|i| p.apply_async(echo, (i * 5,)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    p.close();
    check(
        matches!(p.apply_async(square, (1,)), Err(TaskError::Closed)),
        "submitting after close",
    )?;
    ok(p.join_timeout(PATIENCE))?;
    for (i, r) in rs.iter().enumerate() {
        check(
            r.ready() && r.get() == Ok(i as u64 * 5),
            format!("task {i} before join returned"),
        )?;
    }
    check(p.pids().is_empty(), "no workers after join")?;

    let p = pool(m, 2)?;
    let workers = p.pids();
    let never = ok(Event::new())?;
    let slow = ok(p.apply_async(held, (60_000, never)))?;
    ok(p.terminate())?;
    check(
        slow.get_timeout(PATIENCE) == Err(TaskError::Closed),
        "a task cut short by terminate",
    )?;
    for w in workers {
        check(!ok(mp_sys::process::is_alive(w))?, format!("worker {w} is gone"))?;
    }
    Ok(())
}

fn imap_is_lazy(m: StartMethod) -> Check {
    let p = pool(m, 2)?;
    let pulled = Rc::new(Cell::new(0u64));
    let counter = pulled.clone();
    let endless = (0u64..).inspect(move |_| counter.set(counter.get() + 1));
    let first: Vec<u64> = ok(ok(p.imap(square, endless))?.take(1000).collect::<Result<Vec<_>, _>>())?;
    check(
        first == (0..1000u64).map(|x| x * x).collect::<Vec<_>>(),
        "the first 1000 squares",
    )?;
    let n = pulled.get();
    check(
        n <= 1000 + 2 * 64,
        format!("{n} items pulled from the input for 1000 results"),
    )
}

static HOLD: std::sync::OnceLock<Event> = std::sync::OnceLock::new();

fn keep_hold(gate: Event) {
    let _ = HOLD.set(gate);
}

/// Item 1 waits for the worker's `HOLD` gate; the others return at once.
fn second_item_held(x: u32) -> u32 {
    if x == 1
        && let Some(gate) = HOLD.get()
    {
        gate.wait_timeout(PATIENCE);
    }
    x + 10
}

/// A worker batches its replies; a job that runs long must not hold back
/// the replies of the jobs it ran before it.
fn early_results_are_not_held_back(m: StartMethod) -> Check {
    let gate = ok(Event::new())?;
    let p = ok(Pool::builder()
        .processes(1)
        .start_method(m)
        .initializer(keep_hold, (gate.clone(),))
        .build())?;
    // Short jobs first, so the pool hands the worker many at a time; then
    // a job that holds the worker while both chunks of the map reach it.
    ok(p.map(second_item_held, 2..2000u32))?;
    let first_gate = ok(Event::new())?;
    let busy = ok(p.apply_async(held, (7, first_gate.clone())))?;
    let mut it = ok(p.imap_chunked(second_item_held, [0u32, 1], 1))?;
    first_gate.set();
    check(busy.get_timeout(PATIENCE) == Ok(7), "the first job")?;
    let t0 = Instant::now();
    let first = it.next_timeout(PATIENCE);
    let waited = t0.elapsed();
    gate.set();
    check(first == Some(Ok(10)), format!("item 0: {first:?}"))?;
    check(waited < PATIENCE, format!("item 0 came after {waited:?}"))?;
    let second = it.next_timeout(PATIENCE);
    check(second == Some(Ok(11)), format!("item 1: {second:?}"))
}

fn executor(m: StartMethod, n: usize) -> Result<ProcessPoolExecutor, String> {
    ok(ProcessPoolExecutor::builder().max_workers(n).start_method(m).build())
}

/// Polls `f` on this thread until it is ready, at most `limit`.
fn block_on<F: std::future::Future>(f: F, limit: Duration) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = mp_sys::time::Deadline::nap(limit);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}

fn executor_futures(m: StartMethod) -> Check {
    let ex = executor(m, 2)?;
    let f = ok(ex.submit(add, (40, 2)))?;
    check(f.result_timeout(PATIENCE) == Ok(42), "submit and result")?;
    check(
        f.done() && !f.running() && !f.cancelled() && f.exception().is_none(),
        "states when done",
    )?;
    let bad = ok(ex.submit(panic_on_13, (13,)))?;
    let e = bad.result_timeout(PATIENCE);
    check(
        matches!(&e, Err(ExecutorError::Task(TaskError::Panicked(m))) if m == "unlucky 13"),
        format!("a panic: {e:?}"),
    )?;
    let v: Vec<u64> = ok(ok(ex.map(square, 0..200u64))?.collect::<Result<Vec<_>, _>>())?;
    check(v == (0..200u64).map(|x| x * x).collect::<Vec<_>>(), "map")?;
    let awaited = block_on(ok(ex.submit(square, (12,)))?, PATIENCE);
    check(awaited == Some(Ok(144)), format!("await: {awaited:?}"))?;
    // A done callback, on a future done later and on one done already.
    let (tx, rx) = std::sync::mpsc::channel();
    let gate = ok(Event::new())?;
    let slow = ok(ex.submit(held, (50, gate.clone())))?;
    let tx2 = tx.clone();
    slow.add_done_callback(move |f| {
        let _ = tx2.send(f.result_timeout(Duration::ZERO).map_err(|e| e.to_string()));
    });
    gate.set();
    check(rx.recv_timeout(PATIENCE) == Ok(Ok(50)), "a callback when done")?;
    slow.add_done_callback(move |f| {
        let _ = tx.send(f.result_timeout(Duration::ZERO).map_err(|e| e.to_string()));
    });
    check(rx.try_recv() == Ok(Ok(50)), "a callback on a done future runs at once")?;
    // Completion order and wait().
    let (gate, open) = (ok(Event::new())?, ok(Event::new())?);
    open.set();
    let fs = vec![
        ok(ex.submit(held, (300, gate.clone())))?,
        ok(ex.submit(held, (1, open.clone())))?,
    ];
    let mut order: Vec<u64> = Vec::new();
    for f in as_completed_timeout(&fs, PATIENCE) {
        order.push(ok(f.map_err(|e| e.to_string()).and_then(|f| ok(f.result())))?);
        gate.set(); // the held task ends once the other one is in
    }
    check(order == vec![1, 300], format!("as_completed: {order:?}"))?;
    let fs = vec![ok(ex.submit(echo, (1,)))?, ok(ex.submit(echo, (2,)))?];
    let r = wait(&fs, Some(PATIENCE), ReturnWhen::AllCompleted);
    check(
        r.done == vec![0, 1] && r.not_done.is_empty(),
        format!("wait all: {r:?}"),
    )?;
    let gate = ok(Event::new())?;
    let fs = vec![ok(ex.submit(held, (500, gate.clone())))?, ok(ex.submit(echo, (1,)))?];
    let r = wait(&fs, Some(Duration::from_millis(100)), ReturnWhen::AllCompleted);
    gate.set();
    check(
        r.done == vec![1] && r.not_done == vec![0],
        format!("wait with a timeout: {r:?}"),
    )?;
    let gate = ok(Event::new())?;
    let fs = vec![ok(ex.submit(held, (600, gate.clone())))?, ok(ex.submit(fail, (1,)))?];
    let r = wait(&fs, Some(PATIENCE), ReturnWhen::FirstException);
    gate.set();
    check(
        r.done == vec![1] && r.not_done == vec![0],
        format!("wait for an exception: {r:?}"),
    )?;
    // map_timeout: the slow item times out, the quick ones do not.
    let (gate, open) = (ok(Event::new())?, ok(Event::new())?);
    open.set();
    let items = vec![(1, open.clone()), (900, gate.clone()), (1, open)];
    let got: Vec<Result<u64, ExecutorError>> =
        ok(ex.map_timeout(held_item, items, Duration::from_millis(300)))?.collect();
    gate.set();
    check(
        got[0] == Ok(1) && got[1] == Err(ExecutorError::Timeout),
        format!("map_timeout: {got:?}"),
    )
}

fn executor_cancel_and_shutdown(m: StartMethod) -> Check {
    let ex = executor(m, 1)?;
    let gate = ok(Event::new())?;
    let first = ok(ex.submit(held, (200, gate.clone())))?;
    let queued: Vec<_> = (0..10u64)
        .map(|i| ex.submit(echo, (i,)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let last = &queued[9];
    check(last.cancel() && last.cancelled() && last.done(), "cancel a queued task")?;
    check(last.result() == Err(ExecutorError::Cancelled), "its result")?;
    check(mp_testkit::until(PATIENCE, || first.running()), "the first task runs")?;
    check(!first.cancel(), "a running task cannot be cancelled")?;
    check(
        first.exception_timeout(Duration::from_millis(20)) == Err(ExecutorError::Timeout),
        "exception_timeout on a running task times out",
    )?;
    ex.shutdown(false, true);
    check(
        !ex.shutdown_timeout(false, Duration::from_millis(20)),
        "shutdown_timeout gives up while a task is held",
    )?;
    gate.set();
    check(
        ex.shutdown_timeout(false, PATIENCE),
        "shutdown_timeout returns once the held task is done",
    )?;
    ex.shutdown(true, false);
    check(first.result() == Ok(200), "the running task finished")?;
    check(first.exception_timeout(PATIENCE) == Ok(None), "no exception")?;
    let cancelled = queued.iter().filter(|f| f.cancelled()).count();
    check(
        cancelled >= 7,
        format!("{cancelled} of 10 queued tasks cancelled by shutdown"),
    )?;
    check(
        queued.iter().all(|f| f.done()),
        "every future is done after shutdown(wait)",
    )?;
    let r = ex.submit(square, (1,));
    check(
        matches!(r, Err(ExecutorError::Task(TaskError::Closed))),
        format!("submit after shutdown: {r:?}"),
    )?;
    check(ex.pids().is_empty(), "workers gone")
}

/// Python's `test_cancel_futures`: `shutdown(cancel_futures=True)` cancels
/// only the tasks no worker has been handed; those finish.
fn executor_shutdown_cancels_only_pending(m: StartMethod) -> Check {
    let ex = executor(m, 5)?;
    let fs: Vec<_> = (0..50)
        .map(|_| ex.submit(nap, (100,)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    ex.shutdown(true, true);
    let cancelled = fs.iter().filter(|f| f.cancelled()).count();
    check(cancelled > 20, format!("{cancelled} of 50 cancelled"))?;
    let others: Vec<_> = fs.iter().filter(|f| !f.cancelled()).collect();
    for f in &others {
        let r = f.result_timeout(Duration::ZERO);
        check(f.done() && r == Ok(100), format!("a task not cancelled: {r:?}"))?;
    }
    check(
        !others.is_empty(),
        "all 50 cancelled: none of those handed out finished",
    )?;
    check(ex.pids().is_empty(), "workers gone")
}

fn executor_breaks_when_a_worker_dies(m: StartMethod) -> Check {
    let ex = executor(m, 2)?;
    let pids = ok(Queue::<u32>::new())?;
    let go = ok(Event::new())?;
    let doomed = ok(ex.submit(report_and_wait, (pids.clone(), go.clone())))?;
    let victim = ok(pids.get_timeout(PATIENCE))?;
    let others: Vec<_> = (0..6u64)
        .map(|_| ex.submit(report_and_wait, (pids.clone(), go.clone())))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    ok(kill(victim, Signal::KILL))?;
    check(
        doomed.result_timeout(PATIENCE) == Err(ExecutorError::BrokenProcessPool),
        "the task whose worker died",
    )?;
    for f in &others {
        let r = f.result_timeout(PATIENCE);
        check(
            r == Err(ExecutorError::BrokenProcessPool),
            format!("a pending task: {r:?}"),
        )?;
    }
    let r = ex.submit(square, (2,));
    check(
        matches!(r, Err(ExecutorError::BrokenProcessPool)),
        format!("a new task: {r:?}"),
    )?;
    go.set();
    ex.shutdown(true, false);
    check(ex.pids().is_empty(), "workers gone")
}

/// Runs `f`; a panic in it is a failure named `what`.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("{what} panicked: {msg}")
    })
}

/// `Duration::MAX` means "as long as it takes": every timeout form takes it.
fn huge_timeouts_wait_normally(m: StartMethod) -> Check {
    let max = Duration::MAX;
    let p = pool(m, 2)?;
    let r = ok(p.apply_async(square, (3,)))?;
    check(
        no_panic("AsyncResult::get_timeout", || r.get_timeout(max))? == Ok(9),
        "get_timeout",
    )?;
    check(
        no_panic("AsyncResult::wait_timeout", || r.wait_timeout(max))?,
        "wait_timeout",
    )?;
    let a = ok(p.map_async(square, 0..4u64))?;
    check(
        no_panic("map_async get_timeout", || a.get_timeout(max))? == Ok(vec![0, 1, 4, 9]),
        "map_async get_timeout",
    )?;
    check(
        no_panic("map_async wait_timeout", || a.wait_timeout(max))?,
        "map_async wait_timeout",
    )?;
    let mut it = ok(p.imap(square, 0..3u64))?;
    let first = no_panic("IMap::next_timeout", || it.next_timeout(max))?;
    check(first == Some(Ok(0)), format!("imap next_timeout: {first:?}"))?;
    drop(it);
    p.close();
    ok(no_panic("Pool::join_timeout", || p.join_timeout(max))?)?;

    let ex = executor(m, 2)?;
    let f = ok(ex.submit(square, (5,)))?;
    check(
        no_panic("TaskFuture::result_timeout", || f.result_timeout(max))? == Ok(25),
        "result_timeout",
    )?;
    check(
        no_panic("TaskFuture::wait_timeout", || f.wait_timeout(max))?,
        "TaskFuture::wait_timeout",
    )?;
    let v: Vec<_> = no_panic("map_timeout", || {
        ex.map_timeout(square, 0..3u64, max).map(|it| it.collect::<Vec<_>>())
    })?
    .map_err(|e| e.to_string())?;
    check(v == vec![Ok(0), Ok(1), Ok(4)], format!("map_timeout: {v:?}"))?;
    let fs = vec![ok(ex.submit(square, (1,)))?, ok(ex.submit(square, (2,)))?];
    let r = no_panic("executor::wait", || wait(&fs, Some(max), ReturnWhen::AllCompleted))?;
    check(r.done == vec![0, 1] && r.not_done.is_empty(), format!("wait: {r:?}"))?;
    let n = no_panic("as_completed_timeout", || {
        as_completed_timeout(&fs, max).filter(|f| f.is_ok()).count()
    })?;
    check(n == 2, format!("as_completed_timeout: {n} done"))?;
    ex.shutdown(true, false);
    Ok(())
}

// ---- once ------------------------------------------------------------------

fn no_leaks_after_100_pools(m: StartMethod) -> Check {
    // The first pool may start the fork server, which stays.
    drop(pool(m, 1)?);
    let fds = ok(mp_sys::fd::count_open_fds())?;
    let shm = mp_testkit::shm_entries();
    for i in 0..100u64 {
        let p = pool(m, 2)?;
        check(ok(p.apply(square, (i,)))? == i * i, "a task")?;
        drop(p);
    }
    let after = ok(mp_sys::fd::count_open_fds())?;
    check(after == fds, format!("{fds} fds before, {after} after 100 pools"))?;
    check(mp_testkit::shm_entries() == shm, "/dev/shm changed")?;
    let z = mp_testkit::zombie_children();
    check(z == 0, format!("{z} zombie children"))
}

fn bad_settings_are_errors() -> Check {
    check(
        matches!(Pool::new(0), Err(PoolError::InvalidArgument(_))),
        "zero processes",
    )?;
    let r = Pool::builder().processes(1).maxtasksperchild(0).build();
    check(matches!(r, Err(PoolError::InvalidArgument(_))), "maxtasksperchild 0")?;
    let p = ok(Pool::new(1))?;
    let n = 5u64;
    let r = p.apply_async(move |x: u64| x + n, (1,));
    check(matches!(r, Err(TaskError::Encode(_))), "a closure that captures")?;
    let r = p.map_chunked(square, 0..3u64, 0);
    check(matches!(r, Err(TaskError::Encode(_))), "chunksize 0")
}

fn main() -> ExitCode {
    let with_method: [(&str, mp_testkit::Case<StartMethod>); 21] = [
        ("results_come_back", results_come_back),
        ("panics_are_errors", panics_are_errors),
        ("map_waits_for_every_chunk", map_waits_for_every_chunk),
        ("chunks_keep_each_items_result", chunks_keep_each_items_result),
        (
            "encode_error_waits_for_queued_chunks",
            encode_error_waits_for_queued_chunks,
        ),
        ("killed_worker_mid_map", killed_worker_mid_map),
        (
            "large_payloads_cross_in_shared_memory_and_past_it",
            large_payloads_cross_in_shared_memory_and_past_it,
        ),
        ("killed_from_outside", killed_from_outside),
        ("exits_and_aborts_are_worker_lost", exits_and_aborts_are_worker_lost),
        ("callbacks_on_one_thread", callbacks_on_one_thread),
        ("handles_reach_workers", handles_reach_workers),
        ("initializer_and_maxtasks", initializer_and_maxtasks),
        ("close_join_terminate", close_join_terminate),
        ("imap_is_lazy", imap_is_lazy),
        ("early_results_are_not_held_back", early_results_are_not_held_back),
        ("executor_futures", executor_futures),
        ("executor_cancel_and_shutdown", executor_cancel_and_shutdown),
        (
            "executor_shutdown_cancels_only_pending",
            executor_shutdown_cancels_only_pending,
        ),
        ("executor_breaks_when_a_worker_dies", executor_breaks_when_a_worker_dies),
        ("huge_timeouts_wait_normally", huge_timeouts_wait_normally),
        ("no_leaks_after_100_pools", no_leaks_after_100_pools),
    ];
    let local: [(&str, Test); 1] = [("bad_settings_are_errors", bad_settings_are_errors)];
    suite(&local, &with_method, &METHODS)
}
