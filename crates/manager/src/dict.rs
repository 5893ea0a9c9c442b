//! `DictProxy`: a map on the server, in insertion order like Python's dict.

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Mutex;

use indexmap::IndexMap;

use crate::client::{ObjRef, generic_proxy, proxy_serde};
use crate::error::Fault;
use crate::server::{Cx, lock};
use crate::{Item, ManagerError};

/// The server's map.
pub(crate) type DictObj<K, V> = Mutex<IndexMap<K, V>>;

/// Python's `Manager().dict()`: a map that lives on the manager's server.
/// Every method is one round trip; `update` and `items` move many entries
/// in one.
///
/// Keys keep their insertion order (as in Python); `remove` keeps the order
/// of the others.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let d = m.dict::<String, i64>()?;
/// d.insert("a".into(), 1)?;
/// d.update([("b".to_string(), 2), ("c".to_string(), 3)])?;
/// assert_eq!(d.get(&"b".to_string())?, Some(2));
/// assert_eq!(d.keys()?, ["a", "b", "c"]);
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
pub struct DictProxy<K, V> {
    pub(crate) obj: ObjRef,
    pub(crate) _types: PhantomData<fn() -> (K, V)>,
}

generic_proxy!(DictProxy<K, V>);

proxy_serde!(DictProxy<K, V>, DictObj<K, V>, "DictProxy of these types", where K: Item + Hash + Eq, V: Item);

fn new_dict<K: Item + Hash + Eq, V: Item>(_: ()) -> Result<DictObj<K, V>, Fault> {
    Ok(Mutex::new(IndexMap::new()))
}

fn insert<K: Item + Hash + Eq, V: Item>(d: &DictObj<K, V>, (k, v): (K, V), _: &Cx) -> Result<Option<V>, Fault> {
    Ok(lock(d).insert(k, v))
}

fn get<K: Item + Hash + Eq, V: Item + Clone>(d: &DictObj<K, V>, k: K, _: &Cx) -> Result<Option<V>, Fault> {
    Ok(lock(d).get(&k).cloned())
}

fn remove<K: Item + Hash + Eq, V: Item>(d: &DictObj<K, V>, k: K, _: &Cx) -> Result<Option<V>, Fault> {
    Ok(lock(d).shift_remove(&k))
}

fn contains<K: Item + Hash + Eq, V: Item>(d: &DictObj<K, V>, k: K, _: &Cx) -> Result<bool, Fault> {
    Ok(lock(d).contains_key(&k))
}

fn len<K: Item + Hash + Eq, V: Item>(d: &DictObj<K, V>, _: (), _: &Cx) -> Result<usize, Fault> {
    Ok(lock(d).len())
}

fn keys<K: Item + Hash + Eq + Clone, V: Item>(d: &DictObj<K, V>, _: (), _: &Cx) -> Result<Vec<K>, Fault> {
    Ok(lock(d).keys().cloned().collect())
}

fn values<K: Item + Hash + Eq, V: Item + Clone>(d: &DictObj<K, V>, _: (), _: &Cx) -> Result<Vec<V>, Fault> {
    Ok(lock(d).values().cloned().collect())
}

fn items<K: Item + Hash + Eq + Clone, V: Item + Clone>(d: &DictObj<K, V>, _: (), _: &Cx) -> Result<Vec<(K, V)>, Fault> {
    Ok(lock(d).iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn clear<K: Item + Hash + Eq, V: Item>(d: &DictObj<K, V>, _: (), _: &Cx) -> Result<(), Fault> {
    lock(d).clear();
    Ok(())
}

fn update<K: Item + Hash + Eq, V: Item>(d: &DictObj<K, V>, kv: Vec<(K, V)>, _: &Cx) -> Result<(), Fault> {
    lock(d).extend(kv);
    Ok(())
}

impl<K: Item + Hash + Eq, V: Item> DictProxy<K, V> {
    pub(crate) fn create(server: &std::sync::Arc<crate::client::ServerRef>) -> Result<Self, ManagerError> {
        Ok(DictProxy {
            obj: ObjRef::create(server, None, None, new_dict::<K, V>, &())?,
            _types: PhantomData,
        })
    }

    /// Sets `k` to `v` (Python's `d[k] = v`); returns the value it had.
    pub fn insert(&self, k: K, v: V) -> Result<Option<V>, ManagerError> {
        self.obj.call(insert::<K, V>, &(k, v))
    }

    /// The value of `k` (a copy), if any.
    pub fn get(&self, k: &K) -> Result<Option<V>, ManagerError>
    where
        V: Clone,
    {
        self.obj.call(get::<K, V>, k)
    }

    /// Removes `k`; returns its value, if it had one.
    pub fn remove(&self, k: &K) -> Result<Option<V>, ManagerError> {
        self.obj.call(remove::<K, V>, k)
    }

    /// Whether `k` is in the map (Python's `k in d`).
    pub fn contains_key(&self, k: &K) -> Result<bool, ManagerError> {
        self.obj.call(contains::<K, V>, k)
    }

    /// How many entries the map has.
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.obj.call(len::<K, V>, &())
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order (one round trip).
    pub fn keys(&self) -> Result<Vec<K>, ManagerError>
    where
        K: Clone,
    {
        self.obj.call(keys::<K, V>, &())
    }

    /// The values, in insertion order (one round trip).
    pub fn values(&self) -> Result<Vec<V>, ManagerError>
    where
        V: Clone,
    {
        self.obj.call(values::<K, V>, &())
    }

    /// The entries, in insertion order (one round trip).
    pub fn items(&self) -> Result<Vec<(K, V)>, ManagerError>
    where
        K: Clone,
        V: Clone,
    {
        self.obj.call(items::<K, V>, &())
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.obj.call(clear::<K, V>, &())
    }

    /// Inserts every entry of `entries` (one round trip).
    pub fn update(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<(), ManagerError> {
        let v: Vec<(K, V)> = entries.into_iter().collect();
        self.obj.call(update::<K, V>, &v)
    }
}
