//! `QueueProxy`: a queue on the server.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mp_queue::{GetError, PutError};
use serde::{Deserialize, Serialize};

use crate::client::{ObjRef, ServerRef, generic_proxy, proxy_serde};
use crate::error::Fault;
use crate::server::{Block, Cx, lock};
use crate::{Item, ManagerError};

pub(crate) struct QueueObj<T> {
    state: Mutex<QState<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    maxsize: usize,
}

struct QState<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// What a put or get on the server ran into.
#[derive(Debug, Serialize, Deserialize)]
enum QFail {
    Full,
    Empty,
    Closed,
}

/// Python's `Manager().Queue()`: a queue that lives on the manager's
/// server, with the methods of [`mp_queue::Queue`] and its errors. A call
/// whose server is gone (shut down, killed) fails with the `Disconnected`
/// variant ([`PutError::Disconnected`] hands the item back,
/// [`GetError::Disconnected`]); `Closed` means that someone
/// [closed](QueueProxy::close) the queue.
///
/// A [`Queue`](mp_queue::Queue) is many times faster (it lives in shared
/// memory); a `QueueProxy` is for code written against Python's manager
/// queue, and reaches processes of the same binary on other machines
/// through a remote manager.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let q = m.queue::<String>()?;
/// q.put("hello".into()).map_err(|e| e.to_string())?;
/// assert_eq!(q.qsize()?, 1);
/// assert_eq!(q.get().map_err(|e| e.to_string())?, "hello");
/// assert!(q.get_nowait().is_err()); // Empty
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct QueueProxy<T> {
    pub(crate) obj: ObjRef,
    pub(crate) _types: PhantomData<fn() -> T>,
}

generic_proxy!(QueueProxy<T>);

proxy_serde!(QueueProxy<T>, QueueObj<T>, "QueueProxy of this type", where T: Item);

fn new_queue<T: Item>(maxsize: usize) -> Result<QueueObj<T>, Fault> {
    Ok(QueueObj {
        state: Mutex::new(QState {
            items: VecDeque::new(),
            closed: false,
        }),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
        maxsize,
    })
}

fn put<T: Item>(q: &QueueObj<T>, (item, block): (T, Block), cx: &Cx) -> Result<Result<(), QFail>, Fault> {
    let g = lock(&q.state);
    if g.closed {
        return Ok(Err(QFail::Closed));
    }
    let maxsize = q.maxsize;
    let r = cx.wait(g, &q.not_full, block, |s| {
        (s.closed || maxsize == 0 || s.items.len() < maxsize).then_some(())
    });
    let mut g = match r {
        Ok(((), g)) => g,
        Err((Fault::Timeout, _)) => return Ok(Err(QFail::Full)),
        Err((f, _)) => return Err(f),
    };
    if g.closed {
        return Ok(Err(QFail::Closed));
    }
    g.items.push_back(item);
    drop(g);
    q.not_empty.notify_one();
    Ok(Ok(()))
}

fn get<T: Item>(q: &QueueObj<T>, block: Block, cx: &Cx) -> Result<Result<T, QFail>, Fault> {
    let g = lock(&q.state);
    let r = cx.wait(g, &q.not_empty, block, |s| {
        if let Some(item) = s.items.pop_front() {
            Some(Ok(item))
        } else if s.closed {
            Some(Err(QFail::Closed))
        } else {
            None
        }
    });
    match r {
        Ok((Ok(item), g)) => {
            drop(g);
            q.not_full.notify_one();
            Ok(Ok(item))
        }
        Ok((Err(e), _)) => Ok(Err(e)),
        Err((Fault::Timeout, _)) => Ok(Err(QFail::Empty)),
        Err((f, _)) => Err(f),
    }
}

fn qsize<T: Item>(q: &QueueObj<T>, _: (), _: &Cx) -> Result<(usize, usize), Fault> {
    Ok((lock(&q.state).items.len(), q.maxsize))
}

fn close<T: Item>(q: &QueueObj<T>, _: (), _: &Cx) -> Result<(), Fault> {
    lock(&q.state).closed = true;
    q.not_empty.notify_all();
    q.not_full.notify_all();
    Ok(())
}

/// Whether a call failed because the server is out of reach (gone, or its
/// connection failed), not because of the queue.
fn unreachable(e: &ManagerError) -> bool {
    matches!(
        e,
        ManagerError::ServerGone(_)
            | ManagerError::Connection(_)
            | ManagerError::Io(_)
            | ManagerError::Authentication(_)
    )
}

impl<T: Item> QueueProxy<T> {
    pub(crate) fn create(server: &Arc<ServerRef>, maxsize: usize) -> Result<Self, ManagerError> {
        Ok(QueueProxy {
            obj: ObjRef::create(server, None, None, new_queue::<T>, &maxsize)?,
            _types: PhantomData,
        })
    }

    fn put_with(&self, item: T, block: Block) -> Result<(), PutError<T>> {
        let r: Result<Result<(), QFail>, ManagerError> = self.obj.call(put::<T>, &(&item, block));
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(QFail::Full | QFail::Empty)) => Err(PutError::Full(item)),
            Ok(Err(QFail::Closed)) => Err(PutError::Closed(item)),
            Err(ManagerError::Codec(m)) => Err(PutError::Encode(item, m)),
            Err(e) if unreachable(&e) => Err(PutError::Disconnected(item)),
            Err(_) => Err(PutError::Closed(item)),
        }
    }

    fn get_with(&self, block: Block) -> Result<T, GetError> {
        let r: Result<Result<T, QFail>, ManagerError> = self.obj.call(get::<T>, &block);
        match r {
            Ok(Ok(item)) => Ok(item),
            Ok(Err(QFail::Empty | QFail::Full)) => Err(GetError::Empty),
            Ok(Err(QFail::Closed)) => Err(GetError::Closed),
            Err(ManagerError::Codec(m)) => Err(GetError::Decode(m)),
            Err(e) if unreachable(&e) => Err(GetError::Disconnected),
            Err(_) => Err(GetError::Closed),
        }
    }

    /// Puts `item`, waiting for room in a bounded queue.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, Block::Forever)
    }

    /// Puts `item`, waiting at most `t` for room (then `Full(item)`).
    pub fn put_timeout(&self, item: T, t: Duration) -> Result<(), PutError<T>> {
        self.put_with(item, Block::For(t))
    }

    /// Puts `item` if there is room now (else `Full(item)`).
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, Block::No)
    }

    /// Takes the oldest item, waiting for one.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_with(Block::Forever)
    }

    /// Takes the oldest item, waiting at most `t` (then `Empty`).
    pub fn get_timeout(&self, t: Duration) -> Result<T, GetError> {
        self.get_with(Block::For(t))
    }

    /// Takes the oldest item if there is one now (else `Empty`).
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.get_with(Block::No)
    }

    /// How many items are queued.
    pub fn qsize(&self) -> Result<usize, ManagerError> {
        Ok(self.obj.call(qsize::<T>, &())?.0)
    }

    /// Whether no item is queued.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.qsize()? == 0)
    }

    /// Whether a bounded queue holds `maxsize` items.
    pub fn is_full(&self) -> Result<bool, ManagerError> {
        let (n, max) = self.obj.call(qsize::<T>, &())?;
        Ok(max != 0 && n >= max)
    }

    /// Closes the queue for every handle: puts fail with `Closed`; gets
    /// drain what is left, then fail with `Closed`.
    pub fn close(&self) -> Result<(), ManagerError> {
        self.obj.call(close::<T>, &())
    }
}
