//! A worker host: its local worker processes read task chunks of its
//! build from the cluster's stream, run and answer them themselves, so a
//! task that panics or crashes costs a process, never the host (which
//! answers for that process's chunks and starts another).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mp_sys::time::Deadline;

use crate::claim;
use crate::cluster::{Backoff, GROUP, HEARTBEAT, REGISTRATION_TTL, now};
use crate::conn::{Conn, IO_TIMEOUT, StreamEntry, is_away, range_entries, stream_entries};
use crate::wire::{self, Fail, ResultMsg, TaskMsg};
use crate::{Cluster, ClusterError, WorkerInfo};

/// The variable that makes any run of the binary a worker host, before
/// `main`: `MP_CLUSTER_WORKER=redis://host:port/db ./app`.
pub const WORKER_ENV: &str = "MP_CLUSTER_WORKER";
/// How many local worker processes a diverted worker host runs (default:
/// the number of CPUs).
pub const PROCESSES_ENV: &str = "MP_CLUSTER_PROCESSES";
/// The key namespace a diverted worker host serves (default `mp`).
pub const NAMESPACE_ENV: &str = "MP_CLUSTER_NAMESPACE";
/// The host label a diverted worker host registers with (default: the host
/// name).
pub const HOST_ENV: &str = "MP_CLUSTER_HOST";

/// The lease of a diverted worker host in milliseconds (default 10 000).
pub const LEASE_ENV: &str = "MP_CLUSTER_LEASE_MS";

/// The shortest lease: a client's shorter one counts as this.
const MIN_LEASE: Duration = Duration::from_millis(100);

/// How often (at most) a host with room looks for tasks held past their
/// lease.
const RECLAIM_EVERY: Duration = Duration::from_millis(250);

/// How many idle entries one look lists.
const RECLAIM_SCAN: usize = 256;

/// The lease an entry's client gave it (field `l`, in milliseconds).
fn entry_lease(e: &StreamEntry) -> Option<Duration> {
    let ms = std::str::from_utf8(e.field("l")?).ok()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ms).max(MIN_LEASE))
}

/// How long one `XREADGROUP` blocks before the loop looks around.
const READ_BLOCK: Duration = Duration::from_millis(500);

/// A worker host of a cluster.
///
/// ```no_run
/// // Serves tasks in 8 local worker processes until the process ends.
/// mp_cluster::Worker::builder("redis://10.0.0.5:6379/0").processes(8).run()?;
/// # Ok::<(), mp_cluster::ClusterError>(())
/// ```
#[derive(Debug)]
pub struct Worker {
    _private: (),
}

impl Worker {
    /// A worker host for the cluster at `url`.
    pub fn builder(url: &str) -> WorkerBuilder {
        crate::keep_worker_hook();
        WorkerBuilder {
            url: url.to_string(),
            processes: None,
            namespace: "mp".into(),
            host: None,
            lease: Duration::from_secs(10),
        }
    }
}

/// Settings of a worker host ([`Worker::builder`]).
#[derive(Debug, Clone)]
pub struct WorkerBuilder {
    url: String,
    processes: Option<usize>,
    namespace: String,
    host: Option<String>,
    lease: Duration,
}

impl WorkerBuilder {
    /// How many local worker processes run tasks (default: the CPUs).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// The key namespace to serve (the clients' `namespace`; default `mp`).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// The host label to register with (default: the host name).
    pub fn host(mut self, label: impl Into<String>) -> Self {
        self.host = Some(label.into());
        self
    }

    /// The lease of tasks that carry none of their own (default 10 s).
    /// Each client's tasks carry its lease (`ClusterBuilder::lease`): this
    /// host renews a task it holds every third of the task's lease, and
    /// takes over tasks another host has held for longer than theirs
    /// without renewing (that host died or lost Redis).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// Serves tasks until the process ends.
    pub fn run(self) -> Result<(), ClusterError> {
        self.serve(Deadline::NEVER)
    }

    /// Serves tasks for `t`, then stops taking new ones, finishes those it
    /// holds (for at most another `t`), deregisters and returns.
    pub fn run_timeout(self, t: Duration) -> Result<(), ClusterError> {
        self.serve(Deadline::after(t))
    }

    fn serve(self, until: Deadline) -> Result<(), ClusterError> {
        let processes = match self.processes {
            Some(0) => {
                return Err(ClusterError::Encode(
                    "a worker host needs at least 1 process (processes(0) was asked)".into(),
                ));
            }
            Some(n) => n,
            None => mp_process::cpu_count(),
        };
        // Not connected yet: a host started while the server is away waits
        // for it (Host::start).
        let cluster = Cluster::builder(&self.url)
            .namespace(self.namespace)
            .lease(self.lease)
            .unconnected()?;
        let host = self.host.unwrap_or_else(host_name);
        let mut rand = [0u8; 4];
        let _ = mp_sys::random::fill(&mut rand);
        let pid = mp_sys::process::pid();
        let info = WorkerInfo {
            id: format!("{host}:{pid}:{:08x}", u32::from_le_bytes(rand)),
            host,
            pid,
            processes,
            build: cluster.build_id(),
            last_heartbeat: now(),
        };
        let mut host = Host::start(cluster, info, until)?;
        let result = host.serve(until);
        host.stop();
        result
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How many chunks a local process reads at once: few while chunks take
/// long (so no host hoards work another could start), more while they
/// finish fast (so a process does not wait on a round trip to Redis for
/// each short task).
struct Pace {
    /// When the last chunk finished.
    last: Instant,
    /// A running average of the time between chunks finishing, in ns.
    gap: u64,
}

impl Pace {
    /// Chunks read at once while chunks take long.
    const FEW: usize = 2;
    /// ... and while they finish less than [`Pace::FAST`] apart.
    const MANY: usize = 16;
    const FAST: Duration = Duration::from_micros(500);

    fn new() -> Pace {
        Pace {
            last: Instant::now(),
            // Slow until chunks show otherwise.
            gap: 4 * Self::FAST.as_nanos() as u64,
        }
    }

    /// A chunk finished: the average gap moves an eighth of the way to
    /// this one. A pause counts as 100 ms at most, so a process idle for a
    /// while is fast again after a few dozen quick chunks.
    fn finished(&mut self) {
        let now = Instant::now();
        let gap = u64::try_from(now.duration_since(self.last).as_nanos())
            .unwrap_or(u64::MAX)
            .min(100_000_000);
        self.last = now;
        self.gap = self.gap - self.gap / 8 + gap / 8;
    }

    /// How many chunks to read at once.
    fn window(&self) -> usize {
        if self.gap < Self::FAST.as_nanos() as u64 {
            Self::MANY
        } else {
            Self::FEW
        }
    }
}

/// The exit code of a local process that stopped itself because the task
/// it ran belongs to a terminated pool (it has answered for its chunks).
const TERMINATED_EXIT: i32 = 75;

/// How often a local process looks at its running chunk's pool (whether it
/// was terminated) while the chunk runs.
const WATCH: Duration = Duration::from_millis(50);

/// A chunk whose run took this long has its results sent at once, not
/// with the next read.
const SEND_AFTER: Duration = Duration::from_millis(1);

/// The board a host shares with its local processes: word 0 asks them to
/// stop; words `1 + 2k` and `2 + 2k` hold the stream entry id (`ms`, `seq`)
/// of the chunk process `k` runs, `(0, 0)` for none.
type Board = mp_shared::SharedArray<u64, mp_shared::NoLock>;

fn parse_entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// What a local process needs to serve: it travels to the process.
#[derive(serde::Serialize, serde::Deserialize)]
struct Lane {
    cluster: Cluster,
    info: WorkerInfo,
    /// Its consumer name in the workers' group.
    name: String,
    /// Its place on the board.
    slot: usize,
    board: Board,
}

/// A worker host's local process: a consumer of the task stream that
/// reads, runs and answers chunks itself (no hand-off through the host on
/// the way), one batch per round trip.
fn consume(lane: Lane) {
    let stream = lane.cluster.tasks_key(lane.info.build);
    let held = Arc::new(Held::default());
    // Dropped when serving ends: the watch thread's wait ends with it.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let watch = Watch {
        conn: lane.cluster.new_conn(),
        stream: stream.clone(),
        name: lane.name.clone(),
        own_lease: lane.cluster.settings().lease,
        held: Arc::clone(&held),
    };
    let watcher = std::thread::Builder::new()
        .name("mp-cluster-watch".into())
        .spawn(move || watch.run(&stop_rx));
    let watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            eprintln!("mp-cluster worker {}: cannot start its watch thread: {e}", lane.name);
            return;
        }
    };
    let mut c = Consumer {
        conn: lane.cluster.new_conn(),
        stream,
        pace: Pace::new(),
        leases: HashMap::new(),
        reclaim_from: "-".into(),
        out: Vec::new(),
        held,
        failures: 0,
        lane,
    };
    c.serve();
    drop(stop_tx);
    let _ = watcher.join();
}

/// The chunks a local process holds (read, not answered yet), shared with
/// its watch thread.
#[derive(Default)]
struct Held {
    state: Mutex<HeldState>,
}

/// A chunk a local process holds.
#[derive(Clone)]
struct HeldEntry {
    /// Its stream entry.
    entry: String,
    /// Its pool's result stream.
    reply: String,
    lease: Duration,
    /// Its task id.
    task: u64,
}

#[derive(Default)]
struct HeldState {
    entries: Vec<HeldEntry>,
    /// When they were read (`None` between reads).
    read_at: Option<Instant>,
    /// The index of the chunk running, and since when.
    running: Option<(usize, Instant)>,
    /// Whether its client was told it runs.
    announced: bool,
    /// The result streams of pools found terminated.
    terminated: HashSet<String>,
}

struct Consumer {
    lane: Lane,
    conn: Conn,
    stream: String,
    pace: Pace,
    /// The leases of entries other processes hold (read once each).
    leases: HashMap<String, Duration>,
    /// Where the next look for expired tasks starts in the pending list.
    reclaim_from: String,
    /// Answers not sent yet.
    out: Vec<Done>,
    held: Arc<Held>,
    /// Round trips failed in a row.
    failures: u32,
}

/// An answer for one stream entry, encoded once: `None` for none (the
/// entry is only taken off the stream).
struct Done {
    entry: String,
    /// The result stream and the encoded `ResultMsg`.
    answer: Option<(String, Vec<u8>)>,
}

impl Done {
    /// The answer `msg` to stream `reply` for `entry`.
    fn answer(entry: String, reply: String, msg: &ResultMsg) -> Done {
        let answer = match wire::encode(msg) {
            Ok(bytes) => Some((reply, bytes)),
            Err(e) => {
                // Nothing to send: the task is taken off the stream and its
                // caller waits (liveness checks go on) until its deadline.
                eprintln!("mp-cluster worker: cannot encode the result of task {}: {e}", msg.id);
                None
            }
        };
        Done { entry, answer }
    }

    /// No answer for `entry`: it is only taken off the stream.
    fn silent(entry: String) -> Done {
        Done { entry, answer: None }
    }
}

/// What to do with one entry read.
enum Plan {
    Run(String, TaskMsg, Duration),
    Answer(Done),
}

impl Consumer {
    fn stopping(&self) -> bool {
        self.lane.board.get(0) == Some(1)
    }

    fn serve(&mut self) {
        // Often enough for the shortest lease a client may give.
        let every = (self.lane.cluster.settings().lease / 2).min(RECLAIM_EVERY);
        let mut reclaimed = Instant::now();
        let mut backoff = Backoff::new();
        let mut stopping: Option<Instant> = None;
        loop {
            if self.stopping() {
                // Answers still unsent are sent (a lease at most: then
                // another host runs their tasks again).
                let since = *stopping.get_or_insert_with(Instant::now);
                if self.out.is_empty() || self.send(None).is_ok() {
                    return;
                }
                if since.elapsed() >= self.lane.cluster.settings().lease {
                    eprintln!(
                        "mp-cluster worker {}: stopping with {} results unsent (the server is away); another host \
                         runs their tasks again after the lease",
                        self.lane.name,
                        self.out.len()
                    );
                    return;
                }
                backoff.pause(Backoff::MAX);
                continue;
            }
            if reclaimed.elapsed() >= every {
                reclaimed = Instant::now();
                match self.reclaim() {
                    Ok(taken) if !taken.is_empty() => {
                        self.work(taken);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) if is_nogroup(&e) => self.recreate_group(),
                    // The server away: the read below says so.
                    Err(e) if is_away(&e) => {}
                    Err(e) => eprintln!("mp-cluster worker {}: taking over expired tasks: {e}", self.lane.name),
                }
            }
            match self.send(Some(self.pace.window())) {
                Ok(entries) => {
                    backoff.reset();
                    let entries = entries.into_iter().map(|e| (e, 1)).collect();
                    self.work(entries);
                }
                Err(e) if is_nogroup(&e) => self.recreate_group(),
                Err(_) => backoff.pause(Backoff::MAX),
            }
        }
    }

    /// Sends the answers held (their results, then one `XACK` and one
    /// `XDEL` of their entries) and, with `read`, reads up to that many new
    /// entries, blocking a while for them: one round trip.
    fn send(&mut self, read: Option<usize>) -> Result<Vec<StreamEntry>, ClusterError> {
        let mut p = redis::pipe();
        if !self.out.is_empty() {
            let h = lock(&self.held.state);
            for (reply, bytes) in self.out.iter().filter_map(|d| d.answer.as_ref()) {
                // No answer to a pool terminated meanwhile.
                if !h.terminated.contains(reply) {
                    p.cmd("XADD").arg(reply).arg("*").arg("r").arg(bytes).ignore();
                }
            }
            drop(h);
            let entries: Vec<&str> = self.out.iter().map(|d| d.entry.as_str()).collect();
            add_done(&mut p, &self.stream, &entries);
        }
        if let Some(n) = read {
            p.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.lane.name)
                .arg("COUNT")
                .arg(n)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(">");
        }
        let during = if read.is_some() {
            "reading tasks"
        } else {
            "sending results"
        };
        match self.conn.pipe::<Vec<redis::Value>>(&p, during) {
            Ok(mut r) => {
                if self.failures > 0 {
                    eprintln!("mp-cluster worker {}: the server answers again", self.lane.name);
                    self.failures = 0;
                }
                self.out.clear();
                Ok(r.pop().map(|v| stream_entries(&v)).unwrap_or_default())
            }
            Err(e) => {
                // Kept, and sent again once Redis answers (a result sent
                // twice gives one: the client keeps one per task id).
                self.failures += 1;
                if !is_nogroup(&e) && (self.failures == 1 || self.failures.is_multiple_of(30)) {
                    eprintln!("mp-cluster worker {}: {e}", self.lane.name);
                }
                Err(e)
            }
        }
    }

    /// Creates the consumer group again (the server came back without its
    /// data).
    fn recreate_group(&mut self) {
        eprintln!(
            "mp-cluster worker {}: the consumer group of {} is gone (the server lost its data); creating it again",
            self.lane.name, self.stream
        );
        if let Err(e) = create_group(&mut self.conn, &self.stream) {
            eprintln!("mp-cluster worker {}: {e}", self.lane.name);
        }
    }

    /// Runs the entries of one read (each handed out `deliveries` times so
    /// far), in order, and keeps their answers to send.
    fn work(&mut self, mut entries: Vec<(StreamEntry, u64)>) {
        if entries.is_empty() {
            return;
        }
        entries.sort_by_cached_key(|(e, _)| parse_entry_id(&e.id).unwrap_or((u64::MAX, 0)));
        let plans: Vec<Plan> = entries.into_iter().map(|(e, n)| self.check(e, n)).collect();
        {
            let mut h = lock(&self.held.state);
            h.read_at = Some(Instant::now());
            h.entries = plans
                .iter()
                .filter_map(|p| match p {
                    Plan::Run(entry, task, lease) => Some(HeldEntry {
                        entry: entry.clone(),
                        reply: task.reply.clone(),
                        lease: *lease,
                        task: task.id,
                    }),
                    Plan::Answer(_) => None,
                })
                .collect();
            h.running = None;
        }
        let last = plans.len() - 1;
        let mut k = 0;
        for (i, plan) in plans.into_iter().enumerate() {
            match plan {
                Plan::Answer(d) => self.out.push(d),
                Plan::Run(entry, task, _) => {
                    let t0 = Instant::now();
                    let at_most_once = task.max_deliveries <= 1;
                    {
                        let mut h = lock(&self.held.state);
                        if h.terminated.contains(&task.reply) {
                            // Its pool was terminated while it waited here.
                            drop(h);
                            self.out.push(Done::silent(entry));
                            k += 1;
                            continue;
                        }
                        h.running = Some((k, t0));
                        h.announced = false;
                    }
                    let (ms, seq) = parse_entry_id(&entry).unwrap_or((0, 0));
                    let base = 1 + 2 * self.lane.slot;
                    let _ = self.lane.board.set(base, ms);
                    let _ = self.lane.board.set(base + 1, seq);
                    let outcome = wire::run_chunk(task.entry.0, task.entry.1, serde_bytes::ByteBuf::from(task.args));
                    let _ = self.lane.board.set(base, 0);
                    let _ = self.lane.board.set(base + 1, 0);
                    lock(&self.held.state).running = None;
                    self.pace.finished();
                    let msg = ResultMsg {
                        id: task.id,
                        worker: self.lane.info.id.clone(),
                        outcome,
                    };
                    self.out.push(Done::answer(entry, task.reply, &msg));
                    k += 1;
                    // A slow chunk's answer goes at once, not behind the
                    // chunks after it; so does an at-most-once chunk's (if
                    // this process died later in the batch, the host would
                    // queue the chunks it ran but had not answered again).
                    if i < last && (at_most_once || t0.elapsed() >= SEND_AFTER) {
                        let _ = self.send(None);
                    }
                }
            }
        }
        let mut h = lock(&self.held.state);
        h.entries.clear();
        h.read_at = None;
    }

    /// Decodes one entry, handed out `deliveries` times so far: the task to
    /// run, or the answer it gets without running.
    fn check(&self, entry: StreamEntry, deliveries: u64) -> Plan {
        let build_ok = entry
            .field("b")
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|b| u64::from_str_radix(b, 16).ok())
            == Some(self.lane.info.build);
        let task = entry
            .field("t")
            .ok_or_else(|| "no task field".to_string())
            .and_then(wire::decode::<TaskMsg>);
        let fail = |entry: String, reply: String, id: u64, why: Fail| {
            let msg = ResultMsg {
                id,
                worker: self.lane.info.id.clone(),
                outcome: Err(why),
            };
            Plan::Answer(Done::answer(entry, reply, &msg))
        };
        let task = match task {
            Ok(t) => t,
            Err(e) => {
                // Nobody to answer: the entry is dropped (and said so).
                eprintln!(
                    "mp-cluster worker {}: dropping entry {} of {}: {e}",
                    self.lane.name, entry.id, self.stream
                );
                return Plan::Answer(Done::silent(entry.id));
            }
        };
        if deliveries > u64::from(task.max_deliveries.max(1)) {
            // The hosts it was handed to died (or lost Redis) while they
            // held it: not run again.
            return fail(entry.id, task.reply, task.id, Fail::WorkerLost(LOST_HOST));
        }
        if !build_ok {
            let why = format!(
                "the worker host {} runs build {:016x}, not the task's: run the same binary everywhere",
                self.lane.info.id, self.lane.info.build
            );
            return fail(entry.id, task.reply, task.id, Fail::Refused(why));
        }
        let lease = entry_lease(&entry).unwrap_or(self.lane.cluster.settings().lease);
        Plan::Run(entry.id, task, lease)
    }

    /// Takes over up to a read's worth of entries that another process has
    /// held past their lease (the lease their client gave them, field `l`;
    /// this host's own for an entry without one) without renewing them:
    /// `XPENDING` lists the entries idle for a while, and `XCLAIM` with
    /// each entry's own lease as its minimum idle time takes those still
    /// idle past it (a renewal in between wins). Each comes with how many
    /// times it has been handed out.
    fn reclaim(&mut self) -> Result<Vec<(StreamEntry, u64)>, ClusterError> {
        let room = self.pace.window();
        // Page by page through a long pending list, one page per look.
        let pending: redis::Value = self.conn.query(
            redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(GROUP)
                .arg("IDLE")
                .arg(MIN_LEASE.as_millis() as u64)
                .arg(&self.reclaim_from)
                .arg("+")
                .arg(RECLAIM_SCAN),
            IO_TIMEOUT,
            "listing idle tasks",
        )?;
        let redis::Value::Array(rows) = pending else {
            return Ok(Vec::new());
        };
        let full = rows.len() >= RECLAIM_SCAN;
        let mut next = "-".to_string();
        // (id, idle, deliveries) of the entries others hold.
        let mut idle: Vec<(String, u64, u64)> = Vec::new();
        for row in rows {
            let redis::Value::Array(f) = row else { continue };
            let text = |v: Option<&redis::Value>| match v {
                Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
                Some(redis::Value::SimpleString(s)) => Some(s.clone()),
                _ => None,
            };
            let int = |v: Option<&redis::Value>| match v {
                Some(redis::Value::Int(n)) => u64::try_from(*n).ok(),
                _ => None,
            };
            let (Some(id), Some(owner), Some(ms), Some(n)) =
                (text(f.first()), text(f.get(1)), int(f.get(2)), int(f.get(3)))
            else {
                continue;
            };
            next = format!("({id}");
            if owner != self.lane.name {
                idle.push((id, ms, n));
            }
        }
        // A full page: the next look goes on after it; else from the start.
        self.reclaim_from = if full { next } else { "-".to_string() };
        if idle.is_empty() {
            return Ok(Vec::new());
        }
        // Each entry's lease (entry ids never change meaning: cached).
        let unknown: Vec<String> = idle
            .iter()
            .map(|(id, _, _)| id)
            .filter(|id| !self.leases.contains_key(*id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let mut p = redis::pipe();
            for id in &unknown {
                p.cmd("XRANGE").arg(&self.stream).arg(id).arg(id);
            }
            let ranges: Vec<redis::Value> = self.conn.pipe(&p, "reading the leases of idle tasks")?;
            if self.leases.len() > 100_000 {
                self.leases.clear();
            }
            let own = self.lane.cluster.settings().lease;
            for (id, r) in unknown.into_iter().zip(ranges) {
                // An entry deleted while pending reads as none: taken at
                // once, which drops it from the pending list.
                let lease = match range_entries(&r).first() {
                    Some(e) => entry_lease(e).unwrap_or(own),
                    None => Duration::ZERO,
                };
                self.leases.insert(id, lease);
            }
        }
        let due: Vec<(String, u64, Duration)> = idle
            .into_iter()
            .filter_map(|(id, ms, n)| {
                let lease = *self.leases.get(&id)?;
                (u128::from(ms) >= lease.as_millis()).then_some((id, n, lease))
            })
            .take(room)
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for (id, _, lease) in &due {
            p.cmd("XCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.lane.name)
                .arg(lease.as_millis() as u64)
                .arg(id);
        }
        let claimed: Vec<redis::Value> = self.conn.pipe(&p, "taking over expired tasks")?;
        let mut taken = Vec::new();
        for ((_, n, _), r) in due.iter().zip(claimed) {
            for entry in range_entries(&r) {
                self.leases.remove(&entry.id);
                // XCLAIM counted this delivery.
                taken.push((entry, n + 1));
            }
        }
        Ok(taken)
    }
}

/// A local process's watch thread: while a chunk runs, renews the leases
/// of the chunks the process holds (every third of the shortest), and
/// checks every [`WATCH`] whether their pools were terminated. When the
/// running chunk's pool was, it takes that pool's entries off the stream,
/// queues the process's other unanswered entries again, and ends the
/// process (the host starts another).
struct Watch {
    conn: Conn,
    stream: String,
    name: String,
    own_lease: Duration,
    held: Arc<Held>,
}

impl Watch {
    /// Looks every [`WATCH`] until `stop` closes. A pool's termination is a
    /// flag in Redis, so this looks on a timer; a chunk's start wakes
    /// nobody, which would cost every short task a wake-up.
    fn run(mut self, stop: &mpsc::Receiver<()>) {
        let mut renewed: Option<Instant> = None;
        let held = Arc::clone(&self.held);
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(WATCH) {
            let mut h = lock(&held.state);
            let Some(read_at) = h.read_at else { continue };
            let entries = h.entries.clone();
            let running = h.running.filter(|(_, since)| since.elapsed() >= WATCH);
            let announce = running.is_some() && !std::mem::replace(&mut h.announced, true);
            drop(h);
            let shortest = entries
                .iter()
                .map(|e| e.lease)
                .min()
                .unwrap_or(self.own_lease)
                .min(self.own_lease);
            if renew_due(read_at, renewed, shortest, Instant::now()) {
                renewed = Some(Instant::now());
                self.renew(&entries);
            }
            let Some((k, _)) = running else { continue };
            if announce && let Some(e) = entries.get(k) {
                self.announce(e);
            }
            let ended = self.terminated(&entries);
            let mut h = lock(&held.state);
            if !ended.is_empty() {
                h.terminated.extend(ended.iter().cloned());
                // Still the same chunk running, and of a terminated pool.
                if h.running.map(|(j, _)| j) == Some(k) && entries.get(k).is_some_and(|e| ended.contains(&e.reply)) {
                    let terminated = h.terminated.clone();
                    // The main thread stays in the chunk's function: the
                    // lock is not needed any more.
                    drop(h);
                    self.abandon(&entries, &terminated);
                    std::process::exit(TERMINATED_EXIT);
                }
            }
        }
    }

    /// Tells the client of `e` that its task runs (an entry with field
    /// [`wire::STARTED`] in its result stream): its executor future reads
    /// as running.
    fn announce(&mut self, e: &HeldEntry) {
        let r = self.conn.query::<()>(
            // Not to a stream that is gone (its pool was dropped): the
            // client makes its result streams when it makes the pool.
            redis::cmd("XADD")
                .arg(&e.reply)
                .arg("NOMKSTREAM")
                .arg("*")
                .arg(wire::STARTED)
                .arg(e.task),
            IO_TIMEOUT,
            "saying a task runs",
        );
        // Only a future's `running()` misses it.
        if let Err(err) = r
            && !is_away(&err)
        {
            eprintln!("mp-cluster worker {}: {err}", self.name);
        }
    }

    /// The result streams among `entries` whose pools were terminated.
    fn terminated(&mut self, entries: &[HeldEntry]) -> HashSet<String> {
        let mut replies: Vec<&String> = entries.iter().map(|e| &e.reply).collect();
        replies.sort_unstable();
        replies.dedup();
        let mut p = redis::pipe();
        for r in &replies {
            p.cmd("HEXISTS").arg(claim::claims_key(r)).arg(claim::TERMINATED);
        }
        match self.conn.pipe::<Vec<bool>>(&p, "checking for terminated pools") {
            Ok(flags) => replies
                .into_iter()
                .zip(flags)
                .filter(|(_, t)| *t)
                .map(|(r, _)| r.clone())
                .collect(),
            Err(_) => HashSet::new(),
        }
    }

    /// Renews the lease of every entry held: `XCLAIM` to itself with
    /// `JUSTID`, which resets the idle time without counting a delivery
    /// (entries answered meanwhile are no longer pending: left alone).
    fn renew(&mut self, entries: &[HeldEntry]) {
        let ids: Vec<&str> = entries.iter().map(|e| e.entry.as_str()).collect();
        if ids.is_empty() {
            return;
        }
        let r = self.conn.query::<redis::Value>(
            redis::cmd("XCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.name)
                .arg(0)
                .arg(&ids)
                .arg("JUSTID"),
            IO_TIMEOUT,
            "renewing leases",
        );
        if let Err(e) = r
            && !is_away(&e)
        {
            eprintln!("mp-cluster worker {}: renewing leases: {e}", self.name);
        }
    }

    /// Takes the entries of terminated pools off the stream and queues the
    /// others again (still pending here: not answered yet).
    fn abandon(&mut self, entries: &[HeldEntry], terminated: &HashSet<String>) {
        let (dead, live): (Vec<_>, Vec<_>) = entries.iter().partition(|e| terminated.contains(&e.reply));
        let dead: Vec<&str> = dead.iter().map(|e| e.entry.as_str()).collect();
        let live: Vec<&str> = live.iter().map(|e| e.entry.as_str()).collect();
        let mut p = redis::pipe();
        add_done(&mut p, &self.stream, &dead);
        add_requeue(&mut p, &self.stream, &live);
        // Failing, they stay pending and are taken over after their lease.
        if let Err(e) = self.conn.pipe::<()>(&p, "handing back tasks") {
            eprintln!("mp-cluster worker {}: {e}", self.name);
        }
    }
}

/// Whether the chunks of a read made at `read_at` (last renewed at
/// `renewed`, if since) are due for renewal: a third of their shortest
/// lease has passed since the later of the two. Counted from the read, not
/// from the start of the chunk running: a read of many chunks may take
/// longer than a lease although each of them is short.
fn renew_due(read_at: Instant, renewed: Option<Instant>, shortest: Duration, now: Instant) -> bool {
    let last = renewed.filter(|r| *r > read_at).unwrap_or(read_at);
    now.saturating_duration_since(last) >= shortest / 3
}

/// Adds to `p` the end of entries `ids` of the task stream `stream`: off
/// the group's pending list (`XACK`) and off the stream (`XDEL`).
fn add_done<T: redis::ToRedisArgs>(p: &mut redis::Pipeline, stream: &str, ids: &[T]) {
    if !ids.is_empty() {
        p.cmd("XACK").arg(stream).arg(GROUP).arg(ids).ignore();
        p.cmd("XDEL").arg(stream).arg(ids).ignore();
    }
}

/// Adds to `p` the script that queues entries `ids` of `stream` again
/// ([`claim::REQUEUE`]).
fn add_requeue<T: redis::ToRedisArgs>(p: &mut redis::Pipeline, stream: &str, ids: &[T]) {
    if !ids.is_empty() {
        p.cmd("EVAL")
            .arg(claim::REQUEUE)
            .arg(1)
            .arg(stream)
            .arg(GROUP)
            .arg(ids)
            .ignore();
    }
}

/// Adds to `p` an entry of the workers' roster for host `id` (registered,
/// beat or left): what waits for workers wake on.
fn add_roster(p: &mut redis::Pipeline, cluster: &Cluster, id: &str) {
    p.cmd("XADD")
        .arg(cluster.roster_key())
        .arg("MAXLEN")
        .arg("~")
        .arg(64)
        .arg("*")
        .arg("w")
        .arg(id)
        .ignore();
}

/// Adds to `p` the removal of consumer `name` from the workers' group of
/// `stream` (what it held is no longer pending).
fn add_leave(p: &mut redis::Pipeline, stream: &str, name: &str) {
    p.cmd("XGROUP")
        .arg("DELCONSUMER")
        .arg(stream)
        .arg(GROUP)
        .arg(name)
        .ignore();
}

/// Creates the workers' consumer group on `stream` (and the stream), if
/// it is not there: at the start, and when a server that came back without
/// its data answers `NOGROUP`.
fn create_group(conn: &mut Conn, stream: &str) -> Result<(), ClusterError> {
    let created = conn.query::<()>(
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM"),
        IO_TIMEOUT,
        "creating the workers' consumer group",
    );
    match created {
        Err(ClusterError::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Whether `e` says the consumer group (or its stream) is gone.
fn is_nogroup(e: &ClusterError) -> bool {
    matches!(e, ClusterError::Redis { source, .. } if source.code() == Some("NOGROUP"))
}

/// How long a consumer of the workers' group may go without reading while
/// holding nothing before a host removes it: its process died with its
/// host (a living process reads at least every [`READ_BLOCK`], or holds
/// what it runs; one removed during an outage comes back with its next
/// read).
const STALE_CONSUMER: Duration = Duration::from_secs(5);

/// How often a host looks for such consumers.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// One local process of a host.
struct Local {
    process: mp_process::Process,
    sentinel: std::os::fd::OwnedFd,
    name: String,
}

/// A worker host: registers, keeps its local processes running (each a
/// consumer of the task stream), and answers for the chunks of a process
/// that died.
struct Host {
    cluster: Cluster,
    info: WorkerInfo,
    stream: String,
    conn: Conn,
    board: Board,
    locals: Vec<Option<Local>>,
    /// Local processes that died, whose chunks are not answered for yet
    /// (the server was away): name, slot, exit code.
    dead: Vec<(String, usize, i32)>,
    /// Local processes started so far (their consumer names' numbers).
    started: u64,
    /// When it last swept stale consumers out of the group.
    swept: Instant,
}

impl Host {
    fn start(cluster: Cluster, info: WorkerInfo, until: Deadline) -> Result<Host, ClusterError> {
        let stream = cluster.tasks_key(info.build);
        let mut conn = cluster.new_conn();
        // The group and the registration, waiting (until `until`) for a
        // server that is not up yet.
        let mut backoff = Backoff::new();
        let mut said = false;
        loop {
            let ready = create_group(&mut conn, &stream).and_then(|()| register(&cluster, &mut conn, &info));
            match ready {
                Ok(()) => break,
                Err(e) if is_away(&e) && !until.has_passed() => {
                    if !said {
                        eprintln!("mp-cluster worker {}: {e}; waiting for the server", info.id);
                        said = true;
                    }
                    // Polling a server that is away.
                    backoff.pause(until.remaining().unwrap_or(Backoff::MAX));
                }
                Err(e) => return Err(e),
            }
        }
        if said {
            eprintln!("mp-cluster worker {}: the server answers; serving", info.id);
        }
        let board = Board::new(1 + 2 * info.processes)
            .map_err(|e| ClusterError::Encode(format!("the worker host cannot make its shared board: {e}")))?;
        let mut host = Host {
            locals: (0..info.processes).map(|_| None).collect(),
            cluster,
            info,
            stream,
            conn,
            board,
            dead: Vec::new(),
            started: 0,
            swept: Instant::now(),
        };
        for slot in 0..host.locals.len() {
            host.launch(slot)?;
        }
        Ok(host)
    }

    /// Starts the local process of `slot`.
    fn launch(&mut self, slot: usize) -> Result<(), ClusterError> {
        self.started += 1;
        let name = format!("{}/{}", self.info.id, self.started);
        let lane = Lane {
            cluster: self.cluster.clone(),
            info: self.info.clone(),
            name: name.clone(),
            slot,
            board: self.board.clone(),
        };
        let cannot = |e: mp_process::ProcessError| {
            ClusterError::Encode(format!("the worker host cannot start a local worker process: {e}"))
        };
        let mut process = mp_process::Process::new(consume, (lane,))
            .name(&format!("mp-cluster-worker-{slot}"))
            .daemon(true);
        process.start().map_err(cannot)?;
        let sentinel = process.sentinel().map_err(cannot)?;
        self.locals[slot] = Some(Local {
            process,
            sentinel,
            name,
        });
        Ok(())
    }

    /// Serves until `until`: heartbeats, and replaces local processes that
    /// die (answering for their chunks).
    fn serve(&mut self, until: Deadline) -> Result<(), ClusterError> {
        let mut beat = Instant::now();
        let mut failures = 0u32;
        while !until.has_passed() {
            let wait = HEARTBEAT
                .saturating_sub(beat.elapsed())
                .min(until.remaining().unwrap_or(HEARTBEAT));
            let exited: Vec<usize> = {
                let (slots, mut fds): (Vec<usize>, Vec<mp_sys::fd::PollFd<'_>>) = self
                    .locals
                    .iter()
                    .enumerate()
                    .filter_map(|(k, l)| Some((k, mp_sys::fd::PollFd::readable(l.as_ref()?.sentinel.as_fd()))))
                    .unzip();
                match mp_sys::fd::poll(&mut fds, Some(wait)) {
                    Ok(_) => slots
                        .into_iter()
                        .zip(&fds)
                        .filter(|(_, p)| p.is_ready())
                        .map(|(k, _)| k)
                        .collect(),
                    Err(e) => {
                        eprintln!("mp-cluster worker {}: waiting on its processes: {e}", self.info.id);
                        Vec::new()
                    }
                }
            };
            for slot in exited {
                self.reap(slot);
                if let Err(e) = self.launch(slot) {
                    eprintln!("mp-cluster worker {}: {e}", self.info.id);
                }
            }
            if !self.dead.is_empty() {
                self.answer_for_dead();
            }
            if self.swept.elapsed() >= SWEEP_EVERY {
                self.swept = Instant::now();
                if let Err(e) = self.sweep()
                    && !is_away(&e)
                {
                    eprintln!("mp-cluster worker {}: sweeping the group: {e}", self.info.id);
                }
            }
            if beat.elapsed() >= HEARTBEAT {
                beat = Instant::now();
                match register(&self.cluster, &mut self.conn, &self.info) {
                    Ok(()) => {
                        if failures > 0 {
                            eprintln!("mp-cluster worker {}: the server answers again", self.info.id);
                        }
                        failures = 0;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(30) {
                            eprintln!("mp-cluster worker {}: {e}", self.info.id);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the consumers of the group that hold nothing and have not
    /// read for [`STALE_CONSUMER`] (those of hosts that were killed; entries
    /// they held were taken over). How many.
    fn sweep(&mut self) -> Result<usize, ClusterError> {
        let rows: Vec<Vec<redis::Value>> = self.conn.query(
            redis::cmd("XINFO").arg("CONSUMERS").arg(&self.stream).arg(GROUP),
            IO_TIMEOUT,
            "listing the group's consumers",
        )?;
        let mut p = redis::pipe();
        let mut n = 0;
        for row in rows {
            // Field-value pairs: name, pending, idle (and, from Redis 7.2,
            // inactive).
            let (mut name, mut pending, mut idle) = (None, None, None);
            for pair in row.chunks(2) {
                let [redis::Value::BulkString(k), v] = pair else {
                    continue;
                };
                match (k.as_slice(), v) {
                    (b"name", redis::Value::BulkString(b)) => name = String::from_utf8(b.clone()).ok(),
                    (b"pending", redis::Value::Int(i)) => pending = Some(*i),
                    (b"idle", redis::Value::Int(i)) => idle = Some(*i),
                    _ => {}
                }
            }
            if let (Some(name), Some(0), Some(idle)) = (name, pending, idle)
                && u128::try_from(idle).unwrap_or(0) >= STALE_CONSUMER.as_millis()
            {
                add_leave(&mut p, &self.stream, &name);
                n += 1;
            }
        }
        if n > 0 {
            self.conn.pipe::<()>(&p, "removing stale consumers")?;
        }
        Ok(n)
    }

    /// Joins the exited local process of `slot` and notes its chunks to
    /// answer for.
    fn reap(&mut self, slot: usize) {
        let Some(mut l) = self.locals[slot].take() else { return };
        let _ = l.process.join_timeout(IO_TIMEOUT);
        let code = l.process.exitcode().unwrap_or(LOST_HOST);
        if code != 0 && code != TERMINATED_EXIT {
            eprintln!(
                "mp-cluster worker {}: local process {} exited with {code}; starting another",
                self.info.id, l.name
            );
        }
        self.dead.push((l.name, slot, code));
    }

    /// Answers for the chunks of local processes that died: the one that
    /// ran (the board names it) fails with `WorkerLost`, the others are
    /// queued again; then the consumer leaves the group.
    fn answer_for_dead(&mut self) {
        let dead = std::mem::take(&mut self.dead);
        for (name, slot, code) in dead {
            match self.answer_for(&name, slot, code) {
                Ok(()) => {}
                Err(e) => {
                    if !is_away(&e) {
                        eprintln!("mp-cluster worker {}: answering for {name}: {e}", self.info.id);
                    }
                    self.dead.push((name, slot, code));
                }
            }
        }
    }

    fn answer_for(&mut self, name: &str, slot: usize, code: i32) -> Result<(), ClusterError> {
        let base = 1 + 2 * slot;
        let ran = match (self.board.get(base), self.board.get(base + 1)) {
            (Some(ms), Some(seq)) if ms != 0 => Some(format!("{ms}-{seq}")),
            _ => None,
        };
        let pending: redis::Value = self.conn.query(
            redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(RECLAIM_SCAN)
                .arg(name),
            IO_TIMEOUT,
            "listing a dead process's tasks",
        )?;
        let mut ids: Vec<String> = Vec::new();
        if let redis::Value::Array(rows) = pending {
            for row in rows {
                if let redis::Value::Array(f) = row
                    && let Some(redis::Value::BulkString(b)) = f.first()
                    && let Ok(id) = String::from_utf8(b.clone())
                {
                    ids.push(id);
                }
            }
        }
        let mut p = redis::pipe();
        if let Some(ran) = ran.as_ref().filter(|r| ids.contains(r)) {
            // The chunk it ran: failed with its exit code, unless its pool
            // was terminated.
            let r: redis::Value = self.conn.query(
                redis::cmd("XRANGE").arg(&self.stream).arg(ran).arg(ran),
                IO_TIMEOUT,
                "reading a dead process's task",
            )?;
            if let Some(task) = range_entries(&r)
                .first()
                .and_then(|e| e.field("t"))
                .and_then(|t| wire::decode::<TaskMsg>(t).ok())
            {
                let terminated: bool = self.conn.query(
                    redis::cmd("HEXISTS")
                        .arg(claim::claims_key(&task.reply))
                        .arg(claim::TERMINATED),
                    IO_TIMEOUT,
                    "checking for a terminated pool",
                )?;
                if !terminated {
                    let msg = ResultMsg {
                        id: task.id,
                        worker: self.info.id.clone(),
                        outcome: Err(Fail::WorkerLost(code)),
                    };
                    let bytes = wire::encode(&msg).map_err(ClusterError::Encode)?;
                    p.cmd("XADD").arg(&task.reply).arg("*").arg("r").arg(bytes).ignore();
                }
            }
            add_done(&mut p, &self.stream, std::slice::from_ref(ran));
            ids.retain(|i| i != ran);
        }
        add_requeue(&mut p, &self.stream, &ids);
        add_leave(&mut p, &self.stream, name);
        self.conn.pipe::<()>(&p, "answering for a dead process's tasks")?;
        let _ = self.board.set(base, 0);
        let _ = self.board.set(base + 1, 0);
        Ok(())
    }

    /// Asks the local processes to stop once they have answered for their
    /// chunks (at most a lease, then they are killed), answers for what
    /// they left, and deregisters.
    fn stop(mut self) {
        let _ = self.board.set(0, 1);
        let deadline = Deadline::after(self.cluster.settings().lease + READ_BLOCK);
        for slot in 0..self.locals.len() {
            if let Some(l) = self.locals[slot].as_mut() {
                let left = deadline.remaining().unwrap_or(Duration::ZERO);
                if l.process.join_timeout(left).is_err() || l.process.exitcode().is_none() {
                    let _ = l.process.kill();
                    let _ = l.process.join_timeout(IO_TIMEOUT);
                }
                self.reap(slot);
            }
        }
        self.answer_for_dead();
        let mut p = redis::pipe();
        p.cmd("DEL").arg(self.cluster.worker_key(&self.info.id)).ignore();
        p.cmd("SREM")
            .arg(self.cluster.workers_key())
            .arg(&self.info.id)
            .ignore();
        add_roster(&mut p, &self.cluster, &self.info.id);
        let _ = self.conn.pipe::<()>(&p, "deregistering");
    }
}

/// The exit code `WorkerLost` reports for a task whose worker host was
/// lost (its exit code is unknown to the cluster): that of `SIGKILL`.
const LOST_HOST: i32 = -9;

fn register(cluster: &Cluster, conn: &mut Conn, info: &WorkerInfo) -> Result<(), ClusterError> {
    let mut info = info.clone();
    info.last_heartbeat = now();
    let bytes = wire::encode(&info).map_err(ClusterError::Encode)?;
    let mut p = redis::pipe();
    p.cmd("SET")
        .arg(cluster.worker_key(&info.id))
        .arg(bytes)
        .arg("PX")
        .arg(REGISTRATION_TTL.as_millis() as u64)
        .ignore();
    p.cmd("SADD").arg(cluster.workers_key()).arg(&info.id).ignore();
    add_roster(&mut p, cluster, &info.id);
    conn.pipe::<()>(&p, "registering the worker")
}

/// What the load-time hook runs when [`WORKER_ENV`] is set: a worker host
/// serving until the process is stopped.
pub(crate) fn diverted(url: OsString) -> i32 {
    let Some(url) = url.to_str() else {
        eprintln!("mp-cluster: {WORKER_ENV} is not valid UTF-8: {url:?}");
        return 2;
    };
    let mut b = Worker::builder(url);
    if let Some(n) = std::env::var_os(PROCESSES_ENV) {
        match n
            .to_str()
            .and_then(|n| n.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
        {
            Some(n) => b = b.processes(n),
            None => {
                eprintln!("mp-cluster: {PROCESSES_ENV}={n:?} is not a positive number of processes");
                return 2;
            }
        }
    }
    if let Some(ns) = std::env::var_os(NAMESPACE_ENV).and_then(|s| s.into_string().ok()) {
        b = b.namespace(ns);
    }
    if let Some(h) = std::env::var_os(HOST_ENV).and_then(|s| s.into_string().ok()) {
        b = b.host(h);
    }
    if let Some(ms) = std::env::var_os(LEASE_ENV) {
        match ms.to_str().and_then(|n| n.trim().parse::<u64>().ok()) {
            Some(ms) => b = b.lease(Duration::from_millis(ms)),
            None => {
                eprintln!("mp-cluster: {LEASE_ENV}={ms:?} is not a number of milliseconds");
                return 2;
            }
        }
    }
    match b.run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mp-cluster worker host: {e}");
            1
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_window_widens_while_chunks_finish_fast_and_narrows_again() {
        let mut pace = Pace::new();
        assert_eq!(pace.window(), Pace::FEW, "a new process reads few");
        for _ in 0..64 {
            pace.finished();
        }
        assert_eq!(pace.window(), Pace::MANY, "chunks microseconds apart");
        // A chunk after a long pause, then slow ones: few again.
        pace.gap = Pace::FAST.as_nanos() as u64 * 4;
        assert_eq!(pace.window(), Pace::FEW);
    }

    #[test]
    fn a_read_is_renewed_every_third_of_its_lease_however_short_its_chunks() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(1);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(!renew_due(t0, None, lease, at(300)), "a third not passed");
        // Sixteen chunks of 300 ms each: the read is due at 334 ms, whatever
        // chunk runs then (the look counted from a chunk's start never was).
        assert!(renew_due(t0, None, lease, at(334)));
        assert!(!renew_due(t0, Some(at(334)), lease, at(600)), "renewed at 334 ms");
        assert!(renew_due(t0, Some(at(334)), lease, at(668)));
        // A renewal of an earlier read does not count for this one.
        assert!(renew_due(at(1000), Some(at(900)), lease, at(1334)));
    }

    #[test]
    fn entry_ids_parse_into_their_two_numbers() {
        assert_eq!(parse_entry_id("1700000000000-12"), Some((1_700_000_000_000, 12)));
        assert_eq!(parse_entry_id("12"), None);
        assert_eq!(parse_entry_id("a-1"), None);
    }
}
