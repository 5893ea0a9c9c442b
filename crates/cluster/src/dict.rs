//! `cluster::Dict<K, V>`: the `DictProxy` methods on a Redis hash, shared
//! by every host of the cluster.

use std::marker::PhantomData;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::conn::{Conn, IO_TIMEOUT};
use crate::{Cluster, ClusterError, wire};

/// Sets a field and returns its old value, in one step.
const SWAP: &str = "local old = redis.call('HGET', KEYS[1], ARGV[1]); \
     redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return old";
/// Deletes a field and returns its value, in one step.
const TAKE: &str = "local old = redis.call('HGET', KEYS[1], ARGV[1]); \
     redis.call('HDEL', KEYS[1], ARGV[1]); return old";

/// The types a dict holds, without owning any (so the handle is `Send` and
/// `Sync` whatever `K` and `V` are: it holds only bytes in Redis).
type Marker<K, V> = fn(K, V) -> (K, V);

/// A dict on a Redis hash that any host of the cluster (and any local
/// child or cluster task it travels to) can use: a managed `dict` across
/// machines, with `DictProxy`'s methods. Made by [`Cluster::dict`]. Keys
/// are compared by their encoded bytes.
///
/// ```no_run
/// let c = mp_cluster::Cluster::connect("redis://127.0.0.1:6379/0")?;
/// let d: mp_cluster::Dict<String, u64> = c.dict("counts")?;
/// d.insert("a".into(), 1)?;
/// assert_eq!(d.get(&"a".into())?, Some(1));
/// # Ok::<(), mp_cluster::ClusterError>(())
/// ```
pub struct Dict<K, V> {
    cluster: Cluster,
    name: String,
    key: String,
    conn: Mutex<Conn>,
    _kv: PhantomData<Marker<K, V>>,
}

impl<K, V> std::fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dict").field("key", &self.key).finish()
    }
}

impl Cluster {
    /// The dict `name` of this cluster.
    pub fn dict<K, V>(&self, name: &str) -> Result<Dict<K, V>, ClusterError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        Ok(Dict {
            cluster: self.clone(),
            name: name.to_string(),
            key: self.key(&format!("dict:{name}")),
            conn: Mutex::new(self.new_conn()),
            _kv: PhantomData,
        })
    }
}

fn enc<T: Serialize>(t: &T) -> Result<Vec<u8>, ClusterError> {
    wire::encode(t).map_err(ClusterError::Encode)
}

fn dec<T: DeserializeOwned>(b: &[u8], what: &str) -> Result<T, ClusterError> {
    wire::decode(b).map_err(|e| ClusterError::Decode(format!("a {what} of a cluster dict: {e}")))
}

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn conn(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `d[k] = v`; the old value.
    pub fn insert(&self, k: K, v: V) -> Result<Option<V>, ClusterError> {
        let old: Option<Vec<u8>> = self.conn().query(
            redis::cmd("EVAL")
                .arg(SWAP)
                .arg(1)
                .arg(&self.key)
                .arg(enc(&k)?)
                .arg(enc(&v)?),
            IO_TIMEOUT,
            "setting a dict entry",
        )?;
        old.map(|b| dec(&b, "value")).transpose()
    }

    /// `d.get(k)`.
    pub fn get(&self, k: &K) -> Result<Option<V>, ClusterError> {
        let v: Option<Vec<u8>> = self.conn().query(
            redis::cmd("HGET").arg(&self.key).arg(enc(k)?),
            IO_TIMEOUT,
            "reading a dict entry",
        )?;
        v.map(|b| dec(&b, "value")).transpose()
    }

    /// `d.pop(k, None)`: removes the entry; its value.
    pub fn remove(&self, k: &K) -> Result<Option<V>, ClusterError> {
        let old: Option<Vec<u8>> = self.conn().query(
            redis::cmd("EVAL").arg(TAKE).arg(1).arg(&self.key).arg(enc(k)?),
            IO_TIMEOUT,
            "removing a dict entry",
        )?;
        old.map(|b| dec(&b, "value")).transpose()
    }

    /// `k in d`.
    pub fn contains_key(&self, k: &K) -> Result<bool, ClusterError> {
        self.conn().query(
            redis::cmd("HEXISTS").arg(&self.key).arg(enc(k)?),
            IO_TIMEOUT,
            "looking up a dict key",
        )
    }

    /// `len(d)`.
    pub fn len(&self) -> Result<usize, ClusterError> {
        let n: i64 = self
            .conn()
            .query(redis::cmd("HLEN").arg(&self.key), IO_TIMEOUT, "sizing a dict")?;
        Ok(n.max(0) as usize)
    }

    /// `len(d) == 0`.
    pub fn is_empty(&self) -> Result<bool, ClusterError> {
        Ok(self.len()? == 0)
    }

    /// `list(d.keys())`.
    pub fn keys(&self) -> Result<Vec<K>, ClusterError> {
        let ks: Vec<Vec<u8>> = self
            .conn()
            .query(redis::cmd("HKEYS").arg(&self.key), IO_TIMEOUT, "listing keys")?;
        ks.iter().map(|b| dec(b, "key")).collect()
    }

    /// `list(d.values())`.
    pub fn values(&self) -> Result<Vec<V>, ClusterError> {
        let vs: Vec<Vec<u8>> = self
            .conn()
            .query(redis::cmd("HVALS").arg(&self.key), IO_TIMEOUT, "listing values")?;
        vs.iter().map(|b| dec(b, "value")).collect()
    }

    /// `list(d.items())`.
    pub fn items(&self) -> Result<Vec<(K, V)>, ClusterError> {
        let all: Vec<(Vec<u8>, Vec<u8>)> =
            self.conn()
                .query(redis::cmd("HGETALL").arg(&self.key), IO_TIMEOUT, "listing items")?;
        all.iter()
            .map(|(k, v)| Ok((dec(k, "key")?, dec(v, "value")?)))
            .collect()
    }

    /// `d.clear()`.
    pub fn clear(&self) -> Result<(), ClusterError> {
        self.conn()
            .query(redis::cmd("DEL").arg(&self.key), IO_TIMEOUT, "clearing a dict")
    }

    /// `d.update(entries)`, in one step.
    pub fn update(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<(), ClusterError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.key);
        let mut any = false;
        for (k, v) in entries {
            cmd.arg(enc(&k)?).arg(enc(&v)?);
            any = true;
        }
        if !any {
            return Ok(());
        }
        self.conn().query::<()>(&cmd, IO_TIMEOUT, "updating a dict")
    }

    /// The dict's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Serialize, Deserialize)]
struct DictWire {
    cluster: Cluster,
    name: String,
}

impl<K, V> Serialize for Dict<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        DictWire {
            cluster: self.cluster.clone(),
            name: self.name.clone(),
        }
        .serialize(s)
    }
}

impl<'de, K, V> Deserialize<'de> for Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dict<K, V>, D::Error> {
        let w = DictWire::deserialize(d)?;
        w.cluster.dict(&w.name).map_err(serde::de::Error::custom)
    }
}
