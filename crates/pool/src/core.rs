//! The pool's engine: one thread in the parent that owns the workers.
//!
//! Callers encode their work in their own thread and queue it. The pool
//! thread hands each worker a few jobs at a time over the worker's own
//! socket (so it always knows which jobs each worker holds), reads the
//! replies, and delivers them to the jobs' sinks; callbacks run there, in
//! completion order. It watches each worker's pidfd: a worker that dies is
//! reaped, the job it was running fails with `TaskError::WorkerLost`, the
//! jobs queued behind it go to other workers, and a new worker takes its
//! place.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use mp_codec::Fd;
use mp_process::{Process, StartMethod};
use mp_sys::fd::{PollFd, poll};
use mp_sys::region::{Region, RegionSlice};
use mp_sys::socket::{SocketKind, socketpair};
use mp_sys::time::Deadline;

use crate::error::{PoolError, TaskError};
use crate::shm;
use crate::task::{FINISHED, Work, worker_main};
use crate::wire::{Fds, Head, InBuf, Kind, OutBuf, Payload, Read};

/// A worker's reply to one job: its payload and how to read it
/// ([`status`](crate::task::status)).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u64,
    pub(crate) payload: Payload,
}

/// Where a job's outcome goes: items `lo..hi` of chunk `tag` (a task is
/// chunk 0, items `0..1`).
pub(crate) trait Sink: Send + Sync {
    fn deliver(&self, tag: usize, lo: u32, hi: u32, r: Result<Reply, TaskError>);

    /// Offers a reply of `status` that is still in shared memory, without
    /// descriptors: true if the sink took it from there (a map decoding
    /// its chunks in order into its output); false, having taken nothing,
    /// and the reply is copied and [`deliver`](Sink::deliver)ed.
    fn deliver_in_place(&self, _tag: usize, _lo: u32, _hi: u32, _status: u64, _bytes: &[u8]) -> bool {
        false
    }

    /// Called as the job is handed to a worker: false drops it (it was
    /// cancelled).
    fn start(&self) -> bool {
        true
    }

    /// Cancels the job if it has not started; whether it is cancelled.
    fn cancel(&self) -> bool {
        false
    }
}

/// A queued or running job.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) work: Work,
    pub(crate) lo: u32,
    pub(crate) hi: u32,
    pub(crate) tag: usize,
    pub(crate) sink: Arc<dyn Sink>,
    /// Times this job was handed back after its worker died while decoding
    /// it.
    retries: u8,
    /// Its arguments are in its worker's ring, up to this position.
    ring_end: Option<u64>,
}

impl Job {
    fn fail(self, e: TaskError) {
        self.sink.deliver(self.tag, self.lo, self.hi, Err(e));
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    Running,
    Closed,
    Terminating,
}

pub(crate) struct State {
    queue: VecDeque<Job>,
    pub(crate) phase: Phase,
    /// Lazy maps (`imap`) that may still queue work after `close`.
    feeders: usize,
    /// The error every job gets once the pool cannot run tasks.
    broken: Option<TaskError>,
    pub(crate) finished: bool,
    pids: Vec<u32>,
    /// Cancel the queued jobs that can be cancelled, once the workers have
    /// taken what they can (`shutdown(cancel_futures=True)`).
    cancel_queued: bool,
}

/// How the pool was set up.
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) maxtasks: u64,
    pub(crate) method: StartMethod,
    pub(crate) init: Option<Work>,
    /// A worker that dies breaks the pool (the executor's behaviour): every
    /// pending and new job fails.
    pub(crate) break_on_loss: bool,
}

/// What callers and the pool thread share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) changed: Condvar,
    /// Bumped on every submission and phase change.
    events: AtomicU64,
    asleep: AtomicBool,
    wake_r: OwnedFd,
    wake_w: OwnedFd,
    next_id: AtomicU64,
    pub(crate) cfg: Config,
    /// Buffers of large replies that a map has decoded, for the pool
    /// thread to read the next replies into: memory that is already mapped
    /// costs no page faults (a map of 1M items has megabytes of replies).
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Replies at least this large get their buffer from [`Shared::spare`].
const SPARE_MIN: usize = 64 << 10;

/// At most this many spare buffers, of at most [`SPARE_MAX_BYTES`] in all:
/// enough for every chunk of a map (8 for two workers) to find the buffer
/// of one before it.
const SPARE_COUNT: usize = 16;
const SPARE_MAX_BYTES: usize = 64 << 20;

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes the pool thread look at the state again.
    fn poke(&self) {
        self.events.fetch_add(1, Ordering::SeqCst);
        if self.asleep.swap(false, Ordering::SeqCst) {
            let _ = mp_sys::fd::write(self.wake_w.as_fd(), b"!");
        }
    }

    /// Queues `work` as one job (`tag`, items `0..work.items`) for `sink`.
    /// `feeder`: the caller is a lazy map registered with [`add_feeder`],
    /// which may queue after `close`.
    pub(crate) fn submit(
        &self,
        works: impl IntoIterator<Item = (usize, Work)>,
        sink: &Arc<dyn Sink>,
        feeder: bool,
    ) -> Result<(), TaskError> {
        let mut st = self.lock();
        if let Some(e) = &st.broken {
            return Err(e.clone());
        }
        match st.phase {
            Phase::Running => {}
            Phase::Closed if feeder => {}
            _ => return Err(TaskError::Closed),
        }
        for (tag, work) in works {
            let hi = work.items;
            st.queue.push_back(Job {
                id: self.new_id(),
                work,
                lo: 0,
                hi,
                tag,
                sink: Arc::clone(sink),
                retries: 0,
                ring_end: None,
            });
        }
        drop(st);
        self.poke();
        Ok(())
    }

    /// Registers a lazy map: the pool does not finish after `close` until
    /// [`remove_feeder`](Shared::remove_feeder).
    pub(crate) fn add_feeder(&self) -> Result<(), TaskError> {
        let mut st = self.lock();
        if st.phase != Phase::Running {
            return Err(TaskError::Closed);
        }
        st.feeders += 1;
        Ok(())
    }

    pub(crate) fn remove_feeder(&self) {
        self.lock().feeders -= 1;
        self.poke();
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        let mut st = self.lock();
        if st.phase == Phase::Running || p == Phase::Terminating {
            st.phase = p;
        }
        drop(st);
        self.poke();
    }

    /// Waits until the pool thread has finished, at most until `deadline`.
    pub(crate) fn wait_finished(&self, deadline: Deadline) -> bool {
        let mut st = self.lock();
        while !st.finished {
            match deadline.remaining() {
                None => st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(left) if left.is_zero() => return false,
                Some(left) => st = self.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0,
            }
        }
        true
    }

    /// Asks the pool thread to cancel the queued jobs that can be cancelled
    /// (executor futures) once it has handed the workers what they can
    /// take now: as Python's executor, which cancels what is left once its
    /// call queue is full, the jobs already given to a worker run.
    pub(crate) fn cancel_queued(&self) {
        self.lock().cancel_queued = true;
        self.poke();
    }

    /// Gives back the buffer of a reply that has been decoded (its length
    /// kept: [`spare_to_fill`](Shared::spare_to_fill) hands it out whole).
    pub(crate) fn recycle(&self, bytes: Vec<u8>) {
        if bytes.capacity() < SPARE_MIN {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = spare.iter().map(Vec::capacity).sum();
        if spare.len() < SPARE_COUNT && held.saturating_add(bytes.capacity()) <= SPARE_MAX_BYTES {
            spare.push(bytes);
        }
    }

    /// A copy of `data`, in a spare buffer if one is large enough.
    pub(crate) fn copy_out(&self, data: &[u8]) -> Vec<u8> {
        if data.len() >= SPARE_MIN {
            let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = spare.iter().position(|b| b.capacity() >= data.len()) {
                let mut b = spare.swap_remove(i);
                drop(spare);
                b.clear();
                b.extend_from_slice(data);
                return b;
            }
        }
        data.to_vec()
    }

    /// A spare buffer of at least `min` bytes (and [`SPARE_MIN`]), its
    /// length its capacity, to encode into: its old bytes are overwritten,
    /// only what was never in use is zeroed.
    pub(crate) fn spare_to_fill(&self, min: usize) -> Option<Vec<u8>> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let i = spare.iter().position(|b| b.capacity() >= min.max(SPARE_MIN))?;
        let mut b = spare.swap_remove(i);
        drop(spare);
        b.resize(b.capacity(), 0);
        Some(b)
    }

    /// The pids of the current workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.lock().pids.clone()
    }
}

/// One worker, as the pool thread holds it.
struct Worker {
    proc: Process,
    sentinel: OwnedFd,
    sock: OwnedFd,
    /// Its progress word, the replies' ring's tail, and the two rings
    /// ([`shm`]).
    page: Region,
    /// The replies' ring, read in place.
    replies: RegionSlice<u8>,
    /// The arguments' ring: where the next payload goes, and the position
    /// before which no job in flight uses it.
    args: shm::Writer,
    args_released: u64,
    /// The replies' ring: released up to here.
    replies_released: u64,
    out: OutBuf,
    inb: InBuf,
    inflight: VecDeque<Job>,
    /// Jobs handed to it, for `maxtasksperchild`.
    taken: u64,
    stopping: bool,
    /// Its initializer has not replied yet.
    initializing: bool,
    /// Its socket reached end of file: it is exiting.
    hung_up: bool,
}

impl Worker {
    fn start(cfg: &Config) -> Result<Worker, PoolError> {
        let (mine, theirs) = socketpair(SocketKind::Stream)?;
        mp_sys::fd::set_nonblocking(mine.as_fd(), true)?;
        let page = Region::create("mp-pool-worker", shm::REGION_LEN)?;
        let replies = page.try_clone()?.into_slice_of::<u8>(shm::REPLIES_AT, shm::RING)?;
        let page_fd = page.try_clone_fd()?;
        let p = Process::new(worker_main, (Fd(theirs), Fd(page_fd), cfg.maxtasks))
            .daemon(true)
            .start_method(cfg.method);
        let prefix = match cfg.method {
            StartMethod::Fork => "ForkPoolWorker",
            StartMethod::Spawn => "SpawnPoolWorker",
            StartMethod::ForkServer => "ForkServerPoolWorker",
        };
        let name = p.get_name().replacen("Process", prefix, 1);
        let mut proc = p.name(&name);
        proc.start()?;
        let sentinel = match proc.sentinel() {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, say: the worker runs, but the pool
                // could never watch it. End it and reap it, so a pool that
                // fails to start leaves no process behind.
                let _ = proc.kill();
                let _ = proc.join_timeout(Duration::from_secs(10));
                return Err(e.into());
            }
        };
        let mut w = Worker {
            proc,
            sentinel,
            sock: mine,
            page,
            replies,
            args: shm::Writer::default(),
            args_released: 0,
            replies_released: 0,
            out: OutBuf::default(),
            inb: InBuf::new(),
            inflight: VecDeque::new(),
            taken: 0,
            stopping: false,
            initializing: false,
            hung_up: false,
        };
        if let Some(init) = &cfg.init {
            w.out.push(
                head_for(Kind::Init, 0, init, 0, 1),
                &init.payload.bytes,
                fds_of(&init.payload),
            );
            w.initializing = true;
        }
        Ok(w)
    }

    fn pid(&self) -> u32 {
        self.proc.pid().unwrap_or(0)
    }

    fn can_take(&self, level: usize, maxtasks: u64) -> bool {
        !self.stopping && self.inflight.len() < level && (maxtasks == 0 || self.taken < maxtasks)
    }

    fn give(&mut self, mut job: Job) {
        let mut head = head_for(job.work.kind, job.id, &job.work, job.lo, job.hi);
        let payload = &job.work.payload;
        job.ring_end = None;
        if payload.bytes.len() >= shm::MIN {
            let len = payload.bytes.len();
            if let Some(pos) = self.args.place(self.args_released, len, shm::RING) {
                let at = shm::ARGS_AT + (pos % shm::RING as u64) as usize;
                if self.page.write(at, &payload.bytes).is_ok() {
                    self.args.commit(self.args_released, pos, len);
                    head.spos = pos;
                    head.slen = len as u32;
                    job.ring_end = Some(pos + len as u64);
                }
            }
        }
        if job.ring_end.is_some() {
            self.out.push(head, &[], fds_of(&job.work.payload));
        } else {
            self.out
                .push_shared(head, Arc::clone(&job.work.payload), fds_of(&job.work.payload));
        }
        self.inflight.push_back(job);
        self.taken += 1;
    }
}

fn head_for(kind: Kind, id: u64, w: &Work, lo: u32, hi: u32) -> Head {
    let mut h = Head::new(kind, id);
    h.a = w.entry.0 as u64;
    h.b = w.entry.1;
    h.lo = lo;
    h.hi = hi;
    h
}

fn fds_of(p: &Arc<Payload>) -> Option<Fds> {
    (!p.fds.is_empty()).then(|| Fds::Shared(Arc::clone(p)))
}

/// Starts the pool's workers (in the caller's thread) and its thread.
pub(crate) fn start(cfg: Config) -> Result<(Arc<Shared>, std::thread::JoinHandle<()>), PoolError> {
    let (wake_r, wake_w) = mp_sys::fd::pipe()?;
    mp_sys::fd::set_nonblocking(wake_r.as_fd(), true)?;
    mp_sys::fd::set_nonblocking(wake_w.as_fd(), true)?;
    let mut workers = Vec::with_capacity(cfg.processes);
    for _ in 0..cfg.processes {
        match Worker::start(&cfg) {
            Ok(w) => workers.push(w),
            Err(e) => {
                for mut w in workers {
                    let _ = w.proc.kill();
                    let _ = w.proc.join();
                }
                return Err(e);
            }
        }
    }
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            phase: Phase::Running,
            feeders: 0,
            broken: None,
            finished: false,
            pids: workers.iter().map(Worker::pid).collect(),
            cancel_queued: false,
        }),
        changed: Condvar::new(),
        events: AtomicU64::new(0),
        asleep: AtomicBool::new(false),
        wake_r,
        wake_w,
        next_id: AtomicU64::new(1),
        spare: Mutex::new(Vec::new()),
        cfg,
    });
    let s = Arc::clone(&shared);
    let handle = std::thread::Builder::new()
        .name("mp-pool".into())
        .spawn(move || Engine::new(s, workers).run())?;
    Ok((shared, handle))
}

/// Exponentially weighted mean of task run times.
#[derive(Default)]
struct RunTime(Option<u64>);

impl RunTime {
    fn add(&mut self, ns: u64) {
        self.0 = Some(match self.0 {
            None => ns,
            Some(m) => m - m / 8 + ns / 8,
        });
    }

    /// Jobs to hand each worker at once: enough to cover about 200 µs of
    /// work (so a worker never waits on the round trip for its next task),
    /// at least 2, and just 1 for tasks of 20 ms or more.
    fn depth(&self) -> usize {
        match self.0 {
            None => 2,
            Some(m) if m >= 20_000_000 => 1,
            Some(m) => (200_000 / m.max(1)).clamp(2, 64) as usize,
        }
    }
}

struct Engine {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    runtime: RunTime,
    /// Workers to start (after deaths), retried if starting fails.
    missing: usize,
    stopping: bool,
}

impl Engine {
    fn new(shared: Arc<Shared>, workers: Vec<Worker>) -> Engine {
        Engine {
            shared,
            workers,
            runtime: RunTime::default(),
            missing: 0,
            stopping: false,
        }
    }

    fn run(mut self) {
        loop {
            let seen = self.shared.events.load(Ordering::SeqCst);
            if !self.step() {
                break;
            }
            for w in &mut self.workers {
                if !w.out.is_empty() {
                    // A worker that cannot take bytes is dead or dying: its
                    // pidfd says so next.
                    let _ = w.out.flush(w.sock.as_fd(), false);
                }
            }
            self.shared.asleep.store(true, Ordering::SeqCst);
            let timeout = if self.shared.events.load(Ordering::SeqCst) != seen {
                Some(Duration::ZERO)
            } else if self.missing > 0 {
                Some(Duration::from_millis(100))
            } else {
                None
            };
            self.wait(timeout);
            self.shared.asleep.store(false, Ordering::SeqCst);
        }
        self.finish();
    }

    /// Hands out queued jobs, replaces workers, and stops the workers once a
    /// closed pool has nothing left. False when the thread should end.
    fn step(&mut self) -> bool {
        let mut st = self.shared.lock();
        if st.phase == Phase::Terminating {
            return false;
        }
        if let Some(e) = st.broken.clone() {
            if !st.queue.is_empty() {
                let jobs: Vec<Job> = st.queue.drain(..).collect();
                drop(st);
                for j in jobs {
                    j.fail(e.clone());
                }
                st = self.shared.lock();
            }
        }
        let wanted = !st.queue.is_empty() || st.phase == Phase::Running || st.feeders > 0;
        if self.missing > 0 && wanted && st.broken.is_none() {
            // Starting a process takes a while: callers may queue meanwhile.
            drop(st);
            while self.missing > 0 {
                match Worker::start(&self.shared.cfg) {
                    Ok(w) => {
                        self.shared.lock().pids.push(w.pid());
                        self.workers.push(w);
                        self.missing -= 1;
                    }
                    Err(e) => {
                        eprintln!("multiprocessing: pool: could not start a worker (retrying): {e}");
                        break;
                    }
                }
            }
            st = self.shared.lock();
            if st.phase == Phase::Terminating {
                return false;
            }
        }
        let depth = self.runtime.depth();
        let maxtasks = self.shared.cfg.maxtasks;
        'fill: for level in 1..=depth {
            for w in &mut self.workers {
                if st.queue.is_empty() {
                    break 'fill;
                }
                if w.can_take(level, maxtasks) {
                    if let Some(job) = st.queue.pop_front() {
                        if job.sink.start() {
                            w.give(job);
                        }
                    }
                }
            }
        }
        if std::mem::take(&mut st.cancel_queued) && !st.queue.is_empty() {
            let jobs: Vec<Job> = st.queue.drain(..).collect();
            drop(st);
            // Cancelling runs done callbacks: not under the lock.
            let kept: Vec<Job> = jobs.into_iter().filter(|j| !j.sink.cancel()).collect();
            st = self.shared.lock();
            for j in kept.into_iter().rev() {
                st.queue.push_front(j);
            }
            if st.phase == Phase::Terminating {
                return false;
            }
        }
        let idle = st.queue.is_empty() && st.feeders == 0 && self.workers.iter().all(|w| w.inflight.is_empty());
        if st.phase == Phase::Closed && idle {
            if !self.stopping {
                self.stopping = true;
                self.missing = 0;
                for w in &mut self.workers {
                    w.out.push(Head::new(Kind::Stop, 0), &[], None);
                    w.stopping = true;
                }
            }
            if self.workers.is_empty() {
                return false;
            }
        }
        true
    }

    /// Sleeps until a worker replies or dies, or a caller pokes.
    fn wait(&mut self, timeout: Option<Duration>) {
        let (ready, dead) = {
            let mut set = Vec::with_capacity(1 + 2 * self.workers.len());
            set.push(PollFd::readable(self.shared.wake_r.as_fd()));
            // Where each worker's socket (if polled) and pidfd are in `set`.
            let mut slots = Vec::with_capacity(self.workers.len());
            for w in &self.workers {
                // A hung-up socket would poll ready again and again until the
                // worker is gone: only its pidfd can end the wait now.
                let sock = (!w.hung_up).then(|| {
                    set.push(PollFd::readable(w.sock.as_fd()).also_writable(!w.out.is_empty()));
                    set.len() - 1
                });
                set.push(PollFd::readable(w.sentinel.as_fd()));
                slots.push((sock, set.len() - 1));
            }
            if poll(&mut set, timeout).is_err() {
                return;
            }
            if set[0].is_ready() {
                let mut sink = [0u8; 64];
                while matches!(mp_sys::fd::read(self.shared.wake_r.as_fd(), &mut sink), Ok(n) if n > 0) {}
            }
            let ready: Vec<bool> = slots
                .iter()
                .map(|(s, _)| s.is_some_and(|s| set[s].is_ready()))
                .collect();
            let dead: Vec<bool> = slots.iter().map(|(_, p)| set[*p].is_ready()).collect();
            (ready, dead)
        };
        for (i, r) in ready.iter().enumerate() {
            if *r {
                self.read(i);
            }
        }
        for i in (0..self.workers.len()).rev() {
            if dead[i] {
                self.bury(i);
            }
        }
    }

    /// Reads and delivers what worker `i` has sent.
    fn read(&mut self, i: usize) {
        for _ in 0..64 {
            let w = &mut self.workers[i];
            match w.inb.fill(w.sock.as_fd(), false) {
                Ok(Read::Data) => {}
                Ok(Read::Empty) => break,
                Ok(Read::Eof) | Err(_) => {
                    // It is exiting: its pidfd says when it is done. Until
                    // then its socket would poll ready again and again.
                    w.hung_up = true;
                    break;
                }
            }
            if let Err(e) = self.parse(i) {
                let w = &mut self.workers[i];
                eprintln!(
                    "multiprocessing: pool: worker {} sent a bad frame ({e}); killing it",
                    w.pid()
                );
                let _ = w.proc.kill();
                break;
            }
        }
    }

    fn parse(&mut self, i: usize) -> Result<(), String> {
        loop {
            let w = &mut self.workers[i];
            let Some(mut f) = w.inb.next()? else {
                return Ok(());
            };
            let fds = std::mem::take(&mut f.fds);
            // Where the payload is: in the replies' ring, or after the
            // header in the socket's buffer.
            let ring = match f.head.slen {
                0 => None,
                len => Some(shm::span(f.head.spos, len as usize, w.replies_released, shm::RING)?),
            };
            let bytes: &[u8] = match &ring {
                Some(r) => w.replies.get(r.clone()).ok_or("a payload outside the ring")?,
                None => w.inb.payload(&f),
            };
            match f.head.kind {
                Kind::Done => {
                    let job = w.inflight.pop_front().ok_or("a reply to no job")?;
                    if job.id != f.head.id {
                        return Err(format!("a reply to job {} while job {} runs", f.head.id, job.id));
                    }
                    if let Some(end) = job.ring_end {
                        w.args_released = end;
                    }
                    self.runtime.add(f.head.a);
                    let status = f.head.b;
                    // A map's chunk is decoded straight from the ring into
                    // the map's output when it can be; anything else is
                    // copied out, and the ring's bytes released at once.
                    let in_place = ring.is_some()
                        && fds.is_empty()
                        && job.sink.deliver_in_place(job.tag, job.lo, job.hi, status, bytes);
                    if !in_place {
                        let reply = Reply {
                            status,
                            payload: Payload {
                                bytes: self.shared.copy_out(bytes),
                                fds,
                            },
                        };
                        job.sink.deliver(job.tag, job.lo, job.hi, Ok(reply));
                    }
                    // The arguments' buffer serves again, for a reply or
                    // the next chunk.
                    if let Ok(p) = Arc::try_unwrap(job.work.payload) {
                        self.shared.recycle(p.bytes);
                    }
                }
                Kind::InitDone => {
                    w.initializing = false;
                    if f.head.b != crate::task::status::OK {
                        let msg = mp_codec::decode_payload::<crate::error::Failure>(bytes, fds)
                            .map(|f| TaskError::from(f).to_string())
                            .unwrap_or_else(|e| format!("(its message could not be read: {e})"));
                        self.shared.lock().broken.get_or_insert(TaskError::Initializer(msg));
                    }
                }
                k => return Err(format!("a {k:?} frame from a worker")),
            }
            if ring.is_some() {
                let w = &mut self.workers[i];
                w.replies_released = f.head.spos + u64::from(f.head.slen);
                if let Some(tail) = w.page.atomics_u64().get(shm::TAIL_WORD) {
                    tail.store(w.replies_released, Ordering::Release);
                }
            }
        }
    }

    /// Worker `i` has exited: reads what it sent before it died, reaps it,
    /// settles the jobs it held and asks for a replacement.
    fn bury(&mut self, i: usize) {
        self.read(i);
        let mut w = self.workers.swap_remove(i);
        let _ = w.proc.join_timeout(Duration::from_secs(10));
        if w.proc.exitcode().is_none() {
            let _ = w.proc.kill();
            let _ = w.proc.join_timeout(Duration::from_secs(10));
        }
        let code = w.proc.exitcode().unwrap_or(-9);
        let pid = w.pid();
        let word = w.page.atomics_u64().first().map_or(0, |a| a.load(Ordering::Acquire));
        let (run_id, state) = ((word >> 32) as u32, word as u32);
        // Broken first, so whoever sees a job fail here also sees the pool
        // refuse new work.
        let abnormal = !w.stopping && (code != 0 || !w.inflight.is_empty());
        {
            let mut st = self.shared.lock();
            st.pids.retain(|p| *p != pid);
            if w.initializing && st.broken.is_none() {
                st.broken = Some(TaskError::Initializer(format!(
                    "a worker died before its initializer finished (exit code {code})"
                )));
            } else if abnormal && self.shared.cfg.break_on_loss && st.broken.is_none() {
                st.broken = Some(TaskError::WorkerLost { exitcode: code });
            }
        }
        let at = w.inflight.iter().position(|j| j.id as u32 == run_id);
        let mut requeue: Vec<Job> = Vec::new();
        let lost = TaskError::WorkerLost { exitcode: code };
        for (k, mut job) in w.inflight.drain(..).enumerate() {
            let before = at.is_some_and(|a| k < a);
            let running = at == Some(k);
            let is_chunk = job.work.kind == Kind::Chunk;
            if before || (running && state == FINISHED) {
                // It ran; its reply died with the worker. A map's items run
                // again; a task never runs twice.
                if is_chunk {
                    requeue.push(job)
                } else {
                    job.fail(lost.clone())
                }
            } else if running && state == 0 {
                // It died reading the arguments.
                if is_chunk && job.retries == 0 {
                    job.retries += 1;
                    requeue.push(job);
                } else {
                    job.fail(lost.clone());
                }
            } else if running {
                let item = state - 1;
                if is_chunk && item >= job.lo && item < job.hi {
                    job.sink.deliver(job.tag, item, item + 1, Err(lost.clone()));
                    for (lo, hi) in [(job.lo, item), (item + 1, job.hi)] {
                        if lo < hi {
                            requeue.push(Job {
                                id: self.shared.new_id(),
                                work: job.work.clone(),
                                lo,
                                hi,
                                tag: job.tag,
                                sink: Arc::clone(&job.sink),
                                retries: 0,
                                ring_end: None,
                            });
                        }
                    }
                } else {
                    job.fail(lost.clone());
                }
            } else {
                requeue.push(job);
            }
        }
        let mut st = self.shared.lock();
        if let Some(e) = st.broken.clone() {
            drop(st);
            for j in requeue {
                j.fail(e.clone());
            }
            for w in &mut self.workers {
                for j in w.inflight.drain(..) {
                    j.fail(e.clone());
                }
                let _ = w.proc.kill();
            }
            let queued: Vec<Job> = self.shared.lock().queue.drain(..).collect();
            for j in queued {
                j.fail(e.clone());
            }
        } else {
            for j in requeue.into_iter().rev() {
                st.queue.push_front(j);
            }
            if !w.stopping {
                self.missing += 1;
            }
        }
    }

    /// Ends the pool: stops or kills the workers that are left, reaps them,
    /// fails what never ran, and tells the waiters.
    fn finish(mut self) {
        for w in &mut self.workers {
            let _ = w.proc.terminate();
        }
        for mut w in self.workers.drain(..) {
            if w.proc.join_timeout(Duration::from_secs(1)).is_err() || w.proc.exitcode().is_none() {
                let _ = w.proc.kill();
                let _ = w.proc.join_timeout(Duration::from_secs(10));
            }
            for j in w.inflight.drain(..) {
                j.fail(TaskError::Closed);
            }
        }
        let mut st = self.shared.lock();
        let queued: Vec<Job> = st.queue.drain(..).collect();
        st.pids.clear();
        drop(st);
        for j in queued {
            j.fail(TaskError::Closed);
        }
        self.shared.lock().finished = true;
        self.shared.changed.notify_all();
    }
}
