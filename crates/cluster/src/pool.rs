//! `cluster::Pool`: the local pool's methods, with the work spread over the
//! worker hosts of a cluster.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mp_pool::{Data, TaskError};
use mp_process::Function;
use mp_sys::code::Entry;
use mp_sys::time::Deadline;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::claim;
use crate::cluster::{Backoff, GROUP};
use crate::conn::{Conn, IO_TIMEOUT, StreamEntry, is_away, stream_entries};
use crate::wire::{self, Answer, Call, Fail, TaskMsg};
use crate::{Cluster, ClusterError};

/// How long the result reader blocks on its stream before it looks around.
const READ_BLOCK: Duration = Duration::from_millis(250);
/// How often a waiting caller checks that a worker host of its build lives.
const ALIVE_CHECK: Duration = Duration::from_secs(1);
/// Tasks per `XADD` pipeline.
const SUBMIT_BATCH: usize = 512;
/// How long the claims hash of a terminated pool stays.
const CLAIMS_TTL: Duration = Duration::from_secs(600);
/// How often the result reader checks, while tasks wait, that the server
/// still has the namespace's data (its epoch).
const EPOCH_CHECK: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) type Outcome = Result<Vec<u8>, Fail>;

/// How a collector's wait ended, for its [`OnDone`].
pub(crate) enum End<'a> {
    /// Every result is in.
    Complete(&'a CState),
    /// Its tasks were withdrawn (the pool was terminated).
    Withdrawn,
    /// Its tasks were cancelled before a host claimed them.
    Cancelled,
    /// Its tasks were withdrawn because no worker host of this build is
    /// left.
    Abandoned,
    /// Its tasks were lost with the server's data (the message says so).
    Lost(&'a str),
}

/// What a collector runs once its wait ends: how the executor completes
/// its futures.
pub(crate) type OnDone = Box<dyn FnOnce(End<'_>) + Send>;

/// What a collector runs once a host says one of its tasks runs: how the
/// executor marks its futures running.
pub(crate) type OnStart = Box<dyn FnOnce() + Send>;

/// Results of one submission (a task, or the chunks of a map), as they
/// arrive.
pub(crate) struct Collector {
    state: Mutex<CState>,
    cv: Condvar,
    on_done: Mutex<Option<OnDone>>,
    /// What runs once a host says it has run one of its tasks for a while.
    on_start: Mutex<Option<OnStart>>,
    /// The ids of its tasks.
    tasks: Mutex<Vec<u64>>,
    /// Its tasks were cancelled before any host claimed them.
    cancelled: AtomicBool,
}

#[derive(Default)]
pub(crate) struct CState {
    pub(crate) got: HashMap<usize, Outcome>,
    arrived: VecDeque<usize>,
    expected: usize,
    /// The server lost its tasks: no more results will come.
    lost: bool,
}

impl Collector {
    pub(crate) fn new(expected: usize) -> Arc<Collector> {
        Arc::new(Collector {
            state: Mutex::new(CState {
                expected,
                ..CState::default()
            }),
            cv: Condvar::new(),
            on_done: Mutex::new(None),
            on_start: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            cancelled: AtomicBool::new(false),
        })
    }

    /// Runs `f` once every result is in (or the tasks are withdrawn); set
    /// before the tasks are submitted.
    pub(crate) fn on_done(&self, f: OnDone) {
        *lock(&self.on_done) = Some(f);
    }

    /// Runs `f` once a host says it runs one of its tasks (set before the
    /// tasks are submitted).
    pub(crate) fn on_start(&self, f: OnStart) {
        *lock(&self.on_start) = Some(f);
    }

    /// A host said it runs one of its tasks.
    fn started(&self) {
        let f = lock(&self.on_start).take();
        if let Some(f) = f {
            f();
        }
    }

    fn put(&self, index: usize, outcome: Outcome) {
        let mut s = lock(&self.state);
        if s.got.insert(index, outcome).is_none() {
            s.arrived.push_back(index);
        }
        // Wakes the waiter only when what it waits for may be in: the
        // whole submission (`AsyncResult`), or any result of a stream
        // (`IMap`, whose `expected` is unbounded). A map's caller is not
        // woken once per chunk (a futex wake and a context switch each).
        if s.got.len() >= s.expected || s.expected == usize::MAX {
            self.cv.notify_all();
        }
        if s.got.len() >= s.expected {
            if let Some(f) = lock(&self.on_done).take() {
                f(End::Complete(&s));
            }
        }
    }

    /// Its tasks were withdrawn: no result will come.
    fn withdrawn(&self, how: End<'_>) {
        if let Some(f) = lock(&self.on_done).take() {
            f(how);
        }
    }

    /// Its tasks were lost with the server's data: waiting callers wake
    /// to [`ClusterError::DataLost`].
    fn lost(&self, why: &str) {
        lock(&self.state).lost = true;
        self.cv.notify_all();
        if let Some(f) = lock(&self.on_done).take() {
            f(End::Lost(why));
        }
    }

    /// Every result is in, or none will come (its tasks were lost).
    fn complete(&self) -> bool {
        let s = lock(&self.state);
        s.got.len() >= s.expected || s.lost || self.cancelled.load(Ordering::Acquire)
    }

    /// Marks it cancelled and wakes its waiters.
    fn cancel(&self) {
        let s = lock(&self.state);
        self.cancelled.store(true, Ordering::Release);
        self.cv.notify_all();
        drop(s);
        self.withdrawn(End::Cancelled);
    }
}

type Waiter = (Arc<Collector>, usize);

pub(crate) struct Shared {
    pub(crate) cluster: Cluster,
    /// This pool's result stream.
    reply: String,
    /// Its claims hash (see `claim`).
    claims: String,
    /// The task stream of this build.
    tasks: String,
    /// The build id in hex, as each task entry names it (field `b`).
    build: String,
    next_id: AtomicU64,
    /// Task id -> where its result goes, the task's stream entry, and the
    /// namespace's epoch it was queued in (0 until the queueing answers).
    waiters: Mutex<HashMap<u64, (Waiter, String, u64)>>,
    /// Signalled when waiters are removed (`join` waits on it for none).
    idle: Condvar,
    conn: Mutex<Conn>,
    closed: AtomicBool,
    terminated: AtomicBool,
    stop: AtomicBool,
    /// What the result reader's last try said, while the server is away.
    away: Mutex<Option<String>>,
    /// The result stream of `apply` callers that wait in place (one at a
    /// time; another meanwhile goes through the reader).
    direct: Mutex<Direct>,
}

/// The result stream of the `apply` callers of the pool whose results go
/// to `reply`.
fn direct_reply(reply: &str) -> String {
    format!("{reply}:direct")
}

/// Where a reader of a result stream is: it deletes what it read with its
/// next read (one round trip per batch of results, not two).
struct Cursor {
    stream: String,
    /// The last entry read.
    last: String,
    /// Entries read, to delete with the next request.
    trim: Vec<String>,
}

impl Cursor {
    fn new(stream: String) -> Cursor {
        Cursor {
            stream,
            last: "0-0".into(),
            trim: Vec::new(),
        }
    }

    /// Adds to `p` the deletion of the entries read, then a read of up to
    /// `count` next ones that blocks for [`READ_BLOCK`] at most.
    fn add_read(&self, p: &mut redis::Pipeline, count: usize) {
        if !self.trim.is_empty() {
            p.cmd("XDEL").arg(&self.stream).arg(&self.trim).ignore();
        }
        p.cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(&self.last);
    }

    /// The entries of a read's reply, each noted as read.
    fn took(&mut self, reply: &redis::Value) -> Vec<StreamEntry> {
        let entries = stream_entries(reply);
        if let Some(e) = entries.last() {
            self.last.clone_from(&e.id);
        }
        self.trim.extend(entries.iter().map(|e| e.id.clone()));
        entries
    }
}

/// How many results one read takes at most.
const READ_COUNT: usize = 1024;

/// A result stream read by the `apply` caller itself.
pub(crate) struct Direct {
    conn: Conn,
    cursor: Cursor,
}

impl Shared {
    /// Adds to `p` the `XADD` that queues task `id` (function `entry`, the
    /// encoded argument vector `args`) with its result going to `reply`.
    fn add_task(
        &self,
        p: &mut redis::Pipeline,
        entry: &Entry<Call>,
        id: u64,
        reply: &str,
        args: Vec<u8>,
    ) -> Result<(), ClusterError> {
        let msg = TaskMsg {
            id,
            reply: reply.to_string(),
            entry: entry.parts(),
            max_deliveries: self.cluster.settings().max_deliveries,
            args,
        };
        let bytes = wire::encode(&msg).map_err(ClusterError::Encode)?;
        p.cmd("XADD")
            .arg(&self.tasks)
            .arg("*")
            .arg("b")
            .arg(&self.build)
            // The lease travels with each task: hosts renew it every third
            // of it and take over a task held past it.
            .arg("l")
            .arg(self.cluster.settings().lease.as_millis() as u64)
            // The result stream, readable without decoding the task (for
            // redis-cli and the tests).
            .arg("r")
            .arg(reply)
            .arg("t")
            .arg(bytes);
        Ok(())
    }

    /// Runs one task (function `entry`, the encoded argument vector `args`)
    /// and waits for its result in place: the caller queues it and reads
    /// the result itself, from a result stream of its own (`d`), in the same
    /// round trip when the task is quick. No thread hands the result on.
    ///
    /// Waits as [`wait`](Shared::wait) does with no deadline: until the
    /// result, the pool's termination (`Closed`), no worker of this build
    /// for the cluster's `worker_wait` (`NoWorkers`), or the server's loss
    /// of the task (`DataLost`).
    fn apply_here(&self, d: &mut Direct, entry: &Entry<Call>, args: Vec<u8>) -> Result<Outcome, ClusterError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ClusterError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut p = redis::pipe();
        // The epoch first: the task is queued in the data it names.
        self.cluster.epoch_cmds(&mut p)?;
        self.add_task(&mut p, entry, id, &d.cursor.stream, args)?;
        d.cursor.add_read(&mut p, READ_COUNT);
        // A server that is away (restarting) is waited for, within the
        // cluster's worker_wait. Sending again after a connection broke
        // mid-pipeline may queue the task twice: the first answer counts.
        let wait = self.cluster.settings().worker_wait;
        let started = Instant::now();
        let mut backoff = Backoff::new();
        let (epoch, _entry, mut reply): (u64, String, redis::Value) = loop {
            match d.conn.pipe(&p, "queueing a task") {
                Err(e) if is_away(&e) && started.elapsed() < wait => {
                    // Polling a server that is away.
                    backoff.pause(wait.saturating_sub(started.elapsed()));
                }
                r => break r?,
            }
        };
        d.cursor.trim.clear();
        backoff.reset();
        let mut checked = Instant::now();
        loop {
            for e in d.cursor.took(&reply) {
                match Answer::of(&e) {
                    Answer::Result(msg) if msg.id == id => {
                        return Ok(msg.outcome.map(serde_bytes::ByteBuf::into_vec));
                    }
                    // An answer of an earlier task sent twice, or a note
                    // that this one runs.
                    Answer::Result(_) | Answer::Started(_) => {}
                    Answer::Damaged(err) => {
                        eprintln!(
                            "mp-cluster: a damaged result entry {} in {}: {err}",
                            e.id, d.cursor.stream
                        )
                    }
                }
            }
            if self.terminated.load(Ordering::Acquire) {
                return Err(ClusterError::Closed);
            }
            if checked.elapsed() >= ALIVE_CHECK {
                // No answer for a while: a worker of this build is still
                // there, and the server still has the task.
                self.cluster.wait_for_workers_until(Deadline::NEVER)?;
                if self.cluster.epoch(&mut d.conn)? != epoch {
                    return Err(self.cluster.data_lost());
                }
                checked = Instant::now();
            }
            let mut p = redis::pipe();
            d.cursor.add_read(&mut p, READ_COUNT);
            reply = match d.conn.pipe::<Vec<redis::Value>>(&p, "waiting for a result") {
                Ok(mut r) => {
                    d.cursor.trim.clear();
                    backoff.reset();
                    r.pop().unwrap_or(redis::Value::Nil)
                }
                // The server away: the liveness check above ends the wait
                // once it has been away for the cluster's worker_wait.
                Err(e) if is_away(&e) => {
                    // Polling a server that is away.
                    backoff.pause(Backoff::MAX);
                    redis::Value::Nil
                }
                Err(e) => return Err(e),
            };
        }
    }

    /// Queues `chunks` (encoded argument vectors) of the function `entry`;
    /// their results go to `collector` at `first + i`.
    pub(crate) fn submit(
        &self,
        entry: Entry<Call>,
        chunks: Vec<Vec<u8>>,
        collector: &Arc<Collector>,
        first: usize,
    ) -> Result<(), ClusterError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ClusterError::Closed);
        }
        let n = chunks.len();
        let base = self.next_id.fetch_add(n as u64, Ordering::Relaxed);
        let mut chunks = chunks.into_iter().enumerate().peekable();
        let mut conn = lock(&self.conn);
        while chunks.peek().is_some() {
            let mut p = redis::pipe();
            // The epoch first: the tasks are queued in the data it names.
            self.cluster.epoch_cmds(&mut p)?;
            let mut ids = Vec::new();
            for (i, args) in chunks.by_ref().take(SUBMIT_BATCH) {
                let id = base + i as u64;
                self.add_task(&mut p, &entry, id, &self.reply, args)?;
                ids.push((id, first + i));
            }
            lock(&collector.tasks).extend(ids.iter().map(|&(id, _)| id));
            {
                let mut w = lock(&self.waiters);
                for &(id, index) in &ids {
                    w.insert(id, ((Arc::clone(collector), index), String::new(), 0));
                }
            }
            // A server that is away (restarting) is waited for, within the
            // cluster's worker_wait. Sending again after a connection broke
            // mid-pipeline may queue a task twice: its id gives one result.
            let started = Instant::now();
            let mut backoff = Backoff::new();
            let queued = loop {
                match conn.pipe::<Vec<String>>(&p, "queueing tasks") {
                    Err(e) if is_away(&e) && started.elapsed() < self.cluster.settings().worker_wait => {
                        // Polling a server that is away.
                        backoff.pause(self.cluster.settings().worker_wait.saturating_sub(started.elapsed()));
                    }
                    r => break r,
                }
            };
            match queued {
                Ok(replies) => {
                    let mut replies = replies.into_iter();
                    let epoch = replies.next().and_then(|e| e.parse::<u64>().ok()).unwrap_or(0);
                    let mut w = lock(&self.waiters);
                    for ((id, _), e) in ids.iter().zip(replies) {
                        if let Some(slot) = w.get_mut(id) {
                            slot.1 = e;
                            slot.2 = epoch;
                        }
                    }
                }
                Err(e) => {
                    let mut w = lock(&self.waiters);
                    for (id, _) in &ids {
                        w.remove(id);
                    }
                    self.idle.notify_all();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Waits until `pred` gives a value, `deadline` passes (`Timeout`), the
    /// pool is terminated (`Closed`), or no worker of this build is left
    /// for the cluster's `worker_wait` (`NoWorkers`/`BuildMismatch`).
    fn wait<T>(
        &self,
        c: &Collector,
        deadline: Deadline,
        mut pred: impl FnMut(&mut CState) -> Option<T>,
    ) -> Result<T, ClusterError> {
        let mut s = lock(&c.state);
        let mut checked = Instant::now();
        loop {
            if let Some(v) = pred(&mut s) {
                return Ok(v);
            }
            if c.cancelled.load(Ordering::Acquire) {
                return Err(ClusterError::Cancelled);
            }
            if self.terminated.load(Ordering::Acquire) {
                return Err(ClusterError::Closed);
            }
            if s.lost {
                return Err(self.cluster.data_lost());
            }
            if deadline.has_passed() {
                // With the server away, say so rather than "not ready".
                return Err(match lock(&self.away).clone() {
                    Some(why) => ClusterError::redis(
                        "waiting for results (the server is away)",
                        std::io::Error::new(std::io::ErrorKind::NotConnected, why).into(),
                    ),
                    None => ClusterError::Task(TaskError::Timeout),
                });
            }
            let slice = deadline.remaining().map_or(ALIVE_CHECK, |r| r.min(ALIVE_CHECK));
            let before = s.got.len();
            s = c.cv.wait_timeout(s, slice).unwrap_or_else(|e| e.into_inner()).0;
            if s.got.len() != before {
                checked = Instant::now();
            } else if checked.elapsed() >= ALIVE_CHECK {
                drop(s);
                self.cluster.wait_for_workers_until(deadline)?;
                checked = Instant::now();
                s = lock(&c.state);
            }
        }
    }

    /// Whether some task of this pool waits for its result.
    pub(crate) fn outstanding(&self) -> bool {
        !lock(&self.waiters).is_empty()
    }

    /// Cancels the tasks of `c` not yet answered if no worker host has
    /// taken any of them: they never run, and its waiters get
    /// [`ClusterError::Cancelled`]. Whether they are cancelled.
    pub(crate) fn cancel(&self, c: &Arc<Collector>) -> Result<bool, ClusterError> {
        if c.cancelled.load(Ordering::Acquire) {
            return Ok(true);
        }
        let (ids, entries): (Vec<u64>, Vec<String>) = {
            let w = lock(&self.waiters);
            lock(&c.tasks)
                .iter()
                .filter_map(|id| w.get(id).map(|(_, e, _)| (*id, e.clone())))
                .unzip()
        };
        if ids.is_empty() {
            // Every result is in (or it was withdrawn).
            return Ok(false);
        }
        if entries.iter().any(String::is_empty) {
            // Not queued yet (the queueing failed): nothing to take back.
            return Ok(false);
        }
        let done: i64 = lock(&self.conn).query(
            redis::cmd("EVAL")
                .arg(claim::CANCEL_ALL)
                .arg(1)
                .arg(&self.tasks)
                .arg(GROUP)
                .arg(&entries),
            IO_TIMEOUT,
            "cancelling a task",
        )?;
        if done != 1 {
            return Ok(false);
        }
        self.forget(&ids);
        c.cancel();
        Ok(true)
    }

    /// Python's `shutdown(cancel_futures=True)`: cancels every task that no
    /// worker host has taken (those taken run on and answer).
    pub(crate) fn cancel_unclaimed(&self) -> Result<(), ClusterError> {
        let queued: Vec<(u64, String)> = lock(&self.waiters)
            .iter()
            .filter(|(_, (_, e, _))| !e.is_empty())
            .map(|(&id, (_, e, _))| (id, e.clone()))
            .collect();
        let mut cancelled = Vec::new();
        for batch in queued.chunks(SUBMIT_BATCH) {
            let entries: Vec<&str> = batch.iter().map(|(_, e)| e.as_str()).collect();
            let marks: Vec<i64> = lock(&self.conn).query(
                redis::cmd("EVAL")
                    .arg(claim::CANCEL_EACH)
                    .arg(1)
                    .arg(&self.tasks)
                    .arg(GROUP)
                    .arg(&entries),
                IO_TIMEOUT,
                "cancelling tasks",
            )?;
            cancelled.extend(batch.iter().zip(marks).filter(|&(_, m)| m == 1).map(|((id, _), _)| *id));
        }
        for c in self.forget(&cancelled) {
            c.cancel();
        }
        Ok(())
    }

    /// Forgets the waiters of `ids` and takes their entries off the task
    /// stream; their collectors (once each).
    fn forget(&self, ids: &[u64]) -> Vec<Arc<Collector>> {
        let mut entries = Vec::with_capacity(ids.len());
        let mut collectors: Vec<Arc<Collector>> = Vec::new();
        {
            let mut w = lock(&self.waiters);
            for id in ids {
                if let Some(((c, _), e, _)) = w.remove(id) {
                    if !e.is_empty() {
                        entries.push(e);
                    }
                    if !collectors.iter().any(|k| Arc::ptr_eq(k, &c)) {
                        collectors.push(c);
                    }
                }
            }
        }
        self.idle.notify_all();
        let mut conn = lock(&self.conn);
        for batch in entries.chunks(SUBMIT_BATCH) {
            let _ = conn.query::<()>(
                redis::cmd("XDEL").arg(&self.tasks).arg(batch),
                IO_TIMEOUT,
                "withdrawing cancelled tasks",
            );
        }
        collectors
    }

    /// Takes the queued (unclaimed) tasks off the stream and forgets every
    /// waiter.
    pub(crate) fn withdraw(&self) {
        self.withdraw_as(|| End::Withdrawn);
    }

    /// Marks the pool terminated in its claims hash: no host claims its
    /// tasks any more. The hash expires after a while (it outlives the
    /// pool so that a task read just before stays unclaimed).
    pub(crate) fn mark_terminated(&self) {
        let mut p = redis::pipe();
        let direct = claim::claims_key(&direct_reply(&self.reply));
        for key in [&self.claims, &direct] {
            p.cmd("HSET").arg(key).arg(claim::TERMINATED).arg(1).ignore();
            p.cmd("PEXPIRE").arg(key).arg(CLAIMS_TTL.as_millis() as u64).ignore();
        }
        let _ = lock(&self.conn).pipe::<()>(&p, "marking the pool terminated");
    }

    /// [`withdraw`](Shared::withdraw), telling each collector `how`.
    pub(crate) fn withdraw_as(&self, how: fn() -> End<'static>) {
        let drained: Vec<(Waiter, String, u64)> = lock(&self.waiters).drain().map(|(_, w)| w).collect();
        self.idle.notify_all();
        let mut entries = Vec::with_capacity(drained.len());
        for ((c, _), e, _) in drained {
            c.withdrawn(how());
            if !e.is_empty() {
                entries.push(e);
            }
        }
        let mut conn = lock(&self.conn);
        for batch in entries.chunks(SUBMIT_BATCH) {
            let _ = conn.query::<()>(
                redis::cmd("XDEL").arg(&self.tasks).arg(batch),
                IO_TIMEOUT,
                "withdrawing tasks",
            );
        }
    }

    /// Fails every task queued in another epoch than `epoch` (the server
    /// lost them): their callers get [`ClusterError::DataLost`], their
    /// futures `TaskError::Lost`.
    fn lost_unless(&self, epoch: u64) {
        let lost: Vec<Arc<Collector>> = {
            let mut w = lock(&self.waiters);
            let ids: Vec<u64> = w
                .iter()
                .filter(|(_, (_, _, e))| *e != 0 && *e != epoch)
                .map(|(&id, _)| id)
                .collect();
            ids.iter()
                .filter_map(|id| w.remove(id))
                .map(|((c, _), _, _)| c)
                .collect()
        };
        self.idle.notify_all();
        if lost.is_empty() {
            return;
        }
        let why = self.cluster.data_lost().to_string();
        for c in lost {
            c.lost(&why);
        }
    }
}

/// The result reader: hands each result to its waiter, once per task id (a
/// second result for the same task, from a redelivery, finds no waiter and
/// is dropped), and trims the stream. While tasks wait, it checks that the
/// server still has the namespace's data (after every failure, and every
/// [`EPOCH_CHECK`]), and fails the tasks it lost.
fn read_results(shared: Arc<Shared>, mut conn: Conn) {
    let mut cursor = Cursor::new(shared.reply.clone());
    let mut backoff = Backoff::new();
    let mut failed = false;
    let mut checked = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        if (failed || checked.elapsed() >= EPOCH_CHECK) && shared.outstanding() {
            match shared.cluster.epoch(&mut conn) {
                Ok(epoch) => {
                    *lock(&shared.away) = None;
                    shared.lost_unless(epoch);
                    checked = Instant::now();
                    failed = false;
                }
                Err(e) => {
                    // Polling a server that is away.
                    *lock(&shared.away) = Some(away_text(&e));
                    backoff.pause(Backoff::MAX);
                    continue;
                }
            }
        }
        let mut p = redis::pipe();
        cursor.add_read(&mut p, READ_COUNT);
        let reply = conn.pipe::<Vec<redis::Value>>(&p, "reading results");
        // Sent, or failed: either way not sent again (entries left behind
        // go with the stream when the pool is dropped).
        cursor.trim.clear();
        let reply = match reply {
            Ok(mut r) => r.pop().unwrap_or(redis::Value::Nil),
            Err(e) => {
                // Redis away: waiting callers find out (their liveness
                // check fails, and a deadline says so); this thread polls
                // it with a backoff.
                *lock(&shared.away) = Some(away_text(&e));
                failed = true;
                backoff.pause(Backoff::MAX);
                continue;
            }
        };
        *lock(&shared.away) = None;
        backoff.reset();
        let entries = cursor.took(&reply);
        for e in &entries {
            match Answer::of(e) {
                // A host runs this task: no result yet.
                Answer::Started(id) => {
                    let waiter = lock(&shared.waiters).get(&id).map(|((c, _), _, _)| Arc::clone(c));
                    if let Some(c) = waiter {
                        c.started();
                    }
                }
                Answer::Result(msg) => {
                    let waiter = lock(&shared.waiters).remove(&msg.id);
                    if let Some(((c, index), _, _)) = waiter {
                        c.put(index, msg.outcome.map(serde_bytes::ByteBuf::into_vec));
                    }
                }
                Answer::Damaged(err) => {
                    eprintln!("mp-cluster: a damaged result entry {} in {}: {err}", e.id, shared.reply)
                }
            }
        }
        if !entries.is_empty() {
            shared.idle.notify_all();
        }
    }
}

/// What the client library said of a server that is away.
fn away_text(e: &ClusterError) -> String {
    match e {
        ClusterError::Connect { source, .. } | ClusterError::Redis { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// A pool of the cluster's worker hosts: Python's `multiprocessing.Pool`,
/// across machines. Made by [`Cluster::pool`].
///
/// Functions are named as for local pools (fn items or closures capturing
/// nothing) and run on whichever worker host of the same build takes them;
/// arguments and results are serde values. Dropping the pool withdraws
/// its tasks not yet taken.
///
/// ```no_run
/// fn square(x: u64) -> u64 { x * x }
/// let c = mp_cluster::Cluster::connect("redis://10.0.0.5:6379/0")?;
/// let pool = c.pool()?;
/// assert_eq!(pool.map(square, 0..4u64)?, vec![0, 1, 4, 9]);
/// assert_eq!(pool.apply(square, (12,))?, 144);
/// # Ok::<(), mp_cluster::ClusterError>(())
/// ```
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("reply", &self.shared.reply).finish()
    }
}

impl Cluster {
    /// A pool whose tasks run on the cluster's worker hosts.
    pub fn pool(&self) -> Result<Pool, ClusterError> {
        let mut rand = [0u8; 8];
        mp_sys::random::fill(&mut rand).map_err(|e| ClusterError::Encode(format!("no randomness for an id: {e}")))?;
        let reply = self.key(&format!("results:{:016x}", u64::from_le_bytes(rand)));
        let direct = direct_reply(&reply);
        let shared = Arc::new(Shared {
            cluster: self.clone(),
            claims: claim::claims_key(&reply),
            reply,
            tasks: self.tasks_key(self.build_id()),
            build: format!("{:016x}", self.build_id()),
            next_id: AtomicU64::new(0),
            waiters: Mutex::new(HashMap::new()),
            idle: Condvar::new(),
            conn: Mutex::new(self.new_conn()),
            closed: AtomicBool::new(false),
            terminated: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            away: Mutex::new(None),
            direct: Mutex::new(Direct {
                conn: self.new_conn(),
                cursor: Cursor::new(direct),
            }),
        });
        // The result streams exist from the start, empty (an entry added
        // and trimmed away at once): a host's "task runs" note goes only to
        // a stream that exists, so none outlives a dropped pool.
        let mut p = redis::pipe();
        for stream in [&shared.reply, &direct_reply(&shared.reply)] {
            p.cmd("XADD")
                .arg(stream)
                .arg("MAXLEN")
                .arg(0)
                .arg("*")
                .arg("x")
                .arg(0)
                .ignore();
        }
        lock(&shared.conn).pipe::<()>(&p, "making the result streams")?;
        let reader = {
            let shared = Arc::clone(&shared);
            let conn = self.new_conn();
            std::thread::Builder::new()
                .name("mp-cluster-results".into())
                .spawn(move || read_results(shared, conn))
                .map_err(|e| ClusterError::Encode(format!("cannot start the result reader thread: {e}")))?
        };
        Ok(Pool {
            shared,
            reader: Mutex::new(Some(reader)),
        })
    }
}

fn encode_chunks<A: Serialize>(items: &[A], chunksize: usize) -> Result<Vec<Vec<u8>>, ClusterError> {
    items
        .chunks(chunksize.max(1))
        .map(|c| wire::encode(c).map_err(ClusterError::Encode))
        .collect()
}

pub(crate) fn decode_items<R: DeserializeOwned>(outcome: &Outcome) -> Result<Vec<Result<R, Fail>>, ClusterError> {
    match outcome {
        Ok(bytes) => wire::decode::<Vec<Result<R, Fail>>>(bytes)
            .map_err(|e| ClusterError::Task(TaskError::Decode(format!("a task's results: {e}")))),
        Err(f) => Err(f.clone().into()),
    }
}

pub(crate) fn finish_one<R: DeserializeOwned>(s: &CState) -> Result<R, ClusterError> {
    one_of(s.got.get(&0).ok_or(ClusterError::Closed)?)
}

/// The value of a task's one result.
fn one_of<R: DeserializeOwned>(outcome: &Outcome) -> Result<R, ClusterError> {
    let mut items = decode_items::<R>(outcome)?;
    match (items.pop(), items.is_empty()) {
        (Some(r), true) => r.map_err(ClusterError::from),
        _ => Err(ClusterError::Task(TaskError::Decode(
            "a task answered with a number of results other than one".into(),
        ))),
    }
}

fn finish_map<R: DeserializeOwned>(s: &CState) -> Result<Vec<R>, ClusterError> {
    let mut out = Vec::new();
    for i in 0..s.expected {
        let outcome = s.got.get(&i).ok_or(ClusterError::Closed)?;
        for r in decode_items::<R>(outcome)? {
            out.push(r.map_err(ClusterError::from)?);
        }
    }
    Ok(out)
}

impl Pool {
    pub(crate) fn entry<F, A>(f: F) -> Result<Entry<Call>, ClusterError>
    where
        F: Function<A, Output: Serialize>,
        A: DeserializeOwned,
    {
        wire::entry_of::<F, A>(f)
    }

    /// Python's `apply(f, args)`: runs `f(args)` on a worker host and
    /// returns its value.
    ///
    /// ```no_run
    /// fn add(a: i32, b: i32) -> i32 { a + b }
    /// # let pool = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?.pool()?;
    /// assert_eq!(pool.apply(add, (2, 3))?, 5);
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn apply<F, A>(&self, f: F, args: A) -> Result<F::Output, ClusterError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        let Ok(mut d) = self.shared.direct.try_lock() else {
            // Another thread's apply waits in place: this one through the
            // reader.
            return self.apply_async(f, args)?.get();
        };
        let entry = Self::entry::<F, A>(f)?;
        self.shared.cluster.live_processes()?;
        // A slice (a sequence), not an array (which serde writes as a tuple).
        let chunk = wire::encode(&[args][..]).map_err(ClusterError::Encode)?;
        one_of(&self.shared.apply_here(&mut d, &entry, chunk)?)
    }

    /// Queues `f(args)`; its result arrives in the [`AsyncResult`].
    pub fn apply_async<F, A>(&self, f: F, args: A) -> Result<AsyncResult<F::Output>, ClusterError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        let entry = Self::entry::<F, A>(f)?;
        self.shared.cluster.live_processes()?;
        // A slice (a sequence), not an array (which serde writes as a tuple).
        let chunk = wire::encode(&[args][..]).map_err(ClusterError::Encode)?;
        let c = Collector::new(1);
        self.shared.submit(entry, vec![chunk], &c, 0)?;
        Ok(AsyncResult::new(&self.shared, c, finish_one::<F::Output>))
    }

    /// Python's `apply_async(f, args, callback, error_callback)`:
    /// [`apply_async`](Pool::apply_async) with callbacks, as the local
    /// pool's `apply_async_with`: `callback` gets the value, or
    /// `error_callback` the error (the task's failure, or
    /// [`ClusterError::Closed`] when the pool is terminated first,
    /// [`ClusterError::Cancelled`] when it is cancelled). They run once, on
    /// the pool's result thread, before `get` returns; they must not wait
    /// for results of this pool. A callback that panics is reported on
    /// stderr and goes no further.
    ///
    /// ```no_run
    /// use std::sync::mpsc;
    /// fn double(x: u32) -> u32 { x * 2 }
    /// # let pool = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?.pool()?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.apply_async_with(double, (21,), move |v: &u32| tx.send(*v).unwrap(), |e| eprintln!("{e}"))?;
    /// assert_eq!(r.get()?, 42);
    /// assert_eq!(rx.try_recv().ok(), Some(42));
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn apply_async_with<F, A>(
        &self,
        f: F,
        args: A,
        callback: impl FnOnce(&F::Output) + Send + 'static,
        error_callback: impl FnOnce(&ClusterError) + Send + 'static,
    ) -> Result<AsyncResult<F::Output>, ClusterError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        let entry = Self::entry::<F, A>(f)?;
        self.shared.cluster.wait_for_workers()?;
        let chunk = wire::encode(&[args][..]).map_err(ClusterError::Encode)?;
        let c = Collector::new(1);
        c.on_done(with_callbacks(
            &self.shared.cluster,
            finish_one::<F::Output>,
            callback,
            error_callback,
        ));
        self.shared.submit(entry, vec![chunk], &c, 0)?;
        Ok(AsyncResult::new(&self.shared, c, finish_one::<F::Output>))
    }

    /// Python's `map(f, items)`: the results in item order. Chunks as the
    /// local pool (and Python) do: about four chunks per worker process of
    /// the live worker hosts. The first failed item's error, once every
    /// chunk is done.
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// # let pool = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?.pool()?;
    /// assert_eq!(pool.map(square, 1..=3u64)?, vec![1, 4, 9]);
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn map<F, A, R>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<R>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.map_async(f, items)?.get()
    }

    /// [`map`](Pool::map) with chunks of `chunksize` items.
    pub fn map_chunked<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.map_async_inner::<F, (A,), R, A>(f, items.into_iter().collect(), Some(chunksize))?
            .get()
    }

    /// [`map`](Pool::map) without waiting: ready once every chunk is done.
    pub fn map_async<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.map_async_inner::<F, (A,), R, A>(f, items.into_iter().collect(), None)
    }

    /// Python's `map_async(f, items, callback=..., error_callback=...)`:
    /// [`map_async`](Pool::map_async) with callbacks, as
    /// [`apply_async_with`](Pool::apply_async_with): `callback` gets every
    /// result in order, or `error_callback` the first failure.
    ///
    /// ```no_run
    /// use std::sync::mpsc;
    /// fn double(x: u32) -> u32 { x * 2 }
    /// # let pool = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?.pool()?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.map_async_with(double, 0..4u32, move |v: &Vec<u32>| tx.send(v.clone()).unwrap(), |_| {})?;
    /// assert_eq!(r.get()?, [0, 2, 4, 6]);
    /// assert_eq!(rx.try_recv().ok(), Some(vec![0, 2, 4, 6]));
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn map_async_with<F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
        callback: impl FnOnce(&Vec<R>) + Send + 'static,
        error_callback: impl FnOnce(&ClusterError) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        let cb = with_callbacks(&self.shared.cluster, finish_map::<R>, callback, error_callback);
        self.map_async_cb::<F, (A,), R, A>(f, items.into_iter().collect(), None, Some(cb))
    }

    /// Python's `starmap(f, [(a, b), ...])`: each item is the argument
    /// tuple.
    ///
    /// ```no_run
    /// fn add(a: i32, b: i32) -> i32 { a + b }
    /// # let pool = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?.pool()?;
    /// assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)])?, vec![3, 7]);
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn starmap<F, A>(&self, f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<F::Output>, ClusterError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        self.starmap_async(f, items)?.get()
    }

    /// [`starmap`](Pool::starmap) without waiting.
    pub fn starmap_async<F, A>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<F::Output>>, ClusterError>
    where
        F: Function<A, Output: Data>,
        A: Data,
    {
        self.map_async_inner::<F, A, F::Output, A>(f, items.into_iter().collect(), None)
    }

    fn map_async_inner<F, T, R, I>(
        &self,
        f: F,
        items: Vec<I>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>, ClusterError>
    where
        F: Function<T, Output = R>,
        R: Data,
        T: Data,
        I: Data,
    {
        self.map_async_cb(f, items, chunksize, None)
    }

    /// `F` takes tuples `T`; the items are `I`, encoded as `T` (a 1-tuple
    /// encodes as its element). `on_done` runs as the submission ends.
    fn map_async_cb<F, T, R, I>(
        &self,
        f: F,
        items: Vec<I>,
        chunksize: Option<usize>,
        on_done: Option<OnDone>,
    ) -> Result<AsyncResult<Vec<R>>, ClusterError>
    where
        F: Function<T, Output = R>,
        R: Data,
        T: Data,
        I: Data,
    {
        let entry = Self::entry::<F, T>(f)?;
        let processes = self.shared.cluster.live_processes()?;
        let chunksize = chunksize.unwrap_or_else(|| default_chunksize(items.len(), processes));
        let chunks = if items.is_empty() {
            Vec::new()
        } else {
            encode_chunks(&items, chunksize)?
        };
        let c = Collector::new(chunks.len());
        if let Some(f) = on_done {
            if chunks.is_empty() {
                // Nothing to wait for: complete at once.
                f(End::Complete(&lock(&c.state)));
            } else {
                c.on_done(f);
            }
        }
        self.shared.submit(entry, chunks, &c, 0)?;
        Ok(AsyncResult::new(&self.shared, c, finish_map::<R>))
    }

    /// Python's `imap(f, items)`: results in item order, as they come,
    /// with at most a few chunks per worker process in flight (the input is
    /// read lazily).
    ///
    /// ```no_run
    /// fn inc(x: u32) -> u32 { x + 1 }
    /// # let pool = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?.pool()?;
    /// let v: Result<Vec<u32>, _> = pool.imap(inc, 0..5u32)?.collect();
    /// assert_eq!(v?, vec![1, 2, 3, 4, 5]);
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn imap<'a, F, A, R>(&self, f: F, items: impl IntoIterator<Item = A> + 'a) -> Result<IMap<'a, R>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.imap_inner(f, items, 1, true)
    }

    /// [`imap`](Pool::imap) with chunks of `chunksize` items.
    pub fn imap_chunked<'a, F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A> + 'a,
        chunksize: usize,
    ) -> Result<IMap<'a, R>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.imap_inner(f, items, chunksize, true)
    }

    /// Python's `imap_unordered`: results in completion order.
    pub fn imap_unordered<'a, F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A> + 'a,
    ) -> Result<IMap<'a, R>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.imap_inner(f, items, 1, false)
    }

    /// [`imap_unordered`](Pool::imap_unordered) with chunks of `chunksize`
    /// items.
    pub fn imap_unordered_chunked<'a, F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A> + 'a,
        chunksize: usize,
    ) -> Result<IMap<'a, R>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        self.imap_inner(f, items, chunksize, false)
    }

    fn imap_inner<'a, F, A, R>(
        &self,
        f: F,
        items: impl IntoIterator<Item = A> + 'a,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMap<'a, R>, ClusterError>
    where
        F: Fn(A) -> R + Copy + Send + 'static,
        A: Data,
        R: Data,
    {
        let entry = Self::entry::<F, (A,)>(f)?;
        let processes = self.shared.cluster.live_processes()?;
        let chunksize = chunksize.max(1);
        let mut items = items.into_iter();
        let next_chunk = move || -> Option<Result<Vec<u8>, ClusterError>> {
            let chunk: Vec<A> = items.by_ref().take(chunksize).collect();
            (!chunk.is_empty()).then(|| wire::encode(&chunk).map_err(ClusterError::Encode))
        };
        Ok(IMap {
            shared: Arc::clone(&self.shared),
            collector: Collector::new(usize::MAX),
            entry,
            next_chunk: Box::new(next_chunk),
            window: processes * 2,
            submitted: 0,
            yielded_chunks: 0,
            exhausted: false,
            ordered,
            ready: VecDeque::new(),
            _r: PhantomData,
        })
    }

    /// Python's `close()`: no new tasks; those queued still run.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    /// Python's `terminate()`: no new tasks, the queued ones not yet taken
    /// by a worker host are withdrawn, and waiting callers get
    /// [`ClusterError::Closed`].
    pub fn terminate(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.terminated.store(true, Ordering::Release);
        self.shared.mark_terminated();
        self.shared.withdraw();
    }

    /// Python's `join()`: waits until every task has its result (after
    /// [`close`](Pool::close) or [`terminate`](Pool::terminate)).
    pub fn join(&self) -> Result<(), ClusterError> {
        self.join_deadline(Deadline::NEVER)
    }

    /// [`join`](Pool::join) for at most `t` (`Err(Task(Timeout))` after).
    pub fn join_timeout(&self, t: Duration) -> Result<(), ClusterError> {
        self.join_deadline(Deadline::after(t))
    }

    fn join_deadline(&self, deadline: Deadline) -> Result<(), ClusterError> {
        if !self.shared.closed.load(Ordering::Acquire) {
            return Err(ClusterError::Encode(
                "join() needs close() or terminate() first: the pool still accepts tasks".into(),
            ));
        }
        // Woken as results (or cancels, losses, withdrawals) remove
        // waiters; every `ALIVE_CHECK` a live worker is looked for.
        let mut checked = Instant::now();
        let mut w = lock(&self.shared.waiters);
        while !w.is_empty() {
            if deadline.has_passed() {
                return Err(ClusterError::Task(TaskError::Timeout));
            }
            let step = ALIVE_CHECK
                .saturating_sub(checked.elapsed())
                .min(deadline.remaining().unwrap_or(ALIVE_CHECK));
            w = self
                .shared
                .idle
                .wait_timeout(w, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if !w.is_empty() && checked.elapsed() >= ALIVE_CHECK {
                drop(w);
                self.shared.cluster.wait_for_workers_until(deadline)?;
                checked = Instant::now();
                w = lock(&self.shared.waiters);
            }
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.terminated.store(true, Ordering::Release);
        self.shared.mark_terminated();
        self.shared.withdraw();
        self.shared.stop.store(true, Ordering::Release);
        if let Some(r) = lock(&self.reader).take() {
            let _ = r.join();
        }
        let direct = direct_reply(&self.shared.reply);
        let _ = lock(&self.shared.conn).query::<()>(
            redis::cmd("DEL").arg(&self.shared.reply).arg(direct),
            IO_TIMEOUT,
            "removing the result streams",
        );
    }
}

/// The [`OnDone`] that calls `callback` with the value `finish` makes, or
/// `error_callback` with its error (or with `Closed` or `Cancelled` when
/// the tasks were withdrawn, `DataLost` when the server lost them). A panic in either is reported and stops
/// there.
fn with_callbacks<R: 'static>(
    cluster: &Cluster,
    finish: fn(&CState) -> Result<R, ClusterError>,
    callback: impl FnOnce(&R) + Send + 'static,
    error_callback: impl FnOnce(&ClusterError) + Send + 'static,
) -> OnDone {
    let lost = cluster.data_lost();
    Box::new(move |end: End<'_>| {
        let outcome = match end {
            End::Complete(s) => finish(s),
            End::Lost(_) => Err(lost),
            End::Cancelled => Err(ClusterError::Cancelled),
            End::Withdrawn | End::Abandoned => Err(ClusterError::Closed),
        };
        let run = std::panic::AssertUnwindSafe(move || match outcome {
            Ok(v) => callback(&v),
            Err(e) => error_callback(&e),
        });
        if std::panic::catch_unwind(run).is_err() {
            eprintln!("mp-cluster: a pool callback panicked (ignored, as Python logs it)");
        }
    })
}

/// Python's chunk size for `map`: four chunks per process, rounded up.
pub(crate) fn default_chunksize(n: usize, processes: usize) -> usize {
    let per = processes.max(1) * 4;
    n.div_ceil(per).max(1)
}

/// The result of a submission: Python's `AsyncResult`.
pub struct AsyncResult<R> {
    shared: Arc<Shared>,
    collector: Arc<Collector>,
    finish: fn(&CState) -> Result<R, ClusterError>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("ready", &self.ready()).finish()
    }
}

impl<R> AsyncResult<R> {
    fn new(shared: &Arc<Shared>, collector: Arc<Collector>, finish: fn(&CState) -> Result<R, ClusterError>) -> Self {
        AsyncResult {
            shared: Arc::clone(shared),
            collector,
            finish,
        }
    }

    /// The value, waiting for it (while a worker host of this build lives).
    pub fn get(&self) -> Result<R, ClusterError> {
        self.get_deadline(Deadline::NEVER)
    }

    /// [`get`](AsyncResult::get) for at most `t`; `Task(Timeout)` after,
    /// and the task goes on (a `Redis` error instead while the server
    /// does not answer: the task goes on too, if the server comes back with
    /// its data).
    pub fn get_timeout(&self, t: Duration) -> Result<R, ClusterError> {
        self.get_deadline(Deadline::after(t))
    }

    fn get_deadline(&self, deadline: Deadline) -> Result<R, ClusterError> {
        let finish = self.finish;
        self.shared.wait(&self.collector, deadline, |s| {
            (s.got.len() >= s.expected).then(|| finish(s))
        })?
    }

    /// Waits until the result is ready (or a cluster error ends the wait).
    pub fn wait(&self) {
        let _ = self.shared.wait(&self.collector, Deadline::NEVER, |s| {
            (s.got.len() >= s.expected).then_some(())
        });
    }

    /// Waits at most `t`; whether the result is ready.
    pub fn wait_timeout(&self, t: Duration) -> bool {
        let _ = self.shared.wait(&self.collector, Deadline::after(t), |s| {
            (s.got.len() >= s.expected).then_some(())
        });
        self.ready()
    }

    /// Whether the result has arrived (or never will: its tasks were lost
    /// with the server's data, and `get` says so).
    pub fn ready(&self) -> bool {
        self.collector.complete()
    }

    /// Cancels the submission if no worker host has claimed any of its
    /// tasks yet: then none of them ever runs, `get` fails with
    /// [`ClusterError::Cancelled`], and this returns `Ok(true)`. Once a
    /// host has claimed one, nothing changes (`Ok(false)`): its results
    /// arrive as usual. (Python's `AsyncResult` has no `cancel`; this is
    /// `Future.cancel` for the cluster.)
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// # let pool = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?.pool()?;
    /// let r = pool.apply_async(square, (3,))?;
    /// if r.cancel()? {
    ///     assert!(matches!(r.get(), Err(mp_cluster::ClusterError::Cancelled)));
    /// } else {
    ///     assert_eq!(r.get()?, 9);
    /// }
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn cancel(&self) -> Result<bool, ClusterError> {
        self.shared.cancel(&self.collector)
    }

    /// Whether it was cancelled ([`cancel`](AsyncResult::cancel)).
    pub fn cancelled(&self) -> bool {
        self.collector.cancelled.load(Ordering::Acquire)
    }

    /// Whether it succeeded; `None` while not ready.
    pub fn successful(&self) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        if self.cancelled() {
            return Some(false);
        }
        Some((self.finish)(&lock(&self.collector.state)).is_ok())
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`].
pub struct IMap<'a, R> {
    shared: Arc<Shared>,
    collector: Arc<Collector>,
    entry: Entry<Call>,
    next_chunk: Box<dyn FnMut() -> Option<Result<Vec<u8>, ClusterError>> + 'a>,
    window: usize,
    submitted: usize,
    yielded_chunks: usize,
    exhausted: bool,
    ordered: bool,
    ready: VecDeque<Result<R, ClusterError>>,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("submitted", &self.submitted)
            .field("ordered", &self.ordered)
            .finish()
    }
}

impl<R: DeserializeOwned> IMap<'_, R> {
    /// The next result, waiting at most `t` (`Some(Err(Task(Timeout)))`
    /// after, and the next call waits again); `None` at the end.
    pub fn next_timeout(&mut self, t: Duration) -> Option<Result<R, ClusterError>> {
        self.next_deadline(Deadline::after(t))
    }

    fn fill(&mut self) -> Result<(), ClusterError> {
        while !self.exhausted && self.submitted - self.yielded_chunks < self.window {
            match (self.next_chunk)() {
                None => self.exhausted = true,
                Some(chunk) => {
                    let chunk = chunk?;
                    self.shared
                        .submit(self.entry, vec![chunk], &self.collector, self.submitted)?;
                    self.submitted += 1;
                }
            }
        }
        Ok(())
    }

    fn next_deadline(&mut self, deadline: Deadline) -> Option<Result<R, ClusterError>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            if let Err(e) = self.fill() {
                self.exhausted = true;
                return Some(Err(e));
            }
            if self.yielded_chunks == self.submitted {
                return None;
            }
            let want = self.yielded_chunks;
            let ordered = self.ordered;
            let got = self.shared.wait(&self.collector, deadline, |s| {
                let index = if ordered {
                    s.arrived.clear();
                    s.got.contains_key(&want).then_some(want)
                } else {
                    s.arrived.pop_front()
                }?;
                s.got.remove(&index)
            });
            match got {
                Err(e @ ClusterError::DataLost { .. }) => {
                    // No result will come for what is queued: the end.
                    self.exhausted = true;
                    self.yielded_chunks = self.submitted;
                    return Some(Err(e));
                }
                Err(e) => return Some(Err(e)),
                Ok(outcome) => {
                    self.yielded_chunks += 1;
                    match decode_items::<R>(&outcome) {
                        Ok(items) => self
                            .ready
                            .extend(items.into_iter().map(|r| r.map_err(ClusterError::from))),
                        Err(e) => self.ready.push_back(Err(e)),
                    }
                }
            }
        }
    }
}

impl<R: DeserializeOwned> Iterator for IMap<'_, R> {
    type Item = Result<R, ClusterError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_deadline(Deadline::NEVER)
    }
}
