#![doc = include_str!("../../../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The operating-system layer: processes, memfd regions, futexes, fd passing,
/// signals. See [`mp_sys`].
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

/// `concurrent.futures`' free functions for executor futures:
/// `executor::as_completed` and `executor::wait`. See [`mp_pool::executor`].
#[cfg(feature = "pool")]
#[cfg_attr(docsrs, doc(cfg(feature = "pool")))]
pub use mp_pool::executor;
