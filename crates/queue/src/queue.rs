//! The typed queues over a [`Ring`]: `Queue<T>`, `JoinableQueue<T>` and
//! `SimpleQueue<T>`.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use mp_codec::Frame;
use mp_codec::handle::type_tag;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{GetError, PutError, QueueError};
use crate::ring::{Block, Fail, Kind, Ring};

thread_local! {
    /// The encoding buffer of this thread's puts.
    static ENCODE: RefCell<Frame> = RefCell::new(Frame::new());
    /// The payload buffer of this thread's gets.
    static DECODE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `item` in the caller's thread and queues it.
fn put<T: Serialize>(ring: &Ring, item: T, block: Block) -> Result<(), PutError<T>> {
    ENCODE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut frame) => put_with(ring, item, block, &mut frame),
        // A `Serialize` impl that puts on a queue itself: a buffer of its own.
        Err(_) => put_with(ring, item, block, &mut Frame::new()),
    })
}

fn put_with<T: Serialize>(ring: &Ring, item: T, block: Block, frame: &mut Frame) -> Result<(), PutError<T>> {
    if let Err(e) = mp_codec::encode_into(&item, frame) {
        return Err(PutError::Encode(item, e.to_string()));
    }
    let fds = frame.take_fds();
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    match ring.put(frame.payload(), &borrowed, block) {
        Ok(()) => Ok(()),
        Err(Fail::Timeout) => Err(PutError::Full(item)),
        Err(Fail::Closed) => Err(PutError::Closed(item)),
        Err(Fail::Io(e)) => Err(PutError::Encode(item, e.to_string())),
        Err(Fail::Lost(msg)) => Err(PutError::Encode(item, msg)),
    }
}

/// Takes an item and decodes it in the caller's thread, after the ring's
/// lock is released.
fn get<T: DeserializeOwned>(ring: &Ring, block: Block) -> Result<T, GetError> {
    DECODE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => get_with(ring, block, &mut buf),
        Err(_) => get_with(ring, block, &mut Vec::new()),
    })
}

fn get_with<T: DeserializeOwned>(ring: &Ring, block: Block, buf: &mut Vec<u8>) -> Result<T, GetError> {
    match ring.get(buf, block) {
        Ok(taken) => {
            let value =
                mp_codec::decode_payload(&buf[..taken.len], taken.fds).map_err(|e| GetError::Decode(e.to_string()));
            if buf.capacity() > 1 << 20 {
                // Do not keep a large item's buffer alive in the thread.
                *buf = Vec::new();
            }
            value
        }
        Err(Fail::Timeout) => Err(GetError::Empty),
        Err(Fail::Closed) => Err(GetError::Closed),
        Err(Fail::Io(e)) => Err(GetError::Decode(e.to_string())),
        Err(Fail::Lost(msg)) => Err(GetError::Decode(msg)),
    }
}

/// Python's `multiprocessing.Queue`: a FIFO of `T`s shared by any number of
/// producer and consumer processes.
///
/// Items are encoded (postcard, through `mp-codec`) in the caller's thread,
/// so a `put` that cannot encode its item returns the error with the item,
/// and copied into a ring in shared memory; a `get` copies the oldest one out
/// and decodes it. A wait first yields the CPU for up to 50 µs (checking
/// between yields), then sleeps on a futex; every wait has a timeout form. An unbounded queue's ring grows as needed (up to 256 MiB of
/// unread items; then `put` waits, as for a full bounded queue), and an item
/// larger than 4 MiB encoded travels in its own shared memory.
///
/// A `Queue` is a handle: `clone` it within a process, or pass it to a child
/// process or a pool task, and every copy is the same queue. Items may hold
/// handles too (a `Lock`, a `Connection`, another queue).
///
/// ```
/// use mp_queue::{GetError, Queue};
/// use std::time::Duration;
///
/// let q = Queue::new()?;
/// q.put(String::from("hello"))?;
/// q.put(String::from("world"))?;
/// assert_eq!(q.qsize(), 2);
/// assert_eq!(q.get()?, "hello");
/// assert_eq!(q.get_timeout(Duration::from_millis(10))?, "world");
/// assert_eq!(q.get_nowait(), Err(GetError::Empty));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// `close` is queue-wide here (Python's closes one process's handle): every
/// handle's puts fail afterwards, and gets take what is left and then report
/// [`GetError::Closed`] instead of waiting, which ends consumer loops without
/// a sentinel item.
pub struct Queue<T> {
    ring: Arc<Ring>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            ring: Arc::clone(&self.ring),
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.ring.count())
            .field("maxsize", &self.ring.maxsize())
            .field("closed", &self.ring.is_closed())
            .finish()
    }
}

impl<T> PartialEq for Queue<T> {
    /// Two handles are equal when they are the same queue.
    fn eq(&self, other: &Self) -> bool {
        self.ring.same(&other.ring)
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Queue<T> {
    fn with_kind(kind: Kind, maxsize: usize) -> Result<Self, QueueError> {
        Ok(Queue {
            ring: Arc::new(Ring::create(kind, type_tag::<T>(), maxsize as u64)?),
            _items: PhantomData,
        })
    }

    /// An unbounded queue: `put` never waits for room (up to 256 MiB of
    /// unread items).
    ///
    /// ```
    /// let q = mp_queue::Queue::<u64>::new()?;
    /// assert!(q.is_empty());
    /// # Ok::<(), mp_queue::QueueError>(())
    /// ```
    pub fn new() -> Result<Self, QueueError> {
        Self::with_kind(Kind::Queue, 0)
    }

    /// A queue of at most `maxsize` items; `put` waits while it is full. A
    /// `maxsize` of 0 means unbounded, as in Python.
    ///
    /// ```
    /// let q = mp_queue::Queue::with_maxsize(2)?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert!(q.is_full());
    /// assert!(q.put_nowait(3).unwrap_err().is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Self, QueueError> {
        Self::with_kind(Kind::Queue, maxsize)
    }

    /// Puts `item`, waiting while the queue is full.
    ///
    /// ```
    /// let q = mp_queue::Queue::new()?;
    /// q.put(vec![1, 2, 3])?;
    /// assert_eq!(q.get()?, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        put(&self.ring, item, Block::Until(None))
    }

    /// Puts `item`, waiting at most `t` for room; [`PutError::Full`] with the
    /// item after that.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = mp_queue::Queue::with_maxsize(1)?;
    /// q.put_timeout('a', Duration::from_secs(1))?;
    /// let e = q.put_timeout('b', Duration::from_millis(20)).unwrap_err();
    /// assert_eq!(e.into_inner(), 'b');
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_timeout(&self, item: T, t: Duration) -> Result<(), PutError<T>> {
        put(&self.ring, item, Block::timeout(t))
    }

    /// Puts `item` if there is room now; [`PutError::Full`] with the item
    /// otherwise.
    ///
    /// ```
    /// let q = mp_queue::Queue::with_maxsize(1)?;
    /// q.put_nowait(1u8)?;
    /// assert!(q.put_nowait(2).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        put(&self.ring, item, Block::No)
    }

    /// Takes the oldest item, waiting for one; [`GetError::Closed`] once the
    /// queue is closed and empty.
    ///
    /// ```
    /// let q = mp_queue::Queue::new()?;
    /// q.put(7i32)?;
    /// assert_eq!(q.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T, GetError> {
        get(&self.ring, Block::Until(None))
    }

    /// Takes the oldest item, waiting at most `t`; [`GetError::Empty`] after
    /// that.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = mp_queue::Queue::<u8>::new()?;
    /// let e = q.get_timeout(Duration::from_millis(20)).unwrap_err();
    /// assert_eq!(e, mp_queue::GetError::Empty);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, t: Duration) -> Result<T, GetError> {
        get(&self.ring, Block::timeout(t))
    }

    /// Takes the oldest item if there is one now; [`GetError::Empty`]
    /// otherwise.
    ///
    /// ```
    /// let q = mp_queue::Queue::new()?;
    /// q.put('x')?;
    /// assert_eq!(q.get_nowait()?, 'x');
    /// assert!(q.get_nowait().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_nowait(&self) -> Result<T, GetError> {
        get(&self.ring, Block::No)
    }

    /// How many items are in the queue now (exact; other processes may
    /// change it right after).
    ///
    /// ```
    /// let q = mp_queue::Queue::new()?;
    /// q.put(())?;
    /// assert_eq!(q.qsize(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn qsize(&self) -> usize {
        self.ring.count()
    }

    /// Whether the queue holds no item now.
    ///
    /// ```
    /// assert!(mp_queue::Queue::<u8>::new()?.is_empty());
    /// # Ok::<(), mp_queue::QueueError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ring.count() == 0
    }

    /// Whether the queue holds `maxsize` items now (never, when unbounded).
    ///
    /// ```
    /// let q = mp_queue::Queue::with_maxsize(1)?;
    /// assert!(!q.is_full());
    /// q.put(0u8)?;
    /// assert!(q.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.ring.is_full()
    }

    /// The `maxsize` the queue was made with (0: unbounded).
    ///
    /// ```
    /// assert_eq!(mp_queue::Queue::<u8>::with_maxsize(5)?.maxsize(), 5);
    /// # Ok::<(), mp_queue::QueueError>(())
    /// ```
    pub fn maxsize(&self) -> usize {
        self.ring.maxsize() as usize
    }

    /// Closes the queue for every handle in every process: puts fail with
    /// [`PutError::Closed`], gets take what is left and then return
    /// [`GetError::Closed`], and every waiting get wakes.
    ///
    /// ```
    /// let q = mp_queue::Queue::new()?;
    /// q.put(1u8)?;
    /// q.close();
    /// assert!(q.put(2).unwrap_err().is_closed());
    /// assert_eq!(q.get()?, 1);
    /// assert_eq!(q.get(), Err(mp_queue::GetError::Closed));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.ring.close();
    }

    /// Whether the queue was closed.
    ///
    /// ```
    /// let q = mp_queue::Queue::<u8>::new()?;
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), mp_queue::QueueError>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ring.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    /// Accepts a `Queue` or a `JoinableQueue` of the same item type (a
    /// joinable queue used through a plain handle still counts its tasks).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ring = Ring::deserialize(d, &[Kind::Queue, Kind::JoinableQueue], type_tag::<T>(), "Queue")?;
        Ok(Queue {
            ring: Arc::new(ring),
            _items: PhantomData,
        })
    }
}

/// Python's `multiprocessing.JoinableQueue`: a [`Queue`] that counts
/// unfinished tasks. Every `put` adds one, [`task_done`](Self::task_done)
/// takes one away, and [`join`](Self::join) waits until none is left.
///
/// All of [`Queue`]'s methods are available on it (through `Deref`).
///
/// ```
/// let q = mp_queue::JoinableQueue::new()?;
/// q.put(String::from("job"))?;
/// let job = q.get()?;
/// assert_eq!(job, "job");
/// assert!(!q.join_timeout(std::time::Duration::from_millis(10))?); // not done yet
/// q.task_done()?;
/// q.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.queue.ring.count())
            .field("unfinished", &self.queue.ring.unfinished())
            .field("maxsize", &self.queue.ring.maxsize())
            .finish()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> JoinableQueue<T> {
    /// An unbounded joinable queue.
    ///
    /// ```
    /// let q = mp_queue::JoinableQueue::<u8>::new()?;
    /// q.join()?; // nothing put, nothing to wait for
    /// # Ok::<(), mp_queue::QueueError>(())
    /// ```
    pub fn new() -> Result<Self, QueueError> {
        Self::with_maxsize(0)
    }

    /// A joinable queue of at most `maxsize` items (0: unbounded).
    ///
    /// ```
    /// let q = mp_queue::JoinableQueue::with_maxsize(1)?;
    /// q.put(1u8)?;
    /// assert!(q.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Self, QueueError> {
        Ok(JoinableQueue {
            queue: Queue::with_kind(Kind::JoinableQueue, maxsize)?,
        })
    }

    /// Marks one task (an item taken with `get`) done. An error, leaving the
    /// count at zero, when called more times than items were put.
    ///
    /// ```
    /// let q = mp_queue::JoinableQueue::new()?;
    /// q.put(1u8)?;
    /// q.get()?;
    /// q.task_done()?;
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task_done(&self) -> Result<(), QueueError> {
        self.queue.ring.task_done()
    }

    /// Waits until every item ever put has been marked done.
    ///
    /// ```
    /// let q = mp_queue::JoinableQueue::new()?;
    /// q.put(1u8)?;
    /// q.get()?;
    /// q.task_done()?;
    /// q.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self) -> Result<(), QueueError> {
        self.queue.ring.join(Block::Until(None));
        Ok(())
    }

    /// [`join`](Self::join) for at most `t`: true when every task was done,
    /// false when the time ran out first.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = mp_queue::JoinableQueue::new()?;
    /// q.put(1u8)?;
    /// assert!(!q.join_timeout(Duration::from_millis(20))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_timeout(&self, t: Duration) -> Result<bool, QueueError> {
        Ok(self.queue.ring.join(Block::timeout(t)))
    }

    /// How many items were put and not yet marked done.
    ///
    /// ```
    /// let q = mp_queue::JoinableQueue::new()?;
    /// q.put(1u8)?;
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        self.queue.ring.unfinished()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.queue.ring.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ring = Ring::deserialize(d, &[Kind::JoinableQueue], type_tag::<T>(), "JoinableQueue")?;
        Ok(JoinableQueue {
            queue: Queue {
                ring: Arc::new(ring),
                _items: PhantomData,
            },
        })
    }
}

/// Python's `multiprocessing.SimpleQueue`: an unbounded queue with only
/// `put`, `get`, `get_timeout`, `is_empty` and `close`. The same ring as
/// [`Queue`] underneath.
///
/// ```
/// let q = mp_queue::SimpleQueue::new()?;
/// q.put((1, String::from("one")))?;
/// assert_eq!(q.get()?, (1, "one".to_string()));
/// assert!(q.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SimpleQueue<T> {
    ring: Arc<Ring>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            ring: Arc::clone(&self.ring),
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("empty", &(self.ring.count() == 0))
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> SimpleQueue<T> {
    /// A new, empty queue.
    ///
    /// ```
    /// assert!(mp_queue::SimpleQueue::<u8>::new()?.is_empty());
    /// # Ok::<(), mp_queue::QueueError>(())
    /// ```
    pub fn new() -> Result<Self, QueueError> {
        Ok(SimpleQueue {
            ring: Arc::new(Ring::create(Kind::SimpleQueue, type_tag::<T>(), 0)?),
            _items: PhantomData,
        })
    }

    /// Puts `item` (never waits for room, up to 256 MiB of unread items).
    ///
    /// ```
    /// let q = mp_queue::SimpleQueue::new()?;
    /// q.put(1u8)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        put(&self.ring, item, Block::Until(None))
    }

    /// Takes the oldest item, waiting for one; [`GetError::Closed`] once the
    /// queue is closed and empty.
    ///
    /// ```
    /// let q = mp_queue::SimpleQueue::new()?;
    /// q.put(2u8)?;
    /// assert_eq!(q.get()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T, GetError> {
        get(&self.ring, Block::Until(None))
    }

    /// Takes the oldest item, waiting at most `t`.
    ///
    /// ```
    /// let q = mp_queue::SimpleQueue::<u8>::new()?;
    /// assert!(q.get_timeout(std::time::Duration::from_millis(5)).is_err());
    /// # Ok::<(), mp_queue::QueueError>(())
    /// ```
    pub fn get_timeout(&self, t: Duration) -> Result<T, GetError> {
        get(&self.ring, Block::timeout(t))
    }

    /// Whether the queue holds no item now.
    ///
    /// ```
    /// let q = mp_queue::SimpleQueue::new()?;
    /// q.put(())?;
    /// assert!(!q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ring.count() == 0
    }

    /// Closes the queue for every handle, as [`Queue::close`].
    ///
    /// ```
    /// let q = mp_queue::SimpleQueue::<u8>::new()?;
    /// q.close();
    /// assert!(q.put(1).is_err());
    /// # Ok::<(), mp_queue::QueueError>(())
    /// ```
    pub fn close(&self) {
        self.ring.close();
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ring.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ring = Ring::deserialize(d, &[Kind::SimpleQueue], type_tag::<T>(), "SimpleQueue")?;
        Ok(SimpleQueue {
            ring: Arc::new(ring),
            _items: PhantomData,
        })
    }
}
