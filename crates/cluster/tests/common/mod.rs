//! What the cluster test binaries share: the server testkit starts for
//! the binary, worker hosts (copies of an executable), a client, and the
//! wait for workers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mp_cluster::{Cluster, WorkerInfo};
use mp_testkit::redis::{HostSpec, WorkerHost};

pub(crate) fn redis() -> Result<&'static mp_testkit::redis::RedisServer, String> {
    mp_testkit::redis::server()
}

/// Worker hosts: copies of an executable (testkit's `WorkerHost`), killed
/// and reaped when dropped.
pub(crate) struct Host;

impl Host {
    pub(crate) fn start(exe: &Path, ns: &str, processes: usize, label: &str) -> Result<WorkerHost, String> {
        Host::start_with_lease(exe, ns, processes, label, Duration::from_secs(10))
    }

    pub(crate) fn start_with_lease(
        exe: &Path,
        ns: &str,
        processes: usize,
        label: &str,
        lease: Duration,
    ) -> Result<WorkerHost, String> {
        WorkerHost::start(&HostSpec {
            exe,
            url: &redis()?.url(),
            namespace: ns,
            processes,
            label,
            lease,
        })
    }
}

pub(crate) fn me() -> PathBuf {
    std::env::current_exe().expect("current_exe")
}

pub(crate) fn cluster(ns: &str, wait: Duration) -> Result<Cluster, String> {
    Cluster::builder(&redis()?.url())
        .namespace(ns)
        .worker_wait(wait)
        .connect()
        .map_err(|e| e.to_string())
}

/// Waits (at most 20 s) until `n` workers are listed.
pub(crate) fn wait_workers(c: &Cluster, n: usize) -> Result<Vec<WorkerInfo>, String> {
    c.wait_workers(Duration::from_secs(20), |w| w.len() >= n)
        .map_err(|e| e.to_string())?
        .ok_or(format!("fewer than {n} workers registered within 20 s"))
}

/// A test's namespace `{name}-…`, a worker host of `processes` processes
/// labelled `label` in it, and a client (waiting 10 s for workers) that has
/// seen the host register.
pub(crate) fn one_host(name: &str, processes: usize, label: &str) -> Result<(String, WorkerHost, Cluster), String> {
    let ns = redis()?.namespace(name);
    let host = Host::start(&me(), &ns, processes, label)?;
    let c = cluster(&ns, Duration::from_secs(10))?;
    wait_workers(&c, 1)?;
    Ok((ns, host, c))
}

/// A connection of the test's own to the server.
pub(crate) fn raw() -> Result<redis::Connection, String> {
    let client = redis::Client::open(redis()?.url()).map_err(|e| e.to_string())?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    con.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    con.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(con)
}

/// The task stream of `c`'s build.
pub(crate) fn tasks_stream(c: &Cluster) -> String {
    format!("{}:tasks:{:016x}", c.namespace(), c.build_id())
}

/// How many entries of `stream` some host holds.
pub(crate) fn pending(stream: &str) -> Result<i64, String> {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("workers")
        .query(&mut raw()?)
        .map_err(|e| e.to_string())?;
    match v {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => Ok(*n),
            other => Err(format!("XPENDING: {other:?}")),
        },
        other => Err(format!("XPENDING: {other:?}")),
    }
}
