//! What the workloads share: the full / quick counts, the error type, child
//! start and join with a time limit, the children's reports, a clock common
//! to a process and its forked children, medians and unit conversions.

use std::error::Error;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use multiprocessing::{Connection, Process};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A workload's outcome; library errors and failed checks alike end the run.
pub(crate) type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Returns early with an error built from a format string when a check
/// fails.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}
pub(crate) use ensure;

/// How long any wait on a child may last before the run fails: far above
/// what a healthy workload needs, so only a bug reaches it.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// Which of a workload's two counts to use (`full / quick` in the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Full,
    Quick,
}

impl Mode {
    /// `full` or `quick`, as Python's `pick(full, quick)`.
    pub(crate) fn pick<T>(self, full: T, quick: T) -> T {
        match self {
            Mode::Full => full,
            Mode::Quick => quick,
        }
    }
}

/// Starts a helper child (an echo, a producer, a consumer...) as a daemon,
/// so that one left blocked by a failed run is ended when `main` returns, or
/// killed with this process.
pub(crate) fn start(p: Process) -> Result<Process> {
    let mut p = p.daemon(true);
    p.start()?;
    Ok(p)
}

/// Joins a child, waiting at most [`TIMEOUT`]; a child still running then is
/// killed. Either that or an exit status other than 0 is an error.
pub(crate) fn join(p: &mut Process) -> Result<()> {
    p.join_timeout(TIMEOUT)?;
    match p.exitcode() {
        Some(0) => Ok(()),
        Some(code) => Err(format!("{} exited with status {code}", p.get_name()).into()),
        None => {
            p.kill()?;
            p.join()?;
            Err(format!("{} still ran after {TIMEOUT:?}; killed it", p.get_name()).into())
        }
    }
}

/// Joins every child in `ps` (see [`join`]).
pub(crate) fn join_all(ps: &mut [Process]) -> Result<()> {
    ps.iter_mut().try_for_each(join)
}

/// Receives a child's report, waiting at most [`TIMEOUT`] for it.
pub(crate) fn recv_report<T: DeserializeOwned>(conn: &Connection) -> Result<T> {
    ensure!(
        conn.poll_timeout(TIMEOUT)?,
        "no report from the child within {TIMEOUT:?}"
    );
    Ok(conn.recv()?)
}

/// The origin of [`now`], set by [`start_clock`] or the first [`now`].
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Sets the origin of [`now`]. A forked child inherits it as it is, so a
/// parent calls this before it forks the children whose times it compares
/// with its own (a child that set its own origin would not be comparable).
pub(crate) fn start_clock() {
    LazyLock::force(&EPOCH);
}

/// The time since a common origin, on the monotonic clock (what `Instant`
/// reads on Linux: one clock for every process), so that times read in a
/// process and in the children it forks after [`start_clock`] are on one
/// timeline. Python reads `time.perf_counter()` in every process for this;
/// an `Instant` cannot be sent to another process, a `Duration` can.
pub(crate) fn now() -> Duration {
    EPOCH.elapsed()
}

/// A child's working time on the [`now`] timeline: from leaving the start
/// barrier to its last operation.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Span {
    pub(crate) start: Duration,
    pub(crate) end: Duration,
}

/// The time from the barrier's release (the first of the parent, which left
/// it at `parent_start`, and the children to leave it) to the last child's
/// end.
pub(crate) fn overall(parent_start: Duration, spans: &[Span]) -> Result<Duration> {
    let start = spans.iter().map(|s| s.start).fold(parent_start, Duration::min);
    let end = spans.iter().map(|s| s.end).max().unwrap_or(start);
    ensure!(
        end > start,
        "no time passed between the barrier and the last child's end: {spans:?}"
    );
    Ok(end - start)
}

/// Runs `f` `warm` times untimed, then `n` times timing each call on its
/// own, and returns the median of those `n` times. `f` gets the call's index
/// over all `warm + n` calls.
pub(crate) fn median_time(warm: usize, n: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<Duration> {
    for i in 0..warm {
        f(i)?;
    }
    let times = (warm..warm + n)
        .map(|i| {
            let t0 = Instant::now();
            f(i)?;
            Ok(t0.elapsed())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(median(times))
}

/// The median, as Python's `statistics.median`: the mean of the two middle
/// values of an even count.
pub(crate) fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort_unstable();
    match xs.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2,
    }
}

/// `d` in microseconds.
pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `d` in milliseconds.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `count` events over `d`, per second.
pub(crate) fn per_second(count: usize, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64()
}
