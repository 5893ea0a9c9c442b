//! mp-sync's primitives shared with child processes under every start
//! method, from a single-threaded main (the fork method needs one; see
//! docs/ARCHITECTURE.md, fork safety).
//!
//! Run with `cargo test -p mp-sync --test sync [filter]`.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mp_connection::{Waitable, wait};
use mp_process::{Process, StartMethod, exit, get_context};
use mp_sync::{
    Barrier, BarrierError, BoundedSemaphore, Condition, Event, Lock, LockError, RLock, Semaphore, SyncError,
};
use mp_sys::region::Region;
use mp_testkit::{METHODS, PATIENCE, Test, check, finish, ok, shm_entries, suite, until};
use serde::{Deserialize, Serialize};

type Check = Result<(), String>;

fn start(p: &mut Process) -> Check {
    ok(p.start())
}

/// Asserts a measured timeout of `t`: at least `t - 0.1 s`, under `t + 1.5 s`.
fn timed(what: &str, t: Duration, elapsed: Duration) -> Check {
    check(
        elapsed + Duration::from_millis(100) >= t && elapsed < t + Duration::from_millis(1500),
        format!("{what}: a {t:?} timeout took {elapsed:?}"),
    )
}

/// A shared counter the tests increment without atomics (a load and a
/// store), so only mutual exclusion keeps the total exact.
#[derive(Serialize, Deserialize)]
struct Counter(#[serde(with = "mp_codec::handle::region")] Region);

impl Counter {
    fn new() -> Counter {
        Counter(Region::create("counter", 64).expect("region"))
    }

    fn get(&self) -> u64 {
        self.0.atomics_u64()[0].load(Ordering::Relaxed)
    }

    fn racy_increment(&self) {
        let cell = &self.0.atomics_u64()[0];
        let v = cell.load(Ordering::Relaxed);
        std::hint::spin_loop();
        cell.store(v + 1, Ordering::Relaxed);
    }

    fn set(&self, v: u64) {
        self.0.atomics_u64()[0].store(v, Ordering::Relaxed);
    }

    fn try_clone(&self) -> Counter {
        Counter(self.0.try_clone().expect("clone"))
    }
}

// ---- child targets ---------------------------------------------------------

fn increment_under_lock(lock: Lock, counter: Counter, n: u32) -> Result<(), String> {
    for _ in 0..n {
        let _g = ok(lock.acquire())?;
        counter.racy_increment();
    }
    Ok(())
}

/// Takes the lock, says so, and waits to be killed.
fn hold_lock_forever(lock: Lock, held: Event) {
    let _held_until_killed = lock.acquire().expect("acquire");
    held.set();
    loop {
        std::thread::park();
    }
}

fn hold_rlock_forever(lock: RLock, held: Event) {
    let _outer = lock.acquire().expect("acquire");
    let _inner = lock.acquire().expect("reenter");
    held.set();
    loop {
        std::thread::park();
    }
}

fn hold_condition_forever(cond: Condition, held: Event) {
    let _held_until_killed = cond.acquire().expect("acquire");
    held.set();
    loop {
        std::thread::park();
    }
}

/// Holds the lock, after saying so, until told to let go.
fn hold_lock_until(lock: Lock, held: Event, release: Event) {
    let _g = lock.acquire().expect("acquire");
    held.set();
    release.wait_timeout(PATIENCE);
}

/// Tries an RLock the parent holds: exit 3 if it got it.
fn try_parents_rlock(lock: RLock) {
    match lock.try_acquire() {
        Ok(None) => exit(0),
        _ => exit(3),
    }
}

fn release_n(sem: Semaphore, n: u32) -> Result<(), String> {
    for _ in 0..n {
        ok(sem.release())?;
    }
    Ok(())
}

/// Waits for the event: exit 0 when set within the timeout, 4 when not.
fn wait_event(e: Event, timeout_ms: u64) {
    exit(if e.wait_timeout(Duration::from_millis(timeout_ms)) {
        0
    } else {
        4
    })
}

/// Waits on the condition after counting itself in `arrived`: exit 0 when
/// notified, 4 when the wait timed out.
fn wait_notified(cond: Condition, arrived: Semaphore) -> Result<(), String> {
    let mut g = ok(cond.acquire())?;
    ok(arrived.release())?;
    let notified = ok(cond.wait_timeout(&mut g, PATIENCE))?;
    drop(g);
    exit(if notified { 0 } else { 4 })
}

/// Raises the counter to 5, one step at a time, notifying every step.
fn count_to_five(cond: Condition, counter: Counter) -> Result<(), String> {
    for _ in 0..5 {
        let g = ok(cond.acquire())?;
        counter.racy_increment();
        ok(cond.notify_all())?;
        drop(g);
    }
    Ok(())
}

/// CPython's `_test_waitfor_f`: under the condition, sets the state to 0,
/// notifies, and waits (30 s in all) for the parent to raise it to 4.
fn set_zero_then_wait_for_four(cond: Condition, state: Counter) -> Result<(), String> {
    let mut g = ok(cond.acquire())?;
    state.set(0);
    ok(cond.notify(1))?;
    let t0 = Instant::now();
    let reached = ok(cond.wait_for(&mut g, || state.get() == 4, Some(PATIENCE)))?;
    let (now, took) = (state.get(), t0.elapsed());
    check(
        reached && now == 4,
        format!("wait_for(state == 4, 30 s) returned {reached} with state {now} after {took:?}"),
    )
}

/// CPython's `_test_waitfor_timeout_f`: waits for a state of 4 that never
/// comes, notified on the way; `wait_for` must give up only after its whole
/// timeout.
fn wait_for_four_in_vain(cond: Condition, state: Counter, timeout_ms: u64) -> Result<(), String> {
    let t = Duration::from_millis(timeout_ms);
    let mut g = ok(cond.acquire())?;
    let t0 = Instant::now();
    let reached = ok(cond.wait_for(&mut g, || state.get() == 4, Some(t)))?;
    let took = t0.elapsed();
    check(
        !reached,
        format!(
            "state 4 was never set, yet wait_for returned true (state {})",
            state.get()
        ),
    )?;
    timed("Condition::wait_for notified in between", t, took)
}

/// Waits with a timeout of `Duration::MAX` (never) for the state to be 1.
fn wait_for_one_forever(cond: Condition, state: Counter) -> Result<(), String> {
    let mut g = ok(cond.acquire())?;
    let reached = ok(cond.wait_for(&mut g, || state.get() == 1, Some(Duration::MAX)))?;
    check(
        reached && state.get() == 1,
        format!("returned {reached} at state {}", state.get()),
    )
}

/// Waits at the barrier and exits with 10 + its index, 20 for Broken, 21
/// for Timeout.
fn barrier_party(b: Barrier, timeout_ms: u64) {
    match b.wait_timeout(Duration::from_millis(timeout_ms)) {
        Ok(i) => exit(10 + i as i32),
        Err(BarrierError::Broken) => exit(20),
        Err(BarrierError::Timeout) => exit(21),
        Err(_) => exit(22),
    }
}

// ---- scenarios with a start method -----------------------------------------

fn lock_stress(m: StartMethod) -> Check {
    const PROCS: usize = 4;
    const EACH: u32 = 100_000;
    let ctx = get_context(m);
    let lock = ok(Lock::new())?;
    let counter = Counter::new();
    let mut kids: Vec<Process> = (0..PROCS)
        .map(|_| ctx.process(increment_under_lock, (lock.clone(), counter.try_clone(), EACH)))
        .collect();
    for k in &mut kids {
        start(k)?;
    }
    for k in &mut kids {
        check(finish(k)? == 0, format!("{} failed", k.get_name()))?;
    }
    let total = counter.get();
    check(
        total == PROCS as u64 * u64::from(EACH),
        format!("{PROCS} processes x {EACH} increments under the lock gave {total}"),
    )?;
    check(!lock.is_locked(), "the lock is free at the end")
}

fn lock_timeout_against_a_child(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let (lock, held, release) = (ok(Lock::new())?, ok(Event::new())?, ok(Event::new())?);
    let mut p = ctx.process(hold_lock_until, (lock.clone(), held.clone(), release.clone()));
    start(&mut p)?;
    check(held.wait_timeout(PATIENCE), "the child took the lock")?;
    let t = Duration::from_millis(500);
    let t0 = Instant::now();
    let got = ok(lock.acquire_timeout(t))?;
    timed("Lock::acquire_timeout", t, t0.elapsed())?;
    check(got.is_none(), "the lock was taken while the child held it")?;
    // Once the child releases it, a blocking acquire gets it.
    release.set();
    let g = ok(lock.acquire_timeout(PATIENCE))?;
    check(g.is_some(), "the child's release reached the parent")?;
    check(finish(&mut p)? == 0, "the child exits cleanly")
}

fn lock_owner_death(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let (lock, held) = (ok(Lock::new())?, ok(Event::new())?);
    let mut p = ctx.process(hold_lock_forever, (lock.clone(), held.clone()));
    start(&mut p)?;
    check(held.wait_timeout(PATIENCE), "the child took the lock")?;
    ok(p.kill())?;
    // Not joined yet: the holder is a zombie, and must count as dead.
    let t0 = Instant::now();
    let guard = match lock.acquire_timeout(PATIENCE) {
        Err(e) if e.owner_died() => e.into_inner(),
        Err(e) => return Err(format!("expected owner_died, got {e}")),
        Ok(Some(_)) => return Err("the lock of a killed holder came back clean".into()),
        Ok(None) => return Err(format!("the lock of a killed holder stayed held for {PATIENCE:?}")),
    };
    let took = t0.elapsed();
    check(lock.is_locked(), "the recovering caller holds the lock")?;
    drop(guard);
    check(!lock.is_locked(), "its guard releases it")?;
    check(
        matches!(lock.try_acquire(), Ok(Some(_))),
        "after recovery the lock is clean",
    )?;
    check(finish(&mut p)? == -9, "the holder was killed")?;
    check(took < Duration::from_secs(5), format!("recovery took {took:?}"))
}

fn rlock_owner_death(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let (lock, held) = (ok(RLock::new())?, ok(Event::new())?);
    let mut p = ctx.process(hold_rlock_forever, (lock.clone(), held.clone()));
    start(&mut p)?;
    check(held.wait_timeout(PATIENCE), "the child took the lock")?;
    check(
        lock.count() == 2,
        format!("the child holds two levels, count {}", lock.count()),
    )?;
    ok(p.kill())?;
    check(finish(&mut p)? == -9, "the holder was killed")?;
    let guard = match lock.acquire_timeout(PATIENCE) {
        Err(e) if e.owner_died() => e.into_inner(),
        other => return Err(format!("expected owner_died, got {:?}", other.map(|g| g.is_some()))),
    };
    check(
        lock.is_owned() && lock.count() == 1,
        format!("the recovering thread owns one level, count {}", lock.count()),
    )?;
    let again = lock.acquire().map_err(|e| e.to_string())?;
    check(lock.count() == 2, "and may re-enter")?;
    drop(again);
    drop(guard);
    check(!lock.is_locked(), "released after both levels")
}

fn rlock_across_processes(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let lock = ok(RLock::new())?;
    let g = ok(lock.acquire())?;
    let mut p = ctx.process(try_parents_rlock, (lock.clone(),));
    start(&mut p)?;
    check(finish(&mut p)? == 0, "a child acquired an RLock its parent holds")?;
    drop(g);
    let mut p = ctx.process(hold_lock_for_rlock, (lock.clone(),));
    start(&mut p)?;
    check(finish(&mut p)? == 0, "a child could not take a free RLock twice")?;
    check(!lock.is_locked(), "the child released both levels")
}

fn hold_lock_for_rlock(lock: RLock) -> Result<(), String> {
    let a = ok(lock.try_acquire())?.ok_or("free lock not taken")?;
    let b = ok(lock.try_acquire())?.ok_or("owner could not re-enter")?;
    if lock.count() != 2 {
        return Err(format!("count {}", lock.count()));
    }
    ok(b.release())?;
    ok(a.release())
}

fn condition_owner_death(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let (cond, held) = (ok(Condition::new(None))?, ok(Event::new())?);
    let mut p = ctx.process(hold_condition_forever, (cond.clone(), held.clone()));
    start(&mut p)?;
    check(held.wait_timeout(PATIENCE), "the child took the lock")?;
    ok(p.kill())?;
    let r = cond.acquire_timeout(PATIENCE);
    check(finish(&mut p)? == -9, "the holder was killed")?;
    match r {
        Err(e) if e.owner_died() => drop(e.into_inner()),
        other => return Err(format!("expected owner_died, got {:?}", other.map(|g| g.is_some()))),
    }
    check(!cond.lock().is_locked(), "the recovered guard released the lock")
}

fn semaphore_across_processes(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let sem = ok(Semaphore::new(0))?;
    let mut p = ctx.process(release_n, (sem.clone(), 3));
    start(&mut p)?;
    for i in 0..3 {
        check(
            ok(sem.acquire_timeout(PATIENCE))?,
            format!("release {i} from the child did not arrive"),
        )?;
    }
    check(finish(&mut p)? == 0, "the child released three times")?;
    check(
        sem.get_value() == 0,
        format!("value {} after three acquires", sem.get_value()),
    )?;
    let t = Duration::from_millis(300);
    let t0 = Instant::now();
    check(!ok(sem.acquire_timeout(t))?, "acquired a zero semaphore")?;
    timed("Semaphore::acquire_timeout", t, t0.elapsed())
}

fn event_across_processes(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let e = ok(Event::new())?;
    let mut waiter = ctx.process(wait_event, (e.clone(), 30_000));
    start(&mut waiter)?;
    e.set();
    check(finish(&mut waiter)? == 0, "the child did not see the event set")?;
    e.clear();
    let mut waiter = ctx.process(wait_event, (e.clone(), 200));
    start(&mut waiter)?;
    check(
        finish(&mut waiter)? == 4,
        "a cleared event's wait_timeout returned true",
    )
}

fn condition_notify_across_processes(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let cond = ok(Condition::new(None))?;
    let arrived = ok(Semaphore::new(0))?;
    let mut kids: Vec<Process> = (0..3)
        .map(|_| ctx.process(wait_notified, (cond.clone(), arrived.clone())))
        .collect();
    for k in &mut kids {
        start(k)?;
    }
    for _ in 0..3 {
        check(ok(arrived.acquire_timeout(PATIENCE))?, "a waiter did not arrive")?;
    }
    // Every waiter counted itself under the lock and then waits; taking the
    // lock here means each has released it inside `wait`.
    drop(cond.acquire().map_err(|e| e.to_string())?);
    check(cond.n_waiting() == 3, format!("{} waiting, not 3", cond.n_waiting()))?;
    {
        let _held = cond.acquire().map_err(|e| e.to_string())?;
        ok(cond.notify(1))?;
    }
    // Exactly one waiter ends; the other two are still waiting 300 ms on.
    let all: Vec<&dyn Waitable> = kids.iter().map(|k| k as &dyn Waitable).collect();
    let done = ok(wait(&all, Some(PATIENCE)))?;
    check(done.len() == 1, format!("notify(1) woke {} waiters", done.len()))?;
    let rest: Vec<&dyn Waitable> = (0..kids.len()).filter(|i| !done.contains(i)).map(|i| all[i]).collect();
    let more = ok(wait(&rest, Some(Duration::from_millis(300))))?;
    check(
        more.is_empty(),
        format!("{} more waiters ended after notify(1)", more.len()),
    )?;
    {
        let _held = cond.acquire().map_err(|e| e.to_string())?;
        ok(cond.notify_all())?;
    }
    for k in &mut kids {
        check(finish(k)? == 0, format!("{} was not notified", k.get_name()))?;
    }
    Ok(())
}

fn condition_wait_for_across_processes(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let cond = ok(Condition::new(None))?;
    let counter = Counter::new();
    let mut g = cond.acquire().map_err(|e| e.to_string())?;
    let mut p = ctx.process(count_to_five, (cond.clone(), counter.try_clone()));
    start(&mut p)?;
    let reached = ok(cond.wait_for(&mut g, || counter.get() >= 5, Some(PATIENCE)))?;
    check(reached, format!("wait_for gave up at {}", counter.get()))?;
    drop(g);
    check(finish(&mut p)? == 0, "the counting child failed")?;
    let mut g = cond.acquire().map_err(|e| e.to_string())?;
    let t = Duration::from_millis(300);
    let t0 = Instant::now();
    check(
        !ok(cond.wait_for(&mut g, || counter.get() > 5, Some(t)))?,
        "an unreachable predicate held",
    )?;
    timed("Condition::wait_for", t, t0.elapsed())
}

/// CPython's `test_waitfor`: a notify that finds the predicate still false
/// sends `wait_for` back to waiting, until it holds.
fn condition_wait_for_waits_again(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let cond = ok(Condition::new(None))?;
    let state = Counter::new();
    state.set(100); // Python's -1: not yet set by the child
    let mut g = cond.acquire().map_err(|e| e.to_string())?;
    let mut p = ctx.process(set_zero_then_wait_for_four, (cond.clone(), state.try_clone()));
    start(&mut p)?;
    let t0 = Instant::now();
    let reached = ok(cond.wait_for(&mut g, || state.get() == 0, Some(PATIENCE)))?;
    let took = t0.elapsed();
    check(
        reached && state.get() == 0,
        format!("parent: wait_for(state == 0) returned {reached} at {}", state.get()),
    )?;
    // The child notified right after setting 0: the parent returns at once,
    // not at its timeout (the bound is generous; the notify takes microseconds).
    check(
        took < PATIENCE / 2,
        format!("the child's notify did not wake the parent: wait_for took {took:?}"),
    )?;
    drop(g);
    for i in 1..=4 {
        // Raise the state once the child waits again (or has ended), so each
        // notify finds it waiting with its predicate still false.
        until(PATIENCE, || cond.n_waiting() == 1 || !p.is_alive());
        let g = cond.acquire().map_err(|e| e.to_string())?;
        state.set(i);
        ok(cond.notify(1))?;
        drop(g);
    }
    check(
        finish(&mut p)? == 0,
        "the child's wait_for(state == 4) failed (its stderr says how)",
    )
}

/// CPython's `test_waitfor_timeout`: three notifies, the predicate never
/// true; the waiter returns false after its whole timeout, not at a notify.
fn condition_wait_for_timeout_notified(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let cond = ok(Condition::new(None))?;
    let state = Counter::new();
    let mut p = ctx.process(wait_for_four_in_vain, (cond.clone(), state.try_clone(), 1500));
    start(&mut p)?;
    let mut notified = 0;
    for i in 1..=3 {
        if !until(PATIENCE, || cond.n_waiting() == 1 || !p.is_alive()) || !p.is_alive() {
            break;
        }
        let g = cond.acquire().map_err(|e| e.to_string())?;
        state.set(i);
        ok(cond.notify(1))?;
        drop(g);
        notified += 1;
    }
    check(
        finish(&mut p)? == 0,
        "the child's wait_for failed (its stderr says how)",
    )?;
    // Normally all three come within the child's 1.5 s; on a starved machine
    // fewer may, and the child's own check above still holds.
    check(notified >= 1, "no notify reached the waiting child")
}

/// `wait_for` with a timeout of `Duration::MAX` waits (no overflow, no
/// panic) until a notify comes with the predicate true.
fn condition_wait_for_duration_max(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let cond = ok(Condition::new(None))?;
    let state = Counter::new();
    let mut p = ctx.process(wait_for_one_forever, (cond.clone(), state.try_clone()));
    start(&mut p)?;
    check(
        until(PATIENCE, || cond.n_waiting() == 1 || !p.is_alive()),
        "the child never waited",
    )?;
    let g = cond.acquire().map_err(|e| e.to_string())?;
    state.set(1);
    ok(cond.notify(1))?;
    drop(g);
    check(finish(&mut p)? == 0, "the child's wait_for(Duration::MAX) failed")
}

/// A notify needs the lock held by the notifying process (Python raises
/// `RuntimeError`); held by a child, it is not held by the parent.
fn condition_notify_needs_the_lock(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let cond = ok(Condition::new(None))?;
    let (held, release) = (ok(Event::new())?, ok(Event::new())?);
    let mut p = ctx.process(hold_lock_until, (cond.lock().clone(), held.clone(), release.clone()));
    start(&mut p)?;
    check(held.wait_timeout(PATIENCE), "the child took the lock")?;
    let one = cond.notify(1);
    let all = cond.notify_all();
    release.set();
    check(finish(&mut p)? == 0, "the child exits cleanly")?;
    check(
        matches!(one, Err(SyncError::NotifyWithoutLock { .. })),
        format!("notify(1) while a child holds the lock: {one:?}"),
    )?;
    check(
        matches!(all, Err(SyncError::NotifyWithoutLock { .. })),
        format!("notify_all() while a child holds the lock: {all:?}"),
    )?;
    let msg = one.err().map(|e| e.to_string()).unwrap_or_default();
    check(
        msg.contains("process") && msg.contains("acquire the condition first"),
        format!("the error does not say who holds the lock and what to do: {msg}"),
    )
}

/// A waiter killed in `wait` does not swallow a later notify: the live
/// waiter gets it.
fn condition_dead_waiter_does_not_swallow_notify(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let cond = ok(Condition::new(None))?;
    let arrived = ok(Semaphore::new(0))?;
    let mut a = ctx.process(wait_notified, (cond.clone(), arrived.clone()));
    start(&mut a)?;
    check(ok(arrived.acquire_timeout(PATIENCE))?, "waiter A did not arrive")?;
    let mut b = ctx.process(wait_notified, (cond.clone(), arrived.clone()));
    start(&mut b)?;
    check(ok(arrived.acquire_timeout(PATIENCE))?, "waiter B did not arrive")?;
    // Each counted itself under the lock; taking the lock here means both
    // released it inside `wait`, so both wait now.
    drop(cond.acquire().map_err(|e| e.to_string())?);
    check(cond.n_waiting() == 2, format!("{} waiting, not 2", cond.n_waiting()))?;
    ok(a.kill())?;
    check(finish(&mut a)? == -9, "waiter A was killed")?;
    {
        let _held = cond.acquire().map_err(|e| e.to_string())?;
        ok(cond.notify(1))?;
    }
    let ended = ok(wait(&[&b as &dyn Waitable], Some(PATIENCE)))?;
    check(ended == [0], "the live waiter B did not wake after notify(1)")?;
    check(finish(&mut b)? == 0, "waiter B timed out instead of being notified")
}

/// A wait that begins after a notify is not woken by it: the wake-up
/// belongs to the waiters that were there. Here the one it was meant for was
/// killed first, so it goes to nobody (and a later waiter gets its own).
fn condition_notify_wakes_only_earlier_waiters(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let cond = ok(Condition::new(None))?;
    let arrived = ok(Semaphore::new(0))?;
    let mut a = ctx.process(wait_notified, (cond.clone(), arrived.clone()));
    start(&mut a)?;
    check(ok(arrived.acquire_timeout(PATIENCE))?, "waiter A did not arrive")?;
    // A counted itself under the lock: taking the lock means it waits now.
    drop(cond.acquire().map_err(|e| e.to_string())?);
    ok(a.kill())?;
    check(finish(&mut a)? == -9, "waiter A was killed")?;
    let mut g = cond.acquire().map_err(|e| e.to_string())?;
    ok(cond.notify(1))?;
    let t = Duration::from_millis(300);
    let t0 = Instant::now();
    let woke = ok(cond.wait_timeout(&mut g, t))?;
    check(!woke, "a wait that began after notify(1) took that notify's wake-up")?;
    timed("Condition::wait_timeout after a notify", t, t0.elapsed())?;
    drop(g);
    let mut b = ctx.process(wait_notified, (cond.clone(), arrived.clone()));
    start(&mut b)?;
    check(ok(arrived.acquire_timeout(PATIENCE))?, "waiter B did not arrive")?;
    {
        let _held = cond.acquire().map_err(|e| e.to_string())?;
        ok(cond.notify(1))?;
    }
    check(
        finish(&mut b)? == 0,
        "waiter B, notified after it began to wait, timed out",
    )
}

fn barrier_across_processes(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let b = ok(Barrier::new(4))?;
    let mut kids: Vec<Process> = (0..3)
        .map(|_| ctx.process(barrier_party, (b.clone(), 30_000)))
        .collect();
    for k in &mut kids {
        start(k)?;
    }
    let mine = b.wait_timeout(PATIENCE).map_err(|e| e.to_string())?;
    let mut indexes = vec![mine];
    for k in &mut kids {
        let code = finish(k)?;
        check((10..14).contains(&code), format!("a party exited {code}"))?;
        indexes.push((code - 10) as usize);
    }
    indexes.sort_unstable();
    check(indexes == [0, 1, 2, 3], format!("indexes {indexes:?}"))?;
    // Reusable: a second round.
    let mut kids: Vec<Process> = (0..3)
        .map(|_| ctx.process(barrier_party, (b.clone(), 30_000)))
        .collect();
    for k in &mut kids {
        start(k)?;
    }
    b.wait_timeout(PATIENCE).map_err(|e| e.to_string())?;
    for k in &mut kids {
        check((10..14).contains(&finish(k)?), "second round")?;
    }
    Ok(())
}

fn barrier_breaks_across_processes(m: StartMethod) -> Check {
    let ctx = get_context(m);
    let b = ok(Barrier::new(3))?;
    // One child waits long, another times out: the first sees Broken.
    // (Whether the long waiter arrives before or after the break, it sees
    // Broken: a broken barrier refuses new waits too.)
    let mut long = ctx.process(barrier_party, (b.clone(), 30_000));
    start(&mut long)?;
    let mut short = ctx.process(barrier_party, (b.clone(), 300));
    start(&mut short)?;
    check(finish(&mut short)? == 21, "the short waiter did not time out")?;
    check(
        finish(&mut long)? == 20,
        "the long waiter did not see the barrier break",
    )?;
    check(b.is_broken(), "a timeout breaks the barrier")?;
    check(
        matches!(b.wait(), Err(BarrierError::Broken)),
        "a broken barrier refuses waits",
    )?;
    // Reset makes it whole; waiters present at a reset get Broken.
    b.reset();
    let mut waiting = ctx.process(barrier_party, (b.clone(), 30_000));
    start(&mut waiting)?;
    // A barrier announces no arrivals: watch its count.
    check(
        until(PATIENCE, || b.n_waiting() == 1),
        "the child never reached the barrier",
    )?;
    b.reset();
    check(finish(&mut waiting)? == 20, "a waiter at reset did not get Broken")?;
    // Abort, seen by a waiting child.
    let mut waiting = ctx.process(barrier_party, (b.clone(), 30_000));
    start(&mut waiting)?;
    // A barrier announces no arrivals: watch its count.
    check(
        until(PATIENCE, || b.n_waiting() == 1),
        "the child never reached the barrier",
    )?;
    b.abort();
    check(finish(&mut waiting)? == 20, "a waiter at abort did not get Broken")?;
    b.reset();
    check(
        !b.is_broken() && b.n_waiting() == 0,
        "reset leaves an empty, whole barrier",
    )
}

// ---- scenarios within one process ------------------------------------------

fn lock_is_not_reentrant() -> Check {
    let lock = ok(Lock::new())?;
    let _g = lock.acquire().map_err(|e| e.to_string())?;
    let t = Duration::from_millis(300);
    let t0 = Instant::now();
    let again = lock.acquire_timeout(t).map_err(|e| e.to_string())?;
    timed("Lock::acquire_timeout by the holder", t, t0.elapsed())?;
    check(again.is_none(), "a Lock let its holder in twice")
}

fn rlock_threads() -> Check {
    let lock = ok(RLock::new())?;
    let a = lock.acquire().map_err(|e| e.to_string())?;
    let b = lock.acquire().map_err(|e| e.to_string())?;
    check(lock.count() == 2, "two levels")?;
    // Another thread can neither take it nor release it.
    let other = lock.clone();
    let t = Duration::from_millis(300);
    let (got, elapsed) = std::thread::spawn(move || {
        let t0 = Instant::now();
        let got = other.acquire_timeout(t).map(|g| g.is_some()).map_err(|e| e.to_string());
        (got, t0.elapsed())
    })
    .join()
    .map_err(|_| "thread panicked")?;
    check(got == Ok(false), "another thread took an owned RLock")?;
    timed("RLock::acquire_timeout from another thread", t, elapsed)?;
    let released_elsewhere = std::thread::spawn(move || b.release())
        .join()
        .map_err(|_| "thread panicked")?;
    check(
        matches!(released_elsewhere, Err(SyncError::NotOwner { .. })),
        format!("release by a non-owner: {released_elsewhere:?}"),
    )?;
    check(lock.count() == 2, "a failed release changed the count")?;
    // The level whose guard was lost stays; the owner's other guard releases one.
    ok(a.release())?;
    check(lock.count() == 1 && lock.is_owned(), "one level left")?;
    Ok(())
}

fn bounded_semaphore_over_release() -> Check {
    let s = ok(BoundedSemaphore::new(2))?;
    check(ok(s.try_acquire())?, "take one")?;
    ok(s.release())?;
    let e = s.release();
    check(
        matches!(e, Err(SyncError::OverRelease { limit: 2 })),
        format!("over-release: {e:?}"),
    )?;
    check(s.get_value() == 2, "over-release changed the value")?;
    let plain = ok(Semaphore::new(0))?;
    for _ in 0..5 {
        ok(plain.release())?;
    }
    check(plain.get_value() == 5, "a plain Semaphore releases without limit")
}

fn timeouts_are_measured() -> Check {
    let t = Duration::from_millis(300);
    let e = ok(Event::new())?;
    let t0 = Instant::now();
    check(!e.wait_timeout(t), "unset event")?;
    timed("Event::wait_timeout", t, t0.elapsed())?;
    let cond = ok(Condition::new(None))?;
    let mut g = cond.acquire().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    check(!ok(cond.wait_timeout(&mut g, t))?, "un-notified condition")?;
    timed("Condition::wait_timeout", t, t0.elapsed())?;
    let b = ok(Barrier::new(2))?;
    let t0 = Instant::now();
    check(
        matches!(b.wait_timeout(t), Err(BarrierError::Timeout)),
        "lone barrier party",
    )?;
    timed("Barrier::wait_timeout", t, t0.elapsed())?;
    let s = ok(BoundedSemaphore::new(0))?;
    let t0 = Instant::now();
    check(!ok(s.acquire_timeout(t))?, "empty bounded semaphore")?;
    timed("BoundedSemaphore::acquire_timeout", t, t0.elapsed())
}

fn condition_rejects_another_guard() -> Check {
    let a = ok(Condition::new(None))?;
    let b = ok(Condition::new(None))?;
    let mut g = a.acquire().map_err(|e| e.to_string())?;
    let r = b.wait_timeout(&mut g, Duration::from_millis(10));
    check(matches!(r, Err(SyncError::WrongGuard)), format!("{r:?}"))?;
    // A copy of the same condition that came through the codec accepts it.
    let same: Condition = ok(mp_codec::decode(ok(mp_codec::encode(&a))?))?;
    let r = same.wait_timeout(&mut g, Duration::from_millis(10));
    check(matches!(r, Ok(false)), format!("same condition, decoded: {r:?}"))?;
    check(a.lock().is_locked(), "the guard holds the lock again")
}

fn handles_check_their_kind() -> Check {
    let sem = ok(Semaphore::new(1))?;
    let frame = ok(mp_codec::encode(&sem))?;
    let err = match mp_codec::decode::<Lock>(frame) {
        Ok(_) => return Err("a Semaphore decoded as a Lock".into()),
        Err(e) => e.to_string(),
    };
    check(
        err.contains("expected a Lock handle, got a Semaphore"),
        format!("the error does not say what was wrong: {err}"),
    )?;
    check(
        serde_json::to_string(&ok(Lock::new())?).is_err(),
        "a handle encoded outside mp-codec must fail",
    )?;
    // A decoded copy is the same lock.
    let lock = ok(Lock::new())?;
    let copy: Lock = ok(mp_codec::decode(ok(mp_codec::encode(&lock))?))?;
    let g = copy.acquire().map_err(|e| e.to_string())?;
    check(lock.is_locked(), "the decoded copy is the same lock")?;
    drop(g);
    check(!lock.is_locked(), "released through the copy")
}

fn no_leaks() -> Check {
    let shm_before = shm_entries();
    let fds_before = ok(mp_sys::fd::count_open_fds())?;
    for _ in 0..1000 {
        let lock = ok(Lock::new())?;
        let rlock = ok(RLock::new())?;
        let sem = ok(Semaphore::new(1))?;
        let bsem = ok(BoundedSemaphore::new(1))?;
        let ev = ok(Event::new())?;
        let cond = ok(Condition::new(Some(lock.clone())))?;
        let bar = ok(Barrier::new(1))?;
        let g = lock.try_acquire().map_err(|e| e.to_string())?;
        drop(g);
        let rg = rlock.acquire().map_err(|e| e.to_string())?;
        drop(rg);
        ok(sem.acquire())?;
        ok(bsem.acquire())?;
        ev.set();
        let cg = cond.acquire().map_err(|e| e.to_string())?;
        ok(cond.notify_all())?;
        drop(cg);
        bar.wait().map_err(|e| e.to_string())?;
    }
    let fds_after = ok(mp_sys::fd::count_open_fds())?;
    check(
        fds_after == fds_before,
        format!("open fds {fds_before} -> {fds_after} after 1,000 of each primitive"),
    )?;
    check(shm_entries() == shm_before, "/dev/shm changed")
}

fn condition_notify_without_the_lock() -> Check {
    let cond = ok(Condition::new(None))?;
    let r = cond.notify(1);
    check(
        matches!(r, Err(SyncError::NotifyWithoutLock { .. })),
        format!("notify(1) without the lock: {r:?}"),
    )?;
    let r = cond.notify_all();
    check(
        matches!(r, Err(SyncError::NotifyWithoutLock { .. })),
        format!("notify_all() without the lock: {r:?}"),
    )?;
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    check(
        msg.contains("nobody") && msg.contains("acquire the condition first"),
        format!("the error does not say what happened and what to do: {msg}"),
    )?;
    let g = cond.acquire().map_err(|e| e.to_string())?;
    ok(cond.notify(1))?;
    ok(cond.notify_all())?;
    drop(g);
    check(cond.notify(1).is_err(), "notify after the guard dropped")?;
    // Holding the lock through the Lock itself counts too (as in Python).
    let lock = ok(Lock::new())?;
    let shared = ok(Condition::new(Some(lock.clone())))?;
    let lg = lock.acquire().map_err(|e| e.to_string())?;
    ok(shared.notify(1))?;
    drop(lg);
    check(shared.notify(1).is_err(), "notify after the lock's guard dropped")
}

fn lock_error_shapes() -> Check {
    // LockError is an std error that `?` turns into a Box<dyn Error>.
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<SyncError>();
    assert_error::<BarrierError>();
    assert_error::<LockError<mp_sync::LockGuard>>();
    assert_error::<LockError<mp_sync::RLockGuard>>();
    assert_error::<LockError<mp_sync::ConditionGuard>>();
    fn assert_handle<T: Clone + Send + Sync + Serialize + for<'de> Deserialize<'de> + 'static>() {}
    assert_handle::<Lock>();
    assert_handle::<RLock>();
    assert_handle::<Semaphore>();
    assert_handle::<BoundedSemaphore>();
    assert_handle::<Event>();
    assert_handle::<Condition>();
    assert_handle::<Barrier>();
    fn assert_send<T: Send>() {}
    assert_send::<mp_sync::LockGuard>();
    assert_send::<mp_sync::RLockGuard>();
    assert_send::<mp_sync::ConditionGuard>();
    Ok(())
}

type Scenario = fn(StartMethod) -> Check;

fn main() -> ExitCode {
    let with_method: [(&str, Scenario); 18] = [
        ("lock_stress", lock_stress),
        ("lock_timeout_against_a_child", lock_timeout_against_a_child),
        ("lock_owner_death", lock_owner_death),
        ("rlock_owner_death", rlock_owner_death),
        ("rlock_across_processes", rlock_across_processes),
        ("condition_owner_death", condition_owner_death),
        ("semaphore_across_processes", semaphore_across_processes),
        ("event_across_processes", event_across_processes),
        ("condition_notify_across_processes", condition_notify_across_processes),
        (
            "condition_wait_for_across_processes",
            condition_wait_for_across_processes,
        ),
        ("condition_wait_for_waits_again", condition_wait_for_waits_again),
        (
            "condition_wait_for_timeout_notified",
            condition_wait_for_timeout_notified,
        ),
        ("condition_wait_for_duration_max", condition_wait_for_duration_max),
        ("condition_notify_needs_the_lock", condition_notify_needs_the_lock),
        (
            "condition_dead_waiter_does_not_swallow_notify",
            condition_dead_waiter_does_not_swallow_notify,
        ),
        (
            "condition_notify_wakes_only_earlier_waiters",
            condition_notify_wakes_only_earlier_waiters,
        ),
        ("barrier_across_processes", barrier_across_processes),
        ("barrier_breaks_across_processes", barrier_breaks_across_processes),
    ];
    let local: [(&str, Test); 9] = [
        ("lock_is_not_reentrant", lock_is_not_reentrant),
        ("rlock_threads", rlock_threads),
        ("bounded_semaphore_over_release", bounded_semaphore_over_release),
        ("timeouts_are_measured", timeouts_are_measured),
        ("condition_rejects_another_guard", condition_rejects_another_guard),
        ("condition_notify_without_the_lock", condition_notify_without_the_lock),
        ("handles_check_their_kind", handles_check_their_kind),
        ("no_leaks", no_leaks),
        ("lock_error_shapes", lock_error_shapes),
    ];
    suite(&local, &with_method, &METHODS)
}
