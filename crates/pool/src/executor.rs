//! [`ProcessPoolExecutor`]: Python's `concurrent.futures.ProcessPoolExecutor`,
//! with [`as_completed`] and [`wait`].

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mp_process::{Function, Outcome, StartMethod};
use serde::de::DeserializeOwned;

use crate::core::{Reply, Sink};
use crate::error::{PoolError, TaskError};
use crate::pool::{Data, Pool, PoolBuilder};
use crate::result::decode_one;
use crate::task;

/// Why an executor's future has no value.
///
/// ```
/// use mp_pool::{ExecutorError, TaskError};
/// let e = ExecutorError::Task(TaskError::Panicked("boom".into()));
/// assert_eq!(e.to_string(), "the task panicked: boom");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// A worker died, or the initializer failed: the executor cannot run
    /// tasks any more, and every pending and new task gets this (Python's
    /// `BrokenProcessPool`).
    #[error("a worker process died or its initializer failed: the executor is broken and runs no more tasks")]
    BrokenProcessPool,
    /// The future was cancelled before it ran.
    #[error("the task was cancelled before it ran")]
    Cancelled,
    /// The result was not ready within the timeout (the task goes on).
    #[error("the result was not ready within the timeout")]
    Timeout,
    /// The task failed: it panicked, or its arguments or result could not
    /// be encoded; or the executor was shut down before it could run.
    #[error(transparent)]
    Task(TaskError),
}

impl From<TaskError> for ExecutorError {
    fn from(e: TaskError) -> ExecutorError {
        match e {
            TaskError::WorkerLost { .. } | TaskError::Initializer(_) => ExecutorError::BrokenProcessPool,
            TaskError::Timeout => ExecutorError::Timeout,
            e => ExecutorError::Task(e),
        }
    }
}

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;

type Notify = Box<dyn FnOnce() + Send>;

/// The sink of one submitted task.
struct Slot {
    state: AtomicU8,
    m: Mutex<SlotState>,
    cv: Condvar,
}

struct SlotState {
    value: Option<Result<Reply, TaskError>>,
    /// Done callbacks and the wakers of `await`s.
    notify: Vec<Notify>,
    wakers: Vec<Waker>,
    waiters: usize,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn done(&self, g: &SlotState) -> bool {
        g.value.is_some() || self.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Marks it done: wakes the waiters, then runs the callbacks (outside
    /// the lock, on this thread).
    fn finish(&self, mut g: MutexGuard<'_, SlotState>) {
        let notify = std::mem::take(&mut g.notify);
        let wakers = std::mem::take(&mut g.wakers);
        if g.waiters > 0 {
            self.cv.notify_all();
        }
        drop(g);
        for w in wakers {
            w.wake();
        }
        for n in notify {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(n)) {
                eprintln!(
                    "multiprocessing: executor: a done callback panicked: {}",
                    crate::task::panic_message(&*p)
                );
            }
        }
    }

    /// Runs `n` once the future is done (at once if it is).
    fn on_done(&self, n: Notify) {
        let mut g = self.lock();
        if self.done(&g) {
            drop(g);
            n();
        } else {
            g.notify.push(n);
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut g = self.lock();
        while !self.done(&g) {
            g.waiters += 1;
            g = match deadline {
                None => self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        g.waiters -= 1;
                        return false;
                    }
                    self.cv.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
            g.waiters -= 1;
        }
        true
    }
}

impl Sink for Slot {
    fn deliver(&self, _tag: usize, _lo: u32, _hi: u32, r: Result<Reply, TaskError>) {
        let mut g = self.lock();
        if g.value.is_some() || self.state.load(Ordering::Acquire) == CANCELLED {
            return;
        }
        g.value = Some(r);
        self.finish(g);
    }

    fn start(&self) -> bool {
        self.state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn cancel(&self) -> bool {
        match self
            .state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.finish(self.lock());
                true
            }
            Err(s) => s == CANCELLED,
        }
    }
}

/// A submitted task's future result: Python's `concurrent.futures.Future`.
/// Also a [`std::future::Future`], for `.await` in async code.
///
/// ```
/// use mp_pool::ProcessPoolExecutor;
/// fn cube(x: i64) -> i64 { x * x * x }
/// let ex = ProcessPoolExecutor::new(2)?;
/// let f = ex.submit(cube, (3,))?;
/// assert_eq!(f.result()?, 27);
/// assert!(f.done() && !f.cancelled());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TaskFuture<R> {
    slot: Arc<Slot>,
    _r: PhantomData<fn() -> R>,
}

impl<R> Clone for TaskFuture<R> {
    fn clone(&self) -> Self {
        TaskFuture {
            slot: Arc::clone(&self.slot),
            _r: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for TaskFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match (self.done(), self.slot.state.load(Ordering::Acquire)) {
            (_, CANCELLED) => "cancelled",
            (true, _) => "finished",
            (false, RUNNING) => "running",
            _ => "pending",
        };
        f.debug_struct("TaskFuture").field("state", &state).finish()
    }
}

impl<R> TaskFuture<R> {
    /// Whether it finished or was cancelled.
    pub fn done(&self) -> bool {
        self.slot.done(&self.slot.lock())
    }

    /// Whether a worker has it and it is not done.
    pub fn running(&self) -> bool {
        self.slot.state.load(Ordering::Acquire) == RUNNING && !self.done()
    }

    /// Whether it was cancelled.
    pub fn cancelled(&self) -> bool {
        self.slot.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Cancels it if no worker has it yet; whether it is cancelled.
    ///
    /// ```
    /// use mp_pool::{ExecutorError, ProcessPoolExecutor};
    /// use mp_sync::Event;
    /// /// Holds its worker until `go` is set.
    /// fn held(go: Event) { go.wait_timeout(std::time::Duration::from_secs(30)); }
    /// let go = Event::new()?;
    /// let ex = ProcessPoolExecutor::new(1)?;
    /// let running = ex.submit(held, (go.clone(),))?;
    /// let queued: Vec<_> = (0..4).map(|_| ex.submit(held, (go.clone(),))).collect::<Result<_, _>>()?;
    /// let last = queued.last().unwrap();
    /// assert!(last.cancel());
    /// go.set();
    /// assert_eq!(last.result(), Err(ExecutorError::Cancelled));
    /// assert!(running.result().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self) -> bool {
        self.slot.cancel()
    }

    /// Waits at most `t` for it to be done; whether it is.
    pub fn wait_timeout(&self, t: Duration) -> bool {
        self.slot.wait_until(Some(Instant::now() + t))
    }

    fn outcome(&self) -> Result<R, ExecutorError>
    where
        R: DeserializeOwned,
    {
        if self.cancelled() {
            return Err(ExecutorError::Cancelled);
        }
        let g = self.slot.lock();
        match &g.value {
            Some(v) => decode_one(v).map_err(ExecutorError::from),
            None => Err(ExecutorError::Timeout),
        }
    }

    /// Waits for the task and returns its value.
    pub fn result(&self) -> Result<R, ExecutorError>
    where
        R: DeserializeOwned,
    {
        self.slot.wait_until(None);
        self.outcome()
    }

    /// [`result`](TaskFuture::result), waiting at most `t`:
    /// [`ExecutorError::Timeout`] after that (the task goes on).
    pub fn result_timeout(&self, t: Duration) -> Result<R, ExecutorError>
    where
        R: DeserializeOwned,
    {
        if self.slot.wait_until(Some(Instant::now() + t)) {
            self.outcome()
        } else {
            Err(ExecutorError::Timeout)
        }
    }

    /// Waits for the task; its error, or `None` if it succeeded.
    pub fn exception(&self) -> Option<ExecutorError>
    where
        R: DeserializeOwned,
    {
        self.result().err()
    }

    /// Runs `f` with this future once it is done: at once, on this thread,
    /// if it is; otherwise on the thread that completes it (the executor's
    /// result thread, or the one that cancels it).
    pub fn add_done_callback(&self, f: impl FnOnce(&TaskFuture<R>) + Send + 'static)
    where
        R: 'static,
    {
        let me = self.clone();
        self.slot.on_done(Box::new(move || f(&me)));
    }
}

impl<R: DeserializeOwned> Future for TaskFuture<R> {
    type Output = Result<R, ExecutorError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut g = self.slot.lock();
        if self.slot.done(&g) {
            drop(g);
            return Poll::Ready(self.outcome());
        }
        if !g.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            g.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Settings for a [`ProcessPoolExecutor`].
#[derive(Debug)]
#[must_use = "a builder does nothing until .build()"]
pub struct ExecutorBuilder {
    inner: PoolBuilder,
}

impl ExecutorBuilder {
    /// Worker processes (default: [`mp_process::cpu_count`]).
    pub fn max_workers(self, n: usize) -> Self {
        ExecutorBuilder {
            inner: self.inner.processes(n),
        }
    }

    /// Runs `f(args)` in each worker when it starts; if it fails, the
    /// executor is broken.
    pub fn initializer<F, A>(self, f: F, args: A) -> Self
    where
        F: Function<A, Output: Outcome>,
        A: Data,
    {
        ExecutorBuilder {
            inner: self.inner.initializer(f, args),
        }
    }

    /// Replaces each worker after `n` tasks.
    pub fn max_tasks_per_child(self, n: usize) -> Self {
        ExecutorBuilder {
            inner: self.inner.maxtasksperchild(n),
        }
    }

    /// The start method for the workers.
    pub fn start_method(self, m: StartMethod) -> Self {
        ExecutorBuilder {
            inner: self.inner.start_method(m),
        }
    }

    /// The start method of `ctx` for the workers.
    pub fn context(self, ctx: mp_process::Context) -> Self {
        self.start_method(ctx.start_method())
    }

    /// Starts the workers.
    pub fn build(self) -> Result<ProcessPoolExecutor, PoolError> {
        Ok(ProcessPoolExecutor {
            pool: self.inner.break_on_loss().build()?,
        })
    }
}

/// Python's `concurrent.futures.ProcessPoolExecutor`: tasks go in with
/// [`submit`](ProcessPoolExecutor::submit), results come back as
/// [`TaskFuture`]s. A worker that dies breaks the executor, as in Python:
/// pending and new tasks get [`ExecutorError::BrokenProcessPool`].
/// Dropping it is `shutdown(true, false)`, as leaving Python's `with`
/// block.
///
/// ```
/// use mp_pool::ProcessPoolExecutor;
/// fn square(x: u32) -> u32 { x * x }
/// let ex = ProcessPoolExecutor::new(2)?;
/// let v: Vec<u32> = ex.map(square, 0..5)?.collect::<Result<_, _>>()?;
/// assert_eq!(v, vec![0, 1, 4, 9, 16]);
/// ex.shutdown(true, false);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ProcessPoolExecutor {
    pool: Pool,
}

impl ProcessPoolExecutor {
    /// An executor with `max_workers` processes.
    pub fn new(max_workers: usize) -> Result<ProcessPoolExecutor, PoolError> {
        ProcessPoolExecutor::builder().max_workers(max_workers).build()
    }

    /// An [`ExecutorBuilder`] with Python's defaults.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder { inner: Pool::builder() }
    }

    /// The process ids of the workers now running.
    pub fn pids(&self) -> Vec<u32> {
        self.pool.pids()
    }

    /// Queues `f(args)`.
    pub fn submit<F, A>(&self, f: F, args: A) -> Result<TaskFuture<F::Output>, ExecutorError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        let work = task::task(f, &args)?;
        let slot = Arc::new(Slot {
            state: AtomicU8::new(PENDING),
            m: Mutex::new(SlotState {
                value: None,
                notify: Vec::new(),
                wakers: Vec::new(),
                waiters: 0,
            }),
            cv: Condvar::new(),
        });
        let sink: Arc<dyn Sink> = slot.clone();
        self.pool.shared().submit([(0, work)], &sink, false)?;
        Ok(TaskFuture { slot, _r: PhantomData })
    }

    /// `f` over `items`: every task is queued now; the iterator yields the
    /// results in order, each as it is ready.
    pub fn map<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<MapResults<R>, ExecutorError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        Ok(MapResults {
            futs: self.submit_all(f, items)?.into_iter(),
            deadline: None,
        })
    }

    /// [`map`](ProcessPoolExecutor::map) whose results must all be ready
    /// within `t` of this call: after that, each result not ready is
    /// [`ExecutorError::Timeout`] and its task is cancelled if it has not
    /// started (as Python's `map(timeout=)`).
    pub fn map_timeout<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        t: Duration,
    ) -> Result<MapResults<R>, ExecutorError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        let deadline = Instant::now() + t;
        Ok(MapResults {
            futs: self.submit_all(f, items)?.into_iter(),
            deadline: Some(deadline),
        })
    }

    fn submit_all<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<TaskFuture<R>>, ExecutorError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        items.into_iter().map(|a| self.submit(f, (a,))).collect()
    }

    /// Accepts no more tasks. With `cancel_futures`, cancels the tasks no
    /// worker has started; with `wait`, waits for the rest to finish and
    /// the workers to exit.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        if cancel_futures {
            self.pool.shared().cancel_queued();
        }
        self.pool.close();
        if wait {
            let _ = self.pool.join();
        }
    }
}

impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

/// The results of [`ProcessPoolExecutor::map`], in order.
#[derive(Debug)]
pub struct MapResults<R> {
    futs: std::vec::IntoIter<TaskFuture<R>>,
    deadline: Option<Instant>,
}

impl<R: DeserializeOwned> Iterator for MapResults<R> {
    type Item = Result<R, ExecutorError>;

    fn next(&mut self) -> Option<Self::Item> {
        let f = self.futs.next()?;
        Some(match self.deadline {
            None => f.result(),
            Some(d) => {
                let r = f.result_timeout(d.saturating_duration_since(Instant::now()));
                if matches!(r, Err(ExecutorError::Timeout)) {
                    f.cancel();
                }
                r
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.futs.size_hint()
    }
}

/// Indices of futures, in the order they complete.
struct Completions {
    m: Mutex<VecDeque<usize>>,
    cv: Condvar,
}

impl Completions {
    fn watch<R>(fs: &[TaskFuture<R>]) -> Arc<Completions> {
        let c = Arc::new(Completions {
            m: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
        });
        for (i, f) in fs.iter().enumerate() {
            let c2 = Arc::clone(&c);
            f.slot.on_done(Box::new(move || {
                c2.m.lock().unwrap_or_else(|e| e.into_inner()).push_back(i);
                c2.cv.notify_all();
            }));
        }
        c
    }

    fn next(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut g = self.m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = g.pop_front() {
                return Some(i);
            }
            g = match deadline {
                None => self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.cv.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }
}

/// The futures in the order they complete (those already done first):
/// Python's `concurrent.futures.as_completed`.
///
/// ```
/// use mp_pool::{executor, ProcessPoolExecutor};
/// use mp_sync::Event;
/// /// Returns `x` once `go` is set.
/// fn held(go: Event, x: u64) -> u64 { go.wait_timeout(std::time::Duration::from_secs(30)); x }
/// fn at_once(x: u64) -> u64 { x }
/// let go = Event::new()?;
/// let ex = ProcessPoolExecutor::new(2)?;
/// let fs = vec![ex.submit(held, (go.clone(), 300))?, ex.submit(at_once, (1,))?];
/// let mut done = executor::as_completed(&fs);
/// assert_eq!(done.next().unwrap().result()?, 1);
/// go.set();
/// assert_eq!(done.next().unwrap().result()?, 300);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn as_completed<R>(fs: &[TaskFuture<R>]) -> impl Iterator<Item = &TaskFuture<R>> {
    let c = Completions::watch(fs);
    (0..fs.len()).filter_map(move |_| c.next(None).map(|i| &fs[i]))
}

/// [`as_completed`] with a deadline `t` from now: after it, one
/// `Err(ExecutorError::Timeout)` ends the iteration (Python raises
/// `TimeoutError`).
pub fn as_completed_timeout<R>(
    fs: &[TaskFuture<R>],
    t: Duration,
) -> impl Iterator<Item = Result<&TaskFuture<R>, ExecutorError>> {
    let c = Completions::watch(fs);
    let deadline = Instant::now() + t;
    let mut timed_out = false;
    (0..fs.len()).map_while(move |_| {
        if timed_out {
            return None;
        }
        match c.next(Some(deadline)) {
            Some(i) => Some(Ok(&fs[i])),
            None => {
                timed_out = true;
                Some(Err(ExecutorError::Timeout))
            }
        }
    })
}

/// When [`wait`] returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum ReturnWhen {
    /// As soon as any future is done.
    FirstCompleted,
    /// As soon as any future fails (or all are done).
    FirstException,
    /// When all are done.
    AllCompleted,
}

/// What [`wait`] found: indices into the futures given.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct DoneAndNotDone {
    /// Futures that are done.
    pub done: Vec<usize>,
    /// Futures that are not.
    pub not_done: Vec<usize>,
}

/// Waits, at most `timeout` (`None`: as long as it takes), until `when`:
/// Python's `concurrent.futures.wait`.
///
/// ```
/// use mp_pool::executor::{wait, ReturnWhen};
/// use mp_pool::ProcessPoolExecutor;
/// use mp_sync::Event;
/// use std::time::Duration;
/// /// Holds its worker until `go` is set.
/// fn held(go: Event) { go.wait_timeout(Duration::from_secs(30)); }
/// fn at_once() {}
/// let go = Event::new()?;
/// let ex = ProcessPoolExecutor::new(2)?;
/// let fs = vec![ex.submit(at_once, ())?, ex.submit(held, (go.clone(),))?];
/// let r = wait(&fs, Some(Duration::from_secs(10)), ReturnWhen::FirstCompleted);
/// assert_eq!((r.done, r.not_done), (vec![0], vec![1]));
/// go.set();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait<R: DeserializeOwned>(fs: &[TaskFuture<R>], timeout: Option<Duration>, when: ReturnWhen) -> DoneAndNotDone {
    let deadline = timeout.map(|t| Instant::now() + t);
    let c = Completions::watch(fs);
    let mut done = vec![false; fs.len()];
    let mut ndone = 0;
    let finished = |done: &[bool], ndone: usize| match when {
        ReturnWhen::AllCompleted => ndone == fs.len(),
        ReturnWhen::FirstCompleted => ndone > 0 || fs.is_empty(),
        ReturnWhen::FirstException => {
            ndone == fs.len()
                || done
                    .iter()
                    .zip(fs)
                    .any(|(d, f)| *d && !f.cancelled() && f.result_timeout(Duration::ZERO).is_err())
        }
    };
    while !finished(&done, ndone) {
        match c.next(deadline) {
            Some(i) => {
                done[i] = true;
                ndone += 1;
            }
            None => break,
        }
    }
    let mut r = DoneAndNotDone::default();
    for (i, f) in fs.iter().enumerate() {
        if done[i] || f.done() {
            r.done.push(i);
        } else {
            r.not_done.push(i);
        }
    }
    r
}
