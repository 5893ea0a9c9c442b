//! `manager_*`: a fork `Manager`'s start-up, and a managed dict's sets and
//! gets from a forked child.

use std::time::{Duration, Instant};

use multiprocessing::{Connection, DictProxy, ManagerContext, StartMethod, active_children, get_context, pipe_simplex};

use crate::common::{Mode, Result, ensure, join, median, micros, millis, recv_report, start};

/// Untimed manager start-ups before the timed ones.
const STARTUP_WARM_UPS: usize = 1;

/// Untimed set+get pairs the child does before its timed loops (its proxy
/// connects on first use).
const DICT_WARM_UPS: u64 = 100;

/// The median time, in ms, from `Manager()` to a manager that answers
/// (the constructor returns once the server does). Outside the timing,
/// each manager serves a dict round trip, then shuts down.
pub(crate) fn startup(mode: Mode) -> Result<f64> {
    let ctx = get_context(StartMethod::Fork);
    let mut times = Vec::new();
    for i in 0..STARTUP_WARM_UPS + mode.pick(10, 3) {
        let t0 = Instant::now();
        let m = ctx.manager()?;
        let took = t0.elapsed();
        let d = m.dict::<String, u64>()?;
        d.insert("k".to_owned(), 42)?;
        ensure!(d.get(&"k".to_owned())? == Some(42), "the manager's dict lost d[\"k\"]");
        drop(d);
        m.shutdown()?;
        let left = active_children();
        ensure!(
            left.is_empty(),
            "the manager's process is alive after shutdown: {left:?}"
        );
        if i >= STARTUP_WARM_UPS {
            times.push(took);
        }
    }
    Ok(millis(median(times)))
}

/// After a warm-up, `d[k] = k` for `k` in `0..n`, then `d[k]` for each
/// (checking it), and reports the time of each loop.
fn dict_ops(d: DictProxy<u64, u64>, n: u64, report: Connection) -> Result<()> {
    for k in 0..DICT_WARM_UPS.min(n) {
        d.insert(k, k)?;
        d.get(&k)?;
    }
    let t0 = Instant::now();
    for k in 0..n {
        d.insert(k, k)?;
    }
    let set = t0.elapsed();
    let t1 = Instant::now();
    for k in 0..n {
        let v = d.get(&k)?;
        ensure!(v == Some(k), "d[{k}] is {v:?}");
    }
    report.send(&(set, t1.elapsed()))?;
    Ok(())
}

/// The per-operation times, in µs, of `n` sets and then `n` gets a forked
/// child does on a manager dict.
fn dict_from_child(n: u64) -> Result<(f64, f64)> {
    let ctx = get_context(StartMethod::Fork);
    let m = ctx.manager()?;
    let d = m.dict::<u64, u64>()?;
    let (reader, writer) = pipe_simplex()?;
    let mut child = start(ctx.process(dict_ops, (d.clone(), n, writer)))?;
    let (set, get): (Duration, Duration) = recv_report(&reader)?;
    join(&mut child)?;
    let items = d.items()?;
    ensure!(
        items.len() as u64 == n && items.iter().all(|&(k, v)| k == v && k < n),
        "the dict holds {} items, not exactly d[k] = k for k < {n}",
        items.len()
    );
    drop(d);
    m.shutdown()?;
    Ok((micros(set) / n as f64, micros(get) / n as f64))
}

pub(crate) fn dict_set_from_child(mode: Mode) -> Result<f64> {
    Ok(dict_from_child(mode.pick(20_000, 5_000))?.0)
}

pub(crate) fn dict_get_from_child(mode: Mode) -> Result<f64> {
    Ok(dict_from_child(mode.pick(20_000, 5_000))?.1)
}
