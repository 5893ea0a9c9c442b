//! The client side: how a proxy reaches its server, the lines each thread
//! keeps open, and the typed call that names a server-side function.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mp_codec::Frame;
use mp_codec::handle::FdRef;
use mp_connection::Client;
use mp_sys::code::Entry;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ManagerError;
use crate::error::Fault;
use crate::link::{Incoming, Link, LocalLink};
use crate::server::{Cx, Head, Invoke, run_create, run_op, send_parts};

/// How long a remote server has to answer a new line's hello: it answers at
/// once, so a server that says nothing is not one.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client sleeps between checks that its server still runs.
const CLIENT_SLICE: Duration = Duration::from_millis(50);

/// How to reach a server.
pub(crate) enum Route {
    /// A local server: a socket whose other end only the server holds.
    /// Every process holding it may open lines; nobody else can.
    Local(OwnedFd),
    /// A remote server: its address and authkey.
    Remote { addr: String, authkey: Vec<u8> },
}

/// A server, as proxies know it.
pub(crate) struct ServerRef {
    /// Tells servers apart in each thread's cache of lines.
    pub(crate) token: u64,
    pub(crate) route: Route,
}

impl fmt::Debug for ServerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ServerRef");
        d.field("token", &self.token);
        if let Route::Remote { addr, .. } = &self.route {
            d.field("addr", addr);
        }
        d.finish_non_exhaustive()
    }
}

/// A line in this thread's cache.
pub(crate) struct Line {
    token: u64,
    /// The process that opened it: a forked child must not use its
    /// parent's lines.
    pid: u32,
    link: Link,
    frame: RefCell<Frame>,
    incoming: RefCell<Incoming>,
}

thread_local! {
    static LINES: RefCell<Vec<Rc<Line>>> = const { RefCell::new(Vec::new()) };
}

impl ServerRef {
    /// This thread's line to the server, opened on first use.
    pub(crate) fn line(&self) -> Result<Rc<Line>, ManagerError> {
        let pid = mp_sys::process::pid();
        let found = LINES
            .try_with(|lines| {
                let mut lines = lines.borrow_mut();
                // Lines inherited from a parent through fork are closed here.
                lines.retain(|l| l.pid == pid);
                lines.iter().find(|l| l.token == self.token).cloned()
            })
            .map_err(|_| {
                ManagerError::ServerGone("this thread is exiting: its lines to the server are closed".into())
            })?;
        if let Some(l) = found {
            return Ok(l);
        }
        let link = self.open()?;
        let line = Rc::new(Line {
            token: self.token,
            pid,
            link,
            frame: RefCell::new(Frame::new()),
            incoming: RefCell::new(Incoming::default()),
        });
        if let Route::Remote { .. } = self.route {
            let r: Result<(), ManagerError> = exchange_until(
                &line,
                &Head::Hello {
                    build: mp_sys::code::build_id(),
                },
                &(),
                mp_sys::time::Deadline::after(HELLO_TIMEOUT),
            );
            r?;
        }
        // A thread that is exiting keeps no line: this one closes after
        // the call.
        let _ = LINES.try_with(|lines| lines.borrow_mut().push(Rc::clone(&line)));
        Ok(line)
    }

    fn open(&self) -> Result<Link, ManagerError> {
        match &self.route {
            Route::Local(connector) => {
                let (link, parts) = LocalLink::pair()?;
                send_parts(connector, &parts)
                    .map_err(|e| ManagerError::ServerGone(format!("cannot reach the server: {e}")))?;
                Ok(Link::Local(link))
            }
            Route::Remote { addr, authkey } => Ok(Link::Remote(Client::connect(addr, Some(authkey))?)),
        }
    }

    /// Forgets this thread's line (after an error that left it out of step).
    pub(crate) fn drop_line(&self) {
        let _ = LINES.try_with(|lines| lines.borrow_mut().retain(|l| l.token != self.token));
    }

    /// Sends a request and waits for its reply.
    pub(crate) fn request<S: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        head: &Head,
        args: &S,
    ) -> Result<R, ManagerError> {
        let line = self.line()?;
        let r = exchange(&line, head, args);
        if matches!(r, Err(ManagerError::ServerGone(_))) {
            self.drop_line();
        }
        r
    }
}

fn exchange<S: Serialize + ?Sized, R: DeserializeOwned>(line: &Line, head: &Head, args: &S) -> Result<R, ManagerError> {
    exchange_until(line, head, args, mp_sys::time::Deadline::NEVER)
}

/// [`exchange`], giving up at `deadline` on a remote server that is alive
/// but does not answer.
fn exchange_until<S: Serialize + ?Sized, R: DeserializeOwned>(
    line: &Line,
    head: &Head,
    args: &S,
    deadline: mp_sys::time::Deadline,
) -> Result<R, ManagerError> {
    {
        let mut frame = line.frame.borrow_mut();
        mp_codec::encode_into(&(head, args), &mut frame).map_err(|e| ManagerError::Codec(e.to_string()))?;
        line.link.send(&frame)?;
    }
    let mut inc = line.incoming.borrow_mut();
    line.link.recv_until(&mut inc, CLIENT_SLICE, deadline)?;
    let fds = std::mem::take(&mut inc.fds);
    let r: Result<R, Fault> =
        mp_codec::decode_payload(inc.payload(), fds).map_err(|e| ManagerError::Codec(e.to_string()))?;
    r.map_err(ManagerError::from)
}

/// An object on a server, as one proxy holds it.
#[derive(Debug, Clone)]
pub(crate) struct ObjRef {
    pub(crate) server: Arc<ServerRef>,
    pub(crate) id: u64,
}

impl ObjRef {
    /// Runs `f` on the object on the server: `f` is a fn item (or a
    /// closure that captures nothing), named to the server by its entry.
    pub(crate) fn call<O, A, R, F, S>(&self, f: F, args: &S) -> Result<R, ManagerError>
    where
        O: Any + Send + Sync,
        A: DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        F: Fn(&O, A, &Cx) -> Result<R, Fault> + Copy + Send + 'static,
        S: Serialize + ?Sized,
    {
        let entry = Entry::new(move |inv: Invoke| run_op::<O, A, R, F>(inv, f))
            .map_err(|e| ManagerError::InvalidArgument(e.to_string()))?;
        self.server.request(
            &Head::Invoke {
                obj: self.id,
                entry: entry.parts(),
            },
            args,
        )
    }

    /// Builds an object of type `O` on `server` with `ctor(args)`.
    pub(crate) fn create<O, A, F, S>(
        server: &Arc<ServerRef>,
        name: Option<&str>,
        share: Option<&str>,
        ctor: F,
        args: &S,
    ) -> Result<ObjRef, ManagerError>
    where
        O: Any + Send + Sync,
        A: DeserializeOwned + 'static,
        F: Fn(A) -> Result<O, Fault> + Copy + Send + 'static,
        S: Serialize + ?Sized,
    {
        let entry = Entry::new(move |inv: Invoke| run_create::<O, A, F>(inv, ctor))
            .map_err(|e| ManagerError::InvalidArgument(e.to_string()))?;
        let id = server.request(
            &Head::Create {
                entry: entry.parts(),
                name: name.map(str::to_owned),
                tag: mp_codec::handle::type_tag::<O>(),
                share: share.map(str::to_owned),
            },
            args,
        )?;
        Ok(ObjRef {
            server: Arc::clone(server),
            id,
        })
    }

    /// Forgets the object on the server.
    pub(crate) fn release(&self) -> Result<(), ManagerError> {
        self.server.request(&Head::Release { obj: self.id }, &())
    }

    /// The object shared under `name`, which must be an `O`.
    pub(crate) fn lookup<O: Any>(server: &Arc<ServerRef>, name: &str) -> Result<ObjRef, ManagerError> {
        let id = server.request(
            &Head::Lookup {
                name: name.to_owned(),
                tag: mp_codec::handle::type_tag::<O>(),
            },
            &(),
        )?;
        Ok(ObjRef {
            server: Arc::clone(server),
            id,
        })
    }

    /// Serializes the reference, with `tag` naming the object's type.
    pub(crate) fn serialize_tagged<Ser: Serializer>(&self, tag: u64, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        let route = match &self.server.route {
            Route::Local(fd) => WireRoute::Local(FdRef(fd.as_fd())),
            Route::Remote { addr, authkey } => WireRoute::Remote {
                addr: addr.as_str(),
                authkey: authkey.as_slice(),
            },
        };
        (self.server.token, route, self.id, tag).serialize(s)
    }

    /// Deserializes a reference, checking that it names an object of type
    /// `tag` (`what` names the proxy type in the error).
    pub(crate) fn deserialize_tagged<'de, D: Deserializer<'de>>(
        d: D,
        tag: u64,
        what: &str,
    ) -> Result<ObjRef, D::Error> {
        let (token, route, id, got): (u64, WireRouteOwned, u64, u64) = Deserialize::deserialize(d)?;
        if got != tag {
            return Err(mp_codec::handle::invalid(format!(
                "this is not a {what}: the proxy was made for another type"
            )));
        }
        let route = match route {
            WireRouteOwned::Local(mp_codec::Fd(fd)) => Route::Local(fd),
            WireRouteOwned::Remote { addr, authkey } => Route::Remote { addr, authkey },
        };
        Ok(ObjRef {
            server: Arc::new(ServerRef { token, route }),
            id,
        })
    }
}

#[derive(Serialize)]
enum WireRoute<'a> {
    Local(FdRef<'a>),
    Remote { addr: &'a str, authkey: &'a [u8] },
}

#[derive(Deserialize)]
enum WireRouteOwned {
    Local(mp_codec::Fd),
    Remote { addr: String, authkey: Vec<u8> },
}

/// Implements `Serialize` and `Deserialize` for a proxy type wrapping an
/// `ObjRef` in a field named `obj`, tagged with its server-side type.
macro_rules! proxy_serde {
    ($proxy:ident < $($p:ident),* > , $obj:ty, $what:literal, where $($bounds:tt)*) => {
        impl<$($p),*> serde::Serialize for $proxy<$($p),*> where $($bounds)* {
            fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
                self.obj.serialize_tagged(mp_codec::handle::type_tag::<$obj>(), s)
            }
        }
        impl<'de, $($p),*> serde::Deserialize<'de> for $proxy<$($p),*> where $($bounds)* {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let obj = crate::client::ObjRef::deserialize_tagged(d, mp_codec::handle::type_tag::<$obj>(), $what)?;
                Ok($proxy { obj, _types: std::marker::PhantomData })
            }
        }
    };
    ($proxy:ident, $obj:ty, $what:literal) => {
        impl serde::Serialize for $proxy {
            fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
                self.obj.serialize_tagged(mp_codec::handle::type_tag::<$obj>(), s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $proxy {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let obj = crate::client::ObjRef::deserialize_tagged(d, mp_codec::handle::type_tag::<$obj>(), $what)?;
                Ok($proxy { obj })
            }
        }
    };
}

pub(crate) use proxy_serde;

/// Implements `Clone` and `Debug` for a generic proxy type with fields
/// `obj` and `_types`, whatever its type parameters.
macro_rules! generic_proxy {
    ($proxy:ident < $($p:ident),* >) => {
        impl<$($p),*> Clone for $proxy<$($p),*> {
            fn clone(&self) -> Self {
                $proxy {
                    obj: self.obj.clone(),
                    _types: std::marker::PhantomData,
                }
            }
        }

        impl<$($p),*> std::fmt::Debug for $proxy<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($proxy))
                    .field("types", &std::any::type_name::<($($p,)*)>())
                    .field("id", &self.obj.id)
                    .finish()
            }
        }
    };
}

pub(crate) use generic_proxy;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Manager;

    struct DictProxyLike {
        obj: ObjRef,
    }

    /// Sends a raw request on this thread's line and decodes the reply.
    fn raw<S: Serialize + ?Sized>(server: &ServerRef, payload: &S) -> Result<(), ManagerError> {
        let line = server.line()?;
        let frame = mp_codec::encode(payload).expect("encode");
        line.link.send(&frame)?;
        let mut inc = line.incoming.borrow_mut();
        line.link.recv(&mut inc, CLIENT_SLICE)?;
        let r: Result<(), Fault> = mp_codec::decode_payload(inc.payload(), Vec::new())?;
        r.map_err(ManagerError::from)
    }

    #[test]
    fn malformed_requests_get_error_replies_and_the_server_goes_on() {
        let m = Manager::new().expect("manager");
        let d = m.dict::<u32, u32>().expect("dict");
        let server = &d.obj.server;
        // Not a request at all.
        let e = raw(server, "garbage").unwrap_err();
        assert!(matches!(e, ManagerError::Codec(_)), "{e:?}");
        // An entry no binary made.
        let e = raw(
            server,
            &(
                Head::Invoke {
                    obj: d.obj.id,
                    entry: (12345, 678),
                },
                (),
            ),
        )
        .unwrap_err();
        assert!(matches!(e, ManagerError::DifferentBinary(_)), "{e:?}");
        // An object that does not exist.
        let gone = DictProxyLike {
            obj: ObjRef {
                server: Arc::clone(server),
                id: 999,
            },
        };
        let e = gone.obj.call(
            |d: &crate::dict::DictObj<u32, u32>, _: (), _: &Cx| Ok(crate::server::lock(d).len()),
            &(),
        );
        assert!(matches!(e, Err(ManagerError::NotFound(_))), "{e:?}");
        // Arguments of the wrong type for the method.
        let r: Result<Option<u32>, ManagerError> = d.obj.call(
            |d: &crate::dict::DictObj<u32, u32>, k: u32, _: &Cx| Ok(crate::server::lock(d).get(&k).copied()),
            &"not a u32 but a longer string",
        );
        assert!(matches!(r, Err(ManagerError::Codec(_))), "{r:?}");
        // The line and the server still work.
        d.insert(1, 2).expect("insert after the bad requests");
        assert_eq!(d.get(&1).expect("get"), Some(2));
    }
}
