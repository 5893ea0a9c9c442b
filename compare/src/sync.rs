//! `lock_*`, `event_*` and `semaphore_*`: a lock in one process, a shared
//! counter incremented under its lock by two processes, and round trips
//! between two processes through two Events or two Semaphores.

use std::time::Instant;

use multiprocessing::{Barrier, Connection, Event, Lock, Semaphore, StartMethod, Value, get_context, pipe_simplex};

use crate::common::{
    Mode, Result, Span, TIMEOUT, ensure, join, join_all, median_time, micros, now, overall, per_second, recv_report,
    start, start_clock,
};

/// Untimed acquire+release pairs before the timed ones.
const LOCK_WARM_UPS: usize = 1_000;

/// Untimed ping-pong round trips before the timed ones.
const PINGPONG_WARM_UPS: usize = 100;

/// Nanoseconds per `acquire()` + release (dropping the guard) of an
/// uncontended `Lock`.
pub(crate) fn lock_uncontended(mode: Mode) -> Result<f64> {
    let n = mode.pick(1_000_000, 200_000);
    let lock = Lock::new()?;
    for _ in 0..LOCK_WARM_UPS {
        drop(lock.acquire()?);
    }
    let t0 = Instant::now();
    for _ in 0..n {
        drop(lock.acquire()?);
    }
    let took = t0.elapsed();
    ensure!(
        lock.try_acquire()?.is_some(),
        "the lock is still held after the last release"
    );
    Ok(took.as_secs_f64() * 1e9 / n as f64)
}

/// Python's `with v.get_lock(): v.value += 1`, `n` times after the barrier;
/// reports its span from the barrier to the last increment.
fn increment(v: Value<i64>, n: usize, start: Barrier, report: Connection) -> Result<()> {
    v.get(); // Warm-up: takes the lock and reads the value.
    start.wait_timeout(TIMEOUT)?;
    let t0 = now();
    for _ in 0..n {
        let _held = v.get_lock().acquire()?;
        v.set(v.get() + 1);
    }
    report.send(&Span { start: t0, end: now() })?;
    Ok(())
}

/// Increments per second of a `Value<i64>` by two processes under its lock,
/// from the barrier until the later one is done (on the clock common to the
/// parent and its forked children); checks that none was lost.
pub(crate) fn lock_contended_value_incr_2proc(mode: Mode) -> Result<f64> {
    const PROCS: usize = 2;
    let each = mode.pick(200_000, 50_000);
    let ctx = get_context(StartMethod::Fork);
    start_clock();
    let v = Value::new(0i64)?;
    let barrier = Barrier::new(PROCS + 1)?;
    let mut children = Vec::new();
    let mut reports = Vec::new();
    for _ in 0..PROCS {
        let (reader, writer) = pipe_simplex()?;
        let child = ctx.process(increment, (v.clone(), each, barrier.clone(), writer));
        children.push(start(child)?);
        reports.push(reader);
    }
    barrier.wait_timeout(TIMEOUT)?;
    let t0 = now();
    let spans = reports.iter().map(recv_report::<Span>).collect::<Result<Vec<_>>>()?;
    join_all(&mut children)?;
    let total = PROCS * each;
    ensure!(v.get() == total as i64, "the counter is {}, not {total}", v.get());
    Ok(per_second(total, overall(t0, &spans)?))
}

/// The child side of the Event ping-pong: waits for `ping`, clears it,
/// sets `pong`; `n` times.
fn event_echo(ping: Event, pong: Event, n: usize) -> Result<()> {
    for _ in 0..n {
        ensure!(ping.wait_timeout(TIMEOUT), "no ping within {TIMEOUT:?}");
        ping.clear();
        pong.set();
    }
    Ok(())
}

/// Median round trip, in µs: set one Event, wait for the other (and clear
/// it); the child mirrors.
pub(crate) fn event_pingpong_rtt(mode: Mode) -> Result<f64> {
    let n = mode.pick(10_000, 2_000);
    let (ping, pong) = (Event::new()?, Event::new()?);
    let echo = get_context(StartMethod::Fork).process(event_echo, (ping.clone(), pong.clone(), PINGPONG_WARM_UPS + n));
    let mut child = start(echo)?;
    let median = median_time(PINGPONG_WARM_UPS, n, |_| {
        ping.set();
        ensure!(pong.wait_timeout(TIMEOUT), "no pong within {TIMEOUT:?}");
        pong.clear();
        Ok(())
    })?;
    join(&mut child)?;
    ensure!(
        !ping.is_set() && !pong.is_set(),
        "an Event is left set after the last round"
    );
    Ok(micros(median))
}

/// The child side of the Semaphore ping-pong: acquires `ping`, releases
/// `pong`; `n` times.
fn semaphore_echo(ping: Semaphore, pong: Semaphore, n: usize) -> Result<()> {
    for _ in 0..n {
        ensure!(ping.acquire_timeout(TIMEOUT)?, "no ping within {TIMEOUT:?}");
        pong.release()?;
    }
    Ok(())
}

/// Median round trip, in µs: release one `Semaphore(0)`, acquire the other;
/// the child mirrors.
pub(crate) fn semaphore_pingpong_rtt(mode: Mode) -> Result<f64> {
    let n = mode.pick(10_000, 2_000);
    let (ping, pong) = (Semaphore::new(0)?, Semaphore::new(0)?);
    let echo =
        get_context(StartMethod::Fork).process(semaphore_echo, (ping.clone(), pong.clone(), PINGPONG_WARM_UPS + n));
    let mut child = start(echo)?;
    let median = median_time(PINGPONG_WARM_UPS, n, |_| {
        ping.release()?;
        ensure!(pong.acquire_timeout(TIMEOUT)?, "no pong within {TIMEOUT:?}");
        Ok(())
    })?;
    join(&mut child)?;
    let values = (ping.get_value(), pong.get_value());
    ensure!(values == (0, 0), "the Semaphores end at {values:?}, not (0, 0)");
    Ok(micros(median))
}
