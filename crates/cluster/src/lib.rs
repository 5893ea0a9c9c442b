//! The cluster tier of `multiprocessing`: the same pool across hosts, on
//! Redis (6.2 or later).
//!
//! Every host runs the **same binary**. A worker host is that binary
//! started with `MP_CLUSTER_WORKER=redis://host:port/db` (and
//! `MP_CLUSTER_PROCESSES=n`): it is diverted to [`Worker`] before `main`,
//! as spawned children are, with no init call. A client connects with
//! [`Cluster::connect`] and runs functions on the worker hosts with a
//! [`Pool`]:
//!
//! ```no_run
//! use mp_cluster::Cluster;
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! // On each worker host:  MP_CLUSTER_WORKER=redis://10.0.0.5:6379/0 MP_CLUSTER_PROCESSES=8 ./app
//! let c = Cluster::connect("redis://10.0.0.5:6379/0")?;
//! let pool = c.pool()?;
//! assert_eq!(pool.map(square, 0..1000u64)?.len(), 1000);
//! # Ok::<(), mp_cluster::ClusterError>(())
//! ```
//!
//! - [`Cluster`], [`ClusterBuilder`], [`WorkerInfo`]: the connection, its
//!   settings, the live worker hosts ([`Cluster::workers`]).
//! - [`Worker`], [`WorkerBuilder`]: a worker host, in code or by
//!   [`WORKER_ENV`].
//! - [`Pool`], [`AsyncResult`], [`IMap`]: `apply`, `map`, `starmap`, `imap`,
//!   `imap_unordered` and their variants.
//! - [`Executor`], [`MapResults`]: `concurrent.futures`' executor, whose
//!   futures are the local `mp_pool::TaskFuture` (so
//!   `mp_pool::executor::as_completed` and `wait` take them).
//! - [`Queue`]: Python's `Queue` on a Redis list, shared by every host.
//! - [`Dict`]: a managed dict (`DictProxy`'s methods) on a Redis hash.
//! - [`ClusterError`]: what went wrong and what to do.
//!
//! # How it works
//! Tasks go to a Redis stream per build (`XADD`), read by the consumer
//! group of that build's worker hosts' local processes (`XREADGROUP`: a
//! process reads two chunks at a time once it has answered the last ones,
//! sixteen while chunks finish less than 0.5 ms apart, so no host hoards
//! work). Each local process runs what it reads and sends the results with
//! its next read, in one round trip: a task that panics fails its item, one
//! that crashes its process fails its chunk with `TaskError::WorkerLost`,
//! and the host starts another process. Results go to the client pool's
//! own stream, one per task id; a synchronous [`Pool::apply`] reads its
//! result itself. Functions are named as for
//! spawned processes (their offset in the binary and a keyed tag, see
//! `mp_sys::code::Entry`), so the worker must run the same build; the
//! client checks that a live worker of its build exists before it queues
//! work, and fails with [`ClusterError::NoWorkers`] or
//! [`ClusterError::BuildMismatch`] after a bounded wait.
//!
//! Delivery is at-least-once with a lease, the client's, carried by each
//! task: a local process renews the tasks it holds every third of their
//! lease; a task held past its lease without renewal (its host died) is
//! taken over by another host (`XPENDING`, then `XCLAIM` with the task's
//! lease as the minimum idle time), and after `max_deliveries` it fails
//! with `TaskError::WorkerLost`. A task id gives one result.
//!
//! A task is claimed when the group hands it to a local process: it is
//! cancelled ([`AsyncResult::cancel`], an executor future's `cancel`) only
//! while no process has it (one script checks and takes it off the
//! stream), so a cancelled task never runs and a claimed one answers. A
//! terminated (or dropped) pool's queued tasks are taken off the stream,
//! and a local process that runs one of its tasks stops (within 100 ms).
//!
//! A Redis restart is ridden out: worker hosts poll the server with a
//! backoff, create their consumer group again and register again; waiting
//! calls wait within the cluster's `worker_wait` and their own deadline,
//! then fail with [`ClusterError::Connect`] or [`ClusterError::Redis`]. A
//! server that kept its data (`appendonly yes`) resumes the work where it
//! was; one that came back empty is found by the namespace's epoch key,
//! and the calls waiting on lost tasks fail with
//! [`ClusterError::DataLost`] (executor futures with
//! `TaskError::Lost`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod claim;
mod cluster;
mod conn;
mod dict;
mod error;
mod executor;
mod pool;
mod queue;
mod wire;
mod worker;

pub use cluster::{Cluster, ClusterBuilder, WorkerInfo};
pub use dict::Dict;
pub use error::ClusterError;
pub use executor::{Executor, MapResults};
pub use pool::{AsyncResult, IMap, Pool};
pub use queue::Queue;
pub use worker::{HOST_ENV, LEASE_ENV, NAMESPACE_ENV, PROCESSES_ENV, WORKER_ENV, Worker, WorkerBuilder};

mp_sys::divert_before_main!(static WORKER_HOOK = (worker::WORKER_ENV, worker::diverted));

/// Keeps the load-time hook in the binary: the linker drops a section
/// nothing refers to, and every program that can be a worker host calls
/// one of the functions that call this.
pub(crate) fn keep_worker_hook() {
    std::hint::black_box(&WORKER_HOOK);
}
