//! A connection to the cluster: its settings, its Redis keys, and the
//! registry of live workers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use mp_sys::time::Deadline;

use crate::conn::{self, Conn, IO_TIMEOUT};
use crate::{ClusterError, wire};

/// The consumer group of the worker hosts on a task stream.
pub(crate) const GROUP: &str = "workers";

/// How long a worker's registration lives without a heartbeat.
pub(crate) const REGISTRATION_TTL: Duration = Duration::from_secs(3);

/// How often a worker renews its registration.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(750);

/// The longest a wait for workers blocks on the roster at once: a host
/// whose registration expires (it died) writes nothing there.
const ROSTER_SLICE: Duration = Duration::from_secs(1);

/// How long a submission trusts that a worker host seen alive still is
/// (less than a heartbeat, far less than a registration's life).
const ALIVE_FRESH: Duration = Duration::from_millis(500);

/// A connection to a cluster: a Redis server (6.2 or later) that worker
/// hosts serve. Cheap to clone; a handle that travels (serde) to local
/// children and to cluster tasks, where it connects again.
///
/// ```no_run
/// use mp_cluster::Cluster;
/// let c = Cluster::builder("redis://10.0.0.5:6379/0").namespace("jobs").connect()?;
/// for w in c.workers()? {
///     println!("{} pid {} with {} processes", w.host, w.pid, w.processes);
/// }
/// # Ok::<(), mp_cluster::ClusterError>(())
/// ```
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) client: redis::Client,
    pub(crate) addr: String,
    pub(crate) build: u64,
    conn: Mutex<Conn>,
    /// When a live worker of this build was last seen, and the processes
    /// then: [`Cluster::live_processes`] answers from it for [`ALIVE_FRESH`].
    alive: Mutex<Option<(Instant, usize)>>,
}

/// What a [`Cluster`] is made of, and what travels when it does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) url: String,
    pub(crate) namespace: String,
    pub(crate) lease: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) worker_wait: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addr", &self.inner.addr)
            .field("namespace", &self.inner.settings.namespace)
            .field("build", &format_args!("{:016x}", self.inner.build))
            .finish()
    }
}

/// Settings of a [`Cluster`] before it connects
/// ([`Cluster::builder`]).
///
/// ```no_run
/// use std::time::Duration;
/// let c = mp_cluster::Cluster::builder("redis://127.0.0.1:6379/0")
///     .namespace("jobs")
///     .lease(Duration::from_secs(30))
///     .max_deliveries(1)
///     .worker_wait(Duration::from_secs(2))
///     .connect()?;
/// # Ok::<(), mp_cluster::ClusterError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    settings: Settings,
}

impl ClusterBuilder {
    /// The prefix of every key this cluster uses (default `mp`): clusters
    /// with different namespaces share a server without seeing each other.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.settings.namespace = ns.into();
        self
    }

    /// How long a worker host may hold a task of this client without
    /// renewing it before another takes it over (default 10 s). The lease
    /// travels with each task: the host that runs it renews it every third
    /// of it, whatever the host's own setting.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// How many times a task is handed out before it fails with
    /// `TaskError::WorkerLost` (default 3; 1 is at-most-once).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.settings.max_deliveries = n.max(1);
        self
    }

    /// How long a call waits for a live worker host of this build before it
    /// fails with [`ClusterError::NoWorkers`] (or
    /// [`ClusterError::BuildMismatch`]); default 10 s.
    pub fn worker_wait(mut self, wait: Duration) -> Self {
        self.settings.worker_wait = wait;
        self
    }

    /// The cluster without connecting yet (a worker host waits for a
    /// server that is not up).
    pub(crate) fn unconnected(self) -> Result<Cluster, ClusterError> {
        Cluster::from_settings(self.settings)
    }

    /// Connects (and checks the server answers).
    pub fn connect(self) -> Result<Cluster, ClusterError> {
        let c = Cluster::from_settings(self.settings)?;
        c.conn()
            .query::<String>(&redis::cmd("PING"), IO_TIMEOUT, "checking the server (PING)")?;
        Ok(c)
    }
}

impl Cluster {
    /// Connects to the cluster whose Redis is at `url`
    /// (`redis://[:password@]host:port/db`), with the default settings.
    ///
    /// ```
    /// // Nothing listens on port 1: the error names the address it tried.
    /// let e = mp_cluster::Cluster::connect("redis://127.0.0.1:1/0").unwrap_err();
    /// assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    /// ```
    pub fn connect(url: &str) -> Result<Cluster, ClusterError> {
        Cluster::builder(url).connect()
    }

    /// Settings before connecting: namespace, lease, max deliveries.
    pub fn builder(url: &str) -> ClusterBuilder {
        crate::keep_worker_hook();
        ClusterBuilder {
            settings: Settings {
                url: url.to_string(),
                namespace: "mp".into(),
                lease: Duration::from_secs(10),
                max_deliveries: 3,
                worker_wait: Duration::from_secs(10),
            },
        }
    }

    pub(crate) fn from_settings(settings: Settings) -> Result<Cluster, ClusterError> {
        let (client, addr) = conn::client(&settings.url)?;
        Ok(Cluster {
            inner: Arc::new(Inner {
                conn: Mutex::new(Conn::new(client.clone(), addr.clone())),
                alive: Mutex::new(None),
                client,
                addr,
                settings,
                build: build_id(),
            }),
        })
    }

    /// The URL this cluster connects to.
    pub fn url(&self) -> &str {
        &self.inner.settings.url
    }

    /// The key namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.settings.namespace
    }

    /// This program's build id: a worker host runs tasks of its own build
    /// only.
    pub fn build_id(&self) -> u64 {
        self.inner.build
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Conn> {
        self.inner.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection of its own (for a thread that blocks on Redis).
    pub(crate) fn new_conn(&self) -> Conn {
        Conn::new(self.inner.client.clone(), self.inner.addr.clone())
    }

    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.inner.settings.namespace)
    }

    pub(crate) fn workers_key(&self) -> String {
        self.key("workers")
    }

    pub(crate) fn worker_key(&self, id: &str) -> String {
        self.key(&format!("worker:{id}"))
    }

    /// The roster: a short stream with an entry for every registration
    /// (and heartbeat) and deregistration of a worker host, which waits for
    /// workers block on instead of polling.
    pub(crate) fn roster_key(&self) -> String {
        self.key("roster")
    }

    /// The id of the roster's newest entry (`0-0` while it has none).
    fn roster_last(&self, conn: &mut Conn) -> Result<String, ClusterError> {
        let newest: Vec<(String, Vec<String>)> = conn.query(
            redis::cmd("XREVRANGE")
                .arg(self.roster_key())
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1),
            IO_TIMEOUT,
            "reading the workers' roster",
        )?;
        Ok(newest
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_string(), |(id, _)| id))
    }

    /// Waits at most `t` for an entry of the roster after `last` (a worker
    /// host registered, beat or left): `XREAD BLOCK`. A host whose
    /// registration expires writes nothing, so callers wait in slices of
    /// [`ROSTER_SLICE`] at most.
    fn roster_wait(&self, conn: &mut Conn, last: &str, t: Duration) -> Result<(), ClusterError> {
        conn.query::<redis::Value>(
            redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(t.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(self.roster_key())
                .arg(last),
            t + IO_TIMEOUT,
            "waiting on the workers' roster",
        )
        .map(drop)
    }

    /// The live worker hosts, and the roster's newest entry read before
    /// them (so a change after the list is read is seen by
    /// [`roster_wait`](Cluster::roster_wait)).
    fn workers_and_mark(&self, conn: &mut Conn) -> Result<(Vec<WorkerInfo>, String), ClusterError> {
        let last = self.roster_last(conn)?;
        Ok((self.workers()?, last))
    }

    /// The namespace's epoch: a random number set by the first client or
    /// worker host that finds none. A server that kept its data keeps it;
    /// one that came back empty has none (and then another), so a change
    /// says the work queued before is gone.
    pub(crate) fn epoch_key(&self) -> String {
        self.key("epoch")
    }

    /// Adds to `p` the two commands whose second reply is the namespace's
    /// epoch (set first if the server has none).
    pub(crate) fn epoch_cmds(&self, p: &mut redis::Pipeline) -> Result<(), ClusterError> {
        let mut rand = [0u8; 8];
        mp_sys::random::fill(&mut rand)
            .map_err(|e| ClusterError::Encode(format!("no randomness for an epoch: {e}")))?;
        let key = self.epoch_key();
        // Never 0: that stands for "not known yet".
        let fresh = u64::from_le_bytes(rand).max(1);
        p.cmd("SET").arg(&key).arg(fresh).arg("NX").ignore();
        p.cmd("GET").arg(&key);
        Ok(())
    }

    /// The namespace's current epoch (set now if the server has none).
    pub(crate) fn epoch(&self, conn: &mut Conn) -> Result<u64, ClusterError> {
        let mut p = redis::pipe();
        self.epoch_cmds(&mut p)?;
        let (epoch,): (u64,) = conn.pipe(&p, "reading the namespace's epoch")?;
        Ok(epoch)
    }

    /// The error of work lost with the server's data.
    pub(crate) fn data_lost(&self) -> ClusterError {
        ClusterError::DataLost {
            addr: self.inner.addr.clone(),
            namespace: self.inner.settings.namespace.clone(),
        }
    }

    /// The task stream of a build.
    pub(crate) fn tasks_key(&self, build: u64) -> String {
        self.key(&format!("tasks:{build:016x}"))
    }

    /// The live worker hosts, of every build (those whose heartbeat is
    /// recent). Entries that cannot be decoded (written by another program)
    /// are left out.
    ///
    /// ```no_run
    /// let c = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?;
    /// let mine = c.workers()?.into_iter().filter(|w| w.build == c.build_id()).count();
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn workers(&self) -> Result<Vec<WorkerInfo>, ClusterError> {
        let set = self.workers_key();
        let mut conn = self.conn();
        let ids: Vec<String> = conn.query(redis::cmd("SMEMBERS").arg(&set), IO_TIMEOUT, "listing the workers")?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.worker_key(id)).collect();
        let values: Vec<Option<Vec<u8>>> =
            conn.query(redis::cmd("MGET").arg(&keys), IO_TIMEOUT, "reading the workers")?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, v) in ids.iter().zip(values) {
            match v {
                None => gone.push(id.clone()),
                Some(bytes) => {
                    if let Ok(info) = wire::decode::<WorkerInfo>(&bytes) {
                        live.push(info);
                    }
                }
            }
        }
        if !gone.is_empty() {
            conn.query::<()>(
                redis::cmd("SREM").arg(&set).arg(&gone),
                IO_TIMEOUT,
                "forgetting dead workers",
            )?;
        }
        live.sort_by(|a, b| (&a.host, a.pid).cmp(&(&b.host, b.pid)));
        Ok(live)
    }

    /// Waits at most `timeout` until the live worker hosts satisfy `ready`
    /// (say, "at least two"), looking at [`workers`](Cluster::workers) again
    /// whenever a host registers, beats or leaves (at least every second,
    /// for hosts that die): the list that did, or `None` after `timeout` (a server that
    /// does not answer is waited for within it too). For a client or a test
    /// that starts worker hosts and must know they are up.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let c = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?;
    /// match c.wait_workers(Duration::from_secs(30), |w| w.len() >= 2)? {
    ///     Some(hosts) => println!("{} hosts up", hosts.len()),
    ///     None => eprintln!("fewer than 2 hosts after 30 s"),
    /// }
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn wait_workers(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&[WorkerInfo]) -> bool,
    ) -> Result<Option<Vec<WorkerInfo>>, ClusterError> {
        let deadline = Deadline::after(timeout);
        let mut conn = self.new_conn();
        let mut backoff = Backoff::new();
        loop {
            let last = match self.workers_and_mark(&mut conn) {
                Ok((w, _)) if ready(&w) => return Ok(Some(w)),
                Ok((_, last)) => Some(last),
                Err(e) if conn::is_away(&e) && !deadline.has_passed() => None,
                Err(e) => return Err(e),
            };
            let Some(left) = deadline.remaining().filter(|l| !l.is_zero()) else {
                return Ok(None);
            };
            match last {
                Some(last) => match self.roster_wait(&mut conn, &last, left.min(ROSTER_SLICE)) {
                    Err(e) if !conn::is_away(&e) => return Err(e),
                    _ => {}
                },
                // Polling a server that is away, within the deadline.
                None => backoff.pause(left),
            }
        }
    }

    /// Waits (up to the builder's `worker_wait`) for a live worker of this
    /// build; the number of processes they have between them.
    pub(crate) fn wait_for_workers(&self) -> Result<usize, ClusterError> {
        self.wait_for_workers_until(Deadline::NEVER)
    }

    /// [`wait_for_workers`](Cluster::wait_for_workers), ending by
    /// `deadline` too. A server that does not answer (restarting, or
    /// unreachable) is waited for as well, with a backoff (50 ms doubling
    /// to 500 ms); the last error from it if it is still away at the end.
    pub(crate) fn wait_for_workers_until(&self, deadline: Deadline) -> Result<usize, ClusterError> {
        let build = self.inner.build;
        let mine =
            |w: &[WorkerInfo]| -> usize { w.iter().filter(|w| w.build == build).map(|w| w.processes.max(1)).sum() };
        // The usual call finds one at once.
        if let Ok(w) = self.workers()
            && mine(&w) > 0
        {
            return Ok(mine(&w));
        }
        let wait = self.inner.settings.worker_wait;
        let t = deadline.remaining().map_or(wait, |r| r.min(wait));
        if let Some(w) = self.wait_workers(t, |w| mine(w) > 0)? {
            return Ok(mine(&w));
        }
        let mut theirs: Vec<u64> = self.workers()?.iter().map(|w| w.build).collect();
        theirs.sort_unstable();
        theirs.dedup();
        Err(if theirs.is_empty() {
            ClusterError::NoWorkers { waited: wait }
        } else {
            ClusterError::BuildMismatch { ours: build, theirs }
        })
    }

    /// [`wait_for_workers`](Cluster::wait_for_workers) for a submission: a
    /// live worker seen less than [`ALIVE_FRESH`] ago is taken as still
    /// there without asking Redis again (2 round trips saved per `apply`).
    /// A host that died since is found by the waiting caller's liveness
    /// check, and its tasks by the lease, as before.
    pub(crate) fn live_processes(&self) -> Result<usize, ClusterError> {
        let fresh = |a: &Option<(Instant, usize)>| a.filter(|(at, _)| at.elapsed() < ALIVE_FRESH).map(|(_, n)| n);
        if let Some(n) = fresh(&self.inner.alive.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(n);
        }
        let n = self.wait_for_workers()?;
        *self.inner.alive.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), n));
        Ok(n)
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}

impl Serialize for Cluster {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.settings.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Cluster {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cluster, D::Error> {
        let settings = Settings::deserialize(d)?;
        Cluster::from_settings(settings).map_err(serde::de::Error::custom)
    }
}

/// The identity of this program's build, which every worker host must
/// share: the binary's identity that function entries are checked against.
pub(crate) fn build_id() -> u64 {
    mp_sys::code::build_id()
}

/// A live worker host, as [`Cluster::workers`] lists it.
///
/// ```
/// fn show(w: &mp_cluster::WorkerInfo) -> String {
///     format!("{}:{} ({} processes, build {:016x})", w.host, w.pid, w.processes, w.build)
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Its unique id (host, pid and a random part).
    pub id: String,
    /// Its host name (or the label it was given).
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// How many local worker processes run its tasks.
    pub processes: usize,
    /// The build it runs.
    pub build: u64,
    /// When it last reported, as time since the Unix epoch.
    pub last_heartbeat: Duration,
}

impl WorkerInfo {
    /// How long ago it last reported (zero if the clocks disagree).
    pub fn since_heartbeat(&self) -> Duration {
        now().saturating_sub(self.last_heartbeat)
    }
}

/// The pause between tries while the server is away: 50 ms, doubling to
/// 500 ms.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) const FIRST: Duration = Duration::from_millis(50);
    pub(crate) const MAX: Duration = Duration::from_millis(500);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Backoff::FIRST }
    }

    /// Back to the first pause (the server answered).
    pub(crate) fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }

    /// Sleeps the next pause (at most `left`): the server is away and has
    /// no event to wait on, so this polls it.
    pub(crate) fn pause(&mut self, left: Duration) {
        std::thread::sleep(self.next.min(left));
        self.next = (self.next * 2).min(Backoff::MAX);
    }
}

pub(crate) fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}
