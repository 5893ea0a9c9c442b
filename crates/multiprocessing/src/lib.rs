//! Python's `multiprocessing` for Rust: processes, pipes, queues, shared
//! memory, locks, managers and pools.
//!
//! Work runs in separate processes started by fork, spawn or a fork server
//! (the default). Values travel between them as serde values; handles (queues,
//! locks, connections, shared values, proxies) travel too and refer to the same
//! object on the other side.
//!
//! ```
//! use multiprocessing::{Pool, Process, Queue};
//!
//! fn greet(q: Queue<String>, name: String) -> Result<(), multiprocessing::PutError<String>> {
//!     q.put(format!("hello, {name}"))
//! }
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let q = Queue::new()?;
//! let mut p = Process::new(greet, (q.clone(), "bob".to_string()));
//! p.start()?;
//! assert_eq!(q.get()?, "hello, bob");
//! p.join()?;
//!
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(square, 1..4u64)?, [1, 4, 9]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Processes
//! - [`Process`], [`StartMethod`], [`set_start_method`], [`get_context`] and
//!   [`Context`], [`current_process`], [`parent_process`],
//!   [`active_children`], [`cpu_count`], [`exit`]; the [`Run`] trait for
//!   Python's `Process` subclasses. Module [`process`].
//!
//! # Pipes and connections
//! - [`pipe`], [`pipe_simplex`], [`Connection`], [`Listener`], [`Client`],
//!   [`connection::wait`] over anything [`Waitable`]. Module [`connection`].
//!
//! # Queues
//! - [`Queue`], [`JoinableQueue`], [`SimpleQueue`], with [`PutError`] and
//!   [`GetError`]. Module [`queue`].
//!
//! # Shared memory
//! - [`Value`], [`Array`] (each with its lock), [`RawValue`], [`RawArray`],
//!   [`SharedMemory`], [`ShareableList`]; element types are [`Pod`].
//!   Module [`shared`].
//!
//! # Synchronization
//! - [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`],
//!   [`Condition`], [`Barrier`]. Module [`sync`].
//!
//! # Managers
//! - [`Manager`] and its typed proxies ([`DictProxy`], [`ListProxy`],
//!   [`QueueProxy`], [`NamespaceProxy`], ...), [`BaseManager`] for registered
//!   types and remote managers. Module [`manager`].
//!
//! # Pools
//! - [`Pool`] with [`AsyncResult`] and lazy [`IMap`]s;
//!   [`ProcessPoolExecutor`] with [`TaskFuture`], [`executor::as_completed`]
//!   and [`executor::wait`]. Module [`pool`].
//!
//! # Features
//! One per area, all on by default: `process`, `connection`, `sync`, `shared`,
//! `queue`, `manager`, `pool`, and `codec` (the framing under them all);
//! `ndarray`, also on, adds `ndarray` views of a locked [`Array`] and of a
//! [`SharedMemory`] segment (`shared::ndarray` is the crate they use);
//! `sys`, off by default, re-exports the operating-system layer; `cluster`,
//! off by default (its Redis client adds about 30 crates to the build),
//! brings [`cluster`]: the same pool across hosts.
//!
//! The project's README has the Python-to-Rust table, the semantic
//! differences, the start methods, troubleshooting and the performance
//! figures; `docs/ARCHITECTURE.md` in the repository explains how it works.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The operating-system layer: processes, memfd regions, futexes, fd passing,
/// signals. See [`mp_sys`]. Behind the `sys` feature (off by default): it
/// holds raw pieces such as `unsafe fn fork` that most programs never need.
#[cfg(feature = "sys")]
#[cfg_attr(docsrs, doc(cfg(feature = "sys")))]
#[doc(inline)]
pub use mp_sys as sys;

/// Serde values to frames, with file descriptors carried beside the bytes.
/// See [`mp_codec`].
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
#[doc(inline)]
pub use mp_codec as codec;

#[cfg(feature = "codec")]
pub use mp_codec::CodecError;

/// Pipes, connections, listeners and clients, and `wait`. See
/// [`mp_connection`]: `connection::wait` is Python's
/// `multiprocessing.connection.wait`.
#[cfg(feature = "connection")]
#[cfg_attr(docsrs, doc(cfg(feature = "connection")))]
#[doc(inline)]
pub use mp_connection as connection;

#[cfg(feature = "connection")]
pub use mp_connection::{Client, Connection, ConnectionError, Listener, Waitable, pipe, pipe_simplex};

/// Processes and start methods. See [`mp_process`].
#[cfg(feature = "process")]
#[cfg_attr(docsrs, doc(cfg(feature = "process")))]
#[doc(inline)]
pub use mp_process as process;

#[cfg(feature = "process")]
pub use mp_process::{
    Context, Process, ProcessError, ProcessInfo, Run, StartMethod, active_children, cpu_count, current_process, exit,
    get_context, get_start_method, parent_process, set_start_method,
};

/// Locks, semaphores, events, conditions and barriers shared between
/// processes. See [`mp_sync`].
#[cfg(feature = "sync")]
#[cfg_attr(docsrs, doc(cfg(feature = "sync")))]
#[doc(inline)]
pub use mp_sync as sync;

#[cfg(feature = "sync")]
pub use mp_sync::{
    Barrier, BarrierError, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockError, LockGuard, RLock,
    RLockGuard, Semaphore, SyncError,
};

/// Shared values, arrays and named segments. See [`mp_shared`].
#[cfg(feature = "shared")]
#[cfg_attr(docsrs, doc(cfg(feature = "shared")))]
#[doc(inline)]
pub use mp_shared as shared;

#[cfg(feature = "shared")]
pub use mp_shared::{
    Array, ArrayGuard, Pod, RawArray, RawValue, ShareableList, SharedError, SharedMemory, Value, ValueGuard, Zeroable,
};

/// Queues shared between processes: `Queue`, `JoinableQueue`, `SimpleQueue`.
/// See [`mp_queue`].
#[cfg(feature = "queue")]
#[cfg_attr(docsrs, doc(cfg(feature = "queue")))]
#[doc(inline)]
pub use mp_queue as queue;

#[cfg(feature = "queue")]
pub use mp_queue::{GetError, JoinableQueue, PutError, Queue, QueueError, SimpleQueue};

/// Managers: a server process owning dicts, lists, queues, namespaces,
/// values and locks, with typed proxies; custom types and remote managers.
/// See [`mp_manager`].
#[cfg(feature = "manager")]
#[cfg_attr(docsrs, doc(cfg(feature = "manager")))]
#[doc(inline)]
pub use mp_manager as manager;

#[cfg(feature = "manager")]
pub use mp_manager::{
    ArrayProxy, BarrierProxy, BaseManager, BaseManagerBuilder, ConditionProxy, DictProxy, EventProxy, ListProxy,
    LockProxy, Manager, ManagerContext, ManagerError, Method, NamespaceProxy, ObjectProxy, ProxyGuard, QueueProxy,
    RLockProxy, SemaphoreProxy, Server, ValueProxy,
};

/// Pools of worker processes: `Pool`, its `AsyncResult` and lazy maps. See
/// [`mp_pool`].
#[cfg(feature = "pool")]
#[cfg_attr(docsrs, doc(cfg(feature = "pool")))]
#[doc(inline)]
pub use mp_pool as pool;

#[cfg(feature = "pool")]
pub use mp_pool::{
    AsyncResult, DoneAndNotDone, ExecutorBuilder, ExecutorError, IMap, Pool, PoolBuilder, PoolContext, PoolError,
    ProcessPoolExecutor, ReturnWhen, TaskError, TaskFuture,
};

/// The cluster tier: `Cluster`, `Worker`, `cluster::Pool` and
/// `cluster::Executor`, the same pool across hosts on Redis. See
/// [`mp_cluster`].
#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
#[doc(inline)]
pub use mp_cluster as cluster;

/// `concurrent.futures`' free functions for executor futures:
/// `executor::as_completed` and `executor::wait`. See [`mp_pool::executor`].
#[cfg(feature = "pool")]
#[cfg_attr(docsrs, doc(cfg(feature = "pool")))]
pub use mp_pool::executor;

/// The README's Rust code blocks, compiled and run as doctests so its first
/// screen cannot rot (`cargo test --doc -p multiprocessing`).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
