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

fn start_on(port: u16) -> Result<RedisServer, String> {
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        "--dir",
        &std::env::temp_dir().to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The server is started from a thread that lives until the binary
    // exits, so its parent-death signal fires only when the binary dies.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("redis-fixture".into())
        .spawn(move || {
            let setpriv = Command::new("setpriv")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let mut cmd = if setpriv {
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
