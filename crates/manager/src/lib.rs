//! Python's `multiprocessing` managers for Rust: a server process that
//! owns real Rust values, and typed proxies that use them from any process.
//!
//! ```
//! use mp_manager::Manager;
//! let m = Manager::new()?;
//! let d = m.dict::<String, u32>()?;
//! let l = m.list_from(vec![1, 2, 3])?;
//! d.insert("sum".into(), l.to_vec()?.iter().sum())?;
//! assert_eq!(d.get(&"sum".into())?, Some(6));
//! # Ok::<(), mp_manager::ManagerError>(())
//! ```
//!
//! # How it works
//! - [`Manager::new`] starts a server process with the current start
//!   method. It holds one end of a socket pair, the *connector*; each proxy
//!   holds a copy of the other end, which travels with it as a handle.
//! - The first call from a thread opens a *line* through the connector: a
//!   shared page and a socket pair, served by a thread on the server. A
//!   call copies its request into the page and flips a sequence word; the
//!   server thread, waiting on that word, runs the method and writes the
//!   reply the same way. A round trip costs a few microseconds, not a
//!   socket exchange with pickling. Messages carrying descriptors (a proxy
//!   or a queue inside a value) or larger than the page go over the
//!   socket.
//! - Objects are real Rust values on the server. A method is a generic
//!   function, named to the server by its offset in the binary (both run
//!   the same executable, checked), so the server needs no table of types:
//!   `DictProxy<K, V>::insert` runs `IndexMap<K, V>::insert` there.
//! - A waiting client checks every 50 ms whether the server's end of its
//!   line hung up: a dead server is an error, never a hang. A server
//!   thread whose client hangs up releases the locks it held.
//! - Remote managers ([`BaseManagerBuilder::serve`] and
//!   [`BaseManager::connect`]) use TCP with the HMAC authkey handshake of
//!   `mp-connection`; every message is a frame on the socket.
//!
//! # Differences from Python
//! - Objects live until the manager shuts down (Python frees an object
//!   when its last proxy is gone); [`ObjectProxy::release`] frees one.
//! - Every proxy method returns a `Result`.
//! - Manager locks are released when the client holding them dies.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod custom;
mod dict;
mod error;
mod link;
mod list;
mod manager;
mod queue;
mod server;
mod sync;
mod value;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use custom::{Method, ObjectProxy};
pub use dict::DictProxy;
pub use error::ManagerError;
pub use list::ListProxy;
pub use manager::{BaseManager, BaseManagerBuilder, Manager, ManagerContext, Server};
pub use queue::QueueProxy;
pub use sync::{BarrierProxy, ConditionProxy, EventProxy, LockProxy, ProxyGuard, RLockProxy, SemaphoreProxy};
pub use value::{ArrayProxy, NamespaceProxy, ValueProxy};

/// What a managed container holds: a serde value that can be sent to the
/// server's threads.
pub trait Item: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Item for T {}
