//! `Listener` and `Client`: Python's `multiprocessing.connection.Listener`
//! and `Client`, over Unix socket paths and TCP.

use std::fmt;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use mp_sys::fd::{self, PollFd};

use crate::auth;
use crate::connection::Connection;
use crate::error::ConnectionError;

/// Where a listener listens.
enum Address {
    Unix(PathBuf),
    Tcp(String),
}

/// An address is TCP when it ends in `:port` and holds no `/`; anything else
/// is a Unix socket path.
fn parse(addr: &str) -> Address {
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
/// # Differences from Python
///
/// - The address is a string for both families (Python takes a tuple for
///   TCP); there is no `family` or `backlog` argument (the backlog is
///   std's, 128).
/// - `authkey=None` never falls back to the current process's key.
/// - A handshake has 20 s to complete; a client that goes silent in the
///   middle fails `accept` with `Authentication` instead of blocking it.
pub struct Listener {
    socket: Option<Socket>,
    address: String,
    authkey: Option<Vec<u8>>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("closed", &self.socket.is_none())
            .finish()
    }
}

impl Listener {
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
            Address::Tcp(a) => {
                let listener = TcpListener::bind(a.as_str()).map_err(in_use)?;
                let local = listener.local_addr()?.to_string();
                (Socket::Tcp(listener), local)
            }
        };
        Ok(Listener {
            socket: Some(socket),
            address,
            authkey: authkey.map(<[u8]>::to_vec),
        })
    }

    fn socket(&self) -> Result<&Socket, ConnectionError> {
        self.socket.as_ref().ok_or(ConnectionError::Closed)
    }

    /// Python's `Listener.accept()`: waits for a client, runs the handshake
    /// when there is an authkey, and returns the connection (duplex).
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
    /// Errors: [`Authentication`](ConnectionError::Authentication) when the
    /// client's key differs (or it has none, or sends garbage); the client's
    /// socket is closed then, and the listener keeps listening.
    pub fn accept(&self) -> Result<Connection, ConnectionError> {
        let (fd, unix) = match self.socket()? {
            Socket::Unix { listener, .. } => (OwnedFd::from(listener.accept()?.0), true),
            Socket::Tcp(listener) => {
                let (stream, _) = listener.accept()?;
                stream.set_nodelay(true)?;
                (OwnedFd::from(stream), false)
            }
        };
        if let Some(key) = &self.authkey {
            auth::serve(fd.as_fd(), key)?;
        }
        Ok(Connection::from_fd(fd, true, true, unix))
    }

    /// [`accept`](Listener::accept) that waits at most `t` for a client to
    /// arrive: [`ConnectionError::Timeout`] if none did.
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = mp_connection::Listener::bind("127.0.0.1:0", None)?;
    /// let err = l.accept_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(err, mp_connection::ConnectionError::Timeout));
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn accept_timeout(&self, t: Duration) -> Result<Connection, ConnectionError> {
        let mut set = [PollFd::readable(self.listen_fd()?)];
        if fd::poll(&mut set, Some(t))? == 0 {
            return Err(ConnectionError::Timeout);
        }
        self.accept()
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

    /// Python's `Listener.close()`: stops listening and removes the socket
    /// file of a Unix address (when this process created it). Later
    /// `accept` calls fail with [`ConnectionError::Closed`]; connections
    /// already accepted stay open. A second `close` is `Ok`.
    ///
    /// ```
    /// let mut l = mp_connection::Listener::bind("127.0.0.1:0", None)?;
    /// l.close()?;
    /// assert!(matches!(l.accept(), Err(mp_connection::ConnectionError::Closed)));
    /// # Ok::<(), mp_connection::ConnectionError>(())
    /// ```
    pub fn close(&mut self) -> Result<(), ConnectionError> {
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
            Some(Socket::Tcp(_)) | None => Ok(()),
        }
    }

    /// The listening socket, for [`wait`](crate::wait).
    pub(crate) fn listen_fd(&self) -> Result<BorrowedFd<'_>, ConnectionError> {
        Ok(match self.socket()? {
            Socket::Unix { listener, .. } => listener.as_fd(),
            Socket::Tcp(listener) => listener.as_fd(),
        })
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
    /// comparison, messages of at most 256 bytes, 20 s in all).
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
    }
}
