//! What can go wrong in the cluster tier.

use std::time::Duration;

use mp_pool::TaskError;

/// Why a cluster call failed. Every message says what to do next.
///
/// ```
/// let e = mp_cluster::ClusterError::NoWorkers { waited: std::time::Duration::from_secs(2) };
/// assert!(e.to_string().contains("MP_CLUSTER_WORKER"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Redis could not be reached (or refused the credentials) at `addr`.
    #[error(
        "cannot connect to Redis at {addr}: {source}; check that redis-server runs there and that the URL \
         (redis://[:password@]host:port/db) is right"
    )]
    Connect {
        /// The address tried, as the URL gave it.
        addr: String,
        /// What the client library reported.
        source: redis::RedisError,
    },
    /// A Redis command failed (the server went away, a timeout, an error
    /// reply).
    #[error("Redis failed while {during}: {source}; check that the server is up and reachable, then retry")]
    Redis {
        /// What the cluster was doing.
        during: String,
        /// What the client library reported.
        source: redis::RedisError,
    },
    /// Live workers exist, but none runs this program's build: they cannot
    /// run its functions. The tasks stay queued for a matching worker.
    #[error(
        "no live worker runs this build ({ours:016x}); the live workers run {}: start the same binary on the \
         worker hosts (MP_CLUSTER_WORKER=url ./app); the tasks stay queued for a matching worker",
        fmt_builds(.theirs)
    )]
    BuildMismatch {
        /// This program's build id.
        ours: u64,
        /// The build ids of the live workers.
        theirs: Vec<u64>,
    },
    /// No live worker at all within the wait.
    #[error(
        "no live worker host within {waited:?}: start one on a host with MP_CLUSTER_WORKER=redis://host:port/db \
         MP_CLUSTER_PROCESSES=n ./app (the same binary), or Worker::builder(url).run()"
    )]
    NoWorkers {
        /// How long the client waited for one.
        waited: Duration,
    },
    /// A value could not be encoded for the cluster.
    #[error("cannot encode for the cluster: {0}")]
    Encode(String),
    /// Bytes from Redis could not be decoded (a damaged or foreign entry).
    #[error("cannot decode an entry from Redis: {0}")]
    Decode(String),
    /// The task was cancelled before a worker host claimed it
    /// ([`AsyncResult::cancel`](crate::AsyncResult::cancel)): it never ran.
    #[error("the task was cancelled before a worker host took it: it did not run")]
    Cancelled,
    /// The Redis server came back from a restart (or a `FLUSHALL`) without
    /// this namespace's data: the tasks queued or running when it went away
    /// are gone, and no result will come for them. Found by the
    /// namespace's epoch key, which a server that kept its data still has.
    #[error(
        "the Redis server at {addr} came back without the data of namespace {namespace:?} (restarted without \
         persistence, or flushed): the tasks queued or running before are lost; submit them again, and run \
         redis-server with `appendonly yes` to keep them across restarts"
    )]
    DataLost {
        /// The server's address.
        addr: String,
        /// The key namespace whose data is gone.
        namespace: String,
    },
    /// The pool was closed or terminated.
    #[error("the cluster pool is closed or was terminated: submit to a new pool")]
    Closed,
    /// The task ran and failed (a panic, a lost worker), or its result was
    /// not ready within the timeout: the local pool's [`TaskError`].
    #[error(transparent)]
    Task(#[from] TaskError),
}

fn fmt_builds(b: &[u64]) -> String {
    b.iter().map(|b| format!("{b:016x}")).collect::<Vec<_>>().join(", ")
}

impl ClusterError {
    pub(crate) fn redis(during: impl Into<String>, source: redis::RedisError) -> ClusterError {
        ClusterError::Redis {
            during: during.into(),
            source,
        }
    }
}
