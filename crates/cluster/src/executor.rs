//! `cluster::Executor`: `concurrent.futures`' executor over the worker hosts
//! of a cluster, whose futures are the local executor's [`TaskFuture`].

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mp_pool::executor::Promise;
use mp_pool::{Data, ExecutorError, TaskError, TaskFuture};
use mp_process::Function;

use crate::pool::{CState, Collector, End, Pool, Shared, decode_items, default_chunksize, finish_one};
use crate::wire::{self, Fail};
use crate::{Cluster, ClusterError};

/// A task's failure as the local pool's [`TaskError`].
fn task_error(e: ClusterError) -> TaskError {
    match e {
        ClusterError::Task(t) => t,
        ClusterError::Closed => TaskError::Closed,
        e @ ClusterError::DataLost { .. } => TaskError::Lost(e.to_string()),
        other => TaskError::Decode(other.to_string()),
    }
}

/// Python's `ProcessPoolExecutor`, across the worker hosts of a cluster.
/// Made by [`Cluster::executor`].
///
/// Its futures are [`mp_pool::TaskFuture`]s, so
/// `mp_pool::executor::as_completed` and `wait` take them, as they take a
/// local executor's. `cancel()` on a future succeeds while no worker host
/// has claimed its task (a task is claimed when a host's local process
/// reads it): the task then never runs. Once claimed, `cancel()`
/// returns false and the result arrives. `shutdown(_, true)` cancels every
/// unclaimed task, as Python's does. A future reads as `running()` once
/// its task has run for 50 ms on a host (the host's process says so then,
/// not at the start: a short task goes from pending to done).
///
/// ```no_run
/// use mp_pool::executor::as_completed;
/// fn cube(x: i64) -> i64 { x * x * x }
/// let c = mp_cluster::Cluster::connect("redis://10.0.0.5:6379/0")?;
/// let ex = c.executor()?;
/// let fs = vec![ex.submit(cube, (2,))?, ex.submit(cube, (3,))?];
/// let total: i64 = as_completed(&fs).map(|f| f.result().unwrap()).sum();
/// assert_eq!(total, 35);
/// ex.shutdown(true, false);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Executor {
    pool: Pool,
    /// Dropped to stop the watchdog (its wait ends at once).
    stop: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    watchdog: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// How often the watchdog looks for a live worker host.
const WATCH: Duration = Duration::from_secs(1);

impl Cluster {
    /// An executor whose tasks run on the cluster's worker hosts.
    ///
    /// While its futures wait, a watchdog thread checks every second that
    /// a worker host of this build lives; when none has for the cluster's
    /// `worker_wait`, the unfinished tasks are withdrawn and their futures
    /// fail with `ExecutorError::BrokenProcessPool` (Python's
    /// `BrokenProcessPool`). A server that does not answer (restarting)
    /// counts as neither: the futures wait for it (bound a wait with
    /// `result_timeout`), and if it comes back without their tasks they
    /// fail with `ExecutorError::Task(TaskError::Lost)`.
    pub fn executor(&self) -> Result<Executor, ClusterError> {
        let pool = self.pool()?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let watchdog = {
            let shared = Arc::clone(&pool.shared);
            std::thread::Builder::new()
                .name("mp-cluster-executor".into())
                .spawn(move || watch(&shared, &stopped))
                .map_err(|e| ClusterError::Encode(format!("cannot start the executor's watchdog thread: {e}")))?
        };
        Ok(Executor {
            pool,
            stop: std::sync::Mutex::new(Some(stop)),
            watchdog: std::sync::Mutex::new(Some(watchdog)),
        })
    }
}

/// The watchdog: fails the waiting futures once no worker host of this
/// build has lived for the cluster's `worker_wait`.
fn watch(shared: &Shared, stopped: &std::sync::mpsc::Receiver<()>) {
    let mut none_since: Option<Instant> = None;
    // Every `WATCH`, until the executor drops the sending end.
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(WATCH) {
        if !shared.outstanding() {
            none_since = None;
            continue;
        }
        let build = shared.cluster.build_id();
        let alive = match shared.cluster.workers() {
            Ok(w) => w.iter().any(|w| w.build == build),
            // Redis away (restarting): nothing known; the futures wait for
            // it (the result reader fails them if it comes back without
            // their tasks).
            Err(_) => continue,
        };
        if alive {
            none_since = None;
        } else if none_since.get_or_insert_with(Instant::now).elapsed() >= shared.cluster.settings().worker_wait {
            shared.withdraw_as(|| End::Abandoned);
            none_since = None;
        }
    }
}

impl Executor {
    /// Python's `submit(f, *args)`: queues `f(args)` on the worker hosts.
    /// Fails at once with [`ClusterError::NoWorkers`] or `BuildMismatch`
    /// when no worker host of this build lives (after the cluster's
    /// `worker_wait`), and with [`ClusterError::Closed`] after `shutdown`.
    pub fn submit<F, A>(&self, f: F, args: A) -> Result<TaskFuture<F::Output>, ClusterError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        let entry = Pool::entry::<F, A>(f)?;
        let shared = &self.pool.shared;
        shared.cluster.live_processes()?;
        let chunk = wire::encode(&[args][..]).map_err(ClusterError::Encode)?;
        let c = Collector::new(1);
        let (weak_shared, weak_c) = (Arc::downgrade(shared), Arc::downgrade(&c));
        let (promise, future) =
            Promise::<F::Output>::cancellable(move || match (weak_shared.upgrade(), weak_c.upgrade()) {
                (Some(s), Some(c)) => s.cancel(&c).unwrap_or(false),
                _ => false,
            });
        // The promise, shared by the start mark and the end.
        let promise = Arc::new(Mutex::new(Some(promise)));
        let at_start = Arc::clone(&promise);
        c.on_start(Box::new(move || {
            if let Some(p) = at_start.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                p.set_running();
            }
        }));
        c.on_done(Box::new(move |end: End<'_>| {
            let Some(promise) = promise.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return;
            };
            match end {
                End::Complete(s) => promise.fulfil(finish_one::<F::Output>(s).map_err(task_error)),
                End::Withdrawn | End::Cancelled => promise.cancel(),
                End::Abandoned => promise.fulfil(Err(abandoned())),
                End::Lost(why) => promise.fulfil(Err(TaskError::Lost(why.to_string()))),
            }
        }));
        shared.submit(entry, vec![chunk], &c, 0)?;
        Ok(future)
    }

    /// Python's `map(f, items)`: the items go out in chunks (four per
    /// worker process of the live hosts); the results come back in order,
    /// each an `Err` for an item that failed.
    pub fn map<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<MapResults<R>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        let entry = Pool::entry::<F, (A,)>(f)?;
        let shared = &self.pool.shared;
        let processes = shared.cluster.live_processes()?;
        let items: Vec<A> = items.into_iter().collect();
        let size = default_chunksize(items.len(), processes);
        let mut chunks = Vec::new();
        for part in items.chunks(size) {
            let bytes = wire::encode(part).map_err(ClusterError::Encode)?;
            let (promise, future) = Promise::<Vec<Result<R, Fail>>>::new();
            let c = Collector::new(1);
            c.on_done(Box::new(move |end: End<'_>| match end {
                End::Complete(s) => promise.fulfil(decode_chunk::<R>(s)),
                End::Withdrawn | End::Cancelled => promise.cancel(),
                End::Abandoned => promise.fulfil(Err(abandoned())),
                End::Lost(why) => promise.fulfil(Err(TaskError::Lost(why.to_string()))),
            }));
            shared.submit(entry, vec![bytes], &c, 0)?;
            chunks.push((future, part.len()));
        }
        Ok(MapResults {
            chunks: chunks.into_iter(),
            current: Vec::new().into_iter(),
            failed: None,
        })
    }

    /// Python's `shutdown(wait, cancel_futures)`: no new tasks; with
    /// `cancel_futures`, the tasks no worker host has claimed are cancelled
    /// (they never run; their futures are cancelled), and those claimed
    /// run on and complete their futures; with `wait`, waits until every
    /// task not cancelled has its result (or no worker host of this build
    /// is left, after the cluster's `worker_wait`). When Redis cannot be
    /// reached to cancel, every unfinished future is cancelled here.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.pool.close();
        if cancel_futures && self.pool.shared.cancel_unclaimed().is_err() {
            self.pool.terminate();
        }
        if wait {
            let _ = self.pool.join();
        }
    }
}

impl Drop for Executor {
    /// As Python's `with` block ends: `shutdown(true, false)`.
    fn drop(&mut self) {
        self.shutdown(true, false);
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(w) = self.watchdog.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }
}

/// The error of a task given up because no worker host of its build is
/// left: the local pool's "worker lost", which the executor reports as
/// `BrokenProcessPool`.
fn abandoned() -> TaskError {
    TaskError::WorkerLost { exitcode: -9 }
}

fn decode_chunk<R: Data>(s: &CState) -> Result<Vec<Result<R, Fail>>, TaskError> {
    let outcome = s.got.get(&0).ok_or(TaskError::Closed)?;
    decode_items::<R>(outcome).map_err(task_error)
}

/// The future of one chunk of a map: each item's value or failure.
type ChunkFuture<R> = TaskFuture<Vec<Result<R, Fail>>>;

/// The results of [`Executor::map`], one per item, in order.
pub struct MapResults<R> {
    chunks: std::vec::IntoIter<(ChunkFuture<R>, usize)>,
    current: std::vec::IntoIter<Result<R, Fail>>,
    /// The error of a failed chunk, and how many of its items have yet to
    /// get it.
    failed: Option<(ExecutorError, usize)>,
}

impl<R> std::fmt::Debug for MapResults<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapResults")
            .field("chunks_left", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl<R: Data> Iterator for MapResults<R> {
    type Item = Result<R, ExecutorError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                return Some(r.map_err(|f| ExecutorError::from(task_error(f.into()))));
            }
            if let Some((e, left)) = self.failed.take() {
                if left > 0 {
                    self.failed = Some((e.clone(), left - 1));
                    return Some(Err(e));
                }
            }
            let (f, len) = self.chunks.next()?;
            match f.result() {
                Ok(v) => self.current = v.into_iter(),
                Err(e) => self.failed = Some((e, len)),
            }
        }
    }
}
