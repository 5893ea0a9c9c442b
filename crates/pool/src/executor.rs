//! [`ProcessPoolExecutor`]: Python's `concurrent.futures.ProcessPoolExecutor`,
//! with [`as_completed`] and [`wait`].

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mp_process::{Function, Outcome, StartMethod};
use mp_sys::time::Deadline;
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
    /// A call's argument is out of range (Python's `ValueError`), such as a
    /// chunk size of 0.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
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

/// Asks whoever runs a [`Promise`]'s task to drop it; whether it did.
type Canceller = Box<dyn Fn() -> bool + Send + Sync>;

/// The sink of one submitted task.
struct Slot {
    state: AtomicU8,
    m: Mutex<SlotState>,
    cv: Condvar,
    /// For a promise's future: asked first by `cancel`.
    canceller: Option<Canceller>,
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
            run_callback(n);
        }
    }

    /// Runs `n` once the future is done (at once, on this thread, if it is).
    fn on_done(&self, n: Notify) {
        let mut g = self.lock();
        if self.done(&g) {
            drop(g);
            run_callback(n);
        } else {
            g.notify.push(n);
        }
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        let mut g = self.lock();
        while !self.done(&g) {
            g.waiters += 1;
            g = match deadline.remaining() {
                None => self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(left) if left.is_zero() => {
                    g.waiters -= 1;
                    return false;
                }
                Some(left) => self.cv.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0,
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
        if let Some(c) = &self.canceller {
            if self.state.load(Ordering::Acquire) == PENDING && !c() {
                return false;
            }
        }
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
        self.slot.wait_until(Deadline::after(t))
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
        self.slot.wait_until(Deadline::NEVER);
        self.outcome()
    }

    /// [`result`](TaskFuture::result), waiting at most `t`:
    /// [`ExecutorError::Timeout`] after that (the task goes on).
    pub fn result_timeout(&self, t: Duration) -> Result<R, ExecutorError>
    where
        R: DeserializeOwned,
    {
        if self.slot.wait_until(Deadline::after(t)) {
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

    /// [`exception`](TaskFuture::exception), waiting at most `t` (Python's
    /// `exception(timeout)`): `Ok(None)` if the task succeeded, `Ok(Some(e))`
    /// with its error, `Err(ExecutorError::Timeout)` if it is not done after
    /// `t` (the task goes on).
    ///
    /// ```
    /// use mp_pool::{ExecutorError, ProcessPoolExecutor};
    /// use mp_sync::Event;
    /// use std::time::Duration;
    /// /// Holds its worker until `go` is set.
    /// fn held(go: Event) -> bool { go.wait_timeout(Duration::from_secs(30)) }
    /// let go = Event::new()?;
    /// let ex = ProcessPoolExecutor::new(1)?;
    /// let f = ex.submit(held, (go.clone(),))?;
    /// assert_eq!(f.exception_timeout(Duration::from_millis(10)), Err(ExecutorError::Timeout));
    /// go.set();
    /// assert_eq!(f.exception_timeout(Duration::from_secs(30)), Ok(None));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exception_timeout(&self, t: Duration) -> Result<Option<ExecutorError>, ExecutorError>
    where
        R: DeserializeOwned,
    {
        if self.slot.wait_until(Deadline::after(t)) {
            Ok(self.outcome().err())
        } else {
            Err(ExecutorError::Timeout)
        }
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

/// The completing side of a [`TaskFuture`] run by something other than a
/// local [`ProcessPoolExecutor`] (the cluster tier's executor), so that its
/// futures are the same type and [`as_completed`] and [`wait`] take them.
///
/// The future starts as running (it cannot be cancelled from its side);
/// it is done when the promise is fulfilled or cancelled. Dropping a
/// promise unfulfilled fails its future with `TaskError::Closed`.
///
/// ```
/// use mp_pool::executor::{Promise, as_completed};
/// let (p, f) = Promise::<u32>::new();
/// assert!(!f.done() && f.running() && !f.cancel());
/// p.fulfil(Ok(7));
/// assert_eq!(as_completed(&[f.clone()]).next().unwrap().result(), Ok(7));
/// ```
pub struct Promise<R> {
    slot: Option<Arc<Slot>>,
    _r: PhantomData<fn(R)>,
}

impl<R> std::fmt::Debug for Promise<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promise").finish_non_exhaustive()
    }
}

impl<R: serde::Serialize> Promise<R> {
    /// A running future and the promise that completes it.
    pub fn new() -> (Promise<R>, TaskFuture<R>) {
        Promise::make(RUNNING, None)
    }

    /// A pending future that [`TaskFuture::cancel`] can cancel: it asks
    /// `canceller` (which drops the task where it waits, if nothing runs
    /// it yet) and is cancelled when that returns true.
    ///
    /// ```
    /// use mp_pool::executor::Promise;
    /// let (p, f) = Promise::<u32>::cancellable(|| true);
    /// assert!(!f.running() && f.cancel() && f.cancelled());
    /// p.fulfil(Ok(7));
    /// assert!(f.cancelled());
    /// let (_p, g) = Promise::<u32>::cancellable(|| false);
    /// assert!(!g.cancel() && !g.done());
    /// ```
    pub fn cancellable(canceller: impl Fn() -> bool + Send + Sync + 'static) -> (Promise<R>, TaskFuture<R>) {
        Promise::make(PENDING, Some(Box::new(canceller)))
    }

    fn make(state: u8, canceller: Option<Canceller>) -> (Promise<R>, TaskFuture<R>) {
        let slot = Arc::new(Slot {
            canceller,
            state: AtomicU8::new(state),
            m: Mutex::new(SlotState {
                value: None,
                notify: Vec::new(),
                wakers: Vec::new(),
                waiters: 0,
            }),
            cv: Condvar::new(),
        });
        let future = TaskFuture {
            slot: Arc::clone(&slot),
            _r: PhantomData,
        };
        (
            Promise {
                slot: Some(slot),
                _r: PhantomData,
            },
            future,
        )
    }

    /// Marks a pending future running (a worker has its task):
    /// [`TaskFuture::running`] is true until it is done, and
    /// [`TaskFuture::cancel`] no longer succeeds. A future already running,
    /// done or cancelled stays as it is.
    ///
    /// ```
    /// use mp_pool::executor::Promise;
    /// let (p, f) = Promise::<u32>::cancellable(|| true);
    /// assert!(!f.running());
    /// p.set_running();
    /// assert!(f.running() && !f.cancel());
    /// p.fulfil(Ok(7));
    /// assert!(!f.running() && f.result() == Ok(7));
    /// ```
    pub fn set_running(&self) {
        if let Some(slot) = &self.slot {
            let _ = slot
                .state
                .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Completes the future with `r` (a value is stored encoded, as a
    /// worker's reply is; one that cannot be is `TaskError::Encode`).
    pub fn fulfil(mut self, r: Result<R, TaskError>) {
        let reply = r.and_then(|v| {
            mp_codec::encode(&v)
                .map(|frame| Reply {
                    status: crate::task::status::OK,
                    payload: crate::wire::Payload {
                        bytes: frame.into_payload(),
                        fds: Vec::new(),
                    },
                })
                .map_err(|e| TaskError::Encode(format!("the task's result: {e}")))
        });
        if let Some(slot) = self.slot.take() {
            slot.deliver(0, 0, 1, reply);
        }
    }

    /// Completes the future as cancelled (its task was withdrawn).
    pub fn cancel(mut self) {
        if let Some(slot) = self.slot.take() {
            slot.state.store(CANCELLED, Ordering::Release);
            slot.finish(slot.lock());
        }
    }
}

impl<R> Drop for Promise<R> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.deliver(0, 0, 1, Err(TaskError::Closed));
        }
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

/// Runs a done callback; a panic in it is reported on stderr and goes no
/// further, wherever it runs (Python logs the exception of a callback).
fn run_callback(n: Notify) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(n)) {
        eprintln!(
            "multiprocessing: executor: a done callback panicked: {}",
            crate::task::panic_message(&*p)
        );
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
            canceller: None,
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
        self.map_until(f, items, Deadline::NEVER)
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
        self.map_until(f, items, Deadline::after(t))
    }

    fn map_until<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        deadline: Deadline,
    ) -> Result<MapResults<R>, ExecutorError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        Ok(MapResults {
            futs: self.submit_all(f, items)?.into_iter(),
            deadline,
        })
    }

    /// Python's `map(f, items, chunksize=n)`: the items go to the workers
    /// `chunksize` at a time, one task per chunk, which costs far less per
    /// item for short tasks; the results come back one per item, in order.
    /// Each item of a chunk that failed gets the chunk's error. A
    /// `chunksize` of 0 is [`ExecutorError::InvalidArgument`].
    ///
    /// ```
    /// fn pow(x: u64) -> u64 { x.pow(2) }
    /// let ex = mp_pool::ProcessPoolExecutor::new(2)?;
    /// let v: Vec<u64> = ex.map_chunked(pow, 0..10u64, 4)?.collect::<Result<_, _>>()?;
    /// assert_eq!(v, (0..10u64).map(pow).collect::<Vec<_>>());
    /// assert!(ex.map_chunked(pow, 0..10u64, 0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_chunked<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<ChunkedMapResults<R>, ExecutorError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.map_chunks(f, items, chunksize, Deadline::NEVER)
    }

    /// [`map_chunked`](Self::map_chunked) whose results must all be ready
    /// within `t` of this call, as [`map_timeout`](Self::map_timeout).
    pub fn map_chunked_timeout<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
        t: Duration,
    ) -> Result<ChunkedMapResults<R>, ExecutorError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.map_chunks(f, items, chunksize, Deadline::after(t))
    }

    fn map_chunks<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
        deadline: Deadline,
    ) -> Result<ChunkedMapResults<R>, ExecutorError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        if chunksize == 0 {
            return Err(ExecutorError::InvalidArgument("chunksize must be at least 1".into()));
        }
        // Captures only `f`, a zero-sized function: still a task target.
        let run_chunk = move |chunk: Vec<A>| chunk.into_iter().map(f).collect::<Vec<R>>();
        let mut chunks = Vec::new();
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<A> = items.by_ref().take(chunksize).collect();
            let len = chunk.len();
            chunks.push((self.submit(run_chunk, (chunk,))?, len));
        }
        Ok(ChunkedMapResults {
            chunks: chunks.into_iter(),
            current: Vec::new().into_iter(),
            failed: None,
            deadline,
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

    /// Accepts no more tasks. With `cancel_futures`, cancels the tasks not
    /// yet handed to a worker; with `wait`, waits for the rest to finish
    /// and the workers to exit.
    ///
    /// As in Python, the tasks a worker already has (running, or queued to
    /// it) are not cancelled: they run and their futures get their results.
    /// The pool's thread does the cancelling, right after handing the
    /// workers what they can take; with `wait == false` this returns at
    /// once, and a future may still read as pending for that moment.
    ///
    /// ```
    /// use mp_pool::ProcessPoolExecutor;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// let ex = ProcessPoolExecutor::new(2)?;
    /// let fs: Vec<_> = (0..20).map(|_| ex.submit(nap, (50,))).collect::<Result<_, _>>()?;
    /// ex.shutdown(true, true);
    /// let cancelled = fs.iter().filter(|f| f.cancelled()).count();
    /// assert!(cancelled > 0 && cancelled < 20);
    /// assert!(fs.iter().filter(|f| !f.cancelled()).all(|f| f.result() == Ok(50)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        if cancel_futures {
            self.pool.shared().cancel_queued();
        }
        self.pool.close();
        if wait {
            let _ = self.pool.join();
        }
    }

    /// [`shutdown`](ProcessPoolExecutor::shutdown) with `wait`, waiting at
    /// most `t` for the tasks to finish and the workers to exit: whether they
    /// did. After `false` the executor is still shut down (no new tasks), its
    /// remaining tasks go on, and a later call or the drop waits for them.
    ///
    /// ```
    /// use mp_pool::ProcessPoolExecutor;
    /// use mp_sync::Event;
    /// use std::time::Duration;
    /// /// Holds its worker until `go` is set.
    /// fn held(go: Event) -> bool { go.wait_timeout(Duration::from_secs(30)) }
    /// let go = Event::new()?;
    /// let ex = ProcessPoolExecutor::new(1)?;
    /// let f = ex.submit(held, (go.clone(),))?;
    /// assert!(!ex.shutdown_timeout(false, Duration::from_millis(10)));
    /// go.set();
    /// assert!(ex.shutdown_timeout(false, Duration::from_secs(30)));
    /// assert_eq!(f.result(), Ok(true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown_timeout(&self, cancel_futures: bool, t: Duration) -> bool {
        if cancel_futures {
            self.pool.shared().cancel_queued();
        }
        self.pool.close();
        self.pool.join_timeout(t).is_ok()
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
    deadline: Deadline,
}

impl<R: DeserializeOwned> Iterator for MapResults<R> {
    type Item = Result<R, ExecutorError>;

    fn next(&mut self) -> Option<Self::Item> {
        let f = self.futs.next()?;
        Some(match self.deadline.remaining() {
            None => f.result(),
            Some(left) => {
                let r = f.result_timeout(left);
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

/// The results of [`ProcessPoolExecutor::map_chunked`], one per item, in
/// order.
#[derive(Debug)]
pub struct ChunkedMapResults<R> {
    chunks: std::vec::IntoIter<(TaskFuture<Vec<R>>, usize)>,
    current: std::vec::IntoIter<R>,
    /// The error of a failed chunk, and how many of its items have yet to
    /// get it.
    failed: Option<(ExecutorError, usize)>,
    deadline: Deadline,
}

impl<R: DeserializeOwned> Iterator for ChunkedMapResults<R> {
    type Item = Result<R, ExecutorError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                return Some(Ok(r));
            }
            if let Some((e, left)) = self.failed.take() {
                if left > 0 {
                    self.failed = Some((e.clone(), left - 1));
                    return Some(Err(e));
                }
            }
            let (f, len) = self.chunks.next()?;
            let r = match self.deadline.remaining() {
                None => f.result(),
                Some(left) => {
                    let r = f.result_timeout(left);
                    if matches!(r, Err(ExecutorError::Timeout)) {
                        f.cancel();
                    }
                    r
                }
            };
            match r {
                Ok(v) => self.current = v.into_iter(),
                Err(e) => self.failed = Some((e, len)),
            }
        }
    }
}

/// Indices of futures, in the order they complete.
struct Completions {
    m: Mutex<VecDeque<usize>>,
    cv: Condvar,
}

impl Completions {
    /// Watches the futures of `fs`, each once however often it is given (as
    /// Python's `as_completed` takes `set(fs)`); how many that is.
    fn watch<R>(fs: &[TaskFuture<R>]) -> (Arc<Completions>, usize) {
        let c = Arc::new(Completions {
            m: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
        });
        let mut unique = 0;
        for (i, f) in fs.iter().enumerate() {
            if fs[..i].iter().any(|g| Arc::ptr_eq(&g.slot, &f.slot)) {
                continue;
            }
            unique += 1;
            let c2 = Arc::clone(&c);
            f.slot.on_done(Box::new(move || {
                c2.m.lock().unwrap_or_else(|e| e.into_inner()).push_back(i);
                c2.cv.notify_all();
            }));
        }
        (c, unique)
    }

    fn next(&self, deadline: Deadline) -> Option<usize> {
        let mut g = self.m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = g.pop_front() {
                return Some(i);
            }
            g = match deadline.remaining() {
                None => self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(left) if left.is_zero() => return None,
                Some(left) => self.cv.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0,
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
    let (c, n) = Completions::watch(fs);
    (0..n).filter_map(move |_| c.next(Deadline::NEVER).map(|i| &fs[i]))
}

/// [`as_completed`] with a deadline `t` from now: after it, one
/// `Err(ExecutorError::Timeout)` ends the iteration (Python raises
/// `TimeoutError`).
pub fn as_completed_timeout<R>(
    fs: &[TaskFuture<R>],
    t: Duration,
) -> impl Iterator<Item = Result<&TaskFuture<R>, ExecutorError>> {
    let (c, n) = Completions::watch(fs);
    let deadline = Deadline::after(t);
    let mut timed_out = false;
    (0..n).map_while(move |_| {
        if timed_out {
            return None;
        }
        match c.next(deadline) {
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
    let deadline = Deadline::from_timeout(timeout);
    let (c, unique) = Completions::watch(fs);
    let mut done = vec![false; fs.len()];
    let mut ndone = 0;
    let finished = |done: &[bool], ndone: usize| match when {
        ReturnWhen::AllCompleted => ndone == unique,
        ReturnWhen::FirstCompleted => ndone > 0 || fs.is_empty(),
        ReturnWhen::FirstException => {
            ndone == unique
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
