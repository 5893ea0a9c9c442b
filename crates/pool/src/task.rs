//! Tasks as they cross to a worker: a function named by its entry, and its
//! arguments; and the worker's side that runs them.
//!
//! A task's function is a `fn` item (or a closure that captures nothing).
//! The pool names it to the worker as an [`Entry`] of a trampoline
//! monomorphized for that function and its argument and result types; the
//! worker runs the same binary, so the entry's offset finds the same
//! trampoline there (checked against the binary's identity).

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use mp_codec::Fd;
use mp_process::{Function, Outcome};
use mp_sys::code::Entry;
use mp_sys::region::{Region, RegionSlice};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Failure, TaskError};
use crate::result::Append;
use crate::shm;
use crate::wire::{Fds, Head, InBuf, InFrame, Kind, OutBuf, Payload, Read};

/// How a reply's payload reads, in its header's `b` field.
pub(crate) mod status {
    /// The value: `R` for a task, `Vec<R>` for a chunk.
    pub(crate) const OK: u64 = 0;
    /// A [`Failure`](crate::error::Failure) for the whole task or chunk.
    pub(crate) const FAILED: u64 = 1;
    /// A chunk with failed items: `Vec<Result<R, Failure>>`.
    pub(crate) const MIXED: u64 = 2;
}

/// The progress word's item state once a job is finished.
pub(crate) const FINISHED: u32 = u32::MAX;

/// A worker's state, shared with the trampolines it calls.
pub(crate) struct Exchange {
    inbuf: RefCell<InBuf>,
    frame: RefCell<Option<InFrame>>,
    outbox: Arc<Outbox>,
    /// The thread that sends replies a long job would otherwise hold back,
    /// once started (see [`Outbox`]).
    flusher: RefCell<Option<Thread>>,
    scratch: RefCell<mp_codec::Frame>,
    /// The job being run and the item within it, for the pool to read if
    /// this process dies: `(id as u32) << 32 | state`, where state is 0
    /// while the arguments are decoded, `k + 1` while item `k` runs, and
    /// [`FINISHED`]. After it, the rings of large payloads ([`shm`]).
    page: Region,
    /// The arguments' ring, read in place.
    args_ring: RegionSlice<u8>,
    /// Where the next reply goes in the replies' ring.
    replies: RefCell<shm::Writer>,
    /// The replies' ring, written in place.
    replies_ring: RefCell<RegionSlice<u8>>,
    started: Cell<Option<Instant>>,
    init_failed: RefCell<Option<String>>,
    /// Vectors kept (empty) from one chunk to the next, by type: a worker
    /// runs the chunks of a map one after another, and a vector that keeps
    /// its memory costs no page faults the next time.
    spare: RefCell<HashMap<TypeId, Box<dyn Any>>>,
}

/// The largest vector a worker keeps for its next chunk, in bytes.
const SPARE_MAX: usize = 64 << 20;

/// The progress word of one job: [`Exchange::mark`] without looking up the
/// job and the word again for each item of a chunk.
struct Progress<'a> {
    word: Option<&'a AtomicU64>,
    /// The job's id in the high half.
    job: u64,
}

impl Progress<'_> {
    #[inline]
    fn mark(&self, state: u32) {
        if let Some(w) = self.word {
            w.store(self.job | u64::from(state), Ordering::Release);
        }
    }
}

/// What an entry is called with in the worker.
pub(crate) struct Call(Rc<Exchange>);

impl Exchange {
    fn id(&self) -> u64 {
        self.frame.borrow().as_ref().map_or(0, |f| f.head.id)
    }

    fn mark(&self, state: u32) {
        self.progress().mark(state);
    }

    /// The progress word of the current job, for marks in a loop.
    fn progress(&self) -> Progress<'_> {
        Progress {
            word: self.page.atomics_u64().first(),
            job: (self.id() as u32 as u64) << 32,
        }
    }

    fn range(&self) -> (u32, u32) {
        self.frame.borrow().as_ref().map_or((0, 0), |f| (f.head.lo, f.head.hi))
    }

    /// An empty vector of `T`, with the memory of the one kept last.
    fn spare_vec<T: 'static>(&self) -> Vec<T> {
        self.spare
            .borrow_mut()
            .remove(&TypeId::of::<Vec<T>>())
            .and_then(|b| b.downcast::<Vec<T>>().ok())
            .map(|b| *b)
            .unwrap_or_default()
    }

    /// Keeps `v`'s memory for the next chunk.
    fn keep_vec<T: 'static>(&self, mut v: Vec<T>) {
        v.clear();
        if v.capacity().saturating_mul(size_of::<T>()) <= SPARE_MAX {
            self.spare.borrow_mut().insert(TypeId::of::<Vec<T>>(), Box::new(v));
        }
    }

    /// The payload of frame `f`: in the arguments' ring, read where it is,
    /// or after its header in `inb`.
    fn payload<'a>(&'a self, inb: &'a InBuf, f: &InFrame) -> Result<&'a [u8], Failure> {
        if f.head.slen == 0 {
            return Ok(inb.payload(f));
        }
        shm::span_in(f.head.spos, f.head.slen as usize, shm::RING)
            .ok()
            .and_then(|r| self.args_ring.get(r))
            .ok_or_else(|| {
                Failure::Decode(format!(
                    "the task's arguments: {} bytes at ring position {} are not in the ring",
                    f.head.slen, f.head.spos
                ))
            })
    }

    /// Decodes the frame's payload, a sequence of `A`, onto the end of
    /// `out`; how many there were.
    fn args_into<A: DeserializeOwned>(&self, out: &mut Vec<A>) -> Result<usize, Failure> {
        let inb = self.inbuf.borrow();
        let mut fr = self.frame.borrow_mut();
        let f = fr.as_mut().ok_or_else(|| Failure::Decode("no task frame".into()))?;
        let fds = std::mem::take(&mut f.fds);
        mp_codec::decode_payload_seed_fixed(self.payload(&inb, f)?, fds, Append(out))
            .map_err(|e| Failure::Decode(format!("the task's arguments: {e}")))
    }

    /// Decodes the frame's payload as an `A`.
    fn args<A: DeserializeOwned>(&self) -> Result<A, Failure> {
        let inb = self.inbuf.borrow();
        let mut fr = self.frame.borrow_mut();
        let f = fr.as_mut().ok_or_else(|| Failure::Decode("no task frame".into()))?;
        let fds = std::mem::take(&mut f.fds);
        mp_codec::decode_payload(self.payload(&inb, f)?, fds)
            .map_err(|e| Failure::Decode(format!("the task's arguments: {e}")))
    }

    /// Puts a large reply's payload in the replies' ring, if it fits now:
    /// where it is (position), for the frame's header.
    fn ring_reply(&self, payload: &[u8]) -> Option<u64> {
        if payload.len() < shm::MIN {
            return None;
        }
        let released = self.page.atomics_u64().get(shm::TAIL_WORD)?.load(Ordering::Acquire);
        let mut ring = self.replies.borrow_mut();
        let pos = ring.place(released, payload.len(), shm::RING)?;
        let at = (pos % shm::RING as u64) as usize;
        self.replies_ring
            .borrow_mut()
            .get_mut(at..at + payload.len())?
            .copy_from_slice(payload);
        ring.commit(released, pos, payload.len());
        Some(pos)
    }

    /// Encodes a chunk's reply straight into the replies' ring, where the
    /// pool decodes it: no copy. False, having sent nothing, if it does not
    /// fit where the ring's next payload goes, or cannot be encoded (the
    /// caller then encodes it as usual, and reports the error).
    fn reply_in_ring<T: Serialize + ?Sized>(&self, kind: Kind, status: u64, value: &T) -> bool {
        let Some(released) = self
            .page
            .atomics_u64()
            .get(shm::TAIL_WORD)
            .map(|t| t.load(Ordering::Acquire))
        else {
            return false;
        };
        let mut ring = self.replies.borrow_mut();
        let Some((pos, room)) = ring.room(released, shm::RING) else {
            return false;
        };
        let at = (pos % shm::RING as u64) as usize;
        let mut view = self.replies_ring.borrow_mut();
        let Some(buf) = view.get_mut(at..at + room) else {
            return false;
        };
        let Ok(Some((len, fds))) = mp_codec::encode_fixed_to_slice(value, buf) else {
            return false;
        };
        let mut head = self.reply_head(kind, status);
        let fds = (!fds.is_empty()).then_some(Fds::Owned(fds));
        if len < shm::MIN {
            // Small: beside its header on the socket, the ring untouched.
            self.outbox.out().push(head, &buf[..len], fds);
        } else {
            ring.commit(released, pos, len);
            head.spos = pos;
            head.slen = len as u32;
            self.outbox.out().push(head, &[], fds);
        }
        true
    }

    /// The header of a reply to the current frame.
    fn reply_head(&self, kind: Kind, status: u64) -> Head {
        let mut head = Head::new(kind, self.id());
        head.a = self
            .started
            .get()
            .map_or(0, |t| t.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64);
        head.b = status;
        head
    }

    /// Queues the reply to the current frame: `value` with `status`, or the
    /// encoding error as a failure.
    fn reply<T: Serialize + ?Sized>(&self, kind: Kind, status: u64, value: &T) {
        // A chunk's reply, as its items, has its integers at full width
        // (see `encode_payload_in`).
        let fixed = self.frame.borrow().as_ref().is_some_and(|f| f.head.kind == Kind::Chunk);
        if fixed && self.reply_in_ring(kind, status, value) {
            return;
        }
        let mut scratch = self.scratch.borrow_mut();
        let encode = if fixed {
            mp_codec::encode_into_fixed::<T>
        } else {
            mp_codec::encode_into::<T>
        };
        let (status, r) = match encode(value, &mut scratch) {
            Ok(()) => (status, Ok(())),
            Err(e) => {
                let failure = Failure::Encode(format!("the task's result: {e}"));
                let r = if fixed {
                    mp_codec::encode_into_fixed(&failure, &mut scratch)
                } else {
                    mp_codec::encode_into(&failure, &mut scratch)
                };
                (status::FAILED, r)
            }
        };
        if r.is_err() {
            return; // a Failure of a String always encodes
        }
        let mut head = self.reply_head(kind, status);
        let fds = scratch.take_fds();
        let fds = (!fds.is_empty()).then_some(Fds::Owned(fds));
        let payload = scratch.payload();
        match self.ring_reply(payload) {
            Some(pos) => {
                head.spos = pos;
                head.slen = payload.len() as u32;
                self.outbox.out().push(head, &[], fds);
            }
            None => self.outbox.out().push(head, payload, fds),
        }
    }

    /// Before a job starts with replies still unsent: makes sure the
    /// flusher watches them (it is woken only then, not for every reply).
    /// A worker whose replies always leave between jobs (long chunks, or
    /// one job at a time) never starts it.
    fn watch_held_replies(&self) -> Result<(), String> {
        if self.outbox.out().is_empty() {
            return Ok(());
        }
        if let Some(t) = &*self.flusher.borrow() {
            if !self.outbox.armed.swap(true, Ordering::AcqRel) {
                t.unpark();
            }
            return Ok(());
        }
        self.outbox.armed.store(true, Ordering::Release);
        let outbox = Arc::clone(&self.outbox);
        let t = std::thread::Builder::new()
            .name("mp-pool-flush".into())
            .spawn(move || outbox.watch())
            .map_err(|e| format!("pool worker: cannot start its flusher thread: {e}"))?;
        *self.flusher.borrow_mut() = Some(t.thread().clone());
        Ok(())
    }
}

/// A worker's unsent replies and its socket, shared with its flusher
/// thread.
///
/// The worker batches replies: it sends them when it runs out of frames to
/// read, or before a job once they have waited [`FLUSH_AFTER_NS`] of run
/// time. A job that runs long would hold back the replies of the jobs
/// before it (the result of a quick `apply_async` waiting on an unrelated
/// slow one, or lost with the worker if it dies); so once replies wait, the
/// flusher looks again after [`FLUSH_LATE`] and sends them if the same job
/// is still running. The flusher thread starts the first time a job starts
/// with replies unsent: a second thread makes the worker's own work
/// measurably slower (about 10% on a map of 1M squares in 8 chunks), and
/// workers whose replies always leave between jobs never need it.
struct Outbox {
    sock: OwnedFd,
    out: Mutex<OutBuf>,
    /// Incremented when a job starts and when it ends: odd while one runs.
    job: AtomicU64,
    /// Whether the flusher watches: set when a job starts with replies
    /// unsent, cleared by the flusher (under `out`'s lock) once nothing
    /// waits.
    armed: AtomicBool,
}

/// How long a running job may hold back the replies before it.
const FLUSH_LATE: Duration = Duration::from_millis(1);

impl Outbox {
    fn out(&self) -> MutexGuard<'_, OutBuf> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends every queued reply; `false` if the pool hung up.
    fn flush(&self) -> bool {
        self.out().flush(self.sock.as_fd(), true).is_ok()
    }

    fn job_edge(&self) {
        self.job.fetch_add(1, Ordering::Release);
    }

    /// The flusher thread's body: returns when the pool hangs up.
    fn watch(&self) {
        loop {
            if !self.armed.load(Ordering::Acquire) {
                std::thread::park();
                continue;
            }
            let seen = self.job.load(Ordering::Acquire);
            std::thread::sleep(FLUSH_LATE);
            let now = self.job.load(Ordering::Acquire);
            let mut out = self.out();
            if now == seen && now % 2 == 1 && !out.is_empty() && out.flush(self.sock.as_fd(), true).is_err() {
                return;
            }
            if out.is_empty() {
                self.armed.store(false, Ordering::Release);
            }
        }
    }
}

/// The panic message of `p`.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Failure> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| Failure::Panicked(panic_message(&*p)))
}

/// The trampoline of a task: decodes `A`, runs `f`, replies with `R`.
fn run_task<F, A, R>(call: Call, f: F) -> i32
where
    F: Function<A, Output = R>,
    A: DeserializeOwned,
    R: Serialize,
{
    let ex = &*call.0;
    let r = ex.args::<A>().and_then(|a| {
        ex.mark(1);
        catch(|| f.call(a))
    });
    ex.mark(FINISHED);
    match &r {
        Ok(v) => ex.reply(Kind::Done, status::OK, v),
        Err(e) => ex.reply(Kind::Done, status::FAILED, e),
    }
    0
}

/// The trampoline of a chunk: decodes `Vec<A>`, runs `f` on items `lo..hi`,
/// replies with their results.
fn run_chunk<F, A, R>(call: Call, f: F) -> i32
where
    F: Function<A, Output = R>,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    let ex = &*call.0;
    let (lo, hi) = ex.range();
    let mut items = ex.spare_vec::<A>();
    match ex.args_into(&mut items) {
        Ok(len) if (hi as usize) <= len && lo <= hi => {}
        Ok(len) => {
            let e = Failure::Decode(format!("items {lo}..{hi} of a chunk of {len}"));
            ex.mark(FINISHED);
            ex.reply(Kind::Done, status::FAILED, &e);
            return 0;
        }
        Err(e) => {
            ex.mark(FINISHED);
            ex.reply(Kind::Done, status::FAILED, &e);
            return 0;
        }
    }
    let n = (hi - lo) as usize;
    let progress = ex.progress();
    let mut ok: Vec<R> = ex.spare_vec();
    ok.reserve(n);
    // Items that panicked: their places among the chunk's results.
    let mut failed: Vec<(usize, Failure)> = Vec::new();
    let mut todo = items.drain(lo as usize..hi as usize);
    // One `catch_unwind` for the whole run of items, not one per item: it
    // is a call through the unwinding machinery that the loop would pay
    // for every item. The values go straight into `ok` (an `extend` keeps
    // its length in a register, and the values written before a panic).
    // A panic ends the run; the item that panicked is the one after every
    // item done so far, and the next run starts after it.
    loop {
        let base = lo + (ok.len() + failed.len()) as u32;
        let run = catch_unwind(AssertUnwindSafe(|| {
            ok.extend(todo.by_ref().enumerate().map(|(i, a)| {
                progress.mark(base + i as u32 + 1);
                f.call(a)
            }));
        }));
        match run {
            Ok(()) => break,
            Err(p) => failed.push((ok.len() + failed.len(), Failure::Panicked(panic_message(&*p)))),
        }
    }
    drop(todo);
    ex.keep_vec(items);
    ex.mark(FINISHED);
    if failed.is_empty() {
        ex.reply(Kind::Done, status::OK, &ok);
        ex.keep_vec(ok);
    } else {
        let mut oks = ok.into_iter();
        let mut fails = failed.into_iter().peekable();
        let mixed: Vec<Result<R, Failure>> = (0..n)
            .filter_map(|i| match fails.next_if(|(at, _)| *at == i) {
                Some((_, e)) => Some(Err(e)),
                None => oks.next().map(Ok),
            })
            .collect();
        ex.reply(Kind::Done, status::MIXED, &mixed);
    }
    0
}

/// The trampoline of an initializer.
fn run_init<F, A>(call: Call, f: F) -> i32
where
    F: Function<A, Output: Outcome>,
    A: DeserializeOwned,
{
    let ex = &*call.0;
    let r = ex
        .args::<A>()
        .and_then(|a| catch(|| f.call(a).into_result()).and_then(|r| r.map_err(Failure::Panicked)));
    ex.mark(FINISHED);
    match &r {
        Ok(()) => ex.reply(Kind::InitDone, status::OK, &()),
        Err(e) => {
            *ex.init_failed.borrow_mut() = Some(match e {
                Failure::Panicked(m) | Failure::Encode(m) | Failure::Decode(m) => m.clone(),
            });
            ex.reply(Kind::InitDone, status::FAILED, e)
        }
    }
    0
}

/// Work for a worker, encoded in the caller's thread: the entry, the
/// kind of frame and the arguments.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub(crate) kind: Kind,
    pub(crate) entry: (i64, u64),
    pub(crate) payload: Arc<Payload>,
    /// Items in a chunk (1 for a task).
    pub(crate) items: u32,
}

fn encode_payload<T: Serialize + ?Sized>(v: &T) -> Result<Arc<Payload>, TaskError> {
    let f = mp_codec::encode(v).map_err(|e| TaskError::Encode(format!("the task's arguments: {e}")))?;
    let (mut bytes, fds) = f.into_parts();
    bytes.drain(..mp_codec::HEADER_LEN.min(bytes.len()));
    Ok(Arc::new(Payload { bytes, fds }))
}

/// A chunk's items, encoded straight into `spare` (a buffer of an earlier
/// chunk) if they fit, or else through `scratch`, a frame reused from one
/// chunk of a map to the next (once its buffer has grown to a chunk's
/// size, a chunk is encoded in one pass), then copied out. Chunks and their
/// replies have their integers at full width
/// ([`mp_codec::encode_into_fixed`]): a map's items and results are mostly
/// numbers, and a varint costs two to three times the work of a plain
/// store or load on each side.
fn encode_payload_in<T: Serialize + ?Sized>(
    v: &T,
    spare: Option<Vec<u8>>,
    scratch: &mut mp_codec::Frame,
    copy_out: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<Arc<Payload>, TaskError> {
    if let Some(mut bytes) = spare {
        match mp_codec::encode_fixed_to_slice(v, &mut bytes) {
            Ok(Some((len, fds))) => {
                bytes.truncate(len);
                return Ok(Arc::new(Payload { bytes, fds }));
            }
            Ok(None) => {} // too small
            Err(e) => return Err(TaskError::Encode(format!("the task's arguments: {e}"))),
        }
    }
    mp_codec::encode_into_fixed(v, scratch).map_err(|e| TaskError::Encode(format!("the task's arguments: {e}")))?;
    Ok(Arc::new(Payload {
        bytes: copy_out(scratch.payload()),
        fds: scratch.take_fds(),
    }))
}

fn entry_error(e: mp_sys::code::EntryError) -> TaskError {
    TaskError::Encode(format!("the task's function cannot be sent to a worker: {e}"))
}

/// `f(args)` as a task.
pub(crate) fn task<F, A>(f: F, args: &A) -> Result<Work, TaskError>
where
    F: Function<A>,
    A: Serialize + DeserializeOwned + 'static,
    F::Output: Serialize,
{
    let entry = Entry::new(move |c: Call| run_task::<F, A, F::Output>(c, f)).map_err(entry_error)?;
    Ok(Work {
        kind: Kind::Task,
        entry: entry.parts(),
        payload: encode_payload(args)?,
        items: 1,
    })
}

/// `f` over `items` as one chunk, encoded into `spare` or through `scratch`
/// and copied out by `copy_out` (see [`encode_payload_in`]).
pub(crate) fn chunk<F, A>(
    f: F,
    items: &[A],
    spare: Option<Vec<u8>>,
    scratch: &mut mp_codec::Frame,
    copy_out: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<Work, TaskError>
where
    F: Function<A>,
    A: Serialize + DeserializeOwned + 'static,
    F::Output: Serialize + 'static,
{
    let entry = Entry::new(move |c: Call| run_chunk::<F, A, F::Output>(c, f)).map_err(entry_error)?;
    let n = u32::try_from(items.len()).map_err(|_| TaskError::Encode("a chunk of over 4 billion items".into()))?;
    Ok(Work {
        kind: Kind::Chunk,
        entry: entry.parts(),
        payload: encode_payload_in(items, spare, scratch, copy_out)?,
        items: n,
    })
}

/// `f(args)` as an initializer.
pub(crate) fn init<F, A>(f: F, args: &A) -> Result<Work, TaskError>
where
    F: Function<A, Output: Outcome>,
    A: Serialize + DeserializeOwned + 'static,
{
    let entry = Entry::new(move |c: Call| run_init::<F, A>(c, f)).map_err(entry_error)?;
    Ok(Work {
        kind: Kind::Init,
        entry: entry.parts(),
        payload: encode_payload(args)?,
        items: 1,
    })
}

/// Results waiting longer than this (in task run time) are sent before the
/// next task starts.
const FLUSH_AFTER_NS: u64 = 50_000;

/// So are results this large: a map's chunk, which the pool waits for to
/// hand the worker its next chunks, even when it ran in less than
/// [`FLUSH_AFTER_NS`] (12,500 squares do).
const FLUSH_AFTER_BYTES: usize = 16 << 10;

/// The body of a pool worker process: runs the frames that come over
/// `chan` until told to stop, the pool hangs up, or `limit` tasks are done
/// (0: no limit).
pub(crate) fn worker_main(chan: Fd, page: Fd, limit: u64) -> Result<(), String> {
    let sock = chan.0;
    mp_sys::fd::set_nonblocking(sock.as_fd(), false).map_err(|e| format!("pool worker: {e}"))?;
    let page = Region::from_fd(page.0).map_err(|e| format!("pool worker: its progress page: {e}"))?;
    let args_ring = page
        .try_clone()
        .and_then(|r| r.into_slice_of::<u8>(shm::ARGS_AT, shm::RING))
        .map_err(|e| format!("pool worker: its arguments' ring: {e}"))?;
    let replies_ring = page
        .try_clone()
        .and_then(|r| r.into_slice_of::<u8>(shm::REPLIES_AT, shm::RING))
        .map_err(|e| format!("pool worker: its replies' ring: {e}"))?;
    let outbox = Arc::new(Outbox {
        sock,
        out: Mutex::new(OutBuf::default()),
        job: AtomicU64::new(0),
        armed: AtomicBool::new(false),
    });
    let ex = Rc::new(Exchange {
        inbuf: RefCell::new(InBuf::new()),
        frame: RefCell::new(None),
        outbox: Arc::clone(&outbox),
        flusher: RefCell::new(None),
        scratch: RefCell::new(mp_codec::Frame::new()),
        page,
        args_ring,
        replies: RefCell::new(shm::Writer::default()),
        replies_ring: RefCell::new(replies_ring),
        started: Cell::new(None),
        init_failed: RefCell::new(None),
        spare: RefCell::new(HashMap::new()),
    });
    let sock = outbox.sock.as_fd();
    let flush = |ex: &Exchange| -> Result<(), String> {
        if ex.outbox.flush() {
            Ok(())
        } else {
            // The pool is gone: nobody wants the results.
            mp_process::exit(0)
        }
    };
    let mut done = 0u64;
    let mut unflushed_ns = 0u64;
    loop {
        let next = ex
            .inbuf
            .borrow_mut()
            .next()
            .map_err(|e| format!("pool worker: a bad frame from the pool: {e}"))?;
        let Some(frame) = next else {
            flush(&ex)?;
            unflushed_ns = 0;
            match ex.inbuf.borrow_mut().fill(sock, true) {
                Ok(Read::Data | Read::Empty) => continue,
                // The pool hung up (it was dropped or its process died).
                Ok(Read::Eof) | Err(_) => return Ok(()),
            }
        };
        let kind = frame.head.kind;
        match kind {
            Kind::Stop => {
                flush(&ex)?;
                return Ok(());
            }
            Kind::Task | Kind::Chunk | Kind::Init => {
                if unflushed_ns >= FLUSH_AFTER_NS || ex.outbox.out().owned_len() >= FLUSH_AFTER_BYTES {
                    flush(&ex)?;
                    unflushed_ns = 0;
                } else {
                    ex.watch_held_replies()?;
                }
                let entry = Entry::<Call>::from_parts(frame.head.a as i64, frame.head.b);
                *ex.frame.borrow_mut() = Some(frame);
                ex.mark(0);
                let t0 = Instant::now();
                ex.started.set(Some(t0));
                outbox.job_edge();
                let called = entry.call(Call(Rc::clone(&ex)));
                outbox.job_edge();
                if let Err(e) = called {
                    let f = Failure::Decode(format!("the task's function is not in this binary: {e}"));
                    ex.mark(FINISHED);
                    let reply = if kind == Kind::Init { Kind::InitDone } else { Kind::Done };
                    ex.reply(reply, status::FAILED, &f);
                    if kind == Kind::Init {
                        *ex.init_failed.borrow_mut() = Some(format!("{f:?}"));
                    }
                }
                unflushed_ns += t0.elapsed().as_nanos() as u64;
                *ex.frame.borrow_mut() = None;
                if kind == Kind::Init {
                    if let Some(msg) = ex.init_failed.borrow_mut().take() {
                        flush(&ex)?;
                        return Err(format!("the pool's initializer failed: {msg}"));
                    }
                } else {
                    done += 1;
                    if limit > 0 && done >= limit {
                        flush(&ex)?;
                        return Ok(());
                    }
                }
            }
            Kind::Done | Kind::InitDone => {
                return Err(format!("pool worker: a {kind:?} frame came from the pool"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_text() {
        let p = catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*p), "boom 7");
        let p = catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(panic_message(&*p), "a panic without a message");
    }

    #[test]
    fn a_capturing_closure_is_refused() {
        let n = 3u32;
        let e = task(move |x: u32| x + n, &(1u32,)).unwrap_err();
        assert!(matches!(e, TaskError::Encode(_)), "{e}");
    }
}
