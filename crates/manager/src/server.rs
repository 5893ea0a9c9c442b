//! The server: the objects, a thread per line, and the dispatch of each
//! request to the monomorphized function that the client named.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mp_codec::Frame;
use mp_connection::Listener;
use mp_sys::code::Entry;
use mp_sys::time::Deadline;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Fault;
use crate::link::{Incoming, Link, LocalLink, LocalParts};

/// An object on the server.
pub(crate) type Object = Arc<dyn Any + Send + Sync>;

/// Undoes what a line did to an object (releases a lock it held), given
/// the object and the line's id.
pub(crate) type Undo = fn(&(dyn Any + Send + Sync), u64);

/// What a request asks for. The arguments follow it in the payload.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Head {
    /// Run `entry` on object `obj`.
    Invoke { obj: u64, entry: (i64, u64) },
    /// Build an object with the constructor `entry`; `name` is a registered
    /// type's name (BaseManager), checked against `tag`.
    Create {
        entry: (i64, u64),
        name: Option<String>,
        tag: u64,
        share: Option<String>,
    },
    /// The id of the object shared under `name`, whose type must be `tag`.
    Lookup { name: String, tag: u64 },
    /// Forget object `obj`.
    Release { obj: u64 },
    /// Stop the server (after the reply).
    Shutdown,
    /// A remote client's first request: its binary's identity.
    Hello { build: u64 },
}

/// How long a server thread sleeps between checks that its client is
/// still there.
const SERVER_SLICE: Duration = Duration::from_millis(500);
/// How long a blocked method waits between such checks.
const BLOCK_SLICE: Duration = Duration::from_millis(100);

/// The objects and names a server holds.
#[derive(Default)]
pub(crate) struct State {
    objects: Mutex<HashMap<u64, (Object, u64)>>,
    names: Mutex<HashMap<String, u64>>,
    /// Registered type names (BaseManager) and their type tags.
    registered: HashMap<String, u64>,
    next_id: AtomicU64,
    next_line: AtomicU64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn new(registered: HashMap<String, u64>) -> State {
        State {
            registered,
            next_id: AtomicU64::new(1),
            next_line: AtomicU64::new(1),
            ..State::default()
        }
    }

    /// Adds an object (shared under `name` if given); returns its id.
    pub(crate) fn add(&self, obj: Object, tag: u64, name: Option<&str>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.objects).insert(id, (obj, tag));
        if let Some(name) = name {
            lock(&self.names).insert(name.to_owned(), id);
        }
        id
    }

    fn get(&self, id: u64) -> Result<Object, Fault> {
        lock(&self.objects)
            .get(&id)
            .map(|(o, _)| Arc::clone(o))
            .ok_or(Fault::NoSuchObject(id))
    }
}

/// Locks a std mutex, taking over one poisoned by a method that panicked
/// (its caller got the panic as an error; the value is whatever the method
/// left).
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a method sees of the line it serves: for blocking waits (which end
/// when the client hangs up) and for what must be undone when it does.
pub(crate) struct Cx {
    line: u64,
    link: Rc<Link>,
    on_hangup: RefCell<Vec<(u64, Object, Undo)>>,
    obj_id: std::cell::Cell<u64>,
    current: RefCell<Option<Object>>,
}

impl std::fmt::Debug for Cx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cx").field("line", &self.line).finish_non_exhaustive()
    }
}

/// How a blocking method waits.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum Block {
    Forever,
    For(Duration),
    No,
}

impl Block {
    /// When the wait gives up; `None` for no wait at all.
    pub(crate) fn deadline(self) -> Option<Deadline> {
        match self {
            Block::Forever => Some(Deadline::NEVER),
            Block::For(t) => Some(Deadline::after(t)),
            Block::No => None,
        }
    }
}

impl Cx {
    /// The line's id: who holds a lock.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    /// Registers `undo` to run with the current object and this line's id
    /// when the client hangs up (a lock it holds is released). Once per
    /// object.
    pub(crate) fn on_hangup(&self, undo: Undo) {
        let id = self.obj_id.get();
        let mut v = self.on_hangup.borrow_mut();
        if !v.iter().any(|(i, _, _)| *i == id)
            && let Some(obj) = self.current.borrow().as_ref()
        {
            v.push((id, Arc::clone(obj), undo));
        }
    }

    /// Waits on `cv` until `ready` says so, `block` ends (then `Timeout`),
    /// or the client hangs up (then `Gone`).
    pub(crate) fn wait<'a, T, R>(
        &self,
        mut guard: MutexGuard<'a, T>,
        cv: &Condvar,
        block: Block,
        mut ready: impl FnMut(&mut T) -> Option<R>,
    ) -> Result<(R, MutexGuard<'a, T>), (Fault, MutexGuard<'a, T>)> {
        if let Some(r) = ready(&mut guard) {
            return Ok((r, guard));
        }
        let Some(deadline) = block.deadline() else {
            return Err((Fault::Timeout, guard));
        };
        loop {
            let slice = match deadline.remaining() {
                None => BLOCK_SLICE,
                Some(left) if left.is_zero() => return Err((Fault::Timeout, guard)),
                Some(left) => left.min(BLOCK_SLICE),
            };
            let (g, r) = cv.wait_timeout(guard, slice).unwrap_or_else(PoisonError::into_inner);
            guard = g;
            if let Some(v) = ready(&mut guard) {
                return Ok((v, guard));
            }
            if r.timed_out() && self.link.peer_gone() {
                return Err((Fault::Gone, guard));
            }
        }
    }
}

/// What a monomorphized function gets: the object, the arguments, and
/// where to put the reply.
#[derive(Debug)]
pub(crate) struct Invoke(pub(crate) Rc<Exchange>);

/// A line's buffers, shared with the functions it calls.
pub(crate) struct Exchange {
    pub(crate) incoming: RefCell<Incoming>,
    pub(crate) args_at: std::cell::Cell<usize>,
    pub(crate) reply: RefCell<Frame>,
    pub(crate) replied: std::cell::Cell<bool>,
    pub(crate) created: RefCell<Option<(Object, u64)>>,
    pub(crate) cx: Cx,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange").field("cx", &self.cx).finish_non_exhaustive()
    }
}

impl Exchange {
    /// Decodes the request's arguments.
    pub(crate) fn args<A: DeserializeOwned>(&self) -> Result<A, Fault> {
        let mut inc = self.incoming.borrow_mut();
        let fds = std::mem::take(&mut inc.fds);
        let at = self.args_at.get();
        mp_codec::decode_payload(&inc.payload()[at..], fds).map_err(|e| Fault::BadRequest(e.to_string()))
    }

    /// Encodes the reply.
    pub(crate) fn reply<R: Serialize>(&self, r: &Result<R, Fault>) {
        let mut frame = self.reply.borrow_mut();
        if let Err(e) = mp_codec::encode_into(r, &mut frame) {
            let f: Result<(), Fault> = Err(Fault::Panicked(format!("cannot encode the result: {e}")));
            // A fault always encodes.
            let _ = mp_codec::encode_into(&f, &mut frame);
        }
        self.replied.set(true);
    }

    fn fault(&self, f: Fault) {
        self.reply::<()>(&Err(f));
    }
}

/// The body of every method entry: decode, find the object, run `f`, reply.
pub(crate) fn run_op<O, A, R, F>(inv: Invoke, f: F) -> i32
where
    O: Any + Send + Sync,
    A: DeserializeOwned,
    R: Serialize,
    F: Fn(&O, A, &Cx) -> Result<R, Fault>,
{
    let ex = &*inv.0;
    let r = (|| {
        let obj = ex.cx.current.borrow().clone().ok_or(Fault::NoSuchObject(0))?;
        let o = obj.downcast_ref::<O>().ok_or_else(|| {
            Fault::WrongType(format!(
                "the object is not a {} (the proxy's type parameters differ from the object's)",
                std::any::type_name::<O>()
            ))
        })?;
        let args = ex.args::<A>()?;
        f(o, args, &ex.cx)
    })();
    ex.reply(&r);
    0
}

/// The body of every constructor entry.
pub(crate) fn run_create<O, A, F>(inv: Invoke, f: F) -> i32
where
    O: Any + Send + Sync,
    A: DeserializeOwned,
    F: Fn(A) -> Result<O, Fault>,
{
    let ex = &*inv.0;
    match ex.args::<A>().and_then(f) {
        Ok(o) => *ex.created.borrow_mut() = Some((Arc::new(o), mp_codec::handle::type_tag::<O>())),
        Err(e) => ex.fault(e),
    }
    0
}

/// Serves the local lines that clients open through `connector` until a
/// client asks to shut down (or this process is killed).
pub(crate) fn serve_local(connector: OwnedFd, state: Arc<State>) -> ! {
    quiet_panics();
    let mut buf = [0u8; 16];
    let mut fds = Vec::new();
    loop {
        fds.clear();
        match mp_sys::socket::recv_with_fds(connector.as_fd(), &mut buf, &mut fds) {
            Ok(r) if r.bytes == 0 && fds.is_empty() => {
                // Every connector is closed: no client can come any more.
                // The lines already open keep being served.
                loop {
                    std::thread::park();
                }
            }
            Ok(_) if fds.len() == 2 => {
                let sock = fds.pop().expect("two fds");
                let page = fds.pop().expect("two fds");
                let state = Arc::clone(&state);
                spawn_line(state, move || {
                    LocalLink::from_parts(LocalParts { page, sock }).map(Link::Local)
                });
            }
            Ok(_) => {} // Not a line request: ignored (its fds are closed).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Serves remote clients accepted by `listener` forever.
pub(crate) fn serve_remote(listener: &Listener, state: Arc<State>) -> Result<(), crate::ManagerError> {
    quiet_panics();
    loop {
        match listener.accept() {
            Ok(conn) => {
                let state = Arc::clone(&state);
                spawn_line(state, move || Ok(Link::Remote(conn)));
            }
            // A client with a wrong key, or one that sent garbage: refused,
            // and the server goes on.
            Err(mp_connection::ConnectionError::Authentication(_)) => {}
            Err(e) if e.is_eof() => {}
            Err(mp_connection::ConnectionError::Io(e)) if e.kind() != std::io::ErrorKind::InvalidInput => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(mp_connection::ConnectionError::Decode(_) | mp_connection::ConnectionError::Timeout) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn spawn_line(state: Arc<State>, open: impl FnOnce() -> std::io::Result<Link> + Send + 'static) {
    let r = std::thread::Builder::new()
        .name("mp-manager-line".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            if let Ok(link) = open() {
                serve_line(&state, link);
            }
        });
    // No thread: the line's parts are dropped, and its client sees the
    // hang-up as a server error.
    drop(r);
}

fn serve_line(state: &State, link: Link) {
    let link = Rc::new(link);
    let ex = Rc::new(Exchange {
        incoming: RefCell::new(Incoming::default()),
        args_at: std::cell::Cell::new(0),
        reply: RefCell::new(Frame::new()),
        replied: std::cell::Cell::new(false),
        created: RefCell::new(None),
        cx: Cx {
            line: state.next_line.fetch_add(1, Ordering::Relaxed),
            link: Rc::clone(&link),
            on_hangup: RefCell::new(Vec::new()),
            obj_id: std::cell::Cell::new(0),
            current: RefCell::new(None),
        },
    });
    let remote = matches!(*link, Link::Remote(_));
    let mut greeted = !remote;
    loop {
        if link.recv(&mut ex.incoming.borrow_mut(), SERVER_SLICE).is_err() {
            break;
        }
        ex.replied.set(false);
        let head = {
            let inc = ex.incoming.borrow();
            postcard::take_from_bytes::<Head>(inc.payload()).map(|(h, rest)| (h, inc.payload().len() - rest.len()))
        };
        let shutdown = match head {
            Err(e) => {
                ex.fault(Fault::BadRequest(format!("not a manager request: {e}")));
                false
            }
            Ok((head, at)) => {
                ex.args_at.set(at);
                if !greeted && !matches!(head, Head::Hello { .. }) {
                    ex.fault(Fault::BadRequest("a remote client must say hello first".into()));
                    false
                } else {
                    greeted = true;
                    handle(state, &ex, head)
                }
            }
        };
        if !ex.replied.get() {
            ex.fault(Fault::Panicked("the method did not reply".into()));
        }
        // A method that saw its client hang up has nobody to reply to.
        if link.send(&ex.reply.borrow()).is_err() {
            break;
        }
        *ex.cx.current.borrow_mut() = None;
        ex.incoming.borrow_mut().fds.clear();
        if shutdown {
            // The reply is out; nothing else needs to finish.
            mp_sys::process::exit_now(0);
        }
    }
    for (_, obj, undo) in ex.cx.on_hangup.borrow_mut().drain(..) {
        let _ = catch_unwind(AssertUnwindSafe(|| undo(&*obj, ex.cx.line)));
    }
}

/// Runs one request; true when the client asked to shut down.
fn handle(state: &State, ex: &Rc<Exchange>, head: Head) -> bool {
    match head {
        Head::Invoke { obj, entry } => {
            let o = match state.get(obj) {
                Ok(o) => o,
                Err(f) => {
                    ex.fault(f);
                    return false;
                }
            };
            *ex.cx.current.borrow_mut() = Some(o);
            ex.cx.obj_id.set(obj);
            call(ex, entry);
        }
        Head::Create {
            entry,
            name,
            tag,
            share,
        } => {
            if let Some(name) = &name {
                match state.registered.get(name) {
                    None => {
                        ex.fault(Fault::NotFound(format!("no type is registered as {name:?}")));
                        return false;
                    }
                    Some(t) if *t != tag => {
                        ex.fault(Fault::WrongType(format!("{name:?} is registered with another type")));
                        return false;
                    }
                    Some(_) => {}
                }
            }
            call(ex, entry);
            if let Some((obj, tag)) = ex.created.borrow_mut().take() {
                let id = state.add(obj, tag, share.as_deref());
                ex.reply::<u64>(&Ok(id));
            }
        }
        Head::Lookup { name, tag } => {
            let id = lock(&state.names).get(&name).copied();
            let r = match id {
                None => Err(Fault::NotFound(format!("nothing is shared as {name:?}"))),
                Some(id) => match lock(&state.objects).get(&id) {
                    Some((_, t)) if *t == tag => Ok(id),
                    Some(_) => Err(Fault::WrongType(format!(
                        "{name:?} is shared with another type than the one asked for"
                    ))),
                    None => Err(Fault::NoSuchObject(id)),
                },
            };
            ex.reply(&r);
        }
        Head::Release { obj } => {
            lock(&state.objects).remove(&obj);
            ex.reply::<()>(&Ok(()));
        }
        Head::Shutdown => {
            ex.reply::<()>(&Ok(()));
            return true;
        }
        Head::Hello { build } => {
            let r = if build == mp_sys::code::build_id() {
                Ok(())
            } else {
                Err(Fault::DifferentBinary("the build ids differ".into()))
            };
            ex.reply(&r);
        }
    }
    false
}

/// Calls the entry the request named, turning a panic into a fault.
fn call(ex: &Rc<Exchange>, (offset, tag): (i64, u64)) {
    let entry = Entry::<Invoke>::from_parts(offset, tag);
    let inv = Invoke(Rc::clone(ex));
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(|| entry.call(inv)));
    QUIET.with(|q| q.set(false));
    if let Ok(Err(e)) = r {
        ex.fault(Fault::DifferentBinary(e.to_string()));
    } else if let Err(p) = r {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        ex.fault(Fault::Panicked(format!("the method panicked: {msg}")));
    }
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A method's panic goes back to its caller as an error; the server does
/// not print it. Other panics print as usual.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                prev(info);
            }
        }));
    });
}

/// Sends a line's parts to the server over its connector.
pub(crate) fn send_parts(connector: &OwnedFd, parts: &LocalParts) -> std::io::Result<()> {
    mp_sys::socket::send_with_fds(
        connector.as_fd(),
        &[IoSlice::new(b"L")],
        &[parts.page.as_fd(), parts.sock.as_fd()],
    )
    .map(drop)
}
