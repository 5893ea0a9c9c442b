//! A real `redis-server` for the test binaries of the cluster tier: one per
//! test binary, on 127.0.0.1 and a free port, without persistence.
//!
//! [`server`] starts it on first use and waits until it answers `PING`; it
//! is stopped and reaped when the test binary exits (an exit hook, which
//! also runs when a test fails or panics out of `main`). As a last resort
//! it gets `PR_SET_PDEATHSIG` (through `setpriv`, when present) from a
//! thread that lives as long as the binary, so a test binary killed by a
//! signal does not leave it behind either. Tests share the server; each
//! takes its own key [`namespace`](RedisServer::namespace), so they never
//! see each other's keys.
//!
//! ```no_run
//! let redis = mp_testkit::redis::server()?;
//! let url = redis.url();
//! let ns = redis.namespace("my_test");
//! assert!(url.starts_with("redis://127.0.0.1:"));
//! assert!(ns.starts_with("my_test-"));
//! # Ok::<(), String>(())
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long a new server has to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The running server of this test binary.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    pid: u32,
}

static SERVER: OnceLock<Result<RedisServer, String>> = OnceLock::new();
static CHILD: Mutex<Option<Child>> = Mutex::new(None);
static NAMESPACES: AtomicU64 = AtomicU64::new(0);

/// The test binary's server, started on first use. `Err` says why it could
/// not start (no `redis-server` on `PATH`: install it, as `.ci/run` does).
pub fn server() -> Result<&'static RedisServer, String> {
    SERVER.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// Whether a `redis-server` executable is on `PATH`.
pub fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl RedisServer {
    /// The server's URL, `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A key namespace no other test of any binary uses: `name-PID-N`.
    pub fn namespace(&self, name: &str) -> String {
        let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
        format!("{name}-{}-{n}", std::process::id())
    }

    /// Sends one inline command (`PING`, `DBSIZE`, ...) and returns the
    /// first line of the reply, for tests that look at the server directly.
    pub fn command(&self, line: &str) -> Result<String, String> {
        command(self.port, line, Duration::from_secs(5))
    }
}

fn command(port: u16, line: &str, timeout: Duration) -> Result<String, String> {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(format!("{line}\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        if s.read(&mut byte)
            .map_err(|e| format!("read from 127.0.0.1:{port}: {e}"))?
            == 0
        {
            return Err(format!("127.0.0.1:{port} closed the connection"));
        }
        buf.push(byte[0]);
    }
    buf.truncate(buf.len() - 2);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn start() -> Result<RedisServer, String> {
    if !available() {
        return Err("redis-server is not installed: `apt-get install -y redis-server` (.ci/run does it)".into());
    }
    let mut last = String::new();
    // A port found free can be taken by someone else before the server
    // binds it; try a few.
    for _ in 0..3 {
        match start_on(free_port()?) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A test server's command line: loopback only, in the foreground, quiet;
/// with an append-only file in `dir` when `persistent`, else no persistence.
fn server_args(port: u16, dir: &std::path::Path, persistent: bool) -> Vec<String> {
    let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let persistence: &[&str] = if persistent {
        &["--appendonly", "yes", "--appendfsync", "everysec"]
    } else {
        &["--appendonly", "no"]
    };
    args.extend(persistence.iter().map(|s| s.to_string()));
    args.extend(["--daemonize", "no", "--loglevel", "warning", "--dir"].map(String::from));
    args.push(dir.to_string_lossy().into_owned());
    args
}

fn start_on(port: u16) -> Result<RedisServer, String> {
    let args = server_args(port, &std::env::temp_dir(), false);
    // The server is started from a thread that lives until the binary
    // exits, so its parent-death signal fires only when the binary dies.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("redis-fixture".into())
        .spawn(move || {
            let mut cmd = if dies_with_me() {
                let mut c = Command::new("setpriv");
                c.args(["--pdeathsig", "KILL", "redis-server"]);
                c
            } else {
                Command::new("redis-server")
            };
            let spawned = cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).spawn();
            let _ = tx.send(spawned);
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("cannot start the redis fixture thread: {e}"))?;
    let child = rx
        .recv()
        .map_err(|_| "the redis fixture thread ended".to_string())?
        .map_err(|e| format!("cannot run redis-server: {e}"))?;
    let pid = child.id();
    *CHILD.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let _ = mp_sys::process::at_exit(stop);
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if command(port, "PING", Duration::from_millis(500)).is_ok_and(|r| r == "+PONG") {
            return Ok(RedisServer { port, pid });
        }
        let exited = CHILD
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited || Instant::now() >= deadline {
            stop();
            return Err(format!(
                "redis-server on 127.0.0.1:{port} did not answer PING within {START_TIMEOUT:?}{}",
                if exited { " (it exited)" } else { "" }
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills and reaps the server (no persistence, so nothing is lost).
fn stop() {
    if let Some(mut child) = CHILD.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Stops the server now (normally the exit hook does it); later calls to
/// [`server`] return the stopped server's address, which refuses
/// connections. For tests of what clients do when Redis goes away.
pub fn stop_now() {
    stop();
}

/// A `redis-server` of a test's own that can be stopped and started again
/// on the same port: for tests of what the cluster does while its server
/// restarts. Its data lives in a directory of its own, written to an
/// append-only file (`appendonly yes`), so a server stopped with
/// [`stop`](RestartableRedis::stop) (`SHUTDOWN SAVE`) comes back with it;
/// [`wipe`](RestartableRedis::wipe) after a stop makes the next start come
/// back empty.
///
/// Dropping it kills and reaps the server and removes its directory; a
/// test binary killed outright takes the server with it (it runs under
/// `setpriv --pdeathsig KILL`, from a thread of its own).
///
/// ```no_run
/// let r = mp_testkit::redis::restartable()?;
/// r.command("SET k v")?;
/// let down = r.stop()?;          // SHUTDOWN SAVE, waited for on its pidfd
/// let up = r.start()?;           // same port, answering PING again
/// assert_eq!(r.command("GET k")?, "$1");
/// # let _ = (down, up);
/// # Ok::<(), String>(())
/// ```
#[derive(Debug)]
pub struct RestartableRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Mutex<Option<mp_sys::process::Child>>,
    spawner: Mutex<Option<(mpsc::Sender<SpawnRequest>, std::thread::JoinHandle<()>)>>,
}

type SpawnRequest = mpsc::Sender<Result<u32, String>>;

/// How long a server has to exit after `SHUTDOWN` or `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a [`RestartableRedis`] on a free port.
pub fn restartable() -> Result<RestartableRedis, String> {
    if !available() {
        return Err("redis-server is not installed: `apt-get install -y redis-server` (.ci/run does it)".into());
    }
    let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mp-redis-{}-{n}", std::process::id()));
    let mut last = String::new();
    // A port found free can be taken before the server binds it; try a
    // few. A failed try's handle removes the directory; the next makes it.
    for _ in 0..3 {
        let port = free_port()?;
        let r = RestartableRedis::new(port, dir.clone())?;
        match r.start() {
            Ok(_) => return Ok(r),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl RestartableRedis {
    fn new(port: u16, dir: std::path::PathBuf) -> Result<RestartableRedis, String> {
        let args = server_args(port, &dir, true);
        // Every start of the server comes from this thread, which lives as
        // long as the handle, so the parent-death signal fires only when the
        // handle is gone (after it killed the server) or the binary died.
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("redis-restartable".into())
            .spawn(move || {
                let setpriv = Command::new("setpriv")
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                for reply in rx {
                    let mut cmd = if setpriv {
                        let mut c = Command::new("setpriv");
                        c.args(["--pdeathsig", "KILL", "redis-server"]);
                        c
                    } else {
                        Command::new("redis-server")
                    };
                    let spawned = cmd
                        .args(&args)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .spawn()
                        .map(|c| c.id())
                        .map_err(|e| format!("cannot run redis-server: {e}"));
                    let _ = reply.send(spawned);
                }
            })
            .map_err(|e| format!("cannot start the redis fixture thread: {e}"))?;
        Ok(RestartableRedis {
            port,
            dir,
            child: Mutex::new(None),
            spawner: Mutex::new(Some((tx, thread))),
        })
    }

    /// The server's URL, `redis://127.0.0.1:PORT/0` (the same across
    /// restarts).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running server's process id (`None` while it is stopped).
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(|c| c.pid())
    }

    /// Its data directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// A key namespace no other test uses.
    pub fn namespace(&self, name: &str) -> String {
        let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
        format!("{name}-{}-{n}", std::process::id())
    }

    /// One inline command; the first line of the reply.
    pub fn command(&self, line: &str) -> Result<String, String> {
        command(self.port, line, Duration::from_secs(5))
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<mp_sys::process::Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the server (again) on its port and waits until it answers
    /// `PING` (it has loaded its data); how long that took.
    pub fn start(&self) -> Result<Duration, String> {
        let t0 = Instant::now();
        if self.lock_child().is_some() {
            return Err("the server is already running: stop or kill it first".into());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot make {}: {e}", self.dir.display()))?;
        let (reply_tx, reply_rx) = mpsc::channel();
        {
            let spawner = self.spawner.lock().unwrap_or_else(|e| e.into_inner());
            let (tx, _) = spawner.as_ref().ok_or("the fixture is shut down")?;
            tx.send(reply_tx)
                .map_err(|_| "the redis fixture thread ended".to_string())?;
        }
        let pid = reply_rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| "the redis fixture thread did not answer".to_string())??;
        // The spawned `Child` is dropped unreaped: this pidfd reaps it.
        let child = mp_sys::process::Child::from_pid(pid).map_err(|e| format!("pidfd of redis-server {pid}: {e}"))?;
        *self.lock_child() = Some(child);
        let deadline = t0 + START_TIMEOUT;
        loop {
            if command(self.port, "PING", Duration::from_millis(500)).is_ok_and(|r| r == "+PONG") {
                return Ok(t0.elapsed());
            }
            let exited = self
                .lock_child()
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                let _ = self.kill();
                return Err(format!(
                    "redis-server on 127.0.0.1:{} did not answer PING within {START_TIMEOUT:?}{}",
                    self.port,
                    if exited { " (it exited)" } else { "" }
                ));
            }
            // Polling a server that is loading (it has no event to wait on),
            // within START_TIMEOUT.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server with `SHUTDOWN SAVE` (its append-only file and a
    /// snapshot are written, so the next [`start`](Self::start) comes back
    /// with every write), and waits on its pidfd until it has exited and is
    /// reaped; how long that took.
    pub fn stop(&self) -> Result<Duration, String> {
        let t0 = Instant::now();
        let mut child = self.lock_child().take().ok_or("the server is not running")?;
        // A successful SHUTDOWN closes the connection without a reply; an
        // error reply says why it refused.
        if let Ok(reply) = command(self.port, "SHUTDOWN SAVE", STOP_TIMEOUT)
            && reply.starts_with('-')
        {
            *self.lock_child() = Some(child);
            return Err(format!("SHUTDOWN SAVE: {reply}"));
        }
        match child.wait_timeout(STOP_TIMEOUT) {
            Ok(Some(_)) => Ok(t0.elapsed()),
            Ok(None) => {
                let _ = child.signal(mp_sys::signal::Signal::KILL);
                let _ = child.wait_timeout(STOP_TIMEOUT);
                Err(format!(
                    "redis-server did not exit within {STOP_TIMEOUT:?} of SHUTDOWN; killed"
                ))
            }
            Err(e) => Err(format!("waiting for redis-server: {e}")),
        }
    }

    /// Kills the server (`SIGKILL`: writes of the last second may be lost
    /// from the append-only file) and reaps it.
    pub fn kill(&self) -> Result<(), String> {
        let Some(mut child) = self.lock_child().take() else {
            return Ok(());
        };
        child
            .signal(mp_sys::signal::Signal::KILL)
            .map_err(|e| format!("kill redis-server: {e}"))?;
        match child.wait_timeout(STOP_TIMEOUT) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!("redis-server did not exit within {STOP_TIMEOUT:?} of SIGKILL")),
            Err(e) => Err(format!("waiting for redis-server: {e}")),
        }
    }

    /// Removes the data files of a stopped server: its next start comes
    /// back empty.
    pub fn wipe(&self) -> Result<(), String> {
        if self.lock_child().is_some() {
            return Err("the server is running: stop or kill it before wiping its data".into());
        }
        for e in std::fs::read_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))? {
            let path = e.map_err(|e| e.to_string())?.path();
            let r = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            r.map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for RestartableRedis {
    fn drop(&mut self) {
        let _ = self.kill();
        if let Some((tx, thread)) = self.spawner.lock().unwrap_or_else(|e| e.into_inner()).take() {
            drop(tx);
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A worker host of the cluster tier for tests: an executable (a copy of
/// the test binary, usually) started with `MP_CLUSTER_WORKER` and its
/// settings, so mp-cluster diverts it to a worker host before `main`;
/// killed and reaped when dropped. It runs under `setpriv --pdeathsig KILL`
/// when `setpriv` is present, so it dies with a test binary killed outright.
#[derive(Debug)]
pub struct WorkerHost {
    child: Child,
}

/// What a [`WorkerHost`] is started with.
#[derive(Debug, Clone)]
pub struct HostSpec<'a> {
    /// The executable to run (the test binary: `std::env::current_exe()`).
    pub exe: &'a std::path::Path,
    /// The server's URL.
    pub url: &'a str,
    /// The cluster's key namespace.
    pub namespace: &'a str,
    /// How many local worker processes.
    pub processes: usize,
    /// The host's label (`WorkerInfo::host`).
    pub label: &'a str,
    /// The host's own lease.
    pub lease: Duration,
}

impl WorkerHost {
    /// Starts a worker host; its stdin is null, its output this process's.
    pub fn start(spec: &HostSpec<'_>) -> Result<WorkerHost, String> {
        Self::start_with(spec, |_| {})
    }

    /// [`start`](WorkerHost::start), with `more` changing the command
    /// before it runs (where its output goes, say).
    pub fn start_with(spec: &HostSpec<'_>, more: impl FnOnce(&mut Command)) -> Result<WorkerHost, String> {
        let mut cmd = if dies_with_me() {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL"]).arg(spec.exe);
            c
        } else {
            Command::new(spec.exe)
        };
        cmd.env("MP_CLUSTER_WORKER", spec.url)
            .env("MP_CLUSTER_PROCESSES", spec.processes.to_string())
            .env("MP_CLUSTER_NAMESPACE", spec.namespace)
            .env("MP_CLUSTER_HOST", spec.label)
            .env("MP_CLUSTER_LEASE_MS", spec.lease.as_millis().to_string())
            .stdin(Stdio::null());
        more(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("cannot start a worker host: {e}"))?;
        Ok(WorkerHost { child })
    }

    /// The host's process id (that of `setpriv`, which execs into it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills and reaps it (what dropping it does).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `setpriv` is there to give a child a parent-death signal.
fn dies_with_me() -> bool {
    static SETPRIV: OnceLock<bool> = OnceLock::new();
    *SETPRIV.get_or_init(|| {
        Command::new("setpriv")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
