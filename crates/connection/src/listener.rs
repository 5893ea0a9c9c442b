//! `Listener` and `Client`: Python's `multiprocessing.connection.Listener`
//! and `Client`, over Unix socket paths and TCP.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mp_sys::fd::{self, PollFd};
use mp_sys::time::Deadline;

use crate::auth::{self, Progress, ServerHandshake};
use crate::connection::Connection;
use crate::error::ConnectionError;

/// Where a listener listens.
enum Address {
    Unix(PathBuf),
    /// A Linux abstract socket: the name after the leading NUL byte.
    Abstract(Vec<u8>),
    Tcp(String),
}

/// An address that starts with a NUL byte is a Linux abstract socket (no
/// file: the name goes when the last socket closes), as in Python; an
/// address is TCP when it ends in `:port` and holds no `/`; anything else is
/// a Unix socket path.
fn parse(addr: &str) -> Address {
    if let Some(name) = addr.strip_prefix('\0') {
        return Address::Abstract(name.as_bytes().to_vec());
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !addr.contains('/') && !host.is_empty() && port.parse::<u16>().is_ok() => {
            Address::Tcp(addr.to_string())
        }
        _ => Address::Unix(PathBuf::from(addr)),
    }
}

enum Socket {
    Unix {
        listener: UnixListener,
        path: PathBuf,
        /// The process that created the socket file: only it removes it.
        owner: u32,
    },
    /// A Linux abstract socket: nothing to remove on close.
    Abstract(UnixListener),
    Tcp(TcpListener),
}

/// Python's `multiprocessing.connection.Listener`: accepts connections on a
/// Unix socket path or a TCP `host:port`, optionally authenticated with a
/// shared key.
///
/// ```
/// use mp_connection::{Client, Listener};
///
/// let dir = std::env::temp_dir().join(format!("mp-doc-listener-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("sock");
/// let listener = Listener::bind(path.to_str().unwrap(), Some(b"secret"))?;
/// let address = listener.address();
/// let client = std::thread::spawn(move || -> Result<String, mp_connection::ConnectionError> {
///     let c = Client::connect(&address, Some(b"secret"))?;
///     c.send(&"hello")?;
///     c.recv::<String>()
/// });
/// let conn = listener.accept()?;
/// let hello: String = conn.recv()?;
/// conn.send(&hello.to_uppercase())?;
/// assert_eq!(client.join().unwrap()?, "HELLO");
/// # drop(listener);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Addresses
///
/// `host:port` with no `/` in it (`"127.0.0.1:6000"`, `"localhost:0"`,
/// `"[::1]:6000"`) is TCP; port 0 picks a free port, which
/// [`address`](Listener::address) then reports. Anything else is the path of
/// a Unix socket, created by `bind` and removed by `close` (or drop) in the
/// process that bound it. Binding an address that is in use is an error.
/// Connections over a Unix socket can carry handles; over TCP they cannot.
///
/// # Authentication
///
/// With `authkey: Some(key)` every accepted connection first runs an
/// HMAC-SHA256 challenge-response in both directions (see
/// [`Client::connect`]); a client with another key, or none, is refused and
/// `accept` returns [`ConnectionError::Authentication`]. An empty key is a
/// key. `None`: no handshake, as in Python.
///
/// # Hostile peers
///
/// Accepting a connection and authenticating it are separate steps. While a
/// thread is in [`accept`](Listener::accept), the listener takes every
/// connection that arrives, sends it the challenge at once, and drives all
/// the handshakes under way from one `poll`, without blocking on any of
/// them: `accept` returns the first connection whose handshake *completes*.
/// A client that connects and says nothing, or answers slowly, holds only
/// its own slot:
///
/// - at most [`max_pending`](ListenerBuilder::max_pending) handshakes are
///   under way at once ([`DEFAULT_MAX_PENDING`](Listener::DEFAULT_MAX_PENDING),
///   128, by default); when a new connection arrives at the cap, the oldest
///   handshake is dropped (its socket closed);
/// - each has [`handshake_timeout`](ListenerBuilder::handshake_timeout)
///   ([`DEFAULT_HANDSHAKE_TIMEOUT`](Listener::DEFAULT_HANDSHAKE_TIMEOUT), 5
///   s, by default) from its challenge to the client's last message, then it
///   is dropped;
/// - a handshake message is at most 256 bytes, read into a fixed buffer.
///
/// Dropped handshakes (deadline, cap, [`close`](Listener::close)) are closed
/// without an error. A handshake that fails outright (another key, garbage,
/// the client closed) is returned by `accept` as an
/// [`Authentication`](ConnectionError::Authentication) error, as Python
/// raises it; the listener goes on, and the next `accept` serves the next
/// client. Handshakes progress only while some thread is in `accept` (as in
/// Python, where `accept` runs them); several threads may call `accept` at
/// once, one of them driving the handshakes for all. A listener without an
/// authkey has no handshakes: `accept` hands out connections as they come.
///
/// [`wait`](crate::wait) reports a listener ready when a client is waiting
/// to be accepted by the operating system: with an authkey, the `accept`
/// that follows returns once that client's handshake is done (or another's).
///
/// # Differences from Python
///
/// - The address is a string for both families (Python takes a tuple for
///   TCP); there is no `family` or `backlog` argument (the backlog is
///   std's, 128).
/// - `authkey=None` never falls back to the current process's key.
/// - Python authenticates one client at a time inside `accept`, so one
///   silent client blocks every other; here handshakes run side by side,
///   with a deadline and a cap (see above).
pub struct Listener {
    socket: Option<Socket>,
    address: String,
    gate: Option<Gate>,
}

/// The handshakes of a listener with an authkey.
struct Gate {
    key: Vec<u8>,
    max_pending: usize,
    timeout: Duration,
    /// The handshakes under way, oldest first. Only the thread driving
    /// them locks it.
    pending: Mutex<VecDeque<Pending>>,
    /// What the threads in `accept` share.
    shared: Mutex<Shared>,
    /// Signalled when the driver stops driving or leaves results.
    turn: Condvar,
}

#[derive(Default)]
struct Shared {
    /// Whether a thread is driving the handshakes.
    driving: bool,
    /// Handshakes the driver finished beyond the one it returned.
    ready: VecDeque<Result<Connection, ConnectionError>>,
}

/// One handshake under way.
struct Pending {
    fd: OwnedFd,
    unix: bool,
    handshake: ServerHandshake,
    deadline: Instant,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Listener");
        d.field("address", &self.address)
            .field("authenticated", &self.gate.is_some())
            .field("closed", &self.socket.is_none());
        if let Some(g) = &self.gate {
            d.field("max_pending", &g.max_pending)
                .field("handshake_timeout", &g.timeout);
        }
        d.finish()
    }
}

/// Options of a [`Listener`]: its authkey, and how many handshakes it runs
/// at once and for how long. From [`Listener::builder`].
///
/// ```
/// use mp_connection::Listener;
/// use std::time::Duration;
/// let l = Listener::builder("127.0.0.1:0")
///     .authkey(b"secret")
///     .max_pending(16)
///     .handshake_timeout(Duration::from_secs(2))
///     .bind()?;
/// assert!(format!("{l:?}").contains("max_pending: 16"));
/// # Ok::<(), mp_connection::ConnectionError>(())
/// ```
#[derive(Clone)]
pub struct ListenerBuilder {
    addr: String,
    authkey: Option<Vec<u8>>,
    max_pending: usize,
    timeout: Duration,
}

impl fmt::Debug for ListenerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("addr", &self.addr)
            .field("authenticated", &self.authkey.is_some())
            .field("max_pending", &self.max_pending)
            .field("handshake_timeout", &self.timeout)
            .finish()
    }
}

impl ListenerBuilder {
    /// The shared key clients must prove they hold (`Listener::bind`'s
    /// `authkey`). Without it there is no handshake.
    ///
    /// ```
    /// let l = mp_connection::Listener::builder("127.0.0.1:0").authkey(b"k").bind()?;
    /// assert!(format!("{l:?}").contains("authenticated: true"));
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn authkey(mut self, key: &[u8]) -> ListenerBuilder {
        self.authkey = Some(key.to_vec());
        self
    }

    /// How many handshakes may be under way at once (at least 1; default
    /// [`Listener::DEFAULT_MAX_PENDING`]). A connection that arrives at the
    /// cap drops the oldest handshake. Each costs a socket (a descriptor)
    /// and about 300 bytes.
    ///
    /// ```
    /// use mp_connection::Listener;
    /// let b = Listener::builder("127.0.0.1:0").authkey(b"k");
    /// assert!(format!("{b:?}").contains("max_pending: 128"));
    /// assert!(format!("{:?}", b.max_pending(0)).contains("max_pending: 1"));
    /// ```
    pub fn max_pending(mut self, n: usize) -> ListenerBuilder {
        self.max_pending = n.max(1);
        self
    }

    /// How long a client has, from the challenge, to complete its handshake
    /// (default [`Listener::DEFAULT_HANDSHAKE_TIMEOUT`]); then it is dropped.
    /// A huge value means no deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = mp_connection::Listener::builder("127.0.0.1:0")
    ///     .authkey(b"k")
    ///     .handshake_timeout(Duration::MAX)
    ///     .bind()?;
    /// # drop(l);
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn handshake_timeout(mut self, t: Duration) -> ListenerBuilder {
        self.timeout = t;
        self
    }

    /// Binds and listens, as [`Listener::bind`].
    ///
    /// ```
    /// let l = mp_connection::Listener::builder("127.0.0.1:0").bind()?; // no key: no handshake
    /// assert!(format!("{l:?}").contains("authenticated: false"));
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn bind(self) -> Result<Listener, ConnectionError> {
        let mut l = Listener::bind(&self.addr, None)?;
        l.gate = self.authkey.map(|key| Gate::new(key, self.max_pending, self.timeout));
        Ok(l)
    }
}

impl Gate {
    fn new(key: Vec<u8>, max_pending: usize, timeout: Duration) -> Gate {
        Gate {
            key,
            max_pending,
            timeout,
            pending: Mutex::new(VecDeque::new()),
            shared: Mutex::new(Shared::default()),
            turn: Condvar::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing is left half-done under these locks that a panic could spoil.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// At most this many connections are taken from the operating system per
/// wake-up, so that a flood does not starve the handshakes under way.
const ACCEPT_BATCH: usize = 64;

impl Listener {
    /// How many handshakes a listener with an authkey runs at once, by
    /// default (see [`ListenerBuilder::max_pending`]).
    pub const DEFAULT_MAX_PENDING: usize = 128;

    /// How long a client has to complete its handshake, by default (see
    /// [`ListenerBuilder::handshake_timeout`]): an honest client on a
    /// loaded machine needs milliseconds.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

    /// A listener with options: the authkey, the cap on handshakes under way
    /// and their deadline (see [`ListenerBuilder`]).
    ///
    /// ```
    /// let l = mp_connection::Listener::builder("127.0.0.1:0").authkey(b"k").bind()?;
    /// assert!(l.address().starts_with("127.0.0.1:"));
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn builder(addr: &str) -> ListenerBuilder {
        ListenerBuilder {
            addr: addr.to_string(),
            authkey: None,
            max_pending: Listener::DEFAULT_MAX_PENDING,
            timeout: Listener::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Python's `Listener(address, authkey=authkey)`: binds and listens.
    ///
    /// ```
    /// let l = mp_connection::Listener::bind("127.0.0.1:0", None)?;
    /// assert!(l.address().starts_with("127.0.0.1:"));
    /// assert!(mp_connection::Listener::bind(&l.address(), None).is_err()); // in use
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn bind(addr: &str, authkey: Option<&[u8]>) -> Result<Listener, ConnectionError> {
        let in_use = |e: io::Error| {
            let hint = if e.kind() == io::ErrorKind::AddrInUse {
                " (another listener has it; a socket file left by a process that died must be removed first)"
            } else {
                ""
            };
            ConnectionError::Io(io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}{hint}")))
        };
        let (socket, address) = match parse(addr) {
            Address::Unix(path) => {
                let listener = UnixListener::bind(&path).map_err(in_use)?;
                let socket = Socket::Unix {
                    listener,
                    path,
                    owner: std::process::id(),
                };
                (socket, addr.to_string())
            }
            Address::Abstract(name) => {
                let at = SocketAddr::from_abstract_name(&name).map_err(in_use)?;
                let listener = UnixListener::bind_addr(&at).map_err(in_use)?;
                (Socket::Abstract(listener), addr.to_string())
            }
            Address::Tcp(a) => {
                let listener = TcpListener::bind(a.as_str()).map_err(in_use)?;
                let local = listener.local_addr()?.to_string();
                (Socket::Tcp(listener), local)
            }
        };
        // Accepting never blocks: threads in `accept` wait in `poll`, so
        // one that loses the race for a connection goes back to waiting
        // (and to its deadline) instead of blocking in `accept(2)`.
        match &socket {
            Socket::Unix { listener, .. } | Socket::Abstract(listener) => listener.set_nonblocking(true)?,
            Socket::Tcp(listener) => listener.set_nonblocking(true)?,
        }
        Ok(Listener {
            socket: Some(socket),
            address,
            gate: authkey.map(|key| {
                Gate::new(
                    key.to_vec(),
                    Listener::DEFAULT_MAX_PENDING,
                    Listener::DEFAULT_HANDSHAKE_TIMEOUT,
                )
            }),
        })
    }

    fn socket(&self) -> Result<&Socket, ConnectionError> {
        self.socket.as_ref().ok_or(ConnectionError::Closed)
    }

    /// Python's `Listener.accept()`: waits for a client and returns the
    /// connection (duplex); with an authkey, the first client whose
    /// handshake completes (see [Hostile peers](Listener#hostile-peers)).
    ///
    /// ```
    /// use mp_connection::{Client, Listener};
    /// let l = Listener::bind("127.0.0.1:0", Some(b""))?;
    /// let addr = l.address();
    /// let t = std::thread::spawn(move || Client::connect(&addr, Some(b"")).map(|c| c.send(&5u8)));
    /// let c = l.accept()?;
    /// assert_eq!(c.recv::<u8>()?, 5);
    /// t.join().unwrap()??;
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    ///
    /// Errors: [`Authentication`](ConnectionError::Authentication) when a
    /// client's handshake failed (another key, none, garbage, or it closed);
    /// its socket is closed then, and the listener keeps listening.
    pub fn accept(&self) -> Result<Connection, ConnectionError> {
        self.accept_until(Deadline::NEVER)
    }

    /// [`accept`](Listener::accept) that waits at most `t` for a client
    /// (with an authkey: for a completed handshake): [`ConnectionError::Timeout`]
    /// if none came. Handshakes still under way then go on at the next
    /// `accept`, within their own deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = mp_connection::Listener::bind("127.0.0.1:0", None)?;
    /// let err = l.accept_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(err, mp_connection::ConnectionError::Timeout));
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn accept_timeout(&self, t: Duration) -> Result<Connection, ConnectionError> {
        self.accept_until(Deadline::after(t))
    }

    fn accept_until(&self, deadline: Deadline) -> Result<Connection, ConnectionError> {
        let Some(gate) = &self.gate else {
            return self.accept_plain(deadline);
        };
        let mut shared = lock(&gate.shared);
        loop {
            if let Some(r) = shared.ready.pop_front() {
                return r;
            }
            if !shared.driving {
                shared.driving = true;
                drop(shared);
                let r = self.drive(gate, deadline);
                lock(&gate.shared).driving = false;
                gate.turn.notify_all();
                return r;
            }
            shared = match deadline.remaining() {
                None => gate.turn.wait(shared).unwrap_or_else(PoisonError::into_inner),
                Some(left) if left.is_zero() => return Err(ConnectionError::Timeout),
                Some(left) => {
                    gate.turn
                        .wait_timeout(shared, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Takes one connection from the operating system without blocking:
    /// `None` when there is none now.
    fn take(&self) -> Result<Option<(OwnedFd, bool)>, ConnectionError> {
        let r = match self.socket()? {
            Socket::Unix { listener, .. } | Socket::Abstract(listener) => {
                listener.accept().map(|(s, _)| (OwnedFd::from(s), true))
            }
            Socket::Tcp(listener) => listener.accept().and_then(|(s, _)| {
                s.set_nodelay(true)?;
                Ok((OwnedFd::from(s), false))
            }),
        };
        match r {
            Ok((fd, unix)) => {
                // The connection does not inherit the listener's
                // non-blocking mode on Linux; make sure it is blocking.
                fd::set_nonblocking(fd.as_fd(), false)?;
                Ok(Some((fd, unix)))
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
            // The client gave up before it was accepted: not this
            // listener's error.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `accept` without an authkey: the next connection, as it comes.
    fn accept_plain(&self, deadline: Deadline) -> Result<Connection, ConnectionError> {
        loop {
            if let Some((fd, unix)) = self.take()? {
                return Ok(Connection::from_fd(fd, true, true, unix));
            }
            let mut set = [PollFd::readable(self.listen_fd()?)];
            if fd::poll(&mut set, deadline.remaining())? == 0 && deadline.has_passed() {
                return Err(ConnectionError::Timeout);
            }
        }
    }

    /// Drives the handshakes until one completes (or fails outright), or
    /// `deadline` passes. One thread at a time.
    fn drive(&self, gate: &Gate, deadline: Deadline) -> Result<Connection, ConnectionError> {
        let mut pending = lock(&gate.pending);
        loop {
            let now = Instant::now();
            // Handshakes past their deadline are dropped, without an error:
            // a silent client costs only its own slot.
            pending.retain(|p| p.deadline > now);
            let earliest = pending.iter().map(|p| p.deadline).min();
            let wake = deadline.min(Deadline::from(earliest));
            let (listen_ready, ready) = {
                let mut set = Vec::with_capacity(pending.len() + 1);
                set.push(PollFd::readable(self.listen_fd()?));
                set.extend(pending.iter().map(|p| PollFd::readable(p.fd.as_fd())));
                fd::poll(&mut set, wake.remaining())?;
                let ready: Vec<usize> = (1..set.len()).filter(|&i| set[i].is_ready()).map(|i| i - 1).collect();
                (set[0].is_ready(), ready)
            };
            let mut found = VecDeque::new();
            // From the back, so that removing keeps the indices valid; the
            // results go to the front, so the oldest comes first.
            for &i in ready.iter().rev() {
                let p = &mut pending[i];
                match p.handshake.step(p.fd.as_fd(), &gate.key) {
                    Ok(Progress::Waiting) => {}
                    Ok(Progress::Done) => {
                        if let Some(p) = pending.remove(i) {
                            found.push_front(p.into_connection());
                        }
                    }
                    Err(e) => {
                        pending.remove(i);
                        found.push_front(Err(e));
                    }
                }
            }
            if listen_ready {
                for _ in 0..ACCEPT_BATCH {
                    let Some((fd, unix)) = self.take()? else {
                        break;
                    };
                    if let Some(p) = Pending::start(fd, unix, gate.timeout) {
                        if pending.len() >= gate.max_pending {
                            // The oldest handshake makes room: its socket
                            // closes here.
                            pending.pop_front();
                        }
                        pending.push_back(p);
                    }
                }
            }
            if let Some(first) = found.pop_front() {
                if !found.is_empty() {
                    lock(&gate.shared).ready.extend(found);
                }
                return first;
            }
            if deadline.has_passed() {
                return Err(ConnectionError::Timeout);
            }
        }
    }

    /// Python's `Listener.address`: the address clients connect to (for TCP
    /// port 0, with the port that was picked).
    ///
    /// ```
    /// let l = mp_connection::Listener::bind("127.0.0.1:0", None)?;
    /// assert!(!l.address().ends_with(":0"));
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Python's `Listener.close()`: stops listening, closes the handshakes
    /// under way, and removes the socket file of a Unix address (when this
    /// process created it). Later `accept` calls fail with
    /// [`ConnectionError::Closed`]; connections already accepted stay open.
    /// A second `close` is `Ok`.
    ///
    /// ```
    /// let mut l = mp_connection::Listener::bind("127.0.0.1:0", None)?;
    /// l.close()?;
    /// assert!(matches!(l.accept(), Err(mp_connection::ConnectionError::Closed)));
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn close(&mut self) -> Result<(), ConnectionError> {
        if let Some(gate) = &mut self.gate {
            // `&mut self`: no thread is in `accept`.
            gate.pending.get_mut().unwrap_or_else(PoisonError::into_inner).clear();
            gate.shared
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .ready
                .clear();
        }
        match self.socket.take() {
            Some(Socket::Unix { listener, path, owner }) => {
                drop(listener);
                if owner == std::process::id() {
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
                Ok(())
            }
            Some(Socket::Abstract(_) | Socket::Tcp(_)) | None => Ok(()),
        }
    }

    /// The listening socket, for [`wait`](crate::wait).
    pub(crate) fn listen_fd(&self) -> Result<BorrowedFd<'_>, ConnectionError> {
        Ok(match self.socket()? {
            Socket::Unix { listener, .. } | Socket::Abstract(listener) => listener.as_fd(),
            Socket::Tcp(listener) => listener.as_fd(),
        })
    }
}

impl Pending {
    /// Begins a handshake on a new connection: `None` when the challenge
    /// cannot even be sent (the client is gone), and the socket is closed.
    fn start(fd: OwnedFd, unix: bool, timeout: Duration) -> Option<Pending> {
        // Non-blocking for the handshake: a client that does not read
        // cannot stall the listener's sends.
        fd::set_nonblocking(fd.as_fd(), true).ok()?;
        let handshake = ServerHandshake::start(fd.as_fd()).ok()?;
        // A deadline past the clock's range is no deadline: far enough.
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        let deadline = Deadline::after(timeout)
            .instant()
            .or_else(|| Instant::now().checked_add(far))?;
        Some(Pending {
            fd,
            unix,
            handshake,
            deadline,
        })
    }

    fn into_connection(self) -> Result<Connection, ConnectionError> {
        fd::set_nonblocking(self.fd.as_fd(), false)?;
        Ok(Connection::from_fd(self.fd, true, true, self.unix))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Python's `multiprocessing.connection.Client`: connects to a
/// [`Listener`].
///
/// ```
/// use mp_connection::{Client, Listener};
/// let l = Listener::bind("127.0.0.1:0", None)?;
/// let c = Client::connect(&l.address(), None)?;
/// let s = l.accept()?;
/// c.send_bytes(b"over tcp")?;
/// assert_eq!(s.recv_bytes()?, b"over tcp");
/// # Ok::<(), mp_connection::ConnectionError>(())
/// ```
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Python's `Client(address, authkey=authkey)`: connects to `addr` (a
    /// Unix socket path or TCP `host:port`, as for [`Listener::bind`]) and,
    /// with an authkey, runs the handshake: the client proves it holds the
    /// key and checks that the server does too (HMAC-SHA256, constant-time
    /// comparison, messages of at most 256 bytes, 20 s in all, from the
    /// connection to the server's last message).
    ///
    /// ```
    /// use mp_connection::{Client, ConnectionError, Listener};
    /// let l = Listener::bind("127.0.0.1:0", Some(b"right"))?;
    /// let addr = l.address();
    /// let server = std::thread::spawn(move || l.accept().map(drop));
    /// let err = Client::connect(&addr, Some(b"wrong")).unwrap_err();
    /// assert!(matches!(err, ConnectionError::Authentication(_)));
    /// assert!(matches!(server.join().unwrap(), Err(ConnectionError::Authentication(_))));
    /// # Ok::<(), ConnectionError>(())
    /// ```
    ///
    /// # Differences from Python
    ///
    /// A handshake error is [`ConnectionError::Authentication`] on both sides
    /// (Python raises `AuthenticationError`); a server that never sends its
    /// challenge (it has no authkey) fails after 20 s.
    pub fn connect(addr: &str, authkey: Option<&[u8]>) -> Result<Connection, ConnectionError> {
        let cannot =
            |e: io::Error| ConnectionError::Io(io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")));
        let (fd, unix) = match parse(addr) {
            Address::Unix(path) => (OwnedFd::from(UnixStream::connect(path).map_err(cannot)?), true),
            Address::Abstract(name) => {
                let at = SocketAddr::from_abstract_name(&name).map_err(cannot)?;
                (OwnedFd::from(UnixStream::connect_addr(&at).map_err(cannot)?), true)
            }
            Address::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).map_err(cannot)?;
                s.set_nodelay(true)?;
                (OwnedFd::from(s), false)
            }
        };
        if let Some(key) = authkey {
            auth::answer(fd.as_fd(), key)?;
        }
        Ok(Connection::from_fd(fd, true, true, unix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_tcp_or_paths() {
        assert!(matches!(parse("127.0.0.1:6000"), Address::Tcp(_)));
        assert!(matches!(parse("localhost:0"), Address::Tcp(_)));
        assert!(matches!(parse("[::1]:80"), Address::Tcp(_)));
        assert!(matches!(parse("/tmp/x.sock"), Address::Unix(_)));
        assert!(matches!(parse("/tmp/a:1"), Address::Unix(_)));
        assert!(matches!(parse("relative.sock"), Address::Unix(_)));
        assert!(matches!(parse("host:notaport"), Address::Unix(_)));
        assert!(matches!(parse(":80"), Address::Unix(_)));
        assert!(matches!(parse("\0mp-name"), Address::Abstract(n) if n == b"mp-name"));
    }
}
