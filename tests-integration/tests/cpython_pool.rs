//! CPython's own multiprocessing tests, ported (see docs/conformance.md):
//! the pool part — `Pool` (`_TestPool`, `_TestPoolWorkerLifetime`,
//! `_TestPoolWorkerErrors`, `TestPoolNotLeakOnFailure`, `TestInitializers`)
//! and `concurrent.futures`' process-pool executor tests. Each test is named
//! `<CPython class>::<method>`. Its own single-threaded main, because
//! children may be forked; `cargo xtask test` runs it once per
//! `MP_START_METHOD`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mp_testkit::{Harness, PATIENCE, check, finish, ok, until};
use multiprocessing::executor::{ReturnWhen, as_completed_timeout, wait};
use multiprocessing::{
    Event, ExecutorError, Manager, NamespaceProxy, Pool, PoolError, Process, ProcessPoolExecutor, Queue, Semaphore,
    StartMethod, TaskError, TaskFuture,
};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

type Check = Result<(), String>;

// ---- helpers ----------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Panics with `payload` without printing it: tests that panic on purpose
/// keep the output readable.
fn quiet_panic<P: std::any::Any + Send + 'static>(payload: P) -> ! {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let caught = catch_unwind(AssertUnwindSafe(|| std::panic::panic_any(payload)));
    std::panic::set_hook(prev);
    match caught {
        Err(p) => std::panic::resume_unwind(p),
        Ok(never) => never,
    }
}

/// Python's `SayWhenError`: the payload of a panic raised by an input
/// iterator (the Rust form of an iterable that raises).
#[derive(Debug)]
struct SayWhenError;

/// Python's `exception_throwing_generator(total, when)`: yields `0..total`
/// but panics with [`SayWhenError`] when it reaches `when` (`-1`: at once).
fn exception_throwing_generator(total: u64, when: i64) -> impl Iterator<Item = u64> {
    (0..total).inspect(move |&i| {
        if when == -1 || i as i64 == when {
            quiet_panic(SayWhenError)
        }
    })
}

/// Runs `f`; `Err(true)` if it panicked with [`SayWhenError`], `Err(false)`
/// if with something else.
fn says_when<T>(f: impl FnOnce() -> T) -> Result<T, bool> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| p.is::<SayWhenError>())
}

fn pool(n: usize) -> Result<Pool, String> {
    ok(Pool::new(n))
}

// ---- tasks ------------------------------------------------------------------

fn sqr(x: u64) -> u64 {
    x * x
}

/// Python's `sqr(x, wait)`: the square after a nap of `wait_ms`.
fn sqr_wait(x: u64, wait_ms: u64) -> u64 {
    std::thread::sleep(ms(wait_ms));
    x * x
}

/// The square once `gate` is set (or after [`PATIENCE`]).
fn sqr_held(x: u64, gate: Event) -> u64 {
    gate.wait_timeout(PATIENCE);
    x * x
}

fn mul(x: i64, y: i64) -> i64 {
    x * y
}

fn nap(wait_ms: u64) {
    std::thread::sleep(ms(wait_ms));
}

fn to_float(x: u32) -> f64 {
    f64::from(x)
}

/// Python's `raise RuntimeError(123)`.
fn raise_123() -> u64 {
    quiet_panic(String::from("RuntimeError(123)"))
}

fn raise_foo() -> u64 {
    quiet_panic(String::from("RuntimeError('foo')"))
}

/// Python's `raising()`: `raise KeyError("key")`.
fn raising() -> u64 {
    quiet_panic(String::from("KeyError('key')"))
}

/// Python's `raise_large_valuerror(wait)`: a panic with a 1 MiB message.
fn raise_large_valuerror(wait_ms: u64) -> u64 {
    std::thread::sleep(ms(wait_ms));
    quiet_panic(format!("ValueError({})", "x".repeat(1 << 20)))
}

/// A value whose encoding fails: Python's object whose `__reduce__` raises.
#[derive(Clone, Debug)]
struct Unpicklable;

impl Serialize for Unpicklable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(S::Error::custom("cannot pickle"))
    }
}

impl<'de> Deserialize<'de> for Unpicklable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Unpicklable)
    }
}

fn take_unpicklable(_: Unpicklable) -> u64 {
    0
}

/// Python's `unpickleable_result()`: a result that cannot be encoded.
fn unpickleable_result() -> Unpicklable {
    Unpicklable
}

/// How many [`Counted`] values live in this process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Python's `CountedObject`: counts its live instances (copies made by
/// decoding included).
#[derive(Debug)]
struct Counted(u32);

impl Counted {
    fn new(n: u32) -> Counted {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Counted(n)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(Counted::new)
    }
}

fn identity(c: Counted) -> Counted {
    c
}

/// Python's `initializer(ns)`: `ns.test += 1`.
fn ns_initializer(ns: NamespaceProxy) -> Result<(), String> {
    let v: i64 = ok(ns.get("test"))?.unwrap_or(0);
    ok(ns.set("test", v + 1))
}

/// A pool left open in a global, as the script of
/// `test_worker_finalization_via_atexit_handler_of_multiprocessing` does.
static KEPT_POOL: OnceLock<Pool> = OnceLock::new();

fn leave_a_pool_open() -> Result<(), String> {
    let p = pool(1)?;
    let v = ok(p.map(to_float, 0..10u32))?;
    if v != (0..10u32).map(f64::from).collect::<Vec<_>>() {
        return Err(format!("map(float) gave {v:?}"));
    }
    KEPT_POOL
        .set(p)
        .map_err(|_| "the global pool was set twice".to_string())
}

// ---- _TestPool ----------------------------------------------------------------

fn test_apply(p: &Pool) -> Check {
    check(ok(p.apply(sqr, (5,)))? == 25, "apply(sqr, (5,))")?;
    check(ok(p.apply(sqr, (3,)))? == 9, "apply(sqr, x=3)")
}

fn test_map(p: &Pool) -> Check {
    let want = |n: u64| (0..n).map(sqr).collect::<Vec<_>>();
    check(ok(p.map(sqr, 0..10u64))? == want(10), "map(sqr, range(10))")?;
    check(
        ok(p.map_chunked(sqr, 0..100u64, 20))? == want(100),
        "map(sqr, range(100), chunksize=20)",
    )
}

fn test_starmap(p: &Pool) -> Check {
    let tuples: Vec<(i64, i64)> = (0..10).zip((0..10).rev()).collect();
    let want: Vec<i64> = tuples.iter().map(|&(a, b)| a * b).collect();
    check(ok(p.starmap(mul, tuples))? == want, "starmap over 10")?;
    let tuples: Vec<(i64, i64)> = (0..100).zip((0..100).rev()).collect();
    let want: Vec<i64> = tuples.iter().map(|&(a, b)| a * b).collect();
    check(ok(p.starmap(mul, tuples))? == want, "starmap over 100")
}

fn test_starmap_async(p: &Pool) -> Check {
    let tuples: Vec<(i64, i64)> = (0..100).zip((0..100).rev()).collect();
    let want: Vec<i64> = tuples.iter().map(|&(a, b)| a * b).collect();
    check(
        ok(ok(p.starmap_async(mul, tuples))?.get_timeout(PATIENCE))? == want,
        "starmap_async",
    )
}

fn test_map_async(p: &Pool) -> Check {
    check(
        ok(ok(p.map_async(sqr, 0..10u64))?.get_timeout(PATIENCE))? == (0..10u64).map(sqr).collect::<Vec<_>>(),
        "map_async",
    )
}

/// What `map_async_with`'s callbacks saw.
#[derive(Debug, PartialEq)]
enum Called {
    Values(Vec<i64>),
    Error(String),
}

fn parse_int(s: String) -> Result<i64, String> {
    s.parse::<i64>()
        .map_err(|e| format!("invalid literal for int(): {s:?}: {e}"))
}

fn test_map_async_callbacks(p: &Pool) -> Check {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (c1, c2) = (Arc::clone(&calls), Arc::clone(&calls));
    let r = ok(p.map_async_with(
        parse_int,
        vec!["1".to_string()],
        move |v: &Vec<Result<i64, String>>| {
            let ints = v.iter().filter_map(|x| x.as_ref().ok().copied()).collect();
            c1.lock().unwrap().push(Called::Values(ints));
        },
        move |e: &TaskError| c2.lock().unwrap().push(Called::Error(e.to_string())),
    ))?;
    check(r.wait_timeout(PATIENCE), "map_async with callbacks did not finish")?;
    // The callback has run once `wait` returns.
    {
        let seen = calls.lock().unwrap();
        check(
            *seen == [Called::Values(vec![1])],
            format!("after the first map: {seen:?}"),
        )?;
    }
    // A panicking item is the error callback's (Python's ValueError).
    let (c3, c4) = (Arc::clone(&calls), Arc::clone(&calls));
    let r = ok(p.map_async_with(
        panic_on_a,
        vec!["a".to_string()],
        move |v: &Vec<i64>| c3.lock().unwrap().push(Called::Values(v.clone())),
        move |e: &TaskError| c4.lock().unwrap().push(Called::Error(e.to_string())),
    ))?;
    check(r.wait_timeout(PATIENCE), "the failing map_async did not finish")?;
    let seen = calls.lock().unwrap();
    check(
        seen.len() == 2 && matches!(&seen[1], Called::Error(m) if m.contains("invalid literal")),
        format!("after the failing map: {seen:?}"),
    )
}

fn panic_on_a(s: String) -> i64 {
    match parse_int(s) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

fn test_map_unplicklable(p: &Pool) -> Check {
    let r = p.map(take_unpicklable, vec![Unpicklable; 10]);
    check(
        matches!(&r, Err(TaskError::Encode(m)) if m.contains("cannot pickle")),
        format!("map over values that cannot be encoded: {r:?}"),
    )?;
    check(ok(p.apply(sqr, (4,)))? == 16, "the pool goes on")
}

fn test_map_chunksize(p: &Pool) -> Check {
    let r = ok(p.map_async(sqr, Vec::<u64>::new()))?.get_timeout(PATIENCE);
    check(r == Ok(vec![]), format!("map_async over [] stalled: {r:?}"))?;
    check(
        ok(p.map_chunked(sqr, Vec::<u64>::new(), 1))?.is_empty(),
        "map over [] with chunksize 1",
    )
}

fn test_map_handle_iterable_exception(p: &Pool) -> Check {
    for round in 0..2 {
        let r = says_when(|| p.map_chunked(sqr, exception_throwing_generator(1, -1), 1));
        check(
            matches!(r, Err(true)),
            format!("round {round}: a panic at the first item: {r:?}"),
        )?;
    }
    let r = says_when(|| p.map_chunked(sqr, exception_throwing_generator(10, 3), 1));
    check(matches!(r, Err(true)), format!("a panic at item 3: {r:?}"))?;
    // Python's SpecialIterable: `__len__` says 1, `__next__` raises.
    for round in 0..2 {
        let special = std::iter::from_fn(|| -> Option<u64> { quiet_panic(SayWhenError) });
        let r = says_when(|| p.map_chunked(sqr, special, 1));
        check(matches!(r, Err(true)), format!("round {round}: SpecialIterable: {r:?}"))?;
    }
    check(ok(p.apply(sqr, (6,)))? == 36, "the pool goes on")
}

fn test_async(p: &Pool) -> Check {
    let t0 = Instant::now();
    let res = ok(p.apply_async(sqr_wait, (7, 100)))?;
    check(ok(res.get_timeout(PATIENCE))? == 49, "get()")?;
    let took = t0.elapsed();
    check(
        took >= ms(100),
        format!("get() returned after {took:?}, before the task's 100 ms"),
    )
}

fn test_async_timeout() -> Check {
    let p = pool(3)?;
    let gate = ok(Event::new())?;
    let res = ok(p.apply_async(sqr_held, (6, gate.clone())))?;
    let t0 = Instant::now();
    let r = res.get_timeout(ms(100));
    let took = t0.elapsed();
    gate.set();
    check(r == Err(TaskError::Timeout), format!("get(timeout=0.1): {r:?}"))?;
    check(
        took >= ms(100) && took < PATIENCE,
        format!("get(timeout=0.1) took {took:?}"),
    )?;
    ok(p.terminate())
}

fn test_imap(p: &Pool) -> Check {
    let v: Vec<u64> = ok(ok(p.imap(sqr, 0..10u64))?.collect::<Result<_, _>>())?;
    check(v == (0..10u64).map(sqr).collect::<Vec<_>>(), "list(imap)")?;
    let mut it = ok(p.imap(sqr, 0..10u64))?;
    for i in 0..10u64 {
        let r = it.next_timeout(PATIENCE);
        check(r == Some(Ok(i * i)), format!("next() #{i}: {r:?}"))?;
    }
    check(it.next_timeout(PATIENCE).is_none(), "StopIteration after 10")?;
    let mut it = ok(p.imap_chunked(sqr, 0..1000u64, 100))?;
    for i in 0..1000u64 {
        let r = it.next_timeout(PATIENCE);
        check(r == Some(Ok(i * i)), format!("chunksize 100, next() #{i}: {r:?}"))?;
    }
    check(it.next_timeout(PATIENCE).is_none(), "StopIteration after 1000")
}

fn test_imap_handle_iterable_exception(p: &Pool) -> Check {
    for round in 0..2 {
        let r = says_when(|| {
            let mut it = p
                .imap(sqr, exception_throwing_generator(1, -1))
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(it.next_timeout(PATIENCE))
        });
        check(
            matches!(r, Err(true)),
            format!("round {round}: at the first item: {r:?}"),
        )?;
    }
    // The results before the failing item come first, then the panic.
    for (total, when, chunksize, before) in [(10, 3, 1, 3), (20, 7, 2, 6), (20, 7, 4, 4)] {
        let mut it = ok(p.imap_chunked(sqr, exception_throwing_generator(total, when), chunksize))?;
        for i in 0..before {
            let r = says_when(|| it.next_timeout(PATIENCE));
            check(
                matches!(r, Ok(Some(Ok(v))) if v == i * i),
                format!("generator({total}, {when}), chunksize {chunksize}: next() #{i}: {r:?}"),
            )?;
        }
        let r = says_when(|| it.next_timeout(PATIENCE));
        check(
            matches!(r, Err(true)),
            format!("generator({total}, {when}), chunksize {chunksize}: then SayWhenError: {r:?}"),
        )?;
    }
    Ok(())
}

fn test_imap_unordered(p: &Pool) -> Check {
    let mut v: Vec<u64> = ok(ok(p.imap_unordered(sqr, 0..10u64))?.collect::<Result<_, _>>())?;
    v.sort_unstable();
    check(v == (0..10u64).map(sqr).collect::<Vec<_>>(), "sorted(imap_unordered)")?;
    let mut v: Vec<u64> = ok(ok(p.imap_unordered_chunked(sqr, 0..1000u64, 100))?.collect::<Result<_, _>>())?;
    v.sort_unstable();
    check(
        v == (0..1000u64).map(sqr).collect::<Vec<_>>(),
        "sorted(imap_unordered, chunksize=100)",
    )
}

fn test_imap_unordered_handle_iterable_exception(p: &Pool) -> Check {
    for round in 0..2 {
        let r = says_when(|| {
            let mut it = p
                .imap_unordered(sqr, exception_throwing_generator(1, -1))
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(it.next_timeout(PATIENCE))
        });
        check(
            matches!(r, Err(true)),
            format!("round {round}: at the first item: {r:?}"),
        )?;
    }
    for (total, when, chunksize) in [(10u64, 3, 1), (20, 7, 2)] {
        let mut expected: Vec<u64> = (0..total).map(sqr).collect();
        let r = says_when(|| {
            let mut it = p
                .imap_unordered_chunked(sqr, exception_throwing_generator(total, when), chunksize)
                .map_err(|e| e.to_string())?;
            for _ in 0..total {
                let v = match it.next_timeout(PATIENCE) {
                    Some(Ok(v)) => v,
                    other => return Err(format!("a value: {other:?}")),
                };
                let at = expected
                    .iter()
                    .position(|&e| e == v)
                    .ok_or(format!("{v} not expected"))?;
                expected.remove(at);
            }
            Ok(())
        });
        check(
            matches!(r, Err(true)),
            format!("generator({total}, {when}): SayWhenError before the end: {r:?}"),
        )?;
    }
    Ok(())
}

fn test_make_pool() -> Check {
    let r = Pool::new(0);
    check(
        matches!(r, Err(PoolError::InvalidArgument(_))),
        format!("Pool(0): {r:?}"),
    )?;
    let p = pool(3)?;
    check(p.pids().len() == 3, format!("Pool(3) has workers {:?}", p.pids()))?;
    p.close();
    ok(p.join_timeout(PATIENCE))
}

fn test_terminate() -> Check {
    let p = pool(3)?;
    let args = vec![PATIENCE.as_millis() as u64; 10_000];
    let result = ok(p.map_async(nap, args))?;
    // Give some tasks a chance to start.
    check(!result.wait_timeout(ms(50)), "10 000 naps of 30 s done at once")?;
    let t0 = Instant::now();
    ok(p.terminate())?;
    ok(p.join_timeout(PATIENCE))?;
    let took = t0.elapsed();
    check(took < PATIENCE, format!("terminate() took {took:?}"))?;
    let r = result.get_timeout(PATIENCE);
    check(r == Err(TaskError::Closed), format!("the map after terminate: {r:?}"))
}

fn test_empty_iterable() -> Check {
    let p = pool(1)?;
    check(ok(p.map(sqr, Vec::<u64>::new()))?.is_empty(), "map")?;
    check(ok(p.imap(sqr, Vec::<u64>::new()))?.next().is_none(), "imap")?;
    check(
        ok(p.imap_unordered(sqr, Vec::<u64>::new()))?.next().is_none(),
        "imap_unordered",
    )?;
    check(
        ok(ok(p.map_async(sqr, Vec::<u64>::new()))?.get_timeout(PATIENCE))?.is_empty(),
        "map_async",
    )?;
    p.close();
    ok(p.join_timeout(PATIENCE))
}

fn test_context() -> Check {
    let p = pool(2)?;
    let r = ok(p.map_async(sqr, 0..10u64))?;
    check(
        ok(r.get_timeout(PATIENCE))? == (0..10u64).map(sqr).collect::<Vec<_>>(),
        "r.get()",
    )?;
    // Leaving `with` terminates the pool.
    ok(p.terminate())?;
    ok(p.join_timeout(PATIENCE))?;
    let r = p.map_async(sqr, 0..10u64);
    check(
        matches!(r, Err(TaskError::Closed)),
        format!("map_async after the pool ended: {r:?}"),
    )
}

fn test_traceback() -> Check {
    let p = pool(1)?;
    let r = p.apply(raise_123, ());
    check(
        matches!(&r, Err(TaskError::Panicked(m)) if m.contains("RuntimeError(123)")),
        format!("the worker's panic comes back: {r:?}"),
    )?;
    drop(p);
    // A panic of the input iterator reaches the caller as it is.
    let p = pool(1)?;
    let r = says_when(|| p.map_chunked(sqr, exception_throwing_generator(1, -1), 1));
    check(matches!(r, Err(true)), format!("SayWhenError itself: {r:?}"))?;
    ok(p.terminate())
}

fn test_wrapped_exception() -> Check {
    let p = pool(1)?;
    let r = p.apply(raise_foo, ());
    check(
        matches!(&r, Err(TaskError::Panicked(m)) if m.contains("RuntimeError('foo')")),
        format!("{r:?}"),
    )?;
    ok(p.terminate())
}

fn test_map_no_failfast() -> Check {
    let t0 = Instant::now();
    let p = pool(2)?;
    let r = p.map(raise_large_valuerror, [0u64, 100]);
    let took = t0.elapsed();
    check(
        matches!(&r, Err(TaskError::Panicked(m)) if m.len() > 1 << 20),
        format!(
            "map: {:?}",
            r.as_ref()
                .map_err(|e| e.to_string().chars().take(80).collect::<String>())
        ),
    )?;
    p.close();
    ok(p.join_timeout(PATIENCE))?;
    check(
        took >= ms(100),
        format!("map returned after {took:?}, before its second item (100 ms) was done"),
    )
}

fn test_release_task_refs(p: &Pool) -> Check {
    let base = LIVE.load(Ordering::SeqCst);
    let objs: Vec<Counted> = (0..10).map(Counted::new).collect();
    check(LIVE.load(Ordering::SeqCst) == base + 10, "10 objects")?;
    let back = ok(p.map(identity, objs))?;
    let live = LIVE.load(Ordering::SeqCst) - base;
    check(
        live == 10,
        format!("{live} objects alive with only the 10 results held"),
    )?;
    check(
        back.iter().map(|c| c.0).collect::<Vec<_>>() == (0..10).collect::<Vec<_>>(),
        "the results",
    )?;
    drop(back);
    let live = LIVE.load(Ordering::SeqCst) - base;
    check(
        live == 0,
        format!("{live} objects alive after the results were dropped"),
    )
}

fn test_enter() -> Check {
    let p = pool(1)?;
    let workers = p.pids();
    // `with pool: pass` terminates it on the way out ...
    ok(p.terminate())?;
    // ... and the ended pool cannot be used again.
    let r = p.apply_async(sqr, (1,));
    check(matches!(r, Err(TaskError::Closed)), format!("using it again: {r:?}"))?;
    ok(p.join_timeout(PATIENCE))?;
    for w in workers {
        check(!ok(mp_sys::process::is_alive(w))?, format!("worker {w} is gone"))?;
    }
    Ok(())
}

// ---- _TestPoolWorkerErrors ----------------------------------------------------

fn test_async_error_callback() -> Check {
    let p = pool(2)?;
    let scratchpad: Arc<Mutex<Option<TaskError>>> = Arc::default();
    let s = scratchpad.clone();
    let res = ok(p.apply_async_with(
        raising,
        (),
        |_| {},
        move |e: &TaskError| *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone()),
    ))?;
    let r = res.get_timeout(PATIENCE);
    check(
        matches!(&r, Err(TaskError::Panicked(m)) if m.contains("KeyError")),
        format!("get(): {r:?}"),
    )?;
    let got = scratchpad.lock().unwrap_or_else(|e| e.into_inner()).clone();
    check(
        matches!(&got, Some(TaskError::Panicked(m)) if m.contains("KeyError")),
        format!("the error callback got {got:?}"),
    )?;
    p.close();
    ok(p.join_timeout(PATIENCE))
}

fn test_unpickleable_result() -> Check {
    let p = pool(2)?;
    for iteration in 0..20 {
        let scratchpad: Arc<Mutex<Option<TaskError>>> = Arc::default();
        let s = scratchpad.clone();
        let res = ok(p.apply_async_with(
            unpickleable_result,
            (),
            |_| {},
            move |e: &TaskError| *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone()),
        ))?;
        let r = res.get_timeout(PATIENCE);
        check(
            matches!(&r, Err(TaskError::Encode(m)) if m.contains("cannot pickle")),
            format!("iteration {iteration}: get(): {r:?}"),
        )?;
        let got = scratchpad.lock().unwrap_or_else(|e| e.into_inner()).clone();
        check(
            matches!(&got, Some(TaskError::Encode(m)) if m.contains("cannot pickle")),
            format!("iteration {iteration}: the error callback got {got:?}"),
        )?;
    }
    check(p.pids().len() == 2, format!("workers lost: {:?}", p.pids()))?;
    p.close();
    ok(p.join_timeout(PATIENCE))
}

// ---- _TestPoolWorkerLifetime --------------------------------------------------

fn test_pool_worker_lifetime() -> Check {
    let p = ok(Pool::builder().processes(3).maxtasksperchild(10).build())?;
    let orig = p.pids();
    check(orig.len() == 3, format!("3 workers: {orig:?}"))?;
    let results: Vec<_> = (0..100u64)
        .map(|i| p.apply_async(sqr, (i,)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for (j, res) in results.iter().enumerate() {
        let j = j as u64;
        check(ok(res.get_timeout(PATIENCE))? == j * j, format!("result {j}"))?;
    }
    check(until(PATIENCE, || p.pids().len() == 3), "the pool refilled")?;
    let mut fin = p.pids();
    let mut orig = orig;
    check(!orig.contains(&0) && !fin.contains(&0), "every pid assigned")?;
    orig.sort_unstable();
    fin.sort_unstable();
    check(orig != fin, format!("the workers were replaced: {orig:?} then {fin:?}"))?;
    p.close();
    ok(p.join_timeout(PATIENCE))
}

fn test_pool_worker_lifetime_early_close() -> Check {
    let p = ok(Pool::builder().processes(3).maxtasksperchild(1).build())?;
    let results: Vec<_> = (0..6u64)
        .map(|i| p.apply_async(sqr_wait, (i, 30)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    p.close();
    ok(p.join_timeout(PATIENCE))?;
    for (j, res) in results.iter().enumerate() {
        let j = j as u64;
        let r = res.get_timeout(Duration::ZERO);
        check(r == Ok(j * j), format!("result {j} after join: {r:?}"))?;
    }
    Ok(())
}

fn test_pool_maxtasksperchild_invalid() -> Check {
    let r = Pool::builder().processes(3).maxtasksperchild(0).build();
    check(
        matches!(r, Err(PoolError::InvalidArgument(_))),
        format!("maxtasksperchild=0: {r:?}"),
    )
}

fn test_worker_finalization_via_atexit_handler_of_multiprocessing() -> Check {
    let mut child = Process::new(leave_a_pool_open, ());
    ok(child.start())?;
    let code = finish(&mut child)?;
    check(
        code == 0,
        format!("the child that left its pool open exited with {code}"),
    )
}

// ---- TestPoolNotLeakOnFailure -------------------------------------------------

/// The pids of this process's descendants.
fn descendants() -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let after = stat.rsplit_once(')').map_or("", |x| x.1);
            let mut f = after.split_whitespace();
            let state = f.next().unwrap_or("");
            if let Some(ppid) = f.next().and_then(|p| p.parse::<u32>().ok())
                && state != "Z"
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![std::process::id()];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    found.remove(0);
    found.sort_unstable();
    found
}

/// The descendants of this process that are pool workers: those holding a
/// worker's progress page. (The fork server and the spare child it keeps
/// ready hold none.)
fn pool_workers() -> Vec<u32> {
    descendants()
        .into_iter()
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
                d.flatten()
                    .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("mp-pool-worker")))
            })
        })
        .collect()
}

/// Whether `now` holds no process that `before` does not.
fn no_new(before: &[u32], now: &[u32]) -> bool {
    now.iter().all(|p| before.contains(p))
}

/// This process's soft limit on open files.
fn soft_nofile() -> Result<u64, String> {
    let limits = ok(std::fs::read_to_string("/proc/self/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or("no open-files line in /proc/self/limits")?;
    line.split_whitespace()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("cannot read {line:?}"))
}

fn set_soft_nofile(n: u64) -> Check {
    let st = ok(std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={n}:"))
        .status())?;
    check(st.success(), format!("prlimit --nofile={n}: {st}"))
}

fn test_release_unused_processes() -> Check {
    // A first pool starts the fork server if there is one, so it is
    // counted among the processes that were there before.
    drop(pool(1)?);
    let before = pool_workers();
    let fds = ok(mp_sys::fd::count_open_fds())? as u64;
    let limit = soft_nofile()?;
    let mut failures = 0;
    let mut built = false;
    // Fewer and fewer descriptors: the pool cannot start its third worker,
    // or its second, ...; each time it must leave nothing behind.
    for extra in (2..80).step_by(3) {
        set_soft_nofile(fds + extra)?;
        let r = Pool::new(5);
        set_soft_nofile(limit)?;
        match r {
            Ok(p) => {
                built = true;
                drop(p);
                break;
            }
            Err(e) => {
                failures += 1;
                if !until(PATIENCE, || no_new(&before, &pool_workers())) {
                    let left: Vec<u32> = pool_workers().into_iter().filter(|p| !before.contains(p)).collect();
                    // They are this test's: kill them, so they do not outlive it.
                    for &pid in &left {
                        let _ = mp_sys::signal::kill(pid, mp_sys::signal::Signal::KILL);
                    }
                    until(PATIENCE, || no_new(&before, &pool_workers()));
                    return Err(format!(
                        "with {extra} spare descriptors Pool(5) failed ({e}) and left processes {left:?} running"
                    ));
                }
                let now = ok(mp_sys::fd::count_open_fds())? as u64;
                // Fewer is fine: the fork server's connection may have
                // been dropped with the error.
                check(
                    now <= fds,
                    format!("{fds} descriptors before, {now} after a failed Pool(5)"),
                )?;
            }
        }
    }
    check(failures > 0, "Pool(5) never failed for lack of descriptors")?;
    check(built, "Pool(5) never started, even with 80 spare descriptors")
}

// ---- TestInitializers ---------------------------------------------------------

fn test_manager_initializer() -> Check {
    let mgr = ok(Manager::new())?;
    let ns = ok(mgr.namespace())?;
    ok(ns.set("test", 0i64))?;
    // A manager whose server runs the initializer before it serves.
    let m = ok(Manager::with_initializer(ns_initializer, (ns.clone(),)))?;
    let v: Option<i64> = ok(ns.get("test"))?;
    check(v == Some(1), format!("ns.test after the manager started: {v:?}"))?;
    ok(m.shutdown())?;
    // An initializer that fails leaves no manager.
    let failed = Manager::with_initializer(manager_set_up_fails, ());
    check(failed.is_err(), "a manager whose initializer failed started")
}

fn manager_set_up_fails() -> Result<(), String> {
    Err("no set-up today".into())
}

fn test_pool_initializer() -> Check {
    let mgr = ok(Manager::new())?;
    let ns = ok(mgr.namespace())?;
    ok(ns.set("test", 0i64))?;
    let p = ok(Pool::builder()
        .processes(1)
        .initializer(ns_initializer, (ns.clone(),))
        .build())?;
    p.close();
    ok(p.join_timeout(PATIENCE))?;
    let v: Option<i64> = ok(ns.get("test"))?;
    check(v == Some(1), format!("ns.test after one worker: {v:?}"))
}

// ---- executor: helpers and tasks ----------------------------------------------

/// CPython's `ExecutorMixin.worker_count`.
const WORKERS: usize = 5;

fn executor(n: usize) -> Result<ProcessPoolExecutor, String> {
    ok(ProcessPoolExecutor::new(n))
}

/// Runs `f` on a helper thread and waits for it at most [`PATIENCE`]: for
/// calls that have no timeout form, such as `shutdown(wait=True)`.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    ok(std::thread::Builder::new().name("watchdog".into()).spawn(move || {
        let _ = tx.send(f());
    }))?;
    rx.recv_timeout(PATIENCE)
        .map_err(|_| format!("{what} did not return within {PATIENCE:?}"))
}

/// `ex.shutdown(wait=True, cancel_futures)`, waited for at most [`PATIENCE`].
fn shutdown_wait(ex: &Arc<ProcessPoolExecutor>, cancel_futures: bool) -> Check {
    let ex = Arc::clone(ex);
    within("shutdown(wait=True)", move || ex.shutdown(true, cancel_futures))
}

/// Whether none of `pids` runs any more.
fn all_gone(pids: &[u32]) -> bool {
    until(PATIENCE, || {
        pids.iter().all(|&p| !mp_sys::process::is_alive(p).unwrap_or(false))
    })
}

fn echo(x: u64) -> u64 {
    x
}

fn pow(b: u64, e: u32) -> u64 {
    b.pow(e)
}

fn pow_pair((b, e): (u64, u32)) -> u64 {
    b.pow(e)
}

fn test_executor_map_chunksize() -> Check {
    let ex = executor(WORKERS)?;
    // Small numbers, so that x^x fits: 0..16 as CPython's range(40) would not.
    let items = || (0..16u64).map(|x| (x, x as u32));
    let reference: Vec<u64> = items().map(pow_pair).collect();
    for chunksize in [6, 50, 16] {
        let got: Vec<u64> =
            ok(ok(ex.map_chunked_timeout(pow_pair, items(), chunksize, PATIENCE))?.collect::<Result<Vec<_>, _>>())?;
        check(got == reference, format!("chunksize {chunksize}: {got:?}"))?;
    }
    let bad = ex.map_chunked(pow_pair, items(), 0);
    check(
        matches!(bad, Err(ExecutorError::InvalidArgument(_))),
        format!("chunksize 0 gave {bad:?}"),
    )?;
    ex.shutdown(true, false);
    Ok(())
}

fn abs(x: i64) -> i64 {
    x.abs()
}

fn to_str(x: u64) -> String {
    x.to_string()
}

fn mul_u(x: u64, y: u64) -> u64 {
    x * y
}

/// Python's `divmod(a, b)`: panics on a zero divisor, as Python raises
/// `ZeroDivisionError`.
fn divmod((a, b): (i64, i64)) -> (i64, i64) {
    (a / b, a % b)
}

/// Python's `divmod(a, 0)` as a `u64` task.
fn div(a: u64, b: u64) -> u64 {
    match a.checked_div(b) {
        Some(q) => q,
        None => quiet_panic(String::from("ZeroDivisionError: integer division or modulo by zero")),
    }
}

fn nap_u64(wait_ms: u64) -> u64 {
    std::thread::sleep(ms(wait_ms));
    wait_ms
}

/// Returns `x` once `gate` is set (or after [`PATIENCE`]).
fn held(x: u64, gate: Event) -> u64 {
    gate.wait_timeout(PATIENCE);
    x
}

fn held_item((x, gate): (u64, Event)) -> u64 {
    held(x, gate)
}

/// Panics with `msg` once `gate` is set.
fn held_then_raise(msg: String, gate: Event) -> u64 {
    gate.wait_timeout(PATIENCE);
    quiet_panic(msg)
}

/// Python's `sleep_and_raise(t)`.
fn sleep_and_raise(wait_ms: u64) -> u64 {
    std::thread::sleep(ms(wait_ms));
    quiet_panic(String::from("Exception('this is an exception')"))
}

fn boom(x: u64) -> u64 {
    quiet_panic(format!("Exception('test') on {x}"))
}

/// Python's `sleep_and_print(t, msg)`, writing to a queue instead of stdout.
fn sleep_and_put(wait_ms: u64, out: Queue<String>, msg: String) {
    std::thread::sleep(ms(wait_ms));
    let _ = out.put(msg);
}

fn acquire_sem(sem: Semaphore) -> bool {
    sem.acquire_timeout(PATIENCE).unwrap_or(false)
}

fn getpid() -> u32 {
    std::process::id()
}

/// A child that leaves its executor to the end of its scope, as a script
/// that ends without `shutdown` leaves it to interpreter exit.
fn executor_left_to_exit(out: Queue<String>) -> Result<(), String> {
    let ex = executor(WORKERS)?;
    ex.submit(sleep_and_put, (50, out, "apple".to_string()))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A child that calls `shutdown(wait=False)` with a task running, then ends.
fn executor_shutdown_no_wait_then_exit(out: Queue<String>) -> Result<(), String> {
    let ex = executor(3)?;
    ex.submit(sleep_and_put, (50, out, "apple".to_string()))
        .map_err(|e| e.to_string())?;
    ex.shutdown(false, false);
    Ok(())
}

/// Python's `EventfulGCObj`: sets its event when it is dropped in a process
/// other than the one that made it (the worker that ran the task).
#[derive(Serialize, Deserialize)]
struct EventfulGCObj {
    event: Event,
    maker: u32,
}

impl Drop for EventfulGCObj {
    fn drop(&mut self) {
        if std::process::id() != self.maker {
            self.event.set();
        }
    }
}

fn id_of_obj(o: EventfulGCObj) -> u64 {
    u64::from(o.maker)
}

/// Values that fail, exit or abort when they are encoded or decoded:
/// CPython's `CrashAtPickle`, `ExitAtUnpickle`, `ErrorAtPickle`, ...
macro_rules! bad_codec {
    ($name:ident, ser: $ser:expr, de: $de:expr) => {
        #[derive(Debug, Default)]
        struct $name;
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let f: fn() -> Result<(), String> = $ser;
                match f() {
                    Ok(()) => ().serialize(s),
                    Err(m) => Err(S::Error::custom(m)),
                }
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <()>::deserialize(d)?;
                let f: fn() -> Result<(), String> = $de;
                f().map(|()| $name)
                    .map_err(<D::Error as serde::de::Error>::custom)
            }
        }
    };
}

fn fine() -> Result<(), String> {
    Ok(())
}

fn crash() -> Result<(), String> {
    std::process::abort()
}

fn exit1() -> Result<(), String> {
    mp_process::exit(1)
}

bad_codec!(CrashAtEncode, ser: crash, de: fine);
bad_codec!(CrashAtDecode, ser: fine, de: crash);
bad_codec!(ExitAtEncode, ser: exit1, de: fine);
bad_codec!(ExitAtDecode, ser: fine, de: exit1);
bad_codec!(ErrorAtEncode, ser: || Err("Error in pickle".into()), de: fine);
bad_codec!(ErrorAtDecode, ser: fine, de: || Err("Error in unpickle".into()));

/// Python's `id(x)`: takes any argument.
fn id_of<T>(_: T) -> u64 {
    0
}

/// Python's `_return_instance(cls)`.
fn return_instance<T: Default>() -> T {
    T::default()
}

/// Python's `_crash()`: the worker aborts.
fn crash_task() -> u64 {
    std::process::abort()
}

fn crash_after(wait_ms: u64) -> u64 {
    std::thread::sleep(ms(wait_ms));
    std::process::abort()
}

fn crash_with_data(_data: String) -> u64 {
    std::process::abort()
}

/// Python's `_exit()`: `sys.exit(1)` in the worker.
fn exit_task() -> u64 {
    mp_process::exit(1)
}

fn raise_error() -> u64 {
    quiet_panic(String::from("RuntimeError()"))
}

static INIT_STATUS: Mutex<String> = Mutex::new(String::new());

fn init(x: String) {
    *INIT_STATUS.lock().unwrap_or_else(|e| e.into_inner()) = x;
}

fn get_init_status() -> String {
    let s = INIT_STATUS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if s.is_empty() { "uninitialized".into() } else { s }
}

fn init_fail() -> Result<(), String> {
    std::thread::sleep(ms(50)); // let some futures be scheduled
    Err("ValueError: error in initializer".into())
}

// ---- ProcessPoolShutdownTest (with ExecutorShutdownTest's methods) --------------

fn test_run_after_shutdown() -> Check {
    let ex = Arc::new(executor(WORKERS)?);
    shutdown_wait(&ex, false)?;
    let r = ex.submit(pow, (2, 5));
    check(
        matches!(r, Err(ExecutorError::Task(TaskError::Closed))),
        format!("submit after shutdown: {r:?}"),
    )
}

fn test_interpreter_shutdown() -> Check {
    let out = ok(Queue::<String>::new())?;
    let mut child = Process::new(executor_left_to_exit, (out.clone(),));
    ok(child.start())?;
    let code = finish(&mut child)?;
    check(code == 0, format!("the child exited with {code}"))?;
    let got = out.get_timeout(PATIENCE);
    check(got.as_deref() == Ok("apple"), format!("the task's output: {got:?}"))
}

fn test_hang_issue12364() -> Check {
    let ex = Arc::new(executor(WORKERS)?);
    let fs: Vec<_> = (0..50)
        .map(|_| ex.submit(nap, (10,)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    shutdown_wait(&ex, false)?;
    for (i, f) in fs.iter().enumerate() {
        let r = f.result_timeout(Duration::ZERO);
        check(r == Ok(()), format!("future {i} after shutdown: {r:?}"))?;
    }
    Ok(())
}

fn test_cancel_futures() -> Check {
    let ex = Arc::new(executor(WORKERS)?);
    let fs: Vec<_> = (0..50)
        .map(|_| ex.submit(nap, (100,)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    // CPython's futures count as running once queued for a worker, even one
    // still starting; these, once a worker took them: wait for that.
    check(until(PATIENCE, || fs[0].running()), "the first task runs")?;
    shutdown_wait(&ex, true)?;
    let cancelled = fs.iter().filter(|f| f.cancelled()).count();
    check(cancelled > 20, format!("only {cancelled} of 50 cancelled"))?;
    let others: Vec<_> = fs.iter().filter(|f| !f.cancelled()).collect();
    for f in &others {
        check(f.done(), format!("a future not cancelled is not done: {f:?}"))?;
        let e = f.result_timeout(Duration::ZERO).err();
        check(e.is_none(), format!("a future not cancelled failed: {e:?}"))?;
    }
    check(!others.is_empty(), "every future was cancelled, even the running ones")
}

fn test_hang_gh83386() -> Check {
    let out = ok(Queue::<String>::new())?;
    let mut child = Process::new(executor_shutdown_no_wait_then_exit, (out.clone(),));
    ok(child.start())?;
    let code = finish(&mut child)?;
    check(code == 0, format!("the child exited with {code}"))?;
    let got = out.get_timeout(PATIENCE);
    check(got.as_deref() == Ok("apple"), format!("the task's output: {got:?}"))
}

fn test_hang_gh94440() -> Check {
    let ex = Arc::new(executor(1)?);
    ok(ok(ex.submit(echo, (0,)))?.result_timeout(PATIENCE))?;
    ok(ex.submit(echo, (0,)))?.cancel();
    shutdown_wait(&ex, false)
}

fn test_processes_terminate() -> Check {
    let ex = Arc::new(executor(WORKERS)?);
    let sem = ok(Semaphore::new(0))?;
    let fs: Vec<_> = (0..3)
        .map(|_| ex.submit(acquire_sem, (sem.clone(),)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    // Workers start up front here, as CPython's do under fork.
    let pids = ex.pids();
    check(pids.len() == WORKERS, format!("workers: {pids:?}"))?;
    for _ in 0..3 {
        ok(sem.release())?;
    }
    shutdown_wait(&ex, false)?;
    for f in &fs {
        check(f.result_timeout(Duration::ZERO) == Ok(true), "a task got the semaphore")?;
    }
    check(all_gone(&pids), format!("workers still running: {pids:?}"))
}

fn test_context_manager_shutdown() -> Check {
    let ex = executor(WORKERS)?;
    let pids = ex.pids();
    let v: Vec<i64> = ok(ok(ex.map_timeout(abs, -5..5i64, PATIENCE))?.collect::<Result<_, _>>())?;
    check(v == vec![5, 4, 3, 2, 1, 0, 1, 2, 3, 4], format!("map(abs): {v:?}"))?;
    // Leaving `with`: the executor is dropped.
    within("dropping the executor", move || drop(ex))?;
    check(all_gone(&pids), format!("workers still running: {pids:?}"))
}

fn test_del_shutdown() -> Check {
    let ex = executor(WORKERS)?;
    let res = ok(ex.map_timeout(abs, -5..5i64, PATIENCE))?;
    let pids = ex.pids();
    within("dropping the executor", move || drop(ex))?;
    check(all_gone(&pids), format!("workers still running: {pids:?}"))?;
    let v: Vec<i64> = ok(res.collect::<Result<_, _>>())?;
    check(
        v == (-5..5i64).map(i64::abs).collect::<Vec<_>>(),
        format!("results computed before the shutdown: {v:?}"),
    )
}

fn test_shutdown_no_wait() -> Check {
    let ex = executor(WORKERS)?;
    let res: Vec<_> = (-5..5i64)
        .map(|x| ex.submit(abs, (x,)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let pids = ex.pids();
    ex.shutdown(false, false);
    check(all_gone(&pids), format!("workers still running: {pids:?}"))?;
    for (f, x) in res.iter().zip(-5..5i64) {
        let r = f.result_timeout(PATIENCE);
        check(r == Ok(x.abs()), format!("abs({x}): {r:?}"))?;
    }
    Ok(())
}

// ---- ProcessPoolExecutorTest (with ExecutorTest's methods) ----------------------

fn test_submit() -> Check {
    let ex = executor(WORKERS)?;
    let r = ok(ex.submit(pow, (2, 8)))?.result_timeout(PATIENCE);
    check(r == Ok(256), format!("pow(2, 8): {r:?}"))
}

fn test_executor_map() -> Check {
    let ex = executor(WORKERS)?;
    let got: Vec<u64> =
        ok(ok(ex.map_timeout(pow_pair, (0..10u64).zip(0..10u32), PATIENCE))?.collect::<Result<_, _>>())?;
    let want: Vec<u64> = (0..10u64).zip(0..10u32).map(|(b, e)| b.pow(e)).collect();
    check(got == want, format!("map(pow): {got:?}"))
}

fn test_map_exception() -> Check {
    let ex = executor(WORKERS)?;
    let mut i = ok(ex.map_timeout(divmod, [(1, 2), (1, 3), (1, 0), (1, 5)], PATIENCE))?;
    check(i.next() == Some(Ok((0, 1))), "divmod(1, 2)")?;
    check(i.next() == Some(Ok((0, 1))), "divmod(1, 3)")?;
    let r = i.next();
    check(
        matches!(&r, Some(Err(ExecutorError::Task(TaskError::Panicked(m)))) if m.contains("divide by zero")),
        format!("divmod(1, 0): {r:?}"),
    )
}

fn test_map_timeout() -> Check {
    let ex = executor(WORKERS)?;
    let (open, gate) = (ok(Event::new())?, ok(Event::new())?);
    open.set();
    let items = vec![(0, open.clone()), (0, open), (6, gate.clone())];
    let got: Vec<_> = ok(ex.map_timeout(held_item, items, ms(100)))?.collect();
    gate.set();
    check(
        got == vec![Ok(0), Ok(0), Err(ExecutorError::Timeout)],
        format!("map(timeout): {got:?}"),
    )
}

fn test_shutdown_race_issue12456() -> Check {
    let ex = Arc::new(executor(WORKERS)?);
    let res = ok(ex.map_timeout(to_str, vec![2u64; WORKERS + 1], PATIENCE))?;
    shutdown_wait(&ex, false)?;
    let v: Vec<String> = ok(res.collect::<Result<_, _>>())?;
    check(v == vec!["2".to_string(); WORKERS + 1], format!("{v:?}"))
}

fn test_max_workers_negative() -> Check {
    let r = ProcessPoolExecutor::new(0);
    check(
        matches!(r, Err(PoolError::InvalidArgument(_))),
        format!("max_workers=0: {r:?}"),
    )
}

fn test_killed_child() -> Check {
    let ex = executor(WORKERS)?;
    let gate = ok(Event::new())?;
    let f = ok(ex.submit(held, (3, gate.clone())))?;
    check(until(PATIENCE, || f.running()), "the task runs")?;
    let victim = ex.pids()[0];
    ok(mp_sys::signal::kill(victim, mp_sys::signal::Signal::TERM))?;
    let r = f.result_timeout(PATIENCE);
    gate.set();
    check(r == Err(ExecutorError::BrokenProcessPool), format!("the future: {r:?}"))?;
    let r = ex.submit(pow, (2, 8));
    check(
        matches!(r, Err(ExecutorError::BrokenProcessPool)),
        format!("submit on a broken executor: {r:?}"),
    )
}

fn test_executor_traceback() -> Check {
    let ex = executor(WORKERS)?;
    let r = ok(ex.submit(raise_123, ()))?.result_timeout(PATIENCE);
    check(
        matches!(&r, Err(ExecutorError::Task(TaskError::Panicked(m))) if m.contains("RuntimeError(123)")),
        format!("{r:?}"),
    )
}

fn test_ressources_gced_in_workers() -> Check {
    let ex = executor(WORKERS)?;
    let event = ok(Event::new())?;
    let obj = EventfulGCObj {
        event: event.clone(),
        maker: std::process::id(),
    };
    ok(ok(ex.submit(id_of_obj, (obj,)))?.result_timeout(PATIENCE))?;
    check(
        event.wait_timeout(PATIENCE),
        "the argument was not dropped in the worker",
    )
}

fn test_saturation() -> Check {
    let ex = executor(WORKERS)?;
    let sem = ok(Semaphore::new(0))?;
    let job_count = 15 * WORKERS;
    let fs: Vec<_> = (0..job_count)
        .map(|_| ex.submit(acquire_sem, (sem.clone(),)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    check(ex.pids().len() == WORKERS, format!("workers: {:?}", ex.pids()))?;
    for _ in 0..job_count {
        ok(sem.release())?;
    }
    for f in &fs {
        check(f.result_timeout(PATIENCE) == Ok(true), "a task got the semaphore")?;
    }
    Ok(())
}

fn test_max_tasks_per_child() -> Check {
    let ex = ok(ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(3)
        .build())?;
    let original = ok(ok(ex.submit(getpid, ()))?.result_timeout(PATIENCE))?;
    let f2 = ok(ok(ex.submit(getpid, ()))?.result_timeout(PATIENCE))?;
    check(f2 == original, "the second task ran in the same worker")?;
    check(ex.pids().len() == 1, format!("workers: {:?}", ex.pids()))?;
    let f3 = ok(ok(ex.submit(getpid, ()))?.result_timeout(PATIENCE))?;
    check(f3 == original, "the third task ran in the same worker")?;
    let new_pid = ok(ok(ex.submit(getpid, ()))?.result_timeout(PATIENCE))?;
    check(new_pid != original, "the fourth task ran in a new worker")?;
    check(
        until(PATIENCE, || ex.pids().len() == 1),
        format!("workers: {:?}", ex.pids()),
    )
}

fn test_max_tasks_early_shutdown() -> Check {
    let ex = Arc::new(ok(ProcessPoolExecutor::builder()
        .max_workers(3)
        .max_tasks_per_child(1)
        .build())?);
    let fs: Vec<_> = (0..6u64)
        .map(|i| ex.submit(mul_u, (i, i)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    shutdown_wait(&ex, false)?;
    for (i, f) in fs.iter().enumerate() {
        let i = i as u64;
        let r = f.result_timeout(Duration::ZERO);
        check(r == Ok(i * i), format!("mul({i}, {i}): {r:?}"))?;
    }
    Ok(())
}

// ---- futures in every state, from real tasks ------------------------------------

/// CPython's module-level futures (`PENDING_FUTURE`, `RUNNING_FUTURE`,
/// `CANCELLED_AND_NOTIFIED_FUTURE`, `EXCEPTION_FUTURE`,
/// `SUCCESSFUL_FUTURE`), made by real tasks of a one-worker executor whose
/// worker is held until this is dropped.
struct Fixtures {
    pending: TaskFuture<u64>,
    running: TaskFuture<u64>,
    cancelled: TaskFuture<u64>,
    exception: TaskFuture<u64>,
    successful: TaskFuture<u64>,
    gate: Event,
    _ex: ProcessPoolExecutor,
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        self.gate.set();
    }
}

fn fixtures() -> Result<Fixtures, String> {
    let ex = executor(1)?;
    let successful = ok(ex.submit(echo, (42,)))?;
    let exception = ok(ex.submit(boom, (0,)))?;
    check(
        successful.wait_timeout(PATIENCE) && exception.wait_timeout(PATIENCE),
        "fixtures done",
    )?;
    let gate = ok(Event::new())?;
    let running = ok(ex.submit(held, (7, gate.clone())))?;
    check(until(PATIENCE, || running.running()), "the running fixture runs")?;
    // The worker takes jobs ahead, more when they are short: the last of
    // many stays pending.
    let mut pending = ok(ex.submit(echo, (8,)))?;
    for _ in 0..200 {
        pending = ok(ex.submit(echo, (8,)))?;
    }
    check(!pending.running() && !pending.done(), "a pending fixture")?;
    let cancelled = ok(ex.submit(echo, (9,)))?;
    check(cancelled.cancel(), "the cancelled fixture")?;
    Ok(Fixtures {
        pending,
        running,
        cancelled,
        exception,
        successful,
        gate,
        _ex: ex,
    })
}

/// Indices of `fs` in `v`, sorted.
fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

// ---- WaitTests ------------------------------------------------------------------

fn test_20369() -> Check {
    let ex = executor(WORKERS)?;
    let f = ok(ex.submit(nap_u64, (50,)))?;
    let r = wait(&[f.clone(), f], Some(PATIENCE), ReturnWhen::AllCompleted);
    check(
        r.done == vec![0, 1] && r.not_done.is_empty(),
        format!("a future given twice: {r:?}"),
    )
}

fn test_first_completed() -> Check {
    let ex = executor(WORKERS)?;
    let gate = ok(Event::new())?;
    let fs = [ok(ex.submit(mul_u, (21, 2)))?, ok(ex.submit(held, (0, gate.clone())))?];
    let r = wait(&fs, Some(PATIENCE), ReturnWhen::FirstCompleted);
    gate.set();
    check(r.done == vec![0] && r.not_done == vec![1], format!("{r:?}"))
}

fn test_first_completed_some_already_completed() -> Check {
    let fx = fixtures()?;
    let ex = executor(WORKERS)?;
    let gate = ok(Event::new())?;
    let fs = [
        fx.cancelled.clone(),
        fx.successful.clone(),
        ok(ex.submit(held, (0, gate.clone())))?,
    ];
    let r = wait(&fs, Some(PATIENCE), ReturnWhen::FirstCompleted);
    gate.set();
    check(
        sorted(r.done.clone()) == vec![0, 1] && r.not_done == vec![2],
        format!("{r:?}"),
    )
}

fn test_first_exception() -> Check {
    let ex = executor(WORKERS)?;
    let (raise, hold) = (ok(Event::new())?, ok(Event::new())?);
    let f1 = ok(ex.submit(mul_u, (2, 21)))?;
    let f2 = ok(ex.submit(held_then_raise, ("Exception".to_string(), raise.clone())))?;
    let f3 = ok(ex.submit(held, (3, hold.clone())))?;
    // The second fails once the first is done, as CPython's sleeps arrange.
    let r2 = raise.clone();
    f1.add_done_callback(move |_| r2.set());
    let r = wait(&[f1, f2, f3], Some(PATIENCE), ReturnWhen::FirstException);
    hold.set();
    check(
        sorted(r.done.clone()) == vec![0, 1] && r.not_done == vec![2],
        format!("{r:?}"),
    )
}

fn test_first_exception_some_already_complete() -> Check {
    let fx = fixtures()?;
    let ex = executor(WORKERS)?;
    let gate = ok(Event::new())?;
    let fs = [
        fx.successful.clone(),
        fx.cancelled.clone(),
        ok(ex.submit(div, (21, 0)))?,
        ok(ex.submit(held, (0, gate.clone())))?,
    ];
    let r = wait(&fs, Some(PATIENCE), ReturnWhen::FirstException);
    gate.set();
    check(
        sorted(r.done.clone()) == vec![0, 1, 2] && r.not_done == vec![3],
        format!("{r:?}"),
    )
}

fn test_first_exception_one_already_failed() -> Check {
    let fx = fixtures()?;
    let ex = executor(WORKERS)?;
    let gate = ok(Event::new())?;
    let fs = [fx.exception.clone(), ok(ex.submit(held, (0, gate.clone())))?];
    let r = wait(&fs, Some(PATIENCE), ReturnWhen::FirstException);
    gate.set();
    check(r.done == vec![0] && r.not_done == vec![1], format!("{r:?}"))
}

fn test_all_completed() -> Check {
    let fx = fixtures()?;
    let ex = executor(WORKERS)?;
    let fs = [
        fx.successful.clone(),
        fx.cancelled.clone(),
        fx.exception.clone(),
        ok(ex.submit(div, (2, 0)))?,
        ok(ex.submit(mul_u, (2, 21)))?,
    ];
    let r = wait(&fs, Some(PATIENCE), ReturnWhen::AllCompleted);
    check(
        sorted(r.done.clone()) == vec![0, 1, 2, 3, 4] && r.not_done.is_empty(),
        format!("{r:?}"),
    )
}

fn test_wait_timeout() -> Check {
    let fx = fixtures()?;
    let ex = executor(WORKERS)?;
    let gate = ok(Event::new())?;
    let fs = [
        fx.cancelled.clone(),
        fx.exception.clone(),
        fx.successful.clone(),
        ok(ex.submit(held, (0, gate.clone())))?,
    ];
    let r = wait(&fs, Some(ms(50)), ReturnWhen::AllCompleted);
    gate.set();
    check(
        sorted(r.done.clone()) == vec![0, 1, 2] && r.not_done == vec![3],
        format!("{r:?}"),
    )
}

// ---- AsCompletedTests -----------------------------------------------------------

/// The index in `fs` of the future `f` (which `as_completed` yields by
/// reference).
fn index_of(fs: &[TaskFuture<u64>], f: &TaskFuture<u64>) -> usize {
    fs.iter().position(|g| std::ptr::eq(g, f)).unwrap_or(usize::MAX)
}

fn test_no_timeout() -> Check {
    let fx = fixtures()?;
    let ex = executor(WORKERS)?;
    let fs = [
        fx.cancelled.clone(),
        fx.exception.clone(),
        fx.successful.clone(),
        ok(ex.submit(mul_u, (2, 21)))?,
        ok(ex.submit(mul_u, (7, 6)))?,
    ];
    let mut got = Vec::new();
    for f in as_completed_timeout(&fs, PATIENCE) {
        got.push(index_of(&fs, ok(f)?));
    }
    check(
        sorted(got.clone()) == vec![0, 1, 2, 3, 4],
        format!("completed: {got:?}"),
    )
}

fn test_future_times_out() -> Check {
    let fx = fixtures()?;
    let ex = executor(WORKERS)?;
    for timeout in [Duration::ZERO, ms(100)] {
        let gate = ok(Event::new())?;
        let fs = [
            fx.cancelled.clone(),
            fx.exception.clone(),
            fx.successful.clone(),
            ok(ex.submit(held, (0, gate.clone())))?,
        ];
        let mut completed = Vec::new();
        let mut timed_out = false;
        for f in as_completed_timeout(&fs, timeout) {
            match f {
                Ok(f) => completed.push(index_of(&fs, f)),
                Err(ExecutorError::Timeout) => timed_out = true,
                Err(e) => return Err(format!("timeout {timeout:?}: {e}")),
            }
        }
        gate.set();
        check(
            timed_out && sorted(completed.clone()) == vec![0, 1, 2],
            format!("timeout {timeout:?}: completed {completed:?}, timed out: {timed_out}"),
        )?;
    }
    Ok(())
}

fn test_duplicate_futures() -> Check {
    let ex = executor(WORKERS)?;
    let f = ok(ex.submit(nap_u64, (50,)))?;
    let fs = [f.clone(), f.clone(), f];
    let completed: Vec<_> = as_completed_timeout(&fs, PATIENCE)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    check(
        completed.len() == 1,
        format!("one future given three times came {} times", completed.len()),
    )
}

fn test_correct_timeout_exception_msg() -> Check {
    let fx = fixtures()?;
    let fs = [
        fx.cancelled.clone(),
        fx.pending.clone(),
        fx.running.clone(),
        fx.successful.clone(),
    ];
    let got: Vec<_> = as_completed_timeout(&fs, Duration::ZERO)
        .map(|r| r.map(|f| index_of(&fs, f)))
        .collect();
    check(
        got.len() == 3
            && sorted(got[..2].iter().filter_map(|r| r.as_ref().ok().copied()).collect()) == vec![0, 3]
            && got[2] == Err(ExecutorError::Timeout),
        format!("two of four futures unfinished: {got:?}"),
    )
}

// ---- ExecutorDeadlockTest -------------------------------------------------------

/// CPython's `_check_crash`: a fresh executor of two workers runs `f(args)`;
/// its future must fail with `want` (not hang), and the executor must shut
/// down.
fn check_crash<F, A>(f: F, args: A, want: fn(&ExecutorError) -> bool) -> Check
where
    F: mp_process::Function<A, Output = u64>,
    A: Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let ex = Arc::new(executor(2)?);
    let r = ex.submit(f, args).and_then(|fut| fut.result_timeout(PATIENCE));
    check(!matches!(r, Err(ExecutorError::Timeout)), "the executor deadlocked")?;
    check(
        want(r.as_ref().err().unwrap_or(&ExecutorError::Timeout)),
        format!("got {r:?}"),
    )?;
    shutdown_wait(&ex, false)
}

fn broken(e: &ExecutorError) -> bool {
    *e == ExecutorError::BrokenProcessPool
}

fn test_error_at_task_pickle() -> Check {
    check_crash(
        id_of::<ErrorAtEncode>,
        (ErrorAtEncode,),
        |e| matches!(e, ExecutorError::Task(TaskError::Encode(m)) if m.contains("Error in pickle")),
    )
}

fn test_exit_at_task_unpickle() -> Check {
    check_crash(id_of::<ExitAtDecode>, (ExitAtDecode,), broken)
}

fn test_error_at_task_unpickle() -> Check {
    check_crash(
        id_of::<ErrorAtDecode>,
        (ErrorAtDecode,),
        |e| matches!(e, ExecutorError::Task(TaskError::Decode(m)) if m.contains("Error in unpickle")),
    )
}

fn test_crash_at_task_unpickle() -> Check {
    check_crash(id_of::<CrashAtDecode>, (CrashAtDecode,), broken)
}

fn test_crash_during_func_exec_on_worker() -> Check {
    check_crash(crash_task, (), broken)
}

fn test_exit_during_func_exec_on_worker() -> Check {
    check_crash(exit_task, (), broken)
}

fn test_error_during_func_exec_on_worker() -> Check {
    check_crash(
        raise_error,
        (),
        |e| matches!(e, ExecutorError::Task(TaskError::Panicked(m)) if m.contains("RuntimeError")),
    )
}

fn check_crash_result<T>(want: fn(&ExecutorError) -> bool) -> Check
where
    T: Default + Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let ex = Arc::new(executor(2)?);
    let r = ex
        .submit(return_instance::<T>, ())
        .and_then(|fut| fut.result_timeout(PATIENCE).map(drop));
    check(!matches!(r, Err(ExecutorError::Timeout)), "the executor deadlocked")?;
    check(
        want(r.as_ref().err().unwrap_or(&ExecutorError::Timeout)),
        format!("got {r:?}"),
    )?;
    shutdown_wait(&ex, false)
}

fn test_crash_during_result_pickle_on_worker() -> Check {
    check_crash_result::<CrashAtEncode>(broken)
}

fn test_exit_during_result_pickle_on_worker() -> Check {
    check_crash_result::<ExitAtEncode>(broken)
}

fn test_error_during_result_pickle_on_worker() -> Check {
    check_crash_result::<ErrorAtEncode>(
        |e| matches!(e, ExecutorError::Task(TaskError::Encode(m)) if m.contains("Error in pickle")),
    )
}

fn test_error_during_result_unpickle_in_result_handler() -> Check {
    check_crash_result::<ErrorAtDecode>(
        |e| matches!(e, ExecutorError::Task(TaskError::Decode(m)) if m.contains("Error in unpickle")),
    )
}

fn test_shutdown_deadlock() -> Check {
    let ex = Arc::new(executor(2)?);
    let f = ok(ex.submit(crash_after, (50,)))?;
    shutdown_wait(&ex, false)?;
    let r = f.result_timeout(PATIENCE);
    check(r == Err(ExecutorError::BrokenProcessPool), format!("{r:?}"))
}

fn test_shutdown_deadlock_pickle() -> Check {
    let ex = Arc::new(executor(2)?);
    ok(ok(ex.submit(echo, (42,)))?.result_timeout(PATIENCE))?;
    let pids = ex.pids();
    let r = ex.submit(id_of::<ErrorAtEncode>, (ErrorAtEncode,));
    ex.shutdown(false, false);
    check(
        matches!(&r, Err(ExecutorError::Task(TaskError::Encode(m))) if m.contains("Error in pickle")),
        format!("{r:?}"),
    )?;
    check(all_gone(&pids), format!("workers still running: {pids:?}"))
}

fn test_crash_big_data() -> Check {
    let ex = Arc::new(executor(2)?);
    let data = "a".repeat(4 * 1024 * 1024 + 1);
    // The executor may break while the items are still being submitted.
    let first = match ex.map_timeout(crash_with_data, vec![data; 10], PATIENCE) {
        Ok(mut results) => results.next(),
        Err(e) => Some(Err(e)),
    };
    check(
        first == Some(Err(ExecutorError::BrokenProcessPool)),
        format!("the first result: {first:?}"),
    )?;
    shutdown_wait(&ex, false)
}

fn test_gh105829_should_not_deadlock_if_wakeup_pipe_full() -> Check {
    let ex = Arc::new(executor(2)?);
    let e2 = Arc::clone(&ex);
    let n = within("10 000 submissions and their results", move || {
        e2.map_timeout(echo, 0..10_000u64, PATIENCE)
            .map(|r| r.filter(Result::is_ok).count())
    })?;
    check(n.as_ref().ok() == Some(&10_000), format!("{n:?} results"))?;
    shutdown_wait(&ex, false)
}

// ---- test_init.py -----------------------------------------------------------------

fn test_initializer() -> Check {
    let ex = ok(ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(init, ("initialized".to_string(),))
        .build())?;
    let fs: Vec<_> = (0..2)
        .map(|_| ex.submit(get_init_status, ()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for f in &fs {
        let r = f.result_timeout(PATIENCE);
        check(r.as_deref() == Ok("initialized"), format!("{r:?}"))?;
    }
    Ok(())
}

fn failing_initializer(m: Option<StartMethod>) -> Check {
    let mut b = ProcessPoolExecutor::builder().max_workers(2).initializer(init_fail, ());
    if let Some(m) = m {
        b = b.start_method(m);
    }
    let ex = ok(b.build())?;
    match ex.submit(get_init_status, ()) {
        Err(e) => check(e == ExecutorError::BrokenProcessPool, format!("submit: {e:?}"))?,
        Ok(f) => {
            let r = f.result_timeout(PATIENCE);
            check(r == Err(ExecutorError::BrokenProcessPool), format!("result: {r:?}"))?;
        }
    }
    check(
        until(PATIENCE, || ex.submit(get_init_status, ()).is_err()),
        "the executor never broke",
    )?;
    let r = ex.submit(get_init_status, ());
    check(
        matches!(r, Err(ExecutorError::BrokenProcessPool)),
        format!("submit once broken: {r:?}"),
    )
}

fn test_failing_initializer() -> Check {
    failing_initializer(None)
}

fn failing_initializer_resources(m: StartMethod) -> Check {
    // A first executor of this method starts the fork server if it needs one.
    drop(ok(ProcessPoolExecutor::builder()
        .max_workers(1)
        .start_method(m)
        .build())?);
    let fds = ok(mp_sys::fd::count_open_fds())?;
    let shm = mp_testkit::shm_entries();
    let before = pool_workers();
    let zombies = mp_testkit::zombie_children();
    failing_initializer(Some(m))?;
    check(
        until(PATIENCE, || no_new(&before, &pool_workers())),
        format!("workers left running: {:?} (before: {before:?})", pool_workers()),
    )?;
    let now = ok(mp_sys::fd::count_open_fds())?;
    check(now == fds, format!("{fds} descriptors before, {now} after"))?;
    check(mp_testkit::shm_entries() == shm, "/dev/shm changed")?;
    let z = mp_testkit::zombie_children();
    check(z <= zombies, format!("{z} zombie children, {zombies} before"))
}

// ---- FutureTests, on futures of real tasks -----------------------------------------

type Seen<T> = Arc<Mutex<Option<T>>>;

fn seen<T>() -> Seen<T> {
    Arc::new(Mutex::new(None))
}

fn take<T: Clone>(s: &Seen<T>) -> Option<T> {
    s.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn put<T>(s: &Seen<T>, v: T) {
    *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
}

fn test_done_callback_with_result() -> Check {
    let ex = executor(1)?;
    let gate = ok(Event::new())?;
    let f = ok(ex.submit(held, (5, gate.clone())))?;
    let got = seen();
    let g = got.clone();
    f.add_done_callback(move |f| put(&g, f.result_timeout(Duration::ZERO)));
    gate.set();
    check(until(PATIENCE, || take(&got).is_some()), "the callback ran")?;
    check(take(&got) == Some(Ok(5)), format!("{:?}", take(&got)))
}

fn test_done_callback_with_exception() -> Check {
    let ex = executor(1)?;
    let gate = ok(Event::new())?;
    let f = ok(ex.submit(held_then_raise, ("Exception('test')".to_string(), gate.clone())))?;
    let got = seen();
    let g = got.clone();
    f.add_done_callback(move |f| put(&g, f.exception()));
    gate.set();
    check(until(PATIENCE, || take(&got).is_some()), "the callback ran")?;
    check(
        matches!(take(&got), Some(Some(ExecutorError::Task(TaskError::Panicked(m)))) if m.contains("'test'")),
        format!("{:?}", take(&got)),
    )
}

fn test_done_callback_with_cancel() -> Check {
    let fx = fixtures()?;
    let got = seen();
    let g = got.clone();
    fx.pending.add_done_callback(move |f| put(&g, f.cancelled()));
    check(fx.pending.cancel(), "cancel()")?;
    check(take(&got) == Some(true), format!("was_cancelled: {:?}", take(&got)))
}

fn test_done_callback_raises() -> Check {
    let ex = executor(1)?;
    let gate = ok(Event::new())?;
    let f = ok(ex.submit(held, (5, gate.clone())))?;
    let (raising, plain) = (seen(), seen());
    let r = raising.clone();
    f.add_done_callback(move |_| {
        put(&r, true);
        quiet_panic(String::from("Exception('doh!')"))
    });
    let p = plain.clone();
    f.add_done_callback(move |_| put(&p, true));
    gate.set();
    check(until(PATIENCE, || take(&plain).is_some()), "the second callback ran")?;
    check(take(&raising) == Some(true), "the raising callback ran")?;
    check(f.result_timeout(PATIENCE) == Ok(5), "the result")
}

fn test_done_callback_already_successful() -> Check {
    let ex = executor(1)?;
    let f = ok(ex.submit(echo, (5,)))?;
    check(f.wait_timeout(PATIENCE), "done")?;
    let got = seen();
    let g = got.clone();
    f.add_done_callback(move |f| put(&g, f.result_timeout(Duration::ZERO)));
    check(take(&got) == Some(Ok(5)), format!("{:?}", take(&got)))
}

fn test_done_callback_already_failed() -> Check {
    let fx = fixtures()?;
    let got = seen();
    let g = got.clone();
    fx.exception.add_done_callback(move |f| put(&g, f.exception()));
    check(
        matches!(take(&got), Some(Some(ExecutorError::Task(TaskError::Panicked(m)))) if m.contains("'test'")),
        format!("{:?}", take(&got)),
    )
}

fn test_done_callback_already_cancelled() -> Check {
    let fx = fixtures()?;
    let got = seen();
    let g = got.clone();
    fx.cancelled.add_done_callback(move |f| put(&g, f.cancelled()));
    check(take(&got) == Some(true), format!("was_cancelled: {:?}", take(&got)))
}

fn test_done_callback_raises_already_succeeded() -> Check {
    let fx = fixtures()?;
    let r = catch_unwind(AssertUnwindSafe(|| {
        fx.successful
            .add_done_callback(|_| quiet_panic(String::from("Exception('doh!')")))
    }));
    check(
        r.is_ok(),
        "a panicking callback on a done future panicked in add_done_callback",
    )
}

fn test_repr() -> Check {
    let fx = fixtures()?;
    for (f, state) in [
        (&fx.pending, "pending"),
        (&fx.running, "running"),
        (&fx.cancelled, "cancelled"),
        (&fx.exception, "finished"),
        (&fx.successful, "finished"),
    ] {
        let s = format!("{f:?}");
        check(s.contains(state), format!("{s} should say {state}"))?;
    }
    Ok(())
}

fn test_cancel() -> Check {
    let fx = fixtures()?;
    check(
        fx.pending.cancel() && fx.pending.cancelled(),
        "a pending future cancels",
    )?;
    check(
        !fx.running.cancel() && fx.running.running(),
        "a running future does not",
    )?;
    check(
        fx.cancelled.cancel() && fx.cancelled.cancelled(),
        "a cancelled one stays so",
    )?;
    check(
        !fx.exception.cancel() && fx.exception.done() && !fx.exception.cancelled(),
        "a failed one does not cancel",
    )?;
    check(
        !fx.successful.cancel() && fx.successful.done() && !fx.successful.cancelled(),
        "a finished one does not cancel",
    )
}

fn test_cancelled() -> Check {
    let fx = fixtures()?;
    check(!fx.pending.cancelled(), "pending")?;
    check(!fx.running.cancelled(), "running")?;
    check(fx.cancelled.cancelled(), "cancelled")?;
    check(!fx.exception.cancelled(), "exception")?;
    check(!fx.successful.cancelled(), "successful")
}

fn test_done() -> Check {
    let fx = fixtures()?;
    check(!fx.pending.done(), "pending")?;
    check(!fx.running.done(), "running")?;
    check(fx.cancelled.done(), "cancelled")?;
    check(fx.exception.done(), "exception")?;
    check(fx.successful.done(), "successful")
}

fn test_running() -> Check {
    let fx = fixtures()?;
    check(!fx.pending.running(), "pending")?;
    check(fx.running.running(), "running")?;
    check(!fx.cancelled.running(), "cancelled")?;
    check(!fx.exception.running(), "exception")?;
    check(!fx.successful.running(), "successful")
}

fn test_result_with_timeout() -> Check {
    let fx = fixtures()?;
    let z = Duration::ZERO;
    check(fx.pending.result_timeout(z) == Err(ExecutorError::Timeout), "pending")?;
    check(fx.running.result_timeout(z) == Err(ExecutorError::Timeout), "running")?;
    check(
        fx.cancelled.result_timeout(z) == Err(ExecutorError::Cancelled),
        "cancelled",
    )?;
    let r = fx.exception.result_timeout(z);
    check(
        matches!(r, Err(ExecutorError::Task(TaskError::Panicked(_)))),
        format!("exception: {r:?}"),
    )?;
    check(fx.successful.result_timeout(z) == Ok(42), "successful")
}

fn test_result_with_success() -> Check {
    let ex = executor(1)?;
    let f = ok(ex.submit(nap_u64, (50,)))?;
    let r = f.result_timeout(PATIENCE);
    check(r == Ok(50), format!("{r:?}"))
}

fn test_result_with_cancel() -> Check {
    let fx = fixtures()?;
    let f = fx.pending.clone();
    let t = ok(std::thread::Builder::new().name("canceller".into()).spawn(move || {
        std::thread::sleep(ms(50));
        f.cancel()
    }))?;
    let r = fx.pending.result_timeout(PATIENCE);
    let cancelled = t.join().unwrap_or(false);
    check(cancelled, "cancel() from the other thread")?;
    check(r == Err(ExecutorError::Cancelled), format!("{r:?}"))
}

fn test_exception_with_timeout() -> Check {
    let fx = fixtures()?;
    let exc = |f: &TaskFuture<u64>| f.result_timeout(Duration::ZERO).err();
    check(exc(&fx.pending) == Some(ExecutorError::Timeout), "pending")?;
    check(exc(&fx.running) == Some(ExecutorError::Timeout), "running")?;
    check(exc(&fx.cancelled) == Some(ExecutorError::Cancelled), "cancelled")?;
    check(
        matches!(exc(&fx.exception), Some(ExecutorError::Task(TaskError::Panicked(_)))),
        "exception",
    )?;
    check(exc(&fx.successful).is_none(), "successful")
}

fn test_exception_with_success() -> Check {
    let ex = executor(1)?;
    let f = ok(ex.submit(sleep_and_raise, (50,)))?;
    check(f.wait_timeout(PATIENCE), "done")?;
    let e = f.exception();
    check(
        matches!(&e, Some(ExecutorError::Task(TaskError::Panicked(m))) if m.contains("this is an exception")),
        format!("{e:?}"),
    )
}

// ---- main ---------------------------------------------------------------------

/// `test` with a fresh pool of 4: `_TestPool`'s class-wide pool, made per
/// test so that no pool's thread runs while another pool forks.
fn with_pool4(test: fn(&Pool) -> Check) -> impl FnOnce() -> Check {
    move || {
        let p = pool(4)?;
        let r = test(&p);
        ok(p.terminate())?;
        r
    }
}

fn main() -> ExitCode {
    let mut h = Harness::new(150);

    // _TestPool
    h.run("_TestPool::test_apply", with_pool4(test_apply));
    h.run("_TestPool::test_map", with_pool4(test_map));
    h.run("_TestPool::test_starmap", with_pool4(test_starmap));
    h.run("_TestPool::test_starmap_async", with_pool4(test_starmap_async));
    h.run("_TestPool::test_map_async", with_pool4(test_map_async));
    h.run(
        "_TestPool::test_map_async_callbacks",
        with_pool4(test_map_async_callbacks),
    );
    h.run("_TestPool::test_map_unplicklable", with_pool4(test_map_unplicklable));
    h.run("_TestPool::test_map_chunksize", with_pool4(test_map_chunksize));
    h.run(
        "_TestPool::test_map_handle_iterable_exception",
        with_pool4(test_map_handle_iterable_exception),
    );
    h.run("_TestPool::test_async", with_pool4(test_async));
    h.run("_TestPool::test_async_timeout", test_async_timeout);
    h.run("_TestPool::test_imap", with_pool4(test_imap));
    h.run(
        "_TestPool::test_imap_handle_iterable_exception",
        with_pool4(test_imap_handle_iterable_exception),
    );
    h.run("_TestPool::test_imap_unordered", with_pool4(test_imap_unordered));
    h.run(
        "_TestPool::test_imap_unordered_handle_iterable_exception",
        with_pool4(test_imap_unordered_handle_iterable_exception),
    );
    h.run("_TestPool::test_make_pool", test_make_pool);
    h.run("_TestPool::test_terminate", test_terminate);
    h.run("_TestPool::test_empty_iterable", test_empty_iterable);
    h.run("_TestPool::test_context", test_context);
    h.run("_TestPool::test_traceback", test_traceback);
    h.run("_TestPool::test_wrapped_exception", test_wrapped_exception);
    h.run("_TestPool::test_map_no_failfast", test_map_no_failfast);
    h.run("_TestPool::test_release_task_refs", with_pool4(test_release_task_refs));
    h.run("_TestPool::test_enter", test_enter);

    // _TestPoolWorkerErrors, _TestPoolWorkerLifetime, TestPoolNotLeakOnFailure, TestInitializers
    h.run(
        "_TestPoolWorkerErrors::test_async_error_callback",
        test_async_error_callback,
    );
    h.run(
        "_TestPoolWorkerErrors::test_unpickleable_result",
        test_unpickleable_result,
    );
    h.run(
        "_TestPoolWorkerLifetime::test_pool_worker_lifetime",
        test_pool_worker_lifetime,
    );
    h.run(
        "_TestPoolWorkerLifetime::test_pool_worker_lifetime_early_close",
        test_pool_worker_lifetime_early_close,
    );
    h.run(
        "_TestPoolWorkerLifetime::test_pool_maxtasksperchild_invalid",
        test_pool_maxtasksperchild_invalid,
    );
    h.run(
        "_TestPoolWorkerLifetime::test_worker_finalization_via_atexit_handler_of_multiprocessing",
        test_worker_finalization_via_atexit_handler_of_multiprocessing,
    );
    h.run(
        "TestPoolNotLeakOnFailure::test_release_unused_processes",
        test_release_unused_processes,
    );
    h.run("TestInitializers::test_manager_initializer", test_manager_initializer);
    h.run("TestInitializers::test_pool_initializer", test_pool_initializer);

    // ProcessPoolShutdownTest
    h.run(
        "ProcessPoolShutdownTest::test_run_after_shutdown",
        test_run_after_shutdown,
    );
    h.run(
        "ProcessPoolShutdownTest::test_interpreter_shutdown",
        test_interpreter_shutdown,
    );
    h.run("ProcessPoolShutdownTest::test_hang_issue12364", test_hang_issue12364);
    h.run("ProcessPoolShutdownTest::test_cancel_futures", test_cancel_futures);
    h.run("ProcessPoolShutdownTest::test_hang_gh83386", test_hang_gh83386);
    h.run("ProcessPoolShutdownTest::test_hang_gh94440", test_hang_gh94440);
    h.run(
        "ProcessPoolShutdownTest::test_processes_terminate",
        test_processes_terminate,
    );
    h.run(
        "ProcessPoolShutdownTest::test_context_manager_shutdown",
        test_context_manager_shutdown,
    );
    h.run("ProcessPoolShutdownTest::test_del_shutdown", test_del_shutdown);
    h.run("ProcessPoolShutdownTest::test_shutdown_no_wait", test_shutdown_no_wait);

    // ProcessPoolExecutorTest
    h.run("ProcessPoolExecutorTest::test_submit", test_submit);
    h.run("ProcessPoolExecutorTest::test_map", test_executor_map);
    h.run("ProcessPoolExecutorTest::test_map_exception", test_map_exception);
    h.run("ProcessPoolExecutorTest::test_map_timeout", test_map_timeout);
    h.run(
        "ProcessPoolExecutorTest::test_shutdown_race_issue12456",
        test_shutdown_race_issue12456,
    );
    h.run(
        "ProcessPoolExecutorTest::test_max_workers_negative",
        test_max_workers_negative,
    );
    h.run("ProcessPoolExecutorTest::test_killed_child", test_killed_child);
    h.run(
        "ProcessPoolExecutorTest::test_map_chunksize",
        test_executor_map_chunksize,
    );
    h.run("ProcessPoolExecutorTest::test_traceback", test_executor_traceback);
    h.run(
        "ProcessPoolExecutorTest::test_ressources_gced_in_workers",
        test_ressources_gced_in_workers,
    );
    h.run("ProcessPoolExecutorTest::test_saturation", test_saturation);
    h.run(
        "ProcessPoolExecutorTest::test_max_tasks_per_child",
        test_max_tasks_per_child,
    );
    h.run(
        "ProcessPoolExecutorTest::test_max_tasks_early_shutdown",
        test_max_tasks_early_shutdown,
    );

    // WaitTests
    h.run("WaitTests::test_20369", test_20369);
    h.run("WaitTests::test_first_completed", test_first_completed);
    h.run(
        "WaitTests::test_first_completed_some_already_completed",
        test_first_completed_some_already_completed,
    );
    h.run("WaitTests::test_first_exception", test_first_exception);
    h.run(
        "WaitTests::test_first_exception_some_already_complete",
        test_first_exception_some_already_complete,
    );
    h.run(
        "WaitTests::test_first_exception_one_already_failed",
        test_first_exception_one_already_failed,
    );
    h.run("WaitTests::test_all_completed", test_all_completed);
    h.run("WaitTests::test_timeout", test_wait_timeout);

    // AsCompletedTests
    h.run("AsCompletedTests::test_no_timeout", test_no_timeout);
    h.run("AsCompletedTests::test_future_times_out", test_future_times_out);
    h.run("AsCompletedTests::test_duplicate_futures", test_duplicate_futures);
    h.run(
        "AsCompletedTests::test_correct_timeout_exception_msg",
        test_correct_timeout_exception_msg,
    );

    // ExecutorDeadlockTest
    h.run(
        "ExecutorDeadlockTest::test_error_at_task_pickle",
        test_error_at_task_pickle,
    );
    h.run(
        "ExecutorDeadlockTest::test_exit_at_task_unpickle",
        test_exit_at_task_unpickle,
    );
    h.run(
        "ExecutorDeadlockTest::test_error_at_task_unpickle",
        test_error_at_task_unpickle,
    );
    h.run(
        "ExecutorDeadlockTest::test_crash_at_task_unpickle",
        test_crash_at_task_unpickle,
    );
    h.run(
        "ExecutorDeadlockTest::test_crash_during_func_exec_on_worker",
        test_crash_during_func_exec_on_worker,
    );
    h.run(
        "ExecutorDeadlockTest::test_exit_during_func_exec_on_worker",
        test_exit_during_func_exec_on_worker,
    );
    h.run(
        "ExecutorDeadlockTest::test_error_during_func_exec_on_worker",
        test_error_during_func_exec_on_worker,
    );
    h.run(
        "ExecutorDeadlockTest::test_crash_during_result_pickle_on_worker",
        test_crash_during_result_pickle_on_worker,
    );
    h.run(
        "ExecutorDeadlockTest::test_exit_during_result_pickle_on_worker",
        test_exit_during_result_pickle_on_worker,
    );
    h.run(
        "ExecutorDeadlockTest::test_error_during_result_pickle_on_worker",
        test_error_during_result_pickle_on_worker,
    );
    h.run(
        "ExecutorDeadlockTest::test_error_during_result_unpickle_in_result_handler",
        test_error_during_result_unpickle_in_result_handler,
    );
    h.run("ExecutorDeadlockTest::test_shutdown_deadlock", test_shutdown_deadlock);
    h.run(
        "ExecutorDeadlockTest::test_shutdown_deadlock_pickle",
        test_shutdown_deadlock_pickle,
    );
    h.run("ExecutorDeadlockTest::test_crash_big_data", test_crash_big_data);
    h.run(
        "ExecutorDeadlockTest::test_gh105829_should_not_deadlock_if_wakeup_pipe_full",
        test_gh105829_should_not_deadlock_if_wakeup_pipe_full,
    );

    // test_init.py
    h.run("InitializerMixin::test_initializer", test_initializer);
    h.run("FailingInitializerMixin::test_initializer", test_failing_initializer);
    h.run("FailingInitializerResourcesTest::test_spawn", || {
        failing_initializer_resources(StartMethod::Spawn)
    });
    h.run("FailingInitializerResourcesTest::test_forkserver", || {
        failing_initializer_resources(StartMethod::ForkServer)
    });

    // FutureTests
    h.run(
        "FutureTests::test_done_callback_with_result",
        test_done_callback_with_result,
    );
    h.run(
        "FutureTests::test_done_callback_with_exception",
        test_done_callback_with_exception,
    );
    h.run(
        "FutureTests::test_done_callback_with_cancel",
        test_done_callback_with_cancel,
    );
    h.run("FutureTests::test_done_callback_raises", test_done_callback_raises);
    h.run(
        "FutureTests::test_done_callback_already_successful",
        test_done_callback_already_successful,
    );
    h.run(
        "FutureTests::test_done_callback_already_failed",
        test_done_callback_already_failed,
    );
    h.run(
        "FutureTests::test_done_callback_already_cancelled",
        test_done_callback_already_cancelled,
    );
    h.run(
        "FutureTests::test_done_callback_raises_already_succeeded",
        test_done_callback_raises_already_succeeded,
    );
    h.run("FutureTests::test_repr", test_repr);
    h.run("FutureTests::test_cancel", test_cancel);
    h.run("FutureTests::test_cancelled", test_cancelled);
    h.run("FutureTests::test_done", test_done);
    h.run("FutureTests::test_running", test_running);
    h.run("FutureTests::test_result_with_timeout", test_result_with_timeout);
    h.run("FutureTests::test_result_with_success", test_result_with_success);
    h.run("FutureTests::test_result_with_cancel", test_result_with_cancel);
    h.run("FutureTests::test_exception_with_timeout", test_exception_with_timeout);
    h.run("FutureTests::test_exception_with_success", test_exception_with_success);

    h.run("no zombie children are left", || {
        let z = mp_testkit::zombie_children();
        check(z == 0, format!("{z} zombie children"))
    });
    h.finish()
}
