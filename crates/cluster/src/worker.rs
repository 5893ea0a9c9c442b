//! A worker host: reads task chunks of its build from the cluster's stream
//! and runs each in its own local worker processes (mp-pool), so a task
//! that panics or crashes costs a process, never the host.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mp_pool::TaskError;
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
        let host = Host::start(cluster, info, until)?;
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

/// What a finished chunk leaves for the writer thread.
struct Done {
    entry: String,
    reply: String,
    msg: ResultMsg,
}

/// How many chunks the host holds queued or running in its processes (not
/// those whose results wait to be written), and a wake-up when that drops.
struct InFlight {
    n: Mutex<usize>,
    cv: Condvar,
}

impl InFlight {
    fn add(&self, k: usize) {
        *self.n.lock().unwrap_or_else(|e| e.into_inner()) += k;
    }

    fn done(&self, k: usize) {
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(k);
        self.cv.notify_all();
    }

    /// Waits (at most `t`) until fewer than `cap` are held; how many more
    /// may be taken.
    fn room(&self, cap: usize, t: Duration) -> usize {
        let n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        let (n, _) = self
            .cv
            .wait_timeout_while(n, t, |n| *n >= cap)
            .unwrap_or_else(|e| e.into_inner());
        cap.saturating_sub(*n)
    }

    fn get(&self) -> usize {
        *self.n.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many chunks a host reads ahead per local process: few while chunks
/// take long (so no host hoards work another could start), more while they
/// finish fast (so the processes do not wait on a round trip to Redis for
/// each short task).
struct Pace {
    /// When the last chunk finished, in nanoseconds since `start`.
    last: AtomicU64,
    /// A running average of the time between chunks finishing, in ns.
    gap: AtomicU64,
    start: Instant,
}

impl Pace {
    /// Chunks per process read ahead while chunks take long.
    const FEW: usize = 2;
    /// ... and while they finish less than [`Pace::FAST`] apart.
    const MANY: usize = 16;
    const FAST: Duration = Duration::from_micros(500);

    fn new() -> Pace {
        Pace {
            last: AtomicU64::new(0),
            // Slow until chunks show otherwise.
            gap: AtomicU64::new(4 * Self::FAST.as_nanos() as u64),
            start: Instant::now(),
        }
    }

    /// A chunk finished: the average gap moves an eighth of the way to
    /// this one (updates racing from two threads lose one sample at most).
    fn finished(&self) {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // A pause counts as 100 ms at most, so a host idle for a while is
        // fast again after a few dozen quick chunks.
        let gap = now
            .saturating_sub(self.last.swap(now, Ordering::Relaxed))
            .min(100_000_000);
        let avg = self.gap.load(Ordering::Relaxed);
        self.gap.store(avg - avg / 8 + gap / 8, Ordering::Relaxed);
    }

    /// How many chunks `processes` local processes may hold.
    fn window(&self, processes: usize) -> usize {
        let fast = self.gap.load(Ordering::Relaxed) < Self::FAST.as_nanos() as u64;
        processes * if fast { Self::MANY } else { Self::FEW }
    }
}

struct Host {
    cluster: Cluster,
    pace: Arc<Pace>,
    info: WorkerInfo,
    stream: String,
    pool: Arc<mp_pool::Pool>,
    /// The leases of entries other hosts hold (read once each).
    leases: Mutex<HashMap<String, Duration>>,
    /// Where the next look for expired tasks starts in the pending list.
    reclaim_from: Mutex<String>,
    /// The number of the last chunk handed to the local pool.
    seq: AtomicU64,
    /// The chunks the local processes run or will run: number -> the
    /// result stream of their pool.
    running: Arc<Mutex<HashMap<u64, String>>>,
    watcher: Option<std::thread::JoinHandle<()>>,
    conn: Conn,
    done_tx: mpsc::Sender<Done>,
    in_flight: Arc<InFlight>,
    /// The entries this host holds (to renew their lease).
    held: Arc<Mutex<HashMap<String, Duration>>>,
    stop: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The result streams of terminated pools.
    terminated: Arc<Mutex<HashSet<String>>>,
    /// How many local processes the watch thread has killed.
    kills: Arc<AtomicU64>,
    /// Chunks lost with a process killed for another pool's sake: run again.
    rerun_tx: mpsc::Sender<Rerun>,
    rerun_rx: Mutex<mpsc::Receiver<Rerun>>,
}

/// A claimed chunk to run again: its stream entry, the task, its lease.
type Rerun = (String, TaskMsg, Duration);

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

impl Host {
    fn start(cluster: Cluster, info: WorkerInfo, until: Deadline) -> Result<Host, ClusterError> {
        let stream = cluster.tasks_key(info.build);
        let conn = cluster.new_conn();
        let mut writer_conn = cluster.new_conn();
        // The group and the registration, waiting (until `until`) for a
        // server that is not up yet.
        let mut backoff = Backoff::new();
        let mut said = false;
        loop {
            let ready =
                create_group(&mut writer_conn, &stream).and_then(|()| register(&cluster, &mut writer_conn, &info));
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
        let reports = wire::Reports::new()
            .map_err(|e| ClusterError::Encode(format!("the worker host cannot make its report queue: {e}")))?;
        let pool = mp_pool::Pool::builder()
            .processes(info.processes)
            .initializer(wire::report_to, (reports.clone(),))
            .build()
            .map_err(|e| {
                ClusterError::Encode(format!("the worker host cannot start its local worker processes: {e}"))
            })?;
        let pool = Arc::new(pool);
        let running = Arc::new(Mutex::new(HashMap::new()));
        let terminated = Arc::new(Mutex::new(HashSet::new()));
        let (done_tx, done_rx) = mpsc::channel();
        let (rerun_tx, rerun_rx) = mpsc::channel();
        let in_flight = Arc::new(InFlight {
            n: Mutex::new(0),
            cv: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(HashMap::new()));
        let writer = {
            let w = Writer {
                cluster: cluster.clone(),
                conn: writer_conn,
                info: info.clone(),
                stream: stream.clone(),
                in_flight: Arc::clone(&in_flight),
                held: Arc::clone(&held),
                stop: Arc::clone(&stop),
                terminated: Arc::clone(&terminated),
                failures: 0,
            };
            std::thread::Builder::new()
                .name("mp-cluster-writer".into())
                .spawn(move || w.run(done_rx))
                .map_err(|e| ClusterError::Encode(format!("cannot start the worker's writer thread: {e}")))?
        };
        let kills = Arc::new(AtomicU64::new(0));
        let watcher = {
            let w = Watcher {
                conn: cluster.new_conn(),
                pool: Arc::clone(&pool),
                reports,
                running: Arc::clone(&running),
                terminated: Arc::clone(&terminated),
                kills: Arc::clone(&kills),
                stop: Arc::clone(&stop),
            };
            std::thread::Builder::new()
                .name("mp-cluster-watch".into())
                .spawn(move || w.run())
                .map_err(|e| ClusterError::Encode(format!("cannot start the worker's watch thread: {e}")))?
        };
        Ok(Host {
            cluster,
            pace: Arc::new(Pace::new()),
            info,
            stream,
            pool,
            seq: AtomicU64::new(0),
            leases: Mutex::new(HashMap::new()),
            reclaim_from: Mutex::new("-".to_string()),
            running,
            watcher: Some(watcher),
            conn,
            done_tx,
            in_flight,
            held,
            stop,
            writer: Some(writer),
            terminated,
            kills,
            rerun_tx,
            rerun_rx: Mutex::new(rerun_rx),
        })
    }

    /// Reads chunks while there is room, until `until`.
    fn serve(&self, until: Deadline) -> Result<(), ClusterError> {
        let mut conn = self.cluster.new_conn();
        let mut failures = 0u32;
        // Often enough for the shortest lease a client may give.
        let every = (self.cluster.settings().lease / 2).min(RECLAIM_EVERY);
        let mut backoff = Backoff::new();
        let mut reclaimed = Instant::now();
        while !until.has_passed() {
            let again: Vec<Rerun> = lock(&self.rerun_rx).try_iter().collect();
            for (entry, task, lease) in again {
                self.run(entry, task, lease);
            }
            // Two chunks per process at least: one running, one ready behind
            // it, so a process never waits on a round trip to Redis.
            let cap = self.pace.window(self.info.processes);
            let room = self.in_flight.room(cap, READ_BLOCK);
            if room == 0 {
                continue;
            }
            if reclaimed.elapsed() >= every {
                reclaimed = Instant::now();
                match self.reclaim(&mut conn, room) {
                    Err(e) if is_nogroup(&e) => self.recreate_group(&mut conn),
                    // The server away: the reads below say so.
                    Err(e) if is_away(&e) => {}
                    Err(e) => eprintln!("mp-cluster worker {}: taking over expired tasks: {e}", self.info.id),
                    Ok(()) => {}
                }
                continue;
            }
            // Tasks waiting: read and claim them in one step.
            if let Ok(true) = self.read_claimed(&mut conn, room) {
                continue;
            }
            let block = until.remaining().map_or(READ_BLOCK, |r| r.min(READ_BLOCK));
            let reply = conn.query::<redis::Value>(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.info.id)
                    .arg("COUNT")
                    .arg(room)
                    .arg("BLOCK")
                    .arg(block.as_millis().max(1) as u64)
                    .arg("STREAMS")
                    .arg(&self.stream)
                    .arg(">"),
                block + IO_TIMEOUT,
                "reading tasks",
            );
            let reply = match reply {
                Ok(r) => {
                    if failures > 0 {
                        // Back: registered again at once (the registration
                        // may have lapsed, or gone with the server's data).
                        eprintln!("mp-cluster worker {}: the server answers again", self.info.id);
                        let _ = register(&self.cluster, &mut conn, &self.info);
                    }
                    failures = 0;
                    backoff.reset();
                    r
                }
                Err(e) if is_nogroup(&e) => {
                    // The server came back without its data: a new group.
                    self.recreate_group(&mut conn);
                    continue;
                }
                Err(e) => {
                    // Redis away: keep trying (the registration lapses and
                    // clients see no worker), polling it with a backoff.
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        eprintln!("mp-cluster worker {}: {e}", self.info.id);
                    }
                    backoff.pause(until.remaining().unwrap_or(Backoff::MAX));
                    continue;
                }
            };
            let entries: Vec<(StreamEntry, u64)> = stream_entries(&reply).into_iter().map(|e| (e, 1)).collect();
            self.take(&mut conn, entries);
        }
        Ok(())
    }

    /// Creates the consumer group again (the server lost it) and registers
    /// again.
    fn recreate_group(&self, conn: &mut Conn) {
        eprintln!(
            "mp-cluster worker {}: the consumer group of {} is gone (the server lost its data); creating it again",
            self.info.id, self.stream
        );
        if let Err(e) = create_group(conn, &self.stream).and_then(|()| register(&self.cluster, conn, &self.info)) {
            eprintln!("mp-cluster worker {}: {e}", self.info.id);
        }
    }

    /// Takes over up to `room` entries that another host has held past
    /// their lease (the lease their client gave them, field `l`; this
    /// host's own for an entry without one) without renewing them, and
    /// runs them here, or fails them with `WorkerLost` once they were
    /// handed out more than their `max_deliveries`: `XPENDING` lists the
    /// entries idle for a while, and `XCLAIM` with each entry's own lease
    /// as its minimum idle time takes those still idle past it (a renewal
    /// in between wins).
    fn reclaim(&self, conn: &mut Conn, room: usize) -> Result<(), ClusterError> {
        // Page by page through a long pending list, one page per look.
        let from = lock(&self.reclaim_from).clone();
        let pending: redis::Value = conn.query(
            redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(GROUP)
                .arg("IDLE")
                .arg(MIN_LEASE.as_millis() as u64)
                .arg(&from)
                .arg("+")
                .arg(RECLAIM_SCAN),
            IO_TIMEOUT,
            "listing idle tasks",
        )?;
        let redis::Value::Array(rows) = pending else {
            return Ok(());
        };
        let full = rows.len() >= RECLAIM_SCAN;
        let mut next = "-".to_string();
        // (id, idle, deliveries) of the entries other hosts hold.
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
            // Its own entries this host does not run (read, then not
            // claimed: Redis failed in between) are taken again too.
            if owner != self.info.id || !lock(&self.held).contains_key(&id) {
                idle.push((id, ms, n));
            }
        }
        // A full page: the next look goes on after it; else from the start.
        *lock(&self.reclaim_from) = if full { next } else { "-".to_string() };
        if idle.is_empty() {
            return Ok(());
        }
        // Each entry's lease (entry ids never change meaning: cached).
        let unknown: Vec<&String> = {
            let known = lock(&self.leases);
            idle.iter()
                .map(|(id, _, _)| id)
                .filter(|id| !known.contains_key(*id))
                .collect()
        };
        if !unknown.is_empty() {
            let mut p = redis::pipe();
            for id in &unknown {
                p.cmd("XRANGE").arg(&self.stream).arg(id.as_str()).arg(id.as_str());
            }
            let ranges: Vec<redis::Value> = conn.pipe(&p, "reading the leases of idle tasks")?;
            let mut known = lock(&self.leases);
            if known.len() > 100_000 {
                known.clear();
            }
            for (id, r) in unknown.iter().zip(ranges) {
                // An entry deleted while pending reads as none: taken
                // at once, which drops it from the pending list.
                let lease = match range_entries(&r).first() {
                    Some(e) => entry_lease(e).unwrap_or(self.cluster.settings().lease),
                    None => Duration::ZERO,
                };
                known.insert((*id).clone(), lease);
            }
        }
        let due: Vec<(String, u64, Duration)> = {
            let known = lock(&self.leases);
            idle.into_iter()
                .filter_map(|(id, ms, n)| {
                    let lease = *known.get(&id)?;
                    (u128::from(ms) >= lease.as_millis()).then_some((id, n, lease))
                })
                .take(room)
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        for (id, _, lease) in &due {
            p.cmd("XCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.info.id)
                .arg(lease.as_millis() as u64)
                .arg(id);
        }
        let claimed: Vec<redis::Value> = conn.pipe(&p, "taking over expired tasks")?;
        let mut taken = Vec::new();
        for ((_, n, _), r) in due.iter().zip(claimed) {
            for entry in range_entries(&r) {
                lock(&self.leases).remove(&entry.id);
                // XCLAIM counted this delivery.
                taken.push((entry, n + 1));
            }
        }
        self.take(conn, taken);
        Ok(())
    }

    /// Reads and claims up to `room` waiting entries in one script, and
    /// takes them; whether there were any.
    fn read_claimed(&self, conn: &mut Conn, room: usize) -> Result<bool, ClusterError> {
        let reply: redis::Value = conn.query(
            redis::cmd("EVAL")
                .arg(claim::READ_CLAIM)
                .arg(1)
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.info.id)
                .arg(room)
                .arg(claim::claims_key("")),
            IO_TIMEOUT,
            "reading and claiming tasks",
        )?;
        let redis::Value::Array(pairs) = reply else {
            return Ok(false);
        };
        if pairs.is_empty() {
            return Ok(false);
        }
        let mut unclaimed = Vec::new();
        for pair in pairs {
            let redis::Value::Array(pair) = pair else { continue };
            let mut parts = pair.into_iter();
            let (Some(entry), Some(redis::Value::Int(mark))) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(entry) = range_entries(&redis::Value::Array(vec![entry])).pop() else {
                continue;
            };
            match mark {
                0 => {
                    if let Some((id, task, lease)) = self.check(entry, 1) {
                        self.run(id, task, lease);
                    }
                }
                -1 => unclaimed.push((entry, 1)),
                _ => self.skip(entry.id, 0),
            }
        }
        self.take(conn, unclaimed);
        Ok(true)
    }

    /// Takes the entries of one read (each handed out `deliveries` times so
    /// far): claims those that can run here, in one script, and runs the
    /// ones claimed; drops those cancelled or of a terminated pool.
    /// Unclaimed ones (Redis failed) stay pending, taken over after the
    /// lease.
    fn take(&self, conn: &mut Conn, entries: Vec<(StreamEntry, u64)>) {
        let ready: Vec<(String, TaskMsg, Duration)> = entries
            .into_iter()
            .filter_map(|(e, deliveries)| self.check(e, deliveries))
            .collect();
        if ready.is_empty() {
            return;
        }
        let mut keys: Vec<String> = Vec::new();
        let mut pairs: Vec<(usize, u64)> = Vec::with_capacity(ready.len());
        for (_, task, _) in &ready {
            let key = claim::claims_key(&task.reply);
            let index = match keys.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    keys.push(key);
                    keys.len() - 1
                }
            };
            pairs.push((index + 1, task.id));
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(claim::CLAIM).arg(keys.len()).arg(&keys).arg(&self.info.id);
        for (k, id) in &pairs {
            cmd.arg(k).arg(id);
        }
        let marks = match conn.query::<Vec<i64>>(&cmd, IO_TIMEOUT, "claiming tasks") {
            Ok(m) if m.len() == ready.len() => m,
            Ok(m) => {
                eprintln!(
                    "mp-cluster worker {}: {} claim answers for {} tasks; leaving them to be taken over",
                    self.info.id,
                    m.len(),
                    ready.len()
                );
                return;
            }
            Err(e) => {
                eprintln!(
                    "mp-cluster worker {}: {e}; the tasks are taken over after the lease",
                    self.info.id
                );
                return;
            }
        };
        for ((entry, task, lease), mark) in ready.into_iter().zip(marks) {
            if mark == 0 {
                self.run(entry, task, lease);
            } else {
                self.skip(entry, task.id);
            }
        }
    }

    /// A task cancelled, or of a terminated pool: never run, no answer,
    /// off the stream.
    fn skip(&self, entry: String, id: u64) {
        self.in_flight.add(1);
        let _ = self.done_tx.send(Done {
            entry,
            reply: String::new(),
            msg: ResultMsg {
                id,
                worker: String::new(),
                outcome: Err(Fail::Refused("cancelled".into())),
            },
        });
    }

    /// Decodes one entry, handed out `deliveries` times so far: the task to
    /// claim, or `None` when it was answered at once (it cannot run here).
    fn check(&self, entry: StreamEntry, deliveries: u64) -> Option<(String, TaskMsg, Duration)> {
        let build_ok = entry
            .field("b")
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|b| u64::from_str_radix(b, 16).ok())
            == Some(self.info.build);
        let task = entry
            .field("t")
            .ok_or_else(|| "no task field".to_string())
            .and_then(wire::decode::<TaskMsg>);
        let task = match task {
            Ok(t) => t,
            Err(e) => {
                // Nobody to answer: the entry is dropped (and said so).
                eprintln!(
                    "mp-cluster worker {}: dropping entry {} of {}: {e}",
                    self.info.id, entry.id, self.stream
                );
                self.in_flight.add(1);
                let _ = self.done_tx.send(Done {
                    entry: entry.id,
                    reply: String::new(),
                    msg: ResultMsg {
                        id: 0,
                        worker: String::new(),
                        outcome: Err(Fail::Decode(e)),
                    },
                });
                return None;
            }
        };
        if deliveries > u64::from(task.max_deliveries.max(1)) {
            // The hosts it was handed to died (or lost Redis) while they
            // held it: not run again.
            self.in_flight.add(1);
            self.fail(entry.id, task.reply, task.id, Fail::WorkerLost(LOST_HOST));
            return None;
        }
        if !build_ok {
            let why = format!(
                "the worker host {} runs build {:016x}, not the task's: run the same binary everywhere",
                self.info.id, self.info.build
            );
            self.in_flight.add(1);
            self.fail(entry.id, task.reply, task.id, Fail::Refused(why));
            return None;
        }
        let lease = entry_lease(&entry).unwrap_or(self.cluster.settings().lease);
        Some((entry.id, task, lease))
    }

    /// Runs a claimed task (stream entry `entry`) in the local pool.
    fn run(&self, entry: String, task: TaskMsg, lease: Duration) {
        self.in_flight.add(1);
        lock(&self.held).insert(entry.clone(), lease);
        // Kept to run again if the watch thread kills the process this
        // chunk is queued to for another pool's sake (see below).
        let again = (entry.clone(), task.clone(), lease);
        let kills_before = self.kills.load(Ordering::SeqCst);
        let (pace_ok, pace_err) = (Arc::clone(&self.pace), Arc::clone(&self.pace));
        let (kills, terminated, rerun_tx, in_flight) = (
            Arc::clone(&self.kills),
            Arc::clone(&self.terminated),
            self.rerun_tx.clone(),
            Arc::clone(&self.in_flight),
        );
        let (id, reply) = (task.id, task.reply);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.running).insert(seq, reply.clone());
        let (running_ok, running_err) = (Arc::clone(&self.running), Arc::clone(&self.running));
        let tx_ok = self.done_tx.clone();
        let tx_err = self.done_tx.clone();
        let worker = self.info.id.clone();
        let (entry_ok, entry_err, reply_ok, reply_err, worker_err) = (
            entry.clone(),
            entry.clone(),
            reply.clone(),
            reply.clone(),
            worker.clone(),
        );
        let submitted = self.pool.apply_async_with(
            wire::run_chunk,
            (task.entry.0, task.entry.1, serde_bytes::ByteBuf::from(task.args), seq),
            move |r: &Result<serde_bytes::ByteBuf, Fail>| {
                pace_ok.finished();
                lock(&running_ok).remove(&seq);
                let _ = tx_ok.send(Done {
                    entry: entry_ok,
                    reply: reply_ok,
                    msg: ResultMsg {
                        id,
                        worker,
                        outcome: r.clone(),
                    },
                });
            },
            move |e: &TaskError| {
                pace_err.finished();
                lock(&running_err).remove(&seq);
                // A process killed because it ran a terminated pool's
                // chunk takes the chunks queued behind it with it (and, in
                // a narrow race, the one it had just started instead): one
                // of another pool is run again, not failed.
                if matches!(e, TaskError::WorkerLost { .. })
                    && kills.load(Ordering::SeqCst) != kills_before
                    && !lock(&terminated).contains(&reply_err)
                {
                    in_flight.done(1);
                    let _ = rerun_tx.send(again);
                    return;
                }
                let _ = tx_err.send(Done {
                    entry: entry_err,
                    reply: reply_err,
                    msg: ResultMsg {
                        id,
                        worker: worker_err,
                        outcome: Err(fail_of(e)),
                    },
                });
            },
        );
        if let Err(e) = submitted {
            lock(&self.running).remove(&seq);
            self.fail(entry, reply, id, fail_of(&e));
        }
    }

    /// Answers task `id` (stream entry `entry`) with `why` without running it.
    fn fail(&self, entry: String, reply: String, id: u64, why: Fail) {
        let _ = self.done_tx.send(Done {
            entry,
            reply,
            msg: ResultMsg {
                id,
                worker: self.info.id.clone(),
                outcome: Err(why),
            },
        });
    }

    /// Finishes the chunks held (at most a lease), stops the writer,
    /// deregisters and stops the local processes.
    fn stop(mut self) {
        let deadline = Deadline::after(self.cluster.settings().lease);
        while self.in_flight.get() > 0 && !deadline.has_passed() {
            let _ = self.in_flight.room(1, Duration::from_millis(100));
        }
        self.stop.store(true, Ordering::Release);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        let _ = self.conn.query::<()>(
            redis::cmd("DEL").arg(self.cluster.worker_key(&self.info.id)),
            IO_TIMEOUT,
            "deregistering",
        );
        let _ = self.conn.query::<()>(
            redis::cmd("SREM").arg(self.cluster.workers_key()).arg(&self.info.id),
            IO_TIMEOUT,
            "deregistering",
        );
        let _ = self.pool.terminate();
    }
}

/// The exit code `WorkerLost` reports for a task whose worker host was
/// lost (its exit code is unknown to the cluster): that of `SIGKILL`.
const LOST_HOST: i32 = -9;

fn fail_of(e: &TaskError) -> Fail {
    match e {
        TaskError::Panicked(m) => Fail::Panicked(m.clone()),
        TaskError::WorkerLost { exitcode } => Fail::WorkerLost(*exitcode),
        TaskError::Encode(m) => Fail::Encode(m.clone()),
        TaskError::Decode(m) => Fail::Decode(m.clone()),
        other => Fail::Refused(other.to_string()),
    }
}

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
    conn.pipe::<()>(&p, "registering the worker")
}

/// The writer thread: sends results (a batch's results, then one `XACK`
/// and one `XDEL` of their tasks, in one pipeline), the heartbeat, and the renewal of the
/// leases of the tasks held.
struct Writer {
    cluster: Cluster,
    conn: Conn,
    info: WorkerInfo,
    stream: String,
    in_flight: Arc<InFlight>,
    held: Arc<Mutex<HashMap<String, Duration>>>,
    stop: Arc<AtomicBool>,
    /// The result streams of terminated pools: no result goes there.
    terminated: Arc<Mutex<HashSet<String>>>,
    /// Sends failed in a row.
    failures: u32,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Done>) {
        let mut beat = Instant::now();
        let mut renewed = Instant::now();
        let own = self.cluster.settings().lease;
        let mut batch: VecDeque<Done> = VecDeque::new();
        let mut backoff = Backoff::new();
        let mut stopping: Option<Instant> = None;
        loop {
            // A third of the shortest lease held.
            let renew_every = lock(&self.held).values().copied().min().unwrap_or(own).min(own) / 3;
            // Results not sent yet (the server is away): the backoff is the
            // wait, not the channel.
            let wait = if batch.is_empty() {
                (HEARTBEAT / 2).min(renew_every)
            } else {
                Duration::ZERO
            };
            match rx.recv_timeout(wait) {
                Ok(d) => {
                    let before = batch.len();
                    batch.push_back(d);
                    while batch.len() < 512 {
                        match rx.try_recv() {
                            Ok(d) => batch.push_back(d),
                            Err(_) => break,
                        }
                    }
                    // These chunks have run: their processes are free, so
                    // the reader may take more while their results are
                    // written (it no longer waits for this round trip).
                    // They stay held (their leases renewed) until written,
                    // and `Host::stop` still finds them: a batch is sent
                    // before this loop looks at `stop`.
                    self.in_flight.done(batch.len() - before);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if batch.is_empty() {
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                if self.send(&mut batch) {
                    backoff.reset();
                } else {
                    // Polling a server that is away.
                    backoff.pause(Backoff::MAX);
                }
            }
            if beat.elapsed() >= HEARTBEAT {
                beat = Instant::now();
                let _ = register(&self.cluster, &mut self.conn, &self.info);
            }
            if renewed.elapsed() >= renew_every {
                renewed = Instant::now();
                self.renew();
            }
            if self.stop.load(Ordering::Acquire) {
                if batch.is_empty() {
                    return;
                }
                // Stopping while the server is away: wait for it a lease at
                // most. The tasks of the results given up stay pending, so
                // another host runs them once their lease lapses.
                let since = *stopping.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.cluster.settings().lease {
                    eprintln!(
                        "mp-cluster worker {}: stopping with {} results unsent (the server is away); another host \
                         runs their tasks again after the lease",
                        self.info.id,
                        batch.len()
                    );
                    // Their chunks left the in-flight count when they ran.
                    return;
                }
            }
        }
    }

    /// Sends the batch; whether it went (it is kept otherwise).
    fn send(&mut self, batch: &mut VecDeque<Done>) -> bool {
        let mut p = redis::pipe();
        let terminated = lock(&self.terminated).clone();
        for d in batch.iter() {
            if !d.reply.is_empty() && !terminated.contains(&d.reply) {
                match wire::encode(&d.msg) {
                    Ok(bytes) => {
                        p.cmd("XADD").arg(&d.reply).arg("*").arg("r").arg(bytes).ignore();
                    }
                    Err(e) => eprintln!("mp-cluster worker {}: cannot encode a result: {e}", self.info.id),
                }
            }
        }
        // One XACK and one XDEL for the whole batch, after its results.
        let entries: Vec<&str> = batch.iter().map(|d| d.entry.as_str()).collect();
        p.cmd("XACK").arg(&self.stream).arg(GROUP).arg(&entries).ignore();
        p.cmd("XDEL").arg(&self.stream).arg(&entries).ignore();
        match self.conn.pipe::<()>(&p, "sending results") {
            Ok(()) => {
                {
                    let mut held = lock(&self.held);
                    for d in batch.iter() {
                        held.remove(&d.entry);
                    }
                }
                batch.clear();
                if self.failures > 0 {
                    eprintln!(
                        "mp-cluster worker {}: results sent again after {} failed tries",
                        self.info.id, self.failures
                    );
                    self.failures = 0;
                }
                true
            }
            Err(e) => {
                // Kept, and sent again once Redis answers.
                self.failures += 1;
                if self.failures == 1 || self.failures.is_multiple_of(30) {
                    eprintln!("mp-cluster worker {}: {e}; retrying", self.info.id);
                }
                false
            }
        }
    }

    /// Renews the lease of every task held: `XCLAIM` to itself with
    /// `JUSTID`, which resets the idle time without counting a delivery.
    fn renew(&mut self) {
        let ids: Vec<String> = lock(&self.held).keys().cloned().collect();
        for chunk in ids.chunks(512) {
            let r = self.conn.query::<redis::Value>(
                redis::cmd("XCLAIM")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg(&self.info.id)
                    .arg(0)
                    .arg(chunk)
                    .arg("JUSTID"),
                IO_TIMEOUT,
                "renewing leases",
            );
            if let Err(e) = r {
                // The server away: sending results says so.
                if !is_away(&e) {
                    eprintln!("mp-cluster worker {}: renewing leases: {e}", self.info.id);
                }
                return;
            }
        }
    }
}

/// How often the watch thread looks for terminated pools while chunks
/// run.
const WATCH: Duration = Duration::from_millis(50);

/// The watch thread: while the local processes run chunks, checks every
/// [`WATCH`] whether their pools were terminated (one pipeline of
/// `HEXISTS`), and kills the local process that runs a chunk of a
/// terminated pool (the local pool replaces it, and the chunk's answer is
/// not sent).
struct Watcher {
    conn: Conn,
    pool: Arc<mp_pool::Pool>,
    reports: wire::Reports,
    running: Arc<Mutex<HashMap<u64, String>>>,
    terminated: Arc<Mutex<HashSet<String>>>,
    /// Counted before each kill: a chunk lost while it changed may have
    /// been lost to a kill (the host runs it again).
    kills: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn run(mut self) {
        // Local pid -> the chunk it runs (0: none).
        let mut on: HashMap<u32, u64> = HashMap::new();
        let mut killed: HashSet<u64> = HashSet::new();
        let mut polled = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let wait = WATCH.saturating_sub(polled.elapsed());
            if let Ok((seq, pid)) = self.reports.get_timeout(wait) {
                on.insert(pid, seq);
                while let Ok((seq, pid)) = self.reports.get_timeout(Duration::ZERO) {
                    on.insert(pid, seq);
                }
            }
            if polled.elapsed() < WATCH {
                continue;
            }
            polled = Instant::now();
            let running: Vec<(u64, String)> = lock(&self.running).iter().map(|(s, r)| (*s, r.clone())).collect();
            killed.retain(|s| running.iter().any(|(r, _)| r == s));
            if running.is_empty() {
                continue;
            }
            let mut replies: Vec<String> = running.iter().map(|(_, r)| r.clone()).collect();
            replies.sort_unstable();
            replies.dedup();
            let mut p = redis::pipe();
            for r in &replies {
                p.cmd("HEXISTS").arg(claim::claims_key(r)).arg(claim::TERMINATED);
            }
            let Ok(flags) = self.conn.pipe::<Vec<bool>>(&p, "checking for terminated pools") else {
                continue;
            };
            let ended: HashSet<String> = replies
                .into_iter()
                .zip(flags)
                .filter(|(_, t)| *t)
                .map(|(r, _)| r)
                .collect();
            if ended.is_empty() {
                continue;
            }
            lock(&self.terminated).extend(ended.iter().cloned());
            let pids = self.pool.pids();
            for (seq, reply) in running {
                if !ended.contains(&reply) || killed.contains(&seq) {
                    continue;
                }
                let Some((&pid, _)) = on.iter().find(|&(_, s)| *s == seq) else {
                    // Not started yet: stopped once it reports.
                    continue;
                };
                if pids.contains(&pid) {
                    killed.insert(seq);
                    self.kills.fetch_add(1, Ordering::SeqCst);
                    let _ = mp_sys::signal::kill(pid, mp_sys::signal::Signal::KILL);
                }
            }
        }
    }
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
        let pace = Pace::new();
        assert_eq!(pace.window(2), 2 * Pace::FEW, "a new host reads few");
        for _ in 0..64 {
            pace.finished();
        }
        assert_eq!(pace.window(2), 2 * Pace::MANY, "chunks microseconds apart");
        // A chunk after a long pause, then slow ones: few again.
        pace.gap.store(Pace::FAST.as_nanos() as u64 * 4, Ordering::Relaxed);
        assert_eq!(pace.window(3), 3 * Pace::FEW);
    }
}
