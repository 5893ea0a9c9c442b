//! `Manager`, `BaseManager` and the builder that registers types, shares
//! values and serves them over TCP.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mp_codec::Fd;
use mp_connection::Listener;
use mp_process::{Process, StartMethod};
use mp_sys::socket::{SocketKind, socketpair};

use crate::client::{ObjRef, Route, ServerRef};
use crate::custom::{CustomObj, ObjectProxy};
use crate::error::Fault;
use crate::server::{Head, State, serve_local, serve_remote};
use crate::sync::{BarrierProxy, ConditionProxy, EventProxy, LockProxy, RLockProxy, SemaphoreProxy};
use crate::value::{ArrayProxy, NamespaceProxy, ValueProxy};
use crate::{DictProxy, Item, ListProxy, ManagerError, QueueProxy};

/// How long `shutdown` waits for the server to exit before killing it.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Python's `multiprocessing.Manager()`: a server process that owns
/// dicts, lists, queues, values, namespaces and synchronization primitives,
/// and the proxies that use them from any process.
///
/// Proxies are handles: pass them to a `Process` (or a pool task) under any
/// start method and they reach the same object. Every proxy call returns a
/// `Result`; when the server is gone (shut down, killed) the call fails
/// with [`ManagerError::ServerGone`] instead of hanging.
///
/// The server is started with the current start method and dies with this
/// process (it is daemonic); [`shutdown`](BaseManager::shutdown) or drop
/// stops it. Objects live until then.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let d = m.dict::<u32, String>()?;
/// d.insert(1, "one".into())?;
/// assert_eq!(d.len()?, 1);
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
pub struct Manager {
    base: BaseManager,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager").field("base", &self.base).finish()
    }
}

impl Manager {
    /// Starts a server process and waits until it answers.
    pub fn new() -> Result<Manager, ManagerError> {
        Ok(Manager {
            base: BaseManager::builder().start()?,
        })
    }

    /// Starts a server process with start method `m` (Python's
    /// `get_context(m).Manager()`).
    ///
    /// ```
    /// use mp_process::StartMethod;
    /// let m = mp_manager::Manager::with_start_method(StartMethod::Spawn)?;
    /// assert!(m.pid().is_some());
    /// # Ok::<(), mp_manager::ManagerError>(())
    /// ```
    pub fn with_start_method(m: StartMethod) -> Result<Manager, ManagerError> {
        Ok(Manager {
            base: BaseManager::builder().start_method(m).start()?,
        })
    }

    /// Starts a server process that runs `f(args)` before it serves
    /// (Python's `Manager(initializer=f, initargs=args)`); see
    /// [`BaseManagerBuilder::initializer`].
    ///
    /// ```
    /// fn quiet() {}
    /// let m = mp_manager::Manager::with_initializer(quiet, ())?;
    /// assert_eq!(m.list_from(vec![1, 2])?.len()?, 2);
    /// # Ok::<(), mp_manager::ManagerError>(())
    /// ```
    pub fn with_initializer<F, A>(f: F, args: A) -> Result<Manager, ManagerError>
    where
        F: mp_process::Function<A>,
        F::Output: mp_process::Outcome,
        A: mp_process::Args,
    {
        Ok(Manager {
            base: BaseManager::builder().initializer(f, args).start()?,
        })
    }
}

impl Deref for Manager {
    type Target = BaseManager;
    fn deref(&self) -> &BaseManager {
        &self.base
    }
}

impl std::ops::DerefMut for Manager {
    fn deref_mut(&mut self) -> &mut BaseManager {
        &mut self.base
    }
}

/// Python's `BaseManager`: a server of registered types and shared values,
/// started as a process of this program ([`start`](BaseManagerBuilder::start)),
/// served over TCP ([`serve`](BaseManagerBuilder::serve)), or reached at an
/// address ([`connect`](BaseManager::connect)).
///
/// It has every method of [`Manager`] too (`dict`, `queue`, `lock`...).
pub struct BaseManager {
    server: Arc<ServerRef>,
    /// The server process of a started manager, until it is shut down. The
    /// mutex is held for the whole shutdown, so a second one waits for the
    /// first.
    process: Mutex<Option<Process>>,
}

impl fmt::Debug for BaseManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BaseManager")
            .field("server", &self.server)
            .field("pid", &self.pid())
            .finish()
    }
}

/// Registers types and shares values before a [`BaseManager`] starts or
/// serves.
pub struct BaseManagerBuilder {
    method: Option<StartMethod>,
    registered: HashMap<String, u64>,
    shares: Vec<(String, Box<dyn Share>)>,
    /// Makes the server process with the initializer inside: see
    /// [`BaseManagerBuilder::initializer`].
    init: Option<ServerWithInit>,
}

/// Builds the server [`Process`] whose target runs an initializer first.
type ServerWithInit = Box<dyn FnOnce(Fd, Vec<(String, u64)>) -> Process + Send>;

impl fmt::Debug for BaseManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BaseManagerBuilder")
            .field("registered", &self.registered.keys().collect::<Vec<_>>())
            .field("shares", &self.shares.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish()
    }
}

/// A value to share, before it is on a server.
trait Share: Send {
    fn send(self: Box<Self>, server: &Arc<ServerRef>, name: &str) -> Result<(), ManagerError>;
    fn add(self: Box<Self>, state: &State, name: &str);
}

struct Shared<T>(T);

fn new_custom<T: Item>(v: T) -> Result<CustomObj<T>, Fault> {
    Ok(std::sync::Mutex::new(v))
}

fn new_default<T: Default + Send + 'static>(_: ()) -> Result<CustomObj<T>, Fault> {
    Ok(std::sync::Mutex::new(T::default()))
}

impl<T: Item> Share for Shared<T> {
    fn send(self: Box<Self>, server: &Arc<ServerRef>, name: &str) -> Result<(), ManagerError> {
        ObjRef::create(server, None, Some(name), new_custom::<T>, &self.0).map(drop)
    }

    fn add(self: Box<Self>, state: &State, name: &str) {
        let tag = mp_codec::handle::type_tag::<CustomObj<T>>();
        state.add(Arc::new(std::sync::Mutex::new(self.0)), tag, Some(name));
    }
}

/// The server process's body.
fn server_main(connector: Fd, registered: Vec<(String, u64)>) {
    let _ = mp_sys::process::set_name("mp-manager");
    // As Python's manager servers do: Ctrl-C in the terminal goes to the
    // whole process group, and the server must outlive it long enough for
    // the program to shut it down in order (it still dies with its parent).
    let _ = mp_sys::signal::ignore(mp_sys::signal::Signal::INT);
    serve_local(connector.0, Arc::new(State::new(registered.into_iter().collect())))
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

impl BaseManagerBuilder {
    /// Registers `T` under `name`, so that [`BaseManager::create`] can make
    /// values of it (with `T::default()`) on the server.
    pub fn register<T: Default + Send + 'static>(mut self, name: &str) -> Self {
        self.registered
            .insert(name.to_owned(), mp_codec::handle::type_tag::<CustomObj<T>>());
        self
    }

    /// Shares `value` under `name`: clients reach it with
    /// [`BaseManager::get`] (Python's `register(name, callable=lambda: value)`).
    pub fn share<T: Item>(mut self, name: &str, value: T) -> Self {
        self.shares.push((name.to_owned(), Box::new(Shared(value))));
        self
    }

    /// Starts the server with start method `m` instead of the current one.
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.method = Some(m);
        self
    }

    /// Runs `f(args)` in the server process before it serves (Python's
    /// `Manager(initializer=f, initargs=args)`). `f` is a target as for
    /// [`Process::new`]: a `fn` item or a closure that captures nothing. If
    /// it fails (returns `Err` or panics), the server exits and
    /// [`start`](Self::start) returns the error of a server that is gone.
    ///
    /// ```
    /// use mp_manager::BaseManager;
    /// fn set_up(code: i32) {
    ///     assert_eq!(code, 7);
    /// }
    /// let m = BaseManager::builder().initializer(set_up, (7,)).start()?;
    /// m.shutdown()?;
    /// # Ok::<(), mp_manager::ManagerError>(())
    /// ```
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: mp_process::Function<A>,
        F::Output: mp_process::Outcome,
        A: mp_process::Args,
    {
        self.init = Some(Box::new(move |connector, registered| {
            // Captures only `f`, a zero-sized function: still a target.
            let body = move |connector: Fd, registered: Vec<(String, u64)>, args: A| {
                if let Err(why) = mp_process::Outcome::into_result(f.call(args)) {
                    eprintln!("multiprocessing: the manager's initializer failed: {why}");
                    mp_process::exit(1);
                }
                server_main(connector, registered);
            };
            Process::new(body, (connector, registered, args))
        }));
        self
    }

    /// Starts the server as a process of this program (the current start
    /// method, or the one given), and waits until it answers.
    pub fn start(self) -> Result<BaseManager, ManagerError> {
        let (server_end, client_end) = socketpair(SocketKind::SeqPacket)?;
        let registered: Vec<(String, u64)> = self.registered.into_iter().collect();
        let n = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
        let p = match self.init {
            Some(with_init) => with_init(Fd(server_end), registered),
            None => Process::new(server_main, (Fd(server_end), registered)),
        };
        let mut p = p.name(&format!("SyncManager-{n}")).daemon(true);
        if let Some(m) = self.method {
            p = p.start_method(m);
        }
        p.start()?;
        let mut token = [0u8; 8];
        mp_sys::random::fill(&mut token)?;
        let m = BaseManager {
            server: Arc::new(ServerRef {
                token: u64::from_ne_bytes(token),
                route: Route::Local(client_end),
            }),
            process: Mutex::new(Some(p)),
        };
        // The first request opens this thread's line: the server answers.
        m.server.request::<_, ()>(
            &Head::Hello {
                build: mp_sys::code::build_id(),
            },
            &(),
        )?;
        for (name, v) in self.shares {
            v.send(&m.server, &name)?;
        }
        Ok(m)
    }

    /// Binds a TCP (`host:port`, port 0 for any free one) or Unix socket
    /// address for remote clients that know `authkey`, with the registered
    /// types and shared values; [`Server::serve_forever`] serves it.
    pub fn listen(self, addr: &str, authkey: &[u8]) -> Result<Server, ManagerError> {
        let listener = Listener::bind(addr, Some(authkey))?;
        let state = State::new(self.registered);
        for (name, v) in self.shares {
            v.add(&state, &name);
        }
        Ok(Server {
            listener,
            state: Arc::new(state),
        })
    }

    /// Serves at `addr` with `authkey` in this process, forever (Python's
    /// `get_server().serve_forever()`); returns only on an error.
    pub fn serve(self, addr: &str, authkey: &[u8]) -> Result<(), ManagerError> {
        self.listen(addr, authkey)?.serve_forever()
    }
}

/// A bound server for remote clients: see [`BaseManagerBuilder::listen`].
pub struct Server {
    listener: Listener,
    state: Arc<State>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("address", &self.address()).finish()
    }
}

impl Server {
    /// The address clients connect to (with the port chosen for port 0).
    pub fn address(&self) -> String {
        self.listener.address()
    }

    /// Serves clients, each on its own thread, forever. A client with a
    /// wrong authkey is refused and the server goes on.
    pub fn serve_forever(self) -> Result<(), ManagerError> {
        serve_remote(&self.listener, self.state)
    }
}

impl BaseManager {
    /// A builder: register types, share values, then start or serve.
    pub fn builder() -> BaseManagerBuilder {
        BaseManagerBuilder {
            method: None,
            registered: HashMap::new(),
            shares: Vec::new(),
            init: None,
        }
    }

    /// Connects to a server at `addr` (served by a process of this same
    /// program) with `authkey`. A wrong key is
    /// [`ManagerError::Authentication`].
    pub fn connect(addr: &str, authkey: &[u8]) -> Result<BaseManager, ManagerError> {
        let mut h = DefaultHasher::new();
        ("remote", addr, authkey).hash(&mut h);
        let m = BaseManager {
            server: Arc::new(ServerRef {
                token: h.finish(),
                route: Route::Remote {
                    addr: addr.to_owned(),
                    authkey: authkey.to_vec(),
                },
            }),
            process: Mutex::new(None),
        };
        // Fail here, not at the first call, on a wrong key, a wrong address
        // or another binary: opening a remote line says hello.
        m.server.line()?;
        Ok(m)
    }

    /// The server process's id (`None` for a connected manager).
    pub fn pid(&self) -> Option<u32> {
        self.process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Process::pid)
    }

    /// Makes a `T::default()` of the type registered as `name`.
    pub fn create<T: Default + Send + 'static>(&self, name: &str) -> Result<ObjectProxy<T>, ManagerError> {
        Ok(ObjectProxy {
            obj: ObjRef::create(&self.server, Some(name), None, new_default::<T>, &())?,
            _types: std::marker::PhantomData,
        })
    }

    /// The value shared as `name`, which must be a `T`.
    pub fn get<T: Send + 'static>(&self, name: &str) -> Result<ObjectProxy<T>, ManagerError> {
        Ok(ObjectProxy {
            obj: ObjRef::lookup::<CustomObj<T>>(&self.server, name)?,
            _types: std::marker::PhantomData,
        })
    }

    /// A new dict on the server.
    pub fn dict<K: Item + Hash + Eq, V: Item>(&self) -> Result<DictProxy<K, V>, ManagerError> {
        DictProxy::create(&self.server)
    }

    /// A new empty list on the server.
    pub fn list<T: Item>(&self) -> Result<ListProxy<T>, ManagerError> {
        ListProxy::create(&self.server, &[])
    }

    /// A new list on the server holding `items`.
    pub fn list_from<T: Item>(&self, items: Vec<T>) -> Result<ListProxy<T>, ManagerError> {
        ListProxy::create(&self.server, &items)
    }

    /// A new unbounded queue on the server.
    pub fn queue<T: Item>(&self) -> Result<QueueProxy<T>, ManagerError> {
        QueueProxy::create(&self.server, 0)
    }

    /// A new queue on the server that holds at most `maxsize` items (0:
    /// unbounded).
    pub fn queue_with_maxsize<T: Item>(&self, maxsize: usize) -> Result<QueueProxy<T>, ManagerError> {
        QueueProxy::create(&self.server, maxsize)
    }

    /// A new namespace on the server.
    pub fn namespace(&self) -> Result<NamespaceProxy, ManagerError> {
        NamespaceProxy::create(&self.server)
    }

    /// A new value on the server.
    pub fn value<T: Item>(&self, v: T) -> Result<ValueProxy<T>, ManagerError> {
        ValueProxy::create(&self.server, &v)
    }

    /// A new fixed-length array on the server.
    pub fn array<T: Item>(&self, v: Vec<T>) -> Result<ArrayProxy<T>, ManagerError> {
        ArrayProxy::create(&self.server, &v)
    }

    /// A new lock on the server.
    pub fn lock(&self) -> Result<LockProxy, ManagerError> {
        LockProxy::create(&self.server)
    }

    /// A new re-entrant lock on the server.
    pub fn rlock(&self) -> Result<RLockProxy, ManagerError> {
        RLockProxy::create(&self.server)
    }

    /// A new semaphore on the server, starting at `n`.
    pub fn semaphore(&self, n: usize) -> Result<SemaphoreProxy, ManagerError> {
        SemaphoreProxy::create(&self.server, n, false)
    }

    /// A new bounded semaphore on the server: releases past `n` are errors.
    pub fn bounded_semaphore(&self, n: usize) -> Result<SemaphoreProxy, ManagerError> {
        SemaphoreProxy::create(&self.server, n, true)
    }

    /// A new event on the server.
    pub fn event(&self) -> Result<EventProxy, ManagerError> {
        EventProxy::create(&self.server)
    }

    /// A new condition on the server (with its own re-entrant lock).
    pub fn condition(&self) -> Result<ConditionProxy, ManagerError> {
        ConditionProxy::create(&self.server)
    }

    /// A new barrier for `parties` callers on the server.
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy, ManagerError> {
        BarrierProxy::create(&self.server, parties)
    }

    /// Python's `shutdown()`: stops the server (a started manager) and
    /// waits for its process; every proxy call afterwards fails with
    /// [`ManagerError::ServerGone`]. A second shutdown is `Ok` (a shutdown
    /// under way in another thread is waited for). A connected manager only
    /// closes this thread's line: the remote server goes on.
    ///
    /// ```
    /// let m = mp_manager::Manager::new()?;
    /// let d = m.dict::<u8, u8>()?;
    /// m.shutdown()?;
    /// assert!(d.len().unwrap_err().is_server_gone());
    /// m.shutdown()?; // again: nothing to do
    /// # Ok::<(), mp_manager::ManagerError>(())
    /// ```
    pub fn shutdown(&self) -> Result<(), ManagerError> {
        let mut process = self.process.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(p) = process.as_mut() else {
            self.server.drop_line();
            return Ok(());
        };
        let r = self.server.request::<_, ()>(&Head::Shutdown, &());
        self.server.drop_line();
        let r = match r {
            Ok(()) | Err(ManagerError::ServerGone(_)) => stop(p),
            Err(e) => {
                let _ = p.kill();
                let _ = p.join();
                Err(e)
            }
        };
        // Whatever happened, the server is not this manager's any more: a
        // second shutdown has nothing to do.
        *process = None;
        r
    }
}

/// Waits for a server that was asked to stop, killing it if it does not.
fn stop(p: &mut Process) -> Result<(), ManagerError> {
    p.join_timeout(SHUTDOWN_WAIT)?;
    if p.exitcode().is_none() {
        p.kill()?;
        p.join()?;
    }
    Ok(())
}

impl Drop for BaseManager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// `ctx.manager()`: a [`Manager`] whose server starts with a context's
/// start method (Python's `get_context(m).Manager()`).
///
/// ```
/// use mp_manager::ManagerContext;
/// use mp_process::{get_context, StartMethod};
/// let m = get_context(StartMethod::ForkServer).manager()?;
/// assert!(m.pid().is_some());
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
pub trait ManagerContext {
    /// Starts a manager with this context's start method.
    fn manager(&self) -> Result<Manager, ManagerError>;
}

impl ManagerContext for mp_process::Context {
    fn manager(&self) -> Result<Manager, ManagerError> {
        Manager::with_start_method(self.start_method())
    }
}
