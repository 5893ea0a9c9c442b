//! A worker host: reads task chunks of its build from the cluster's stream
//! and runs each in its own local worker processes (mp-pool), so a task
//! that panics or crashes costs a process, never the host.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mp_pool::TaskError;
use mp_sys::time::Deadline;

use crate::cluster::{GROUP, HEARTBEAT, REGISTRATION_TTL, now};
use crate::conn::{Conn, IO_TIMEOUT, StreamEntry, range_entries, stream_entries};
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

    /// The lease (default 10 s): this host renews the tasks it holds every
    /// third of it, and takes over tasks another host has held for longer
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
        let cluster = Cluster::builder(&self.url)
            .namespace(self.namespace)
            .lease(self.lease)
            .connect()?;
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
        let host = Host::start(cluster, info)?;
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

struct Host {
    cluster: Cluster,
    info: WorkerInfo,
    stream: String,
    pool: mp_pool::Pool,
    conn: Conn,
    done_tx: mpsc::Sender<Done>,
    in_flight: Arc<InFlight>,
    /// The entries this host holds (to renew their lease).
    held: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    fn start(cluster: Cluster, info: WorkerInfo) -> Result<Host, ClusterError> {
        let stream = cluster.tasks_key(info.build);
        let mut conn = cluster.new_conn();
        let created = conn.query::<()>(
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM"),
            IO_TIMEOUT,
            "creating the workers' consumer group",
        );
        match created {
            Err(ClusterError::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => {}
            other => other?,
        }
        let pool = mp_pool::Pool::new(info.processes).map_err(|e| {
            ClusterError::Encode(format!("the worker host cannot start its local worker processes: {e}"))
        })?;
        let mut writer_conn = cluster.new_conn();
        register(&cluster, &mut writer_conn, &info)?;
        let (done_tx, done_rx) = mpsc::channel();
        let in_flight = Arc::new(InFlight {
            n: Mutex::new(0),
            cv: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(HashSet::new()));
        let writer = {
            let w = Writer {
                cluster: cluster.clone(),
                conn: writer_conn,
                info: info.clone(),
                stream: stream.clone(),
                in_flight: Arc::clone(&in_flight),
                held: Arc::clone(&held),
                stop: Arc::clone(&stop),
            };
            std::thread::Builder::new()
                .name("mp-cluster-writer".into())
                .spawn(move || w.run(done_rx))
                .map_err(|e| ClusterError::Encode(format!("cannot start the worker's writer thread: {e}")))?
        };
        Ok(Host {
            cluster,
            info,
            stream,
            pool,
            conn,
            done_tx,
            in_flight,
            held,
            stop,
            writer: Some(writer),
        })
    }

    /// Reads chunks while there is room, until `until`.
    fn serve(&self, until: Deadline) -> Result<(), ClusterError> {
        // Two chunks per process: one running, one ready behind it, so a
        // process never waits on a round trip to Redis.
        let cap = self.info.processes * 2;
        let mut conn = self.cluster.new_conn();
        let mut failures = 0u32;
        let lease = self.cluster.settings().lease;
        let mut reclaimed = Instant::now();
        while !until.has_passed() {
            let room = self.in_flight.room(cap, READ_BLOCK);
            if room == 0 {
                continue;
            }
            if reclaimed.elapsed() >= lease / 2 {
                reclaimed = Instant::now();
                if let Err(e) = self.reclaim(&mut conn, room) {
                    eprintln!("mp-cluster worker {}: taking over expired tasks: {e}", self.info.id);
                }
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
                    failures = 0;
                    r
                }
                Err(e) => {
                    // Redis away: keep trying (the registration lapses and
                    // clients see no worker), with a pause.
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        eprintln!("mp-cluster worker {}: {e}", self.info.id);
                    }
                    std::thread::sleep(Duration::from_secs(1).min(until.remaining().unwrap_or(Duration::MAX)));
                    continue;
                }
            };
            for entry in stream_entries(&reply) {
                self.take(entry, 1);
            }
        }
        Ok(())
    }

    /// Takes over (`XAUTOCLAIM`) up to `room` entries that another host has
    /// held past the lease without renewing them, and runs them here, or
    /// fails them with `WorkerLost` once they were handed out more than
    /// their `max_deliveries`.
    fn reclaim(&self, conn: &mut Conn, room: usize) -> Result<(), ClusterError> {
        let lease_ms = self.cluster.settings().lease.as_millis() as u64;
        let reply: redis::Value = conn.query(
            redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.info.id)
                .arg(lease_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(room),
            IO_TIMEOUT,
            "claiming expired tasks",
        )?;
        let redis::Value::Array(parts) = reply else {
            return Ok(());
        };
        let entries = parts.get(1).map(range_entries).unwrap_or_default();
        // Entries deleted while pending: nothing to run, release them.
        if let Some(redis::Value::Array(deleted)) = parts.get(2) {
            for id in deleted {
                if let redis::Value::BulkString(id) = id {
                    let _ = conn.query::<()>(
                        redis::cmd("XACK").arg(&self.stream).arg(GROUP).arg(id.as_slice()),
                        IO_TIMEOUT,
                        "releasing a deleted task",
                    );
                }
            }
        }
        for entry in entries {
            let pending: redis::Value = conn.query(
                redis::cmd("XPENDING")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg(&entry.id)
                    .arg(&entry.id)
                    .arg(1),
                IO_TIMEOUT,
                "counting a task's deliveries",
            )?;
            let deliveries = match &pending {
                redis::Value::Array(rows) => match rows.first() {
                    Some(redis::Value::Array(row)) => match row.get(3) {
                        Some(redis::Value::Int(n)) => *n as u64,
                        _ => 1,
                    },
                    _ => 1,
                },
                _ => 1,
            };
            self.take(entry, deliveries);
        }
        Ok(())
    }

    /// Hands one entry, handed out `deliveries` times so far, to the local
    /// pool, or answers it at once when it cannot run here.
    fn take(&self, entry: StreamEntry, deliveries: u64) {
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
                return;
            }
        };
        self.in_flight.add(1);
        lock(&self.held).insert(entry.id.clone());
        let (id, reply) = (task.id, task.reply);
        if deliveries > u64::from(task.max_deliveries.max(1)) {
            // The hosts it was handed to died (or lost Redis) while they
            // held it: not run again.
            self.fail(entry.id, reply, id, Fail::WorkerLost(LOST_HOST));
            return;
        }
        if !build_ok {
            let why = format!(
                "the worker host {} runs build {:016x}, not the task's: run the same binary everywhere",
                self.info.id, self.info.build
            );
            self.fail(entry.id, reply, id, Fail::Refused(why));
            return;
        }
        let tx_ok = self.done_tx.clone();
        let tx_err = self.done_tx.clone();
        let worker = self.info.id.clone();
        let (entry_ok, entry_err, reply_ok, reply_err, worker_err) = (
            entry.id.clone(),
            entry.id.clone(),
            reply.clone(),
            reply.clone(),
            worker.clone(),
        );
        let submitted = self.pool.apply_async_with(
            wire::run_chunk,
            (task.entry.0, task.entry.1, serde_bytes::ByteBuf::from(task.args)),
            move |r: &Result<serde_bytes::ByteBuf, Fail>| {
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
            self.fail(entry.id, reply, id, fail_of(&e));
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
        let deadline = Instant::now() + self.cluster.settings().lease;
        while self.in_flight.get() > 0 && Instant::now() < deadline {
            let _ = self.in_flight.room(1, Duration::from_millis(100));
        }
        self.stop.store(true, Ordering::Release);
        if let Some(w) = self.writer.take() {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
    held: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Done>) {
        let mut beat = Instant::now();
        let mut renewed = Instant::now();
        let renew_every = self.cluster.settings().lease / 3;
        let mut batch: VecDeque<Done> = VecDeque::new();
        loop {
            match rx.recv_timeout((HEARTBEAT / 2).min(renew_every)) {
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
                self.send(&mut batch);
            }
            if beat.elapsed() >= HEARTBEAT {
                beat = Instant::now();
                let _ = register(&self.cluster, &mut self.conn, &self.info);
            }
            if renewed.elapsed() >= renew_every {
                renewed = Instant::now();
                self.renew();
            }
            if self.stop.load(Ordering::Acquire) && batch.is_empty() {
                return;
            }
        }
    }

    fn send(&mut self, batch: &mut VecDeque<Done>) {
        let mut p = redis::pipe();
        for d in batch.iter() {
            if !d.reply.is_empty() {
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
            }
            Err(e) => {
                // Kept, and sent again once Redis answers.
                eprintln!("mp-cluster worker {}: {e}; retrying", self.info.id);
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    /// Renews the lease of every task held: `XCLAIM` to itself with
    /// `JUSTID`, which resets the idle time without counting a delivery.
    fn renew(&mut self) {
        let ids: Vec<String> = lock(&self.held).iter().cloned().collect();
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
                eprintln!("mp-cluster worker {}: {e}", self.info.id);
                return;
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
