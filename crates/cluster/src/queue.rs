//! `cluster::Queue<T>`: the local `Queue`'s methods on a Redis list, shared
//! by every host of the cluster.

use std::marker::PhantomData;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mp_queue::{GetError, PutError};
use mp_sys::time::Deadline;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::conn::{Conn, IO_TIMEOUT};
use crate::{Cluster, ClusterError, wire};

/// The longest one blocking Redis call waits; longer waits loop (and a
/// getter blocked on an empty queue sees it closed within this).
const SLICE: Duration = Duration::from_millis(250);

/// Pushes unless the queue is closed (-2) or holds `maxsize` items already
/// (-1; 0 is no bound), in one step: the bound and the close hold whatever
/// many hosts put at once. KEYS: the list, its closed flag.
const PUT: &str = "if redis.call('EXISTS', KEYS[2]) == 1 then return -2 end \
     local max = tonumber(ARGV[1]) \
     if max > 0 and redis.call('LLEN', KEYS[1]) >= max then return -1 end \
     return redis.call('RPUSH', KEYS[1], ARGV[2])";

/// Renews this handle's taking lease (ARGV[1] ms) and lists its taking
/// list among the queue's takers, then takes the head to the taking list
/// if there is one; else 1 when the queue is closed, 0 when not. KEYS: the
/// list, the taking list, the closed flag, the lease, the takers.
const TAKE: &str = "redis.call('SET', KEYS[4], 1, 'PX', ARGV[1]) \
     redis.call('SADD', KEYS[5], KEYS[2]) \
     local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') \
     if v then return {v} end \
     return redis.call('EXISTS', KEYS[3])";

/// Gives the items of takers whose lease lapsed (they died between taking
/// and acknowledging) back to the head of the queue, in their order, and
/// forgets those takers. KEYS: the list, the takers, then pairs (taking
/// list, its lease). The number of items given back.
const RECOVER: &str = "local n = 0 \
     for i = 3, #KEYS, 2 do \
       if redis.call('EXISTS', KEYS[i + 1]) == 0 then \
         while redis.call('LMOVE', KEYS[i], KEYS[1], 'RIGHT', 'LEFT') do n = n + 1 end \
         redis.call('SREM', KEYS[2], KEYS[i]) \
       end \
     end \
     return n";

/// A FIFO queue on a Redis list that any host of the cluster (and any
/// local child or cluster task it travels to) can use: Python's `Queue`
/// across machines. Made by [`Cluster::queue`].
///
/// `get` moves the item (`BLMOVE`) to a list of this handle's own before
/// decoding it, and removes it from there once decoded, so an item is never
/// half-taken; an item that does not decode is a
/// [`GetError::Decode`] for that item alone. A handle takes under a lease
/// (the cluster's `lease`): when a consumer dies holding an item between
/// the two steps, the next `get` after its lease lapsed gives the item
/// back to the head of the queue.
///
/// ```no_run
/// let c = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?;
/// let q: mp_cluster::Queue<String> = c.queue("jobs")?;
/// q.put("hello".to_string()).unwrap();
/// assert_eq!(q.get().unwrap(), "hello");
/// # Ok::<(), mp_cluster::ClusterError>(())
/// ```
pub struct Queue<T> {
    cluster: Cluster,
    name: String,
    maxsize: usize,
    key: String,
    taking: String,
    conn: Mutex<Conn>,
    /// When this handle last looked for lapsed takers.
    recovered: Mutex<Option<Instant>>,
    /// Whether it is listed among the takers.
    took: AtomicBool,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("key", &self.key)
            .field("maxsize", &self.maxsize)
            .finish()
    }
}

impl Cluster {
    /// The queue `name` of this cluster (unbounded), created on first put.
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Queue<T>, ClusterError> {
        self.queue_with_maxsize(name, 0)
    }

    /// The queue `name`, holding at most `maxsize` items (0: no bound).
    /// Every handle of one queue must use the same bound.
    pub fn queue_with_maxsize<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<Queue<T>, ClusterError> {
        let key = self.key(&format!("queue:{name}"));
        Ok(Queue {
            taking: taking_key(&key),
            key,
            cluster: self.clone(),
            name: name.to_string(),
            maxsize,
            conn: Mutex::new(self.new_conn()),
            recovered: Mutex::new(None),
            took: AtomicBool::new(false),
            _t: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn conn(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Python's `put(item)`: waits while the queue is full.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_deadline(item, Deadline::NEVER)
    }

    /// `put(item, timeout=t)`: `Full` (with the item) after `t`.
    pub fn put_timeout(&self, item: T, t: Duration) -> Result<(), PutError<T>> {
        self.put_deadline(item, Deadline::after(t))
    }

    /// `put_nowait(item)`: `Full` at once when full.
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_deadline(item, Deadline::after(Duration::ZERO))
    }

    fn put_deadline(&self, item: T, deadline: Deadline) -> Result<(), PutError<T>> {
        let bytes = match wire::encode(&item) {
            Ok(b) => b,
            Err(e) => return Err(PutError::Encode(item, e)),
        };
        let mut pause = Duration::from_millis(1);
        loop {
            let r = self.conn().query::<i64>(
                redis::cmd("EVAL")
                    .arg(PUT)
                    .arg(2)
                    .arg(&self.key)
                    .arg(self.closed_key())
                    .arg(self.maxsize)
                    .arg(&bytes),
                IO_TIMEOUT,
                "putting",
            );
            match r {
                Ok(n) if n >= 0 => return Ok(()),
                Ok(-2) => return Err(PutError::Closed(item)),
                Ok(_) => {}
                Err(_) => return Err(PutError::Disconnected(item)),
            }
            if deadline.has_passed() {
                return Err(PutError::Full(item));
            }
            // Full: Redis has no wake-up for "not full"; poll, backing off.
            std::thread::sleep(pause.min(deadline.remaining().unwrap_or(Duration::MAX)));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Python's `get()`: waits for an item.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_deadline(Deadline::NEVER)
    }

    /// `get(timeout=t)`: `Empty` after `t`.
    pub fn get_timeout(&self, t: Duration) -> Result<T, GetError> {
        self.get_deadline(Deadline::after(t))
    }

    /// `get_nowait()`: `Empty` at once when empty (`Closed` when empty
    /// and closed).
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.recover_due();
        // The lease covers a blocking take that may follow.
        let lease = self.cluster.settings().lease + SLICE;
        self.took.store(true, Ordering::Relaxed);
        let taken = self.conn().query::<redis::Value>(
            redis::cmd("EVAL")
                .arg(TAKE)
                .arg(5)
                .arg(&self.key)
                .arg(&self.taking)
                .arg(self.closed_key())
                .arg(lease_key(&self.taking))
                .arg(self.takers_key())
                .arg(lease.as_millis() as u64),
            IO_TIMEOUT,
            "getting",
        );
        match taken {
            Ok(redis::Value::Array(v)) => match v.into_iter().next() {
                Some(redis::Value::BulkString(bytes)) => self.finish_get(bytes),
                _ => Err(GetError::Decode("an item of an unexpected type in Redis".into())),
            },
            Ok(redis::Value::Int(1)) => Err(GetError::Closed),
            Ok(_) => Err(GetError::Empty),
            Err(_) => Err(GetError::Disconnected),
        }
    }

    fn get_deadline(&self, deadline: Deadline) -> Result<T, GetError> {
        loop {
            // An item at once, or the end of a closed queue, without
            // blocking.
            match self.get_nowait() {
                Err(GetError::Empty) => {}
                other => return other,
            }
            let slice = deadline.remaining().map_or(SLICE, |r| r.min(SLICE));
            if slice.is_zero() {
                return Err(GetError::Empty);
            }
            // BLMOVE's timeout is in seconds, with millisecond precision.
            let secs = (slice.as_millis().max(1) as f64) / 1000.0;
            let moved = self.conn().query::<Option<Vec<u8>>>(
                redis::cmd("BLMOVE")
                    .arg(&self.key)
                    .arg(&self.taking)
                    .arg("LEFT")
                    .arg("RIGHT")
                    .arg(secs),
                slice + IO_TIMEOUT,
                "getting",
            );
            match moved {
                Ok(Some(bytes)) => return self.finish_get(bytes),
                Ok(None) => {
                    if deadline.has_passed() {
                        return Err(GetError::Empty);
                    }
                }
                Err(_) => return Err(GetError::Disconnected),
            }
        }
    }

    /// Decodes an item taken to this handle's list, and drops it from there.
    fn finish_get(&self, bytes: Vec<u8>) -> Result<T, GetError> {
        let _ = self.conn().query::<i64>(
            redis::cmd("LREM").arg(&self.taking).arg(1).arg(&bytes),
            IO_TIMEOUT,
            "finishing a get",
        );
        wire::decode::<T>(&bytes).map_err(GetError::Decode)
    }

    /// Closes the queue for every handle on every host, as the local
    /// `Queue::close`: a `put` after it fails with `PutError::Closed`
    /// (checked in the same step as the bound); `get`s take the items left,
    /// then fail with `GetError::Closed` (a `get` blocked on the empty
    /// queue within a quarter of a second).
    ///
    /// ```no_run
    /// let c = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?;
    /// let q: mp_cluster::Queue<u32> = c.queue("jobs")?;
    /// q.put(1).unwrap();
    /// q.close()?;
    /// assert!(q.put(2).unwrap_err().is_closed());
    /// assert_eq!(q.get(), Ok(1));
    /// assert_eq!(q.get(), Err(mp_queue::GetError::Closed));
    /// # Ok::<(), mp_cluster::ClusterError>(())
    /// ```
    pub fn close(&self) -> Result<(), ClusterError> {
        self.conn().query::<()>(
            redis::cmd("SET").arg(self.closed_key()).arg(1),
            IO_TIMEOUT,
            "closing a queue",
        )
    }

    /// Whether the queue was closed (by any handle).
    pub fn is_closed(&self) -> Result<bool, ClusterError> {
        self.conn().query(
            redis::cmd("EXISTS").arg(self.closed_key()),
            IO_TIMEOUT,
            "looking up a queue's close",
        )
    }

    fn closed_key(&self) -> String {
        format!("{}:closed", self.key)
    }

    fn takers_key(&self) -> String {
        format!("{}:takers", self.key)
    }

    /// Every quarter of the lease, at most: gives the items of takers that
    /// died holding them back to the head of the queue.
    fn recover_due(&self) {
        let quarter = self.cluster.settings().lease / 4;
        {
            let mut last = self.recovered.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < quarter) {
                return;
            }
            *last = Some(Instant::now());
        }
        // A failure here is retried at the next get.
        let _ = self.recover();
    }

    /// Gives the items of takers whose lease lapsed back to the head of
    /// the queue; how many.
    fn recover(&self) -> Result<usize, ClusterError> {
        let mut conn = self.conn();
        let takers: Vec<String> = conn.query(
            redis::cmd("SMEMBERS").arg(self.takers_key()),
            IO_TIMEOUT,
            "listing a queue's takers",
        )?;
        let others: Vec<&String> = takers.iter().filter(|t| **t != self.taking).collect();
        if others.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RECOVER)
            .arg(2 + 2 * others.len())
            .arg(&self.key)
            .arg(self.takers_key());
        for t in others {
            cmd.arg(t).arg(lease_key(t));
        }
        let n: i64 = conn.query(&cmd, IO_TIMEOUT, "giving back the items of lapsed takers")?;
        Ok(n.max(0) as usize)
    }

    /// A test hook: takes an item to this handle's taking list and does not
    /// acknowledge it, as a consumer killed between the two steps would
    /// leave it. Whether an item was taken.
    #[doc(hidden)]
    pub fn take_without_ack(&self, t: Duration) -> Result<bool, ClusterError> {
        let lease = self.cluster.settings().lease;
        let mut conn = self.conn();
        conn.query::<()>(
            redis::cmd("SET")
                .arg(lease_key(&self.taking))
                .arg(1)
                .arg("PX")
                .arg(lease.as_millis() as u64),
            IO_TIMEOUT,
            "taking a lease",
        )?;
        conn.query::<()>(
            redis::cmd("SADD").arg(self.takers_key()).arg(&self.taking),
            IO_TIMEOUT,
            "listing a taker",
        )?;
        let moved: Option<Vec<u8>> = conn.query(
            redis::cmd("BLMOVE")
                .arg(&self.key)
                .arg(&self.taking)
                .arg("LEFT")
                .arg("RIGHT")
                .arg(t.as_secs_f64().max(0.001)),
            t + IO_TIMEOUT,
            "taking an item",
        )?;
        Ok(moved.is_some())
    }

    /// Python's `qsize()`: the number of items queued.
    pub fn qsize(&self) -> Result<usize, ClusterError> {
        let n: i64 = self
            .conn()
            .query(redis::cmd("LLEN").arg(&self.key), IO_TIMEOUT, "sizing a queue")?;
        Ok(n.max(0) as usize)
    }

    /// Python's `empty()`.
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> Result<bool, ClusterError> {
        Ok(self.qsize()? == 0)
    }

    /// Python's `full()`.
    #[doc(alias = "full")]
    pub fn is_full(&self) -> Result<bool, ClusterError> {
        Ok(self.maxsize > 0 && self.qsize()? >= self.maxsize)
    }

    /// The bound (0: none).
    pub fn maxsize(&self) -> usize {
        self.maxsize
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<T: Serialize + DeserializeOwned> Clone for Queue<T> {
    /// Another handle of the same queue (with its own connection).
    fn clone(&self) -> Self {
        Queue {
            cluster: self.cluster.clone(),
            name: self.name.clone(),
            maxsize: self.maxsize,
            key: self.key.clone(),
            taking: taking_key(&self.key),
            conn: Mutex::new(self.cluster.new_conn()),
            recovered: Mutex::new(None),
            took: AtomicBool::new(false),
            _t: PhantomData,
        }
    }
}

/// The lease of a taking list: while it lives, the taker is alive.
fn lease_key(taking: &str) -> String {
    format!("{taking}:lease")
}

/// A new handle's own list of items being taken.
fn taking_key(key: &str) -> String {
    let mut rand = [0u8; 8];
    // Without randomness (never on Linux), the time makes it unique enough.
    if mp_sys::random::fill(&mut rand).is_err() {
        rand = (crate::cluster::now().as_nanos() as u64).to_le_bytes();
    }
    format!("{key}:taking:{:016x}", u64::from_le_bytes(rand))
}

#[derive(Serialize, Deserialize)]
struct QueueWire {
    cluster: Cluster,
    name: String,
    maxsize: usize,
}

/// Leaves the takers when nothing is held. KEYS: the takers, the taking
/// list, its lease.
const LEAVE: &str = "if redis.call('LLEN', KEYS[2]) == 0 then \
     redis.call('SREM', KEYS[1], KEYS[2]) redis.call('DEL', KEYS[3]) end return 0";

impl<T> Drop for Queue<T> {
    /// A handle that took items leaves the queue's takers (so they stay
    /// few where many short-lived handles take).
    fn drop(&mut self) {
        if self.took.load(Ordering::Relaxed) {
            let conn = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
            let _ = conn.query::<i64>(
                redis::cmd("EVAL")
                    .arg(LEAVE)
                    .arg(3)
                    .arg(format!("{}:takers", self.key))
                    .arg(&self.taking)
                    .arg(lease_key(&self.taking)),
                IO_TIMEOUT,
                "leaving a queue's takers",
            );
        }
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        QueueWire {
            cluster: self.cluster.clone(),
            name: self.name.clone(),
            maxsize: self.maxsize,
        }
        .serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for Queue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Queue<T>, D::Error> {
        let w = QueueWire::deserialize(d)?;
        w.cluster
            .queue_with_maxsize(&w.name, w.maxsize)
            .map_err(serde::de::Error::custom)
    }
}
