//! Results: [`AsyncResult`], the lazy maps, and the sinks behind them.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use mp_sys::time::Deadline;

use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, SeqAccess, Visitor};

use crate::core::{Reply, Shared, Sink};
use crate::error::{Failure, TaskError};
use crate::task::{Work, panic_message, status};

type Outcome = Result<Reply, TaskError>;

fn decode_err(e: impl std::fmt::Display) -> TaskError {
    TaskError::Decode(format!("the task's result: {e}"))
}

fn decode<T: DeserializeOwned>(rep: &Reply) -> Result<T, TaskError> {
    let fds = rep.payload.dup_fds().map_err(decode_err)?;
    mp_codec::decode_payload(&rep.payload.bytes, fds).map_err(decode_err)
}

/// [`decode`] for a chunk's reply, whose integers are at full width.
fn decode_fixed<T: DeserializeOwned>(rep: &Reply) -> Result<T, TaskError> {
    let fds = rep.payload.dup_fds().map_err(decode_err)?;
    mp_codec::decode_payload_fixed(&rep.payload.bytes, fds).map_err(decode_err)
}

/// A task's outcome as its value.
pub(crate) fn decode_one<R: DeserializeOwned>(r: &Outcome) -> Result<R, TaskError> {
    match r {
        Err(e) => Err(e.clone()),
        Ok(rep) if rep.status == status::OK => decode(rep),
        Ok(rep) => Err(decode::<Failure>(rep)?.into()),
    }
}

/// A chunk part's outcome: all items' values, or each item's result.
pub(crate) enum Part<R> {
    All(Vec<R>),
    Each(Vec<Result<R, TaskError>>),
}

pub(crate) fn decode_part<R: DeserializeOwned>(lo: u32, hi: u32, r: &Outcome) -> Part<R> {
    let n = (hi - lo) as usize;
    let each_err = |e: TaskError| Part::Each((0..n).map(|_| Err(e.clone())).collect());
    let rep = match r {
        Err(e) => return each_err(e.clone()),
        Ok(rep) => rep,
    };
    let checked = |len: usize| {
        (len == n)
            .then_some(())
            .ok_or_else(|| TaskError::Decode(format!("a reply of {len} results for {n} items")))
    };
    match rep.status {
        status::OK => match decode_fixed::<Vec<R>>(rep) {
            Ok(v) => match checked(v.len()) {
                Ok(()) => Part::All(v),
                Err(e) => each_err(e),
            },
            Err(e) => each_err(e),
        },
        status::MIXED => match decode_fixed::<Vec<Result<R, Failure>>>(rep) {
            Ok(v) => match checked(v.len()) {
                Ok(()) => Part::Each(v.into_iter().map(|r| r.map_err(TaskError::from)).collect()),
                Err(e) => each_err(e),
            },
            Err(e) => each_err(e),
        },
        _ => each_err(decode_fixed::<Failure>(rep).map_or_else(|e| e, TaskError::from)),
    }
}

fn relock<'a, T>(r: std::sync::LockResult<MutexGuard<'a, T>>) -> MutexGuard<'a, T> {
    r.unwrap_or_else(|e| e.into_inner())
}

/// Waits on `cv` until `done`, at most until `deadline`. False on timeout.
fn wait_for<'a, T>(
    cv: &Condvar,
    mut g: MutexGuard<'a, T>,
    deadline: Deadline,
    waiters: fn(&mut T) -> &mut usize,
    done: impl Fn(&T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    while !done(&g) {
        *waiters(&mut g) += 1;
        g = match deadline.remaining() {
            None => relock(cv.wait(g)),
            Some(left) if left.is_zero() => {
                *waiters(&mut g) -= 1;
                return (g, false);
            }
            Some(left) => cv.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0,
        };
        *waiters(&mut g) -= 1;
    }
    (g, true)
}

type Callback = Box<dyn FnOnce(&Outcome) + Send>;

/// The sink of one task.
pub(crate) struct One {
    m: Mutex<OneState>,
    cv: Condvar,
}

struct OneState {
    value: Option<Outcome>,
    waiters: usize,
    callback: Option<Callback>,
}

impl One {
    pub(crate) fn new(callback: Option<Callback>) -> Arc<One> {
        Arc::new(One {
            m: Mutex::new(OneState {
                value: None,
                waiters: 0,
                callback,
            }),
            cv: Condvar::new(),
        })
    }
}

/// Runs a user callback on the pool's thread; a panic in it is reported,
/// and the pool goes on.
fn run_callback(cb: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(cb)) {
        eprintln!("multiprocessing: pool: a callback panicked: {}", panic_message(&*p));
    }
}

impl Sink for One {
    fn deliver(&self, _tag: usize, _lo: u32, _hi: u32, r: Outcome) {
        let cb = relock(self.m.lock()).callback.take();
        if let Some(cb) = cb {
            run_callback(|| cb(&r));
        }
        let mut g = relock(self.m.lock());
        if g.value.is_none() {
            g.value = Some(r);
        }
        if g.waiters > 0 {
            self.cv.notify_all();
        }
    }
}

/// What an [`AsyncResult`] waits on.
trait Pending<R>: Send + Sync {
    fn wait_until(&self, deadline: Deadline) -> bool;
    /// The value; only called once `wait_until` returned true.
    fn value(&self) -> Result<R, TaskError>;
    fn successful(&self) -> Option<bool>;
}

struct OneResult<R> {
    sink: Arc<One>,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Pending<R> for OneResult<R> {
    fn wait_until(&self, deadline: Deadline) -> bool {
        let g = relock(self.sink.m.lock());
        wait_for(&self.sink.cv, g, deadline, |s| &mut s.waiters, |s| s.value.is_some()).1
    }

    fn value(&self) -> Result<R, TaskError> {
        let g = relock(self.sink.m.lock());
        match &g.value {
            Some(v) => decode_one(v),
            None => Err(TaskError::Timeout),
        }
    }

    fn successful(&self) -> Option<bool> {
        let g = relock(self.sink.m.lock());
        g.value
            .as_ref()
            .map(|v| matches!(v, Ok(rep) if rep.status == status::OK))
    }
}

/// The sink of a map's chunks.
pub(crate) struct Chunks {
    m: Mutex<ChunksState>,
    cv: Condvar,
    unordered: bool,
}

struct ChunkParts {
    len: u32,
    covered: u32,
    parts: Vec<(u32, u32, Outcome)>,
}

struct ChunksState {
    chunks: HashMap<usize, ChunkParts>,
    /// Parts in completion order (unordered maps).
    arrivals: VecDeque<(u32, u32, Outcome)>,
    complete: usize,
    failed: bool,
    waiters: usize,
    /// A blocking map's output, filled on the pool thread with the values
    /// of each chunk, in order, as soon as it and those before it are
    /// complete (see [`collect_map`]).
    ahead: Option<Box<dyn Ahead>>,
    /// The next chunk for `ahead`.
    ahead_next: usize,
    /// `ahead` met a chunk it could not take.
    ahead_stopped: bool,
    /// The fewest complete chunks a waiter of [`Chunks::wait_complete`]
    /// waits for; 0: waiters want every delivery (lazy maps).
    want: usize,
    /// Runs once this many chunks are complete (`map_async_with`'s
    /// callbacks), on the pool thread.
    on_complete: Option<(usize, Box<dyn FnOnce() + Send>)>,
}

/// Where a map's values are decoded ahead of its caller.
trait Ahead: Send {
    /// Appends the values of a complete chunk's parts (sorted); false, with
    /// nothing appended, if a part failed or cannot be decoded (the caller
    /// then takes that chunk and the rest as they are).
    fn take(&mut self, parts: &mut [(u32, u32, Outcome)]) -> bool;

    /// Appends the `n` values of a successful reply's payload `bytes`
    /// (still in shared memory); false, with nothing appended, if they
    /// cannot be decoded.
    fn take_bytes(&mut self, n: usize, bytes: &[u8]) -> bool;

    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// The output of a map of `R`, and where the decoded replies' buffers go.
struct AheadVec<R> {
    out: Vec<R>,
    shared: Weak<Shared>,
}

impl<R: DeserializeOwned + Send + 'static> Ahead for AheadVec<R> {
    fn take(&mut self, parts: &mut [(u32, u32, Outcome)]) -> bool {
        let before = self.out.len();
        // A result's Deserialize may panic: this runs on the pool thread,
        // which must go on. The caller then decodes that chunk itself (and
        // its panic reaches the caller, as it would have).
        let ok = catch_unwind(AssertUnwindSafe(|| {
            parts.iter().all(|(lo, hi, r)| match r {
                Ok(rep) if rep.status == status::OK => append(&mut self.out, (hi - lo) as usize, rep).is_ok(),
                _ => false,
            })
        }))
        .unwrap_or(false);
        if !ok {
            self.out.truncate(before);
            return false;
        }
        if let Some(shared) = self.shared.upgrade() {
            for (_, _, r) in parts.iter_mut() {
                if let Ok(rep) = r {
                    shared.recycle(std::mem::take(&mut rep.payload.bytes));
                }
            }
        }
        true
    }

    fn take_bytes(&mut self, n: usize, bytes: &[u8]) -> bool {
        // As in `take`: a panicking Deserialize must not end the pool thread.
        catch_unwind(AssertUnwindSafe(|| {
            append_bytes(&mut self.out, n, bytes, Vec::new()).is_ok()
        }))
        .unwrap_or(false)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl Chunks {
    pub(crate) fn new(unordered: bool) -> Arc<Chunks> {
        Arc::new(Chunks {
            m: Mutex::new(ChunksState {
                chunks: HashMap::new(),
                arrivals: VecDeque::new(),
                complete: 0,
                failed: false,
                waiters: 0,
                ahead: None,
                ahead_next: 0,
                ahead_stopped: false,
                want: 0,
                on_complete: None,
            }),
            cv: Condvar::new(),
            unordered,
        })
    }

    /// Makes the output of a blocking map of `R` now, with room for
    /// `capacity` values, so that the pool thread decodes its chunks into it
    /// (from shared memory, where it can) as they complete, from the first:
    /// [`collect_map`] takes it.
    /// `shared`: where the buffers of the replies it decodes go.
    pub(crate) fn expect_values<R: DeserializeOwned + Send + 'static>(&self, shared: Weak<Shared>, capacity: usize) {
        relock(self.m.lock()).ahead = Some(Box::new(AheadVec::<R> {
            out: Vec::with_capacity(capacity),
            shared,
        }));
    }

    /// Runs `f` once `n` chunks are complete: on the pool thread, or at once
    /// on this one if they already are. A panic in `f` is reported on stderr.
    pub(crate) fn on_complete(&self, n: usize, f: Box<dyn FnOnce() + Send>) {
        let mut g = relock(self.m.lock());
        if g.complete >= n {
            drop(g);
            run_callback(f);
        } else {
            g.on_complete = Some((n, f));
        }
    }

    /// Announces chunk `tag` of `len` items, before it is submitted.
    pub(crate) fn register(&self, tag: usize, len: u32) {
        relock(self.m.lock()).chunks.insert(
            tag,
            ChunkParts {
                len,
                covered: 0,
                parts: Vec::new(),
            },
        );
    }

    /// Chunks registered and not yet taken.
    fn held(&self) -> usize {
        let g = relock(self.m.lock());
        g.chunks.len() + g.arrivals.len()
    }

    /// Waits for chunk `tag` to be complete and takes its parts, in order.
    fn take_chunk(&self, tag: usize, deadline: Deadline) -> Option<Vec<(u32, u32, Outcome)>> {
        let g = relock(self.m.lock());
        let (mut g, ok) = wait_for(
            &self.cv,
            g,
            deadline,
            |s| &mut s.waiters,
            |s| s.chunks.get(&tag).is_none_or(|c| c.covered >= c.len),
        );
        if !ok {
            return None;
        }
        let mut parts = g.chunks.remove(&tag).map(|c| c.parts).unwrap_or_default();
        parts.sort_by_key(|p| p.0);
        Some(parts)
    }

    /// Waits for the next part to arrive (unordered maps).
    fn take_arrival(&self, deadline: Deadline) -> Option<(u32, u32, Outcome)> {
        let g = relock(self.m.lock());
        let (mut g, ok) = wait_for(&self.cv, g, deadline, |s| &mut s.waiters, |s| !s.arrivals.is_empty());
        if ok { g.arrivals.pop_front() } else { None }
    }

    /// Waits until `n` chunks are complete, failed ones included (Python's
    /// `MapResult` is ready only then, so no task of a map that is ready
    /// still runs).
    pub(crate) fn wait_complete(&self, n: usize, deadline: Deadline) -> bool {
        let mut g = relock(self.m.lock());
        // The smallest count any waiter wants (each then rechecks its own).
        // A sink is waited on either this way or chunk by chunk, never both.
        g.want = if g.want == 0 { n } else { g.want.min(n) };
        wait_for(&self.cv, g, deadline, |s| &mut s.waiters, |s| s.complete >= n).1
    }
}

impl Sink for Chunks {
    fn deliver(&self, tag: usize, lo: u32, hi: u32, r: Outcome) {
        let mut g = relock(self.m.lock());
        let failed = !matches!(&r, Ok(rep) if rep.status == status::OK);
        g.failed |= failed;
        let unordered = self.unordered;
        let Some(c) = g.chunks.get_mut(&tag) else {
            return; // its map was dropped
        };
        c.covered += hi - lo;
        let complete = c.covered >= c.len;
        if unordered {
            if complete {
                g.chunks.remove(&tag);
            }
            g.arrivals.push_back((lo, hi, r));
        } else {
            c.parts.push((lo, hi, r));
        }
        if complete {
            g.complete += 1;
            decode_ahead(&mut g);
        }
        self.delivered(g);
    }

    fn deliver_in_place(&self, tag: usize, lo: u32, hi: u32, code: u64, bytes: &[u8]) -> bool {
        if code != status::OK {
            return false;
        }
        let mut g = relock(self.m.lock());
        // Only the whole of the chunk the output takes next: the others
        // wait for it, as copies.
        let next = g.ahead_next == tag
            && !g.ahead_stopped
            && g.chunks
                .get(&tag)
                .is_some_and(|c| c.covered == 0 && lo == 0 && hi == c.len);
        let Some(ahead) = g.ahead.as_mut().filter(|_| next) else {
            return false;
        };
        if !ahead.take_bytes((hi - lo) as usize, bytes) {
            return false;
        }
        g.chunks.remove(&tag);
        g.ahead_next += 1;
        g.complete += 1;
        decode_ahead(&mut g);
        self.delivered(g);
        true
    }
}

impl Chunks {
    /// After a delivery: runs `map_async_with`'s callbacks once their
    /// chunks are complete, and wakes the waiters that want this.
    fn delivered<'a>(&'a self, mut g: MutexGuard<'a, ChunksState>) {
        // The callbacks of `map_async_with` run before its waiters wake, as
        // Python's: once `wait` returns, they have run.
        let done = match g.on_complete {
            Some((n, _)) if g.complete >= n => g.on_complete.take(),
            _ => None,
        };
        if let Some((_, f)) = done {
            drop(g);
            run_callback(f);
            g = relock(self.m.lock());
        }
        // A map's caller waits for all its chunks: it is woken once, not
        // for each of them.
        if g.waiters > 0 && (g.want == 0 || g.complete >= g.want) {
            self.cv.notify_all();
        }
    }
}

/// Decodes into `ahead` the chunks complete in order from `ahead_next` on;
/// stops (for good) at one it cannot take.
fn decode_ahead(g: &mut ChunksState) {
    if g.ahead_stopped {
        return;
    }
    loop {
        let tag = g.ahead_next;
        if g.chunks.get(&tag).is_none_or(|c| c.covered < c.len) {
            return;
        }
        let Some(ahead) = g.ahead.as_mut() else { return };
        let Some(mut c) = g.chunks.remove(&tag) else { return };
        c.parts.sort_by_key(|p| p.0);
        if ahead.take(&mut c.parts) {
            g.ahead_next += 1;
        } else {
            // The caller takes this chunk and the rest.
            g.chunks.insert(tag, c);
            g.ahead_stopped = true;
            return;
        }
    }
}

/// Appends the values of one chunk's parts (sorted by `lo`) to `out`, or
/// returns the first failed item's error.
fn extend_with<R: DeserializeOwned>(out: &mut Vec<R>, parts: &[(u32, u32, Outcome)]) -> Result<(), TaskError> {
    for (lo, hi, r) in parts {
        match r {
            Ok(rep) if rep.status == status::OK => append(out, (hi - lo) as usize, rep)?,
            _ => match decode_part::<R>(*lo, *hi, r) {
                Part::All(v) => out.extend(v),
                Part::Each(v) => {
                    for x in v {
                        out.push(x?);
                    }
                }
            },
        }
    }
    Ok(())
}

/// Decodes the `n` values of a successful reply straight onto the end of
/// `out`, where they stay: no vector of their own, no copy. On an error
/// `out` is left as it was.
fn append<R: DeserializeOwned>(out: &mut Vec<R>, n: usize, rep: &Reply) -> Result<(), TaskError> {
    let fds = rep.payload.dup_fds().map_err(decode_err)?;
    append_bytes(out, n, &rep.payload.bytes, fds)
}

/// [`append`] from a payload's bytes and descriptors.
fn append_bytes<R: DeserializeOwned>(
    out: &mut Vec<R>,
    n: usize,
    bytes: &[u8],
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<(), TaskError> {
    let before = out.len();
    let got = mp_codec::decode_payload_seed_fixed(bytes, fds, Append(out)).map_err(decode_err);
    match got {
        Ok(len) if len == n => Ok(()),
        Ok(len) => {
            out.truncate(before);
            Err(TaskError::Decode(format!("a reply of {len} results for {n} items")))
        }
        Err(e) => {
            out.truncate(before);
            Err(e)
        }
    }
}

/// The unwinding payload that ends [`Append`]'s fast loop early.
struct Cut;

/// A serde seed that appends a sequence to the vector it holds and returns
/// how many values it appended.
pub(crate) struct Append<'a, R>(pub(crate) &'a mut Vec<R>);

impl<'de, R: DeserializeOwned> DeserializeSeed<'de> for Append<'_, R> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, R: DeserializeOwned> Visitor<'de> for Append<'_, R> {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence of results")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<usize, S::Error> {
        let out = self.0;
        let before = out.len();
        // The decoder's hint: the sequence's length, bounded by the bytes
        // left. A map's caller has reserved room for all of it.
        let hint = seq.size_hint().unwrap_or(0);
        // How the fast loop stopped early: the sequence ended, or an error.
        let mut stopped: Option<Result<(), S::Error>> = None;
        // (Built to abort on panic, unwinding would end the process: then
        // the plain loop below does it all.)
        if hint > 0 && cfg!(panic = "unwind") {
            // `resize_with` keeps the vector's length in a register while it
            // fills it (a `push` loop behind `&mut` stores and reloads it for
            // every value: a third of the decoding time of a map's integers).
            // Its closure must return a value, so an early end or an error
            // unwinds out of it with `Cut`, caught here (`resume_unwind`
            // runs no panic hook); the values written so far stay.
            let filled = catch_unwind(AssertUnwindSafe(|| {
                out.resize_with(before + hint, || match seq.next_element_seed(PhantomData::<R>) {
                    Ok(Some(v)) => v,
                    Ok(None) => {
                        stopped = Some(Ok(()));
                        std::panic::resume_unwind(Box::new(Cut))
                    }
                    Err(e) => {
                        stopped = Some(Err(e));
                        std::panic::resume_unwind(Box::new(Cut))
                    }
                })
            }));
            if let Err(p) = filled {
                if !p.is::<Cut>() {
                    // A `Deserialize` impl panicked: its panic goes on.
                    std::panic::resume_unwind(p);
                }
            }
        }
        match stopped {
            Some(Err(e)) => return Err(e),
            Some(Ok(())) => return Ok(out.len() - before),
            None => {}
        }
        // Values past the hint, one at a time (the seed itself, not
        // `next_element`: one call less per value).
        while let Some(v) = seq.next_element_seed(PhantomData::<R>)? {
            out.push(v);
        }
        Ok(out.len() - before)
    }
}

/// Takes the chunks `0..n` in order as each completes and decodes them into
/// the map's values, or its first error (in item order); `None` if
/// `deadline` passes first. Returns only once every chunk is complete, as
/// Python's `MapResult`: after an error it waits for the other chunks
/// still running.
pub(crate) fn collect_map<R: DeserializeOwned + Send + 'static>(
    shared: &Arc<Shared>,
    sink: &Chunks,
    n: usize,
    deadline: Deadline,
) -> Option<Result<Vec<R>, TaskError>> {
    // One allocation for the map's values (made before the chunks were
    // queued, by `expect_values`, when their count was known); the pool
    // thread decodes each chunk into its place as soon as it and those
    // before it are complete, while this thread may still be encoding the
    // last chunks (the caller had both jobs, one after the other, and was
    // the slowest of the map's threads).
    {
        let mut g = relock(sink.m.lock());
        if g.ahead.is_none() {
            let out: Vec<R> = Vec::with_capacity(g.chunks.values().map(|c| c.len as usize).sum());
            g.ahead = Some(Box::new(AheadVec {
                out,
                shared: Arc::downgrade(shared),
            }));
        }
        decode_ahead(&mut g);
    }
    if !sink.wait_complete(n, deadline) {
        return None;
    }
    let (ahead, next) = {
        let mut g = relock(sink.m.lock());
        (g.ahead.take(), g.ahead_next)
    };
    let mut out = ahead
        .and_then(|a| a.into_any().downcast::<AheadVec<R>>().ok())
        .map(|a| a.out)
        .unwrap_or_default();
    // What the pool thread could not take: a failed chunk and those after
    // it, decoded here in order, so the error is the first failed item's.
    for tag in next..n {
        let parts = sink.take_chunk(tag, deadline)?;
        let r = extend_with(&mut out, &parts);
        for (_, _, part) in parts {
            if let Ok(rep) = part {
                shared.recycle(rep.payload.bytes);
            }
        }
        if let Err(e) = r {
            return Some(Err(e));
        }
    }
    Some(Ok(out))
}

struct MapResult<R> {
    sink: Arc<Chunks>,
    n: usize,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Pending<Vec<R>> for MapResult<R> {
    fn wait_until(&self, deadline: Deadline) -> bool {
        self.sink.wait_complete(self.n, deadline)
    }

    /// Decodes the parts in place: they stay for the next `get`.
    fn value(&self) -> Result<Vec<R>, TaskError> {
        let mut g = relock(self.sink.m.lock());
        let mut out = Vec::with_capacity(g.chunks.values().map(|c| c.len as usize).sum());
        for tag in 0..self.n {
            let Some(c) = g.chunks.get_mut(&tag) else {
                return Err(TaskError::Timeout);
            };
            c.parts.sort_by_key(|p| p.0);
            extend_with(&mut out, &c.parts)?;
        }
        Ok(out)
    }

    fn successful(&self) -> Option<bool> {
        let g = relock(self.sink.m.lock());
        (g.complete >= self.n).then_some(!g.failed)
    }
}

/// A result that will arrive: Python's `AsyncResult`, from
/// [`Pool::apply_async`](crate::Pool::apply_async) and
/// [`Pool::map_async`](crate::Pool::map_async).
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
/// let pool = mp_pool::Pool::new(2)?;
/// let r = pool.apply_async(square, (7,))?;
/// assert_eq!(r.get()?, 49);
/// assert_eq!(r.get()?, 49); // again
/// assert_eq!(r.successful(), Some(true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsyncResult<R> {
    inner: Arc<dyn Pending<R>>,
}

impl<R> AsyncResult<R> {
    /// Another handle of the same result (for a callback to read it).
    pub(crate) fn share(&self) -> AsyncResult<R> {
        AsyncResult {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.inner.wait_until(Deadline::after(Duration::ZERO)))
            .finish()
    }
}

impl<R: DeserializeOwned + 'static> AsyncResult<R> {
    pub(crate) fn one(sink: Arc<One>) -> AsyncResult<R> {
        AsyncResult {
            inner: Arc::new(OneResult::<R> { sink, _r: PhantomData }),
        }
    }
}

impl<T: DeserializeOwned + 'static> AsyncResult<Vec<T>> {
    pub(crate) fn map(sink: Arc<Chunks>, n: usize) -> AsyncResult<Vec<T>> {
        AsyncResult {
            inner: Arc::new(MapResult::<T> {
                sink,
                n,
                _r: PhantomData,
            }),
        }
    }
}

impl<R> AsyncResult<R> {
    /// Waits for the result and returns it: the task's value, or why there
    /// is none. Can be called again (the value is decoded each time).
    pub fn get(&self) -> Result<R, TaskError> {
        self.inner.wait_until(Deadline::NEVER);
        self.inner.value()
    }

    /// [`get`](AsyncResult::get), waiting at most `t`:
    /// [`TaskError::Timeout`] after that (the task goes on).
    ///
    /// ```
    /// use mp_sync::Event;
    /// /// Holds its worker until `go` is set.
    /// fn held(go: Event) { go.wait_timeout(std::time::Duration::from_secs(30)); }
    /// let go = Event::new()?;
    /// let pool = mp_pool::Pool::new(1)?;
    /// let r = pool.apply_async(held, (go.clone(),))?;
    /// assert_eq!(r.get_timeout(std::time::Duration::from_millis(10)), Err(mp_pool::TaskError::Timeout));
    /// go.set();
    /// assert_eq!(r.get(), Ok(()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, t: Duration) -> Result<R, TaskError> {
        if self.inner.wait_until(Deadline::after(t)) {
            self.inner.value()
        } else {
            Err(TaskError::Timeout)
        }
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        self.inner.wait_until(Deadline::NEVER);
    }

    /// Waits at most `t`; true if the result is ready.
    pub fn wait_timeout(&self, t: Duration) -> bool {
        self.inner.wait_until(Deadline::after(t))
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.inner.wait_until(Deadline::after(Duration::ZERO))
    }

    /// `None` until ready; then whether the task succeeded (Python raises
    /// `ValueError` where this returns `None`).
    pub fn successful(&self) -> Option<bool> {
        self.inner.successful()
    }
}

/// Makes the next chunk of a lazy map: its item count and its work (or
/// why it could not be encoded). `None` when the input is exhausted.
pub(crate) type Feed<'a> = Box<dyn FnMut() -> Option<(u32, Result<Work, TaskError>)> + 'a>;

/// The iterator of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered): lazy, with a
/// bounded number of chunks in flight. Each item is that input's result; a
/// failed item does not end the iteration.
pub struct IMap<'a, R> {
    shared: Arc<Shared>,
    sink: Arc<Chunks>,
    feed: Feed<'a>,
    window: usize,
    next_tag: usize,
    consume_tag: usize,
    exhausted: bool,
    /// Chunks that could not be submitted, with their errors.
    failed: VecDeque<(usize, u32, TaskError)>,
    /// The input iterator panicked while the chunk with this tag was read:
    /// the panic goes on where that chunk's results would be, after the
    /// results of the chunks before it (Python raises the iterator's
    /// exception at that point of `imap`).
    input_panic: Option<(usize, Box<dyn std::any::Any + Send>)>,
    buf: VecDeque<Result<R, TaskError>>,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("submitted", &self.next_tag)
            .field("exhausted", &self.exhausted)
            .finish_non_exhaustive()
    }
}

impl<'a, R: DeserializeOwned> IMap<'a, R> {
    pub(crate) fn new(shared: Arc<Shared>, unordered: bool, feed: Feed<'a>) -> Result<IMap<'a, R>, TaskError> {
        shared.add_feeder()?;
        let window = (shared.cfg.processes * 64).max(8);
        Ok(IMap {
            shared,
            sink: Chunks::new(unordered),
            feed,
            window,
            next_tag: 0,
            consume_tag: 0,
            exhausted: false,
            failed: VecDeque::new(),
            input_panic: None,
            buf: VecDeque::new(),
            _r: PhantomData,
        })
    }

    fn in_flight(&self) -> usize {
        if self.sink.unordered {
            self.sink.held() + self.failed.len()
        } else {
            self.next_tag - self.consume_tag
        }
    }

    /// Submits chunks until the window is full or the input ends.
    fn top_up(&mut self) {
        while !self.exhausted && self.in_flight() < self.window {
            let fed = match catch_unwind(AssertUnwindSafe(|| (self.feed)())) {
                Ok(fed) => fed,
                Err(p) => {
                    self.input_panic = Some((self.next_tag, p));
                    None
                }
            };
            let Some((len, work)) = fed else {
                self.exhausted = true;
                self.shared.remove_feeder();
                break;
            };
            let tag = self.next_tag;
            self.next_tag += 1;
            self.sink.register(tag, len);
            let sink: Arc<dyn Sink> = self.sink.clone();
            if let Err(e) = work.and_then(|w| self.shared.submit([(tag, w)], &sink, true)) {
                relock(self.sink.m.lock()).chunks.remove(&tag);
                self.failed.push_back((tag, len, e));
            }
        }
    }

    fn push_part(&mut self, lo: u32, hi: u32, r: &Outcome) {
        match decode_part::<R>(lo, hi, r) {
            Part::All(v) => self.buf.extend(v.into_iter().map(Ok)),
            Part::Each(v) => self.buf.extend(v),
        }
    }

    /// The next result, waiting at most until `deadline`.
    fn next_until(&mut self, deadline: Deadline) -> Option<Result<R, TaskError>> {
        loop {
            if let Some(x) = self.buf.pop_front() {
                return Some(x);
            }
            self.top_up();
            if self.sink.unordered {
                if self.input_panic.is_some() && self.in_flight() == 0 {
                    if let Some((_, p)) = self.input_panic.take() {
                        std::panic::resume_unwind(p);
                    }
                }
                if let Some((_, len, e)) = self.failed.pop_front() {
                    self.buf.extend((0..len).map(|_| Err(e.clone())));
                    continue;
                }
                if self.in_flight() == 0 {
                    return None;
                }
                match self.sink.take_arrival(deadline) {
                    Some((lo, hi, r)) => self.push_part(lo, hi, &r),
                    None => return Some(Err(TaskError::Timeout)),
                }
            } else {
                if self
                    .input_panic
                    .as_ref()
                    .is_some_and(|(tag, _)| *tag == self.consume_tag)
                {
                    if let Some((_, p)) = self.input_panic.take() {
                        std::panic::resume_unwind(p);
                    }
                }
                if self.consume_tag == self.next_tag {
                    return None;
                }
                let tag = self.consume_tag;
                if self.failed.front().is_some_and(|f| f.0 == tag) {
                    if let Some((_, len, e)) = self.failed.pop_front() {
                        self.buf.extend((0..len).map(|_| Err(e.clone())));
                    }
                    self.consume_tag += 1;
                    continue;
                }
                match self.sink.take_chunk(tag, deadline) {
                    Some(parts) => {
                        self.consume_tag += 1;
                        for (lo, hi, r) in &parts {
                            self.push_part(*lo, *hi, r);
                        }
                    }
                    None => return Some(Err(TaskError::Timeout)),
                }
            }
        }
    }

    /// The next result, waiting at most `t`: `Some(Err(TaskError::Timeout))`
    /// after that (Python's `next(timeout)`); the iteration can go on.
    pub fn next_timeout(&mut self, t: Duration) -> Option<Result<R, TaskError>> {
        self.next_until(Deadline::after(t))
    }
}

impl<R: DeserializeOwned> Iterator for IMap<'_, R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(Deadline::NEVER)
    }
}

impl<R> Drop for IMap<'_, R> {
    fn drop(&mut self) {
        if !self.exhausted {
            self.exhausted = true;
            self.shared.remove_feeder();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Payload;

    fn fixed<T: serde::Serialize + ?Sized>(v: &T) -> Vec<u8> {
        let mut f = mp_codec::Frame::new();
        mp_codec::encode_into_fixed(v, &mut f).unwrap();
        f.payload().to_vec()
    }

    fn values(sink: &Chunks) -> Vec<u64> {
        let ahead = relock(sink.m.lock()).ahead.take().unwrap();
        ahead.into_any().downcast::<AheadVec<u64>>().unwrap().out
    }

    #[test]
    fn chunks_in_shared_memory_are_decoded_in_place_in_order() {
        let sink = Chunks::new(false);
        sink.register(0, 3);
        sink.register(1, 2);
        sink.register(2, 2);
        sink.expect_values::<u64>(Weak::new(), 7);
        // Chunk 1 before chunk 0: not the next, so it is copied and waits.
        let one = fixed(&vec![9u64, 16]);
        assert!(!sink.deliver_in_place(1, 0, 2, status::OK, &one));
        let reply = |bytes: Vec<u8>| {
            Ok(Reply {
                status: status::OK,
                payload: Payload { bytes, fds: Vec::new() },
            })
        };
        sink.deliver(1, 0, 2, reply(one));
        // Chunk 0 in place; chunk 1, waiting, follows it.
        assert!(sink.deliver_in_place(0, 0, 3, status::OK, &fixed(&vec![0u64, 1, 4])));
        assert_eq!(relock(sink.m.lock()).ahead_next, 2);
        // Not a whole chunk, or a failure: not in place.
        assert!(!sink.deliver_in_place(2, 0, 1, status::OK, &fixed(&vec![25u64])));
        assert!(!sink.deliver_in_place(2, 0, 2, status::MIXED, &fixed(&vec![25u64, 36])));
        assert!(sink.deliver_in_place(2, 0, 2, status::OK, &fixed(&vec![25u64, 36])));
        assert!(sink.wait_complete(3, Deadline::after(Duration::ZERO)));
        assert_eq!(values(&sink), [0, 1, 4, 9, 16, 25, 36]);
    }

    /// A `u64` whose `Deserialize` panics on 13.
    #[derive(Debug, PartialEq)]
    struct NotThirteen(u64);

    impl<'de> serde::Deserialize<'de> for NotThirteen {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let v = u64::deserialize(d)?;
            assert!(v != 13, "thirteen");
            Ok(NotThirteen(v))
        }
    }

    #[test]
    fn appending_stops_at_a_bad_value_and_keeps_what_was_there() {
        // Values appended after those already there, all of them.
        let mut out = vec![true];
        let n = mp_codec::decode_payload_seed_fixed(&fixed(&vec![false, true, true]), Vec::new(), Append(&mut out));
        assert_eq!((n.unwrap(), out.as_slice()), (3, &[true, false, true, true][..]));
        // A byte that is no bool, third of five: an error, not a panic; the
        // caller (`append_bytes`) cuts what was appended.
        let mut bytes = fixed(&vec![true, false, true, true, false]);
        bytes[8 + 2] = 7;
        let mut out = vec![false];
        assert!(append_bytes(&mut out, 5, &bytes, Vec::new()).is_err());
        assert_eq!(out, [false]);
        // No values at all.
        let mut out: Vec<u64> = Vec::new();
        assert_eq!(
            append_bytes(&mut out, 0, &fixed(&Vec::<u64>::new()), Vec::new()),
            Ok(())
        );
        // A panic in a value's `Deserialize` goes on as that panic.
        let mut out = Vec::new();
        let p = catch_unwind(AssertUnwindSafe(|| {
            append_bytes::<NotThirteen>(&mut out, 3, &fixed(&vec![12u64, 13, 14]), Vec::new())
        }))
        .unwrap_err();
        assert_eq!(panic_message(&*p), "thirteen");
        let mut out = Vec::new();
        assert_eq!(
            append_bytes::<NotThirteen>(&mut out, 2, &fixed(&vec![12u64, 14]), Vec::new()),
            Ok(())
        );
        assert_eq!(out, [NotThirteen(12), NotThirteen(14)]);
    }

    #[test]
    fn garbage_in_shared_memory_is_not_taken() {
        let sink = Chunks::new(false);
        sink.register(0, 3);
        sink.expect_values::<u64>(Weak::new(), 3);
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[7; 24]);
        let garbage: [&[u8]; 5] = [
            &[],
            &[0xFF; 7],
            &huge,
            &fixed(&vec![1u64, 2]),       // two results for three items
            &fixed(&vec![1u64, 2, 3, 4]), // four
        ];
        for g in garbage {
            assert!(!sink.deliver_in_place(0, 0, 3, status::OK, g), "{g:?} was taken");
            assert_eq!(relock(sink.m.lock()).ahead_next, 0);
        }
        // The copy of such a reply is then an error for the map's caller,
        // not a panic on the pool thread.
        let parts = [(
            0,
            3,
            Ok(Reply {
                status: status::OK,
                payload: Payload {
                    bytes: huge,
                    fds: Vec::new(),
                },
            }),
        )];
        let mut out: Vec<u64> = Vec::new();
        assert!(matches!(extend_with(&mut out, &parts), Err(TaskError::Decode(_))));
        assert!(out.is_empty());
        assert_eq!(values(&sink), Vec::<u64>::new());
    }
}
