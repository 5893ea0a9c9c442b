//! [`Pool`]: Python's `multiprocessing.Pool`.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mp_process::{Function, Outcome, StartMethod};
use mp_sys::time::Deadline;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::core::{self, Config, Phase, Shared, Sink};
use crate::error::{PoolError, TaskError};
use crate::result::{AsyncResult, Chunks, Feed, IMap, One, collect_map, decode_one};
use crate::task::{self, Work};

/// What a task's arguments, items and results must be: they cross to a
/// worker process and back.
pub trait Data: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Data for T {}

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Tasks are `fn` items (or closures that capture nothing) with
/// serde-encodable arguments and results; handles (queues, locks, shared
/// values, manager proxies) are arguments like any other. Dropping the pool
/// terminates it, as leaving Python's `with Pool() as p:` block does.
///
/// ```
/// use mp_pool::Pool;
/// fn square(x: u64) -> u64 { x * x }
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.map(square, 0..5)?, vec![0, 1, 4, 9, 16]);
/// assert_eq!(pool.apply(square, (12,))?, 144);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.shared.cfg.processes)
            .field("start_method", &self.shared.cfg.method)
            .field("phase", &self.shared.lock().phase)
            .finish()
    }
}

/// Settings for a [`Pool`]: Python's `Pool(processes, initializer,
/// initargs, maxtasksperchild, context)`.
///
/// ```
/// use mp_pool::Pool;
/// use mp_process::StartMethod;
/// fn setup(greeting: String) { assert_eq!(greeting, "hi"); }
/// fn pid() -> u32 { std::process::id() }
/// let pool = Pool::builder()
///     .processes(2)
///     .initializer(setup, ("hi".to_string(),))
///     .maxtasksperchild(1)
///     .start_method(StartMethod::Spawn)
///     .build()?;
/// let a = pool.apply(pid, ())?;
/// let b = pool.apply(pid, ())?;
/// assert_ne!(a, b); // one task per worker, then a fresh one
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until .build()"]
pub struct PoolBuilder {
    processes: Option<usize>,
    maxtasks: Option<usize>,
    method: Option<StartMethod>,
    init: Option<Result<Work, TaskError>>,
    break_on_loss: bool,
}

impl PoolBuilder {
    /// Worker processes (default: [`mp_process::cpu_count`]).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(args)` in each worker when it starts. An initializer that
    /// panics or returns `Err` leaves the pool unable to run tasks: they
    /// fail with [`TaskError::Initializer`].
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: Function<A, Output: Outcome>,
        A: Data,
    {
        self.init = Some(task::init(f, &args));
        self
    }

    /// Replaces each worker after it has run `n` tasks (a map's chunk counts
    /// as one), as Python's `maxtasksperchild`.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// The start method for the workers (default: the current one).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.method = Some(m);
        self
    }

    /// The start method of `ctx` for the workers.
    pub fn context(self, ctx: mp_process::Context) -> Self {
        self.start_method(ctx.start_method())
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, PoolError> {
        let processes = self.processes.unwrap_or_else(mp_process::cpu_count);
        if processes == 0 {
            return Err(PoolError::InvalidArgument("a pool needs at least one process".into()));
        }
        if self.maxtasks == Some(0) {
            return Err(PoolError::InvalidArgument("maxtasksperchild must be at least 1".into()));
        }
        let init = match self.init {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => return Err(PoolError::InvalidArgument(format!("the initializer: {e}"))),
        };
        let (shared, thread) = core::start(Config {
            processes,
            maxtasks: self.maxtasks.map_or(0, |n| n as u64),
            method: match self.method {
                Some(m) => m,
                // A misspelt MP_START_METHOD is an error here too.
                None => mp_process::try_get_start_method()?,
            },
            init,
            break_on_loss: self.break_on_loss,
        })?;
        Ok(Pool {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A worker that dies breaks the pool, as an executor's does.
    pub(crate) fn break_on_loss(mut self) -> Self {
        self.break_on_loss = true;
        self
    }
}

/// Python's default chunk size for `map`: the items spread over four
/// chunks per worker.
fn default_chunksize(items: usize, processes: usize) -> usize {
    items.div_ceil(processes * 4).max(1)
}

impl Pool {
    /// A pool of `processes` workers started with the current start method.
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Pool::builder().processes(processes).build()
    }

    /// A [`PoolBuilder`] with Python's defaults.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: None,
            maxtasks: None,
            method: None,
            init: None,
            break_on_loss: false,
        }
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.shared.cfg.processes
    }

    /// The process ids of the workers now running.
    pub fn pids(&self) -> Vec<u32> {
        self.shared.pids()
    }

    /// Runs `f(args)` in a worker and waits for its value.
    ///
    /// ```
    /// fn add(a: i32, b: i32) -> i32 { a + b }
    /// let pool = mp_pool::Pool::new(1)?;
    /// assert_eq!(pool.apply(add, (2, 3))?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<F, A>(&self, f: F, args: A) -> Result<F::Output, TaskError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        self.apply_async(f, args)?.get()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Queues `f(args)`; its result arrives in the [`AsyncResult`].
    pub fn apply_async<F, A>(&self, f: F, args: A) -> Result<AsyncResult<F::Output>, TaskError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        let work = task::task(f, &args)?;
        let sink = One::new(None);
        let dyn_sink: Arc<dyn Sink> = sink.clone();
        self.shared.submit([(0, work)], &dyn_sink, false)?;
        Ok(AsyncResult::one(sink))
    }

    /// [`apply_async`](Pool::apply_async) with callbacks: `callback` gets
    /// the value, `error_callback` the error. They run on the pool's result
    /// thread, in completion order, before `get` returns; they must not
    /// wait for other results of this pool.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// fn double(x: u32) -> u32 { x * 2 }
    /// let pool = mp_pool::Pool::new(2)?;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// let r = pool.apply_async_with(double, (21,), move |v: &u32| s.lock().unwrap().push(*v), |_e| {})?;
    /// r.wait();
    /// assert_eq!(*seen.lock().unwrap(), vec![42]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_async_with<F, A>(
        &self,
        f: F,
        args: A,
        callback: impl FnOnce(&F::Output) + Send + 'static,
        error_callback: impl FnOnce(&TaskError) + Send + 'static,
    ) -> Result<AsyncResult<F::Output>, TaskError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        let work = task::task(f, &args)?;
        let sink = One::new(Some(Box::new(move |r| match decode_one::<F::Output>(r) {
            Ok(v) => callback(&v),
            Err(e) => error_callback(&e),
        })));
        let dyn_sink: Arc<dyn Sink> = sink.clone();
        self.shared.submit([(0, work)], &dyn_sink, false)?;
        Ok(AsyncResult::one(sink))
    }

    /// Queues `items` in chunks of `chunksize` (default: Python's, from
    /// their count) for `f`; returns the sink and the number of chunks.
    ///
    /// An iterator that knows its exact length (a range, a vector) is not
    /// collected first: each chunk's items are taken from it into one
    /// buffer, reused from chunk to chunk, encoded and queued, so the
    /// workers start on the first chunks while the caller encodes the rest,
    /// and the items never exist all at once as values. Any other is
    /// collected first, as Python's `list(iterable)`.
    fn submit_iter<F, A>(
        &self,
        sink: Arc<Chunks>,
        f: F,
        items: impl Iterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<(Arc<Chunks>, usize), TaskError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        if chunksize == Some(0) {
            return Err(TaskError::Encode("chunksize must be at least 1".into()));
        }
        match items.size_hint() {
            (lo, Some(hi)) if lo == hi => {
                let cs = chunksize.unwrap_or_else(|| default_chunksize(lo, self.processes()));
                self.submit_lazily(sink, f, items, cs)
            }
            _ => {
                let all: Vec<A> = items.collect();
                let cs = chunksize.unwrap_or_else(|| default_chunksize(all.len(), self.processes()));
                self.submit_lazily(sink, f, all.into_iter(), cs)
            }
        }
    }

    fn submit_lazily<F, A>(
        &self,
        sink: Arc<Chunks>,
        f: F,
        mut items: impl Iterator<Item = A>,
        chunksize: usize,
    ) -> Result<(Arc<Chunks>, usize), TaskError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        let dyn_sink: Arc<dyn Sink> = sink.clone();
        let mut scratch = mp_codec::Frame::new();
        let mut chunk: Vec<A> = Vec::new();
        // The encoded length of the last chunk: the next is encoded into a
        // spare buffer that large, if there is one.
        let mut last = 0;
        // Each chunk is queued as soon as it is encoded, so the workers
        // start on the first ones while the caller encodes the rest.
        for tag in 0.. {
            chunk.clear();
            // The caller's iterator may panic: the chunks queued before run
            // to their end first, as they do before an error returns.
            let took = catch_unwind(AssertUnwindSafe(|| chunk.extend(items.by_ref().take(chunksize))));
            if let Err(p) = took {
                sink.wait_complete(tag, Deadline::NEVER);
                resume_unwind(p);
            }
            if chunk.is_empty() {
                return Ok((sink, tag));
            }
            sink.register(tag, chunk.len() as u32);
            let spare = self.shared.spare_to_fill(last);
            if let Err(e) = task::chunk(f, &chunk, spare, &mut scratch, |b| self.shared.copy_out(b)).and_then(|w| {
                last = w.payload.bytes.len();
                self.shared.submit([(tag, w)], &dyn_sink, false)
            }) {
                // The chunks queued before this one run to their end before
                // the error is returned: no task of a map that has failed
                // still runs.
                sink.wait_complete(tag, Deadline::NEVER);
                return Err(e);
            }
        }
        unreachable!("the loop returns")
    }

    /// `f` over every item, in order, in chunks of Python's default size
    /// (the items spread over four chunks per worker). The first failed
    /// item (in order) is the error; see [`imap`](Pool::imap) for each
    /// item's own result.
    ///
    /// As Python's, it returns only once every chunk is done, failed or
    /// not: when it returns, no task of the map still runs.
    ///
    /// # Differences from Python
    /// The error is that of the first failed item in item order; Python's
    /// is that of the first chunk to fail in time. An input that knows its
    /// exact length (a range, a vector) is read chunk by chunk, each chunk
    /// queued as soon as it is encoded; Python reads the whole input first.
    ///
    /// ```
    /// fn check(x: u32) -> u32 {
    ///     if x == 1 { panic!("bad item {x}") }
    ///     if x == 5 { std::thread::sleep(std::time::Duration::from_millis(100)) }
    ///     x
    /// }
    /// let pool = mp_pool::Pool::new(2)?;
    /// let r = pool.map(check, 0..8);
    /// // Item 5's sleep is over: the map waited for it.
    /// assert_eq!(r, Err(mp_pool::TaskError::Panicked("bad item 1".into())));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.map_iter(f, items.into_iter().map(|a| (a,)), None)
    }

    /// [`map`](Pool::map) with chunks of `chunksize` items.
    ///
    /// ```
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// let pool = mp_pool::Pool::new(2)?;
    /// assert_eq!(pool.map_chunked(inc, vec![1, 2, 3], 1)?, vec![2, 3, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_chunked<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.map_iter(f, items.into_iter().map(|a| (a,)), Some(chunksize))
    }

    fn map_iter<F, A, R>(
        &self,
        f: F,
        items: impl Iterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, TaskError>
    where
        F: Function<A, Output = R>,
        A: Data,
        R: Data,
    {
        let sink = Chunks::new(false);
        if let (lo, Some(hi)) = items.size_hint() {
            if lo == hi {
                sink.expect_values::<R>(Arc::downgrade(&self.shared), lo);
            }
        }
        let (sink, n) = self.submit_iter(sink, f, items, chunksize)?;
        collect_map(&self.shared, &sink, n, Deadline::NEVER).unwrap_or(Err(TaskError::Timeout))
    }

    /// [`map`](Pool::map) without waiting: the values arrive in the
    /// [`AsyncResult`], which is ready once every chunk is done (a failed
    /// chunk does not make it ready while others still run).
    ///
    /// ```
    /// fn neg(x: i64) -> i64 { -x }
    /// let pool = mp_pool::Pool::new(2)?;
    /// let r = pool.map_async(neg, 1..4)?;
    /// assert_eq!(r.get()?, vec![-1, -2, -3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<AsyncResult<Vec<R>>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        let (sink, n) = self.submit_iter(Chunks::new(false), f, items.into_iter().map(|a| (a,)), None)?;
        Ok(AsyncResult::map(sink, n))
    }

    /// [`map_async`](Pool::map_async) with Python's `callback` and
    /// `error_callback`: once every chunk is done, `callback` gets the
    /// results (in order) or `error_callback` the first failed item's error,
    /// on the pool's result thread, as for
    /// [`apply_async_with`](Pool::apply_async_with) (at once, on this
    /// thread, for a map already done when this returns).
    ///
    /// ```
    /// use std::sync::mpsc;
    /// fn double(x: u32) -> u32 { x * 2 }
    /// let pool = mp_pool::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.map_async_with(double, 0..4u32, move |v: &Vec<u32>| tx.send(v.clone()).unwrap(), |_| {})?;
    /// assert_eq!(r.get()?, [0, 2, 4, 6]);
    /// assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(30))?, [0, 2, 4, 6]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async_with<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        callback: impl FnOnce(&Vec<R>) + Send + 'static,
        error_callback: impl FnOnce(&TaskError) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        let (sink, n) = self.submit_iter(Chunks::new(false), f, items.into_iter().map(|a| (a,)), None)?;
        let result: AsyncResult<Vec<R>> = AsyncResult::map(Arc::clone(&sink), n);
        let seen = result.share();
        sink.on_complete(
            n,
            Box::new(move || match seen.get_timeout(std::time::Duration::ZERO) {
                Ok(v) => callback(&v),
                Err(e) => error_callback(&e),
            }),
        );
        Ok(result)
    }

    /// `f` over tuples of arguments, in order: Python's `starmap`.
    ///
    /// ```
    /// fn pow(b: u64, e: u32) -> u64 { b.pow(e) }
    /// let pool = mp_pool::Pool::new(2)?;
    /// assert_eq!(pool.starmap(pow, vec![(2, 3), (3, 2)])?, vec![8, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap<F, A>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<F::Output>, TaskError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        self.map_iter(f, items.into_iter(), None)
    }

    /// [`starmap`](Pool::starmap) without waiting.
    pub fn starmap_async<F, A>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<F::Output>>, TaskError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        let (sink, n) = self.submit_iter(Chunks::new(false), f, items.into_iter(), None)?;
        Ok(AsyncResult::map(sink, n))
    }

    fn lazy<'a, F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A> + 'a,
        chunksize: usize,
        unordered: bool,
    ) -> Result<IMap<'a, R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        if chunksize == 0 {
            return Err(TaskError::Encode("chunksize must be at least 1".into()));
        }
        let mut it = items.into_iter();
        let mut scratch = mp_codec::Frame::new();
        let feed: Feed<'a> = Box::new(move || {
            let chunk: Vec<(A,)> = it.by_ref().take(chunksize).map(|a| (a,)).collect();
            if chunk.is_empty() {
                return None;
            }
            Some((
                chunk.len() as u32,
                task::chunk(f, &chunk, None, &mut scratch, <[u8]>::to_vec),
            ))
        });
        IMap::new(Arc::clone(&self.shared), unordered, feed)
    }

    /// `f` over `items`, lazily and in order: Python's `imap`. At most a
    /// bounded number of items are in flight (64 chunks per worker), so an
    /// endless iterator is fine. Each item is that input's result.
    ///
    /// ```
    /// fn half(x: u32) -> u32 { x / 2 }
    /// let pool = mp_pool::Pool::new(2)?;
    /// let v: Vec<u32> = pool.imap(half, (0..).step_by(2))?.take(4).collect::<Result<_, _>>()?;
    /// assert_eq!(v, vec![0, 1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap<'a, F, A, R>(&self, f: F, items: impl IntoIterator<Item = A> + 'a) -> Result<IMap<'a, R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.lazy(f, items, 1, false)
    }

    /// [`imap`](Pool::imap) with chunks of `chunksize` items.
    pub fn imap_chunked<'a, F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A> + 'a,
        chunksize: usize,
    ) -> Result<IMap<'a, R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.lazy(f, items, chunksize, false)
    }

    /// [`imap`](Pool::imap) yielding results as they complete.
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let pool = mp_pool::Pool::new(2)?;
    /// let mut v: Vec<u8> = pool.imap_unordered(id, 0..10)?.collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, (0..10).collect::<Vec<u8>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap_unordered<'a, F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A> + 'a,
    ) -> Result<IMap<'a, R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.lazy(f, items, 1, true)
    }

    /// [`imap_unordered`](Pool::imap_unordered) with chunks of `chunksize`
    /// items.
    pub fn imap_unordered_chunked<'a, F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A> + 'a,
        chunksize: usize,
    ) -> Result<IMap<'a, R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.lazy(f, items, chunksize, true)
    }

    /// Accepts no more tasks; the workers finish what is queued and exit.
    pub fn close(&self) {
        self.shared.set_phase(Phase::Closed);
    }

    /// Stops the workers at once (SIGTERM, then SIGKILL after a second);
    /// tasks not finished fail with [`TaskError::Closed`]. Waits for the
    /// workers to be reaped.
    pub fn terminate(&self) -> Result<(), PoolError> {
        self.shared.set_phase(Phase::Terminating);
        self.join()
    }

    /// Waits for the workers to exit after [`close`](Pool::close) or
    /// [`terminate`](Pool::terminate).
    pub fn join(&self) -> Result<(), PoolError> {
        self.join_until(Deadline::NEVER)
    }

    /// [`join`](Pool::join), waiting at most `t`.
    pub fn join_timeout(&self, t: Duration) -> Result<(), PoolError> {
        self.join_until(Deadline::after(t))
    }

    fn join_until(&self, deadline: Deadline) -> Result<(), PoolError> {
        if self.shared.lock().phase == Phase::Running {
            return Err(PoolError::StillRunning);
        }
        if !self.shared.wait_finished(deadline) {
            return Err(PoolError::Timeout);
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// `ctx.pool(n)`: a [`Pool`] with a context's start method (Python's
/// `get_context(m).Pool(n)`).
///
/// ```
/// use mp_pool::PoolContext;
/// use mp_process::{get_context, StartMethod};
/// fn one() -> u8 { 1 }
/// let pool = get_context(StartMethod::Spawn).pool(1)?;
/// assert_eq!(pool.apply(one, ())?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait PoolContext {
    /// A pool of `processes` workers started with this context's method.
    fn pool(&self, processes: usize) -> Result<Pool, PoolError>;
}

impl PoolContext for mp_process::Context {
    fn pool(&self, processes: usize) -> Result<Pool, PoolError> {
        Pool::builder().processes(processes).context(*self).build()
    }
}
