//! `ValueProxy`, `ArrayProxy` and `NamespaceProxy`: single values, fixed
//! arrays and named values on the server.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{ObjRef, ServerRef, generic_proxy, proxy_serde};
use crate::error::Fault;
use crate::server::{Cx, lock};
use crate::{Item, ManagerError};

pub(crate) type ValueObj<T> = Mutex<T>;
pub(crate) struct ArrayObj<T>(Mutex<Vec<T>>);
pub(crate) struct NamespaceObj(Mutex<BTreeMap<String, Vec<u8>>>);

/// Python's `Manager().Value(typecode, v)`: one value on the server, of
/// any serde type.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let v = m.value(1.5f64)?;
/// v.set(2.5)?;
/// assert_eq!(v.get()?, 2.5);
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
pub struct ValueProxy<T> {
    pub(crate) obj: ObjRef,
    pub(crate) _types: PhantomData<fn() -> T>,
}

generic_proxy!(ValueProxy<T>);
proxy_serde!(ValueProxy<T>, ValueObj<T>, "ValueProxy of this type", where T: Item);

fn new_value<T: Item>(v: T) -> Result<ValueObj<T>, Fault> {
    Ok(Mutex::new(v))
}

fn value_get<T: Item + Clone>(v: &ValueObj<T>, _: (), _: &Cx) -> Result<T, Fault> {
    Ok(lock(v).clone())
}

fn value_set<T: Item>(v: &ValueObj<T>, x: T, _: &Cx) -> Result<T, Fault> {
    Ok(std::mem::replace(&mut *lock(v), x))
}

impl<T: Item> ValueProxy<T> {
    pub(crate) fn create(server: &Arc<ServerRef>, v: &T) -> Result<Self, ManagerError> {
        Ok(ValueProxy {
            obj: ObjRef::create(server, None, None, new_value::<T>, v)?,
            _types: PhantomData,
        })
    }

    /// The value (a copy).
    pub fn get(&self) -> Result<T, ManagerError>
    where
        T: Clone,
    {
        self.obj.call(value_get::<T>, &())
    }

    /// Sets the value; returns the one it replaced.
    pub fn set(&self, v: T) -> Result<T, ManagerError> {
        self.obj.call(value_set::<T>, &v)
    }
}

/// Python's `Manager().Array(typecode, seq)`: a fixed-length array on the
/// server.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let a = m.array(vec![0u32; 4])?;
/// a.set(1, 7)?;
/// assert_eq!(a.to_vec()?, [0, 7, 0, 0]);
/// assert!(a.set(4, 1).is_err());
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
pub struct ArrayProxy<T> {
    pub(crate) obj: ObjRef,
    pub(crate) _types: PhantomData<fn() -> T>,
}

generic_proxy!(ArrayProxy<T>);
proxy_serde!(ArrayProxy<T>, ArrayObj<T>, "ArrayProxy of this type", where T: Item);

fn new_array<T: Item>(v: Vec<T>) -> Result<ArrayObj<T>, Fault> {
    Ok(ArrayObj(Mutex::new(v)))
}

fn array_get<T: Item + Clone>(a: &ArrayObj<T>, i: usize, _: &Cx) -> Result<Option<T>, Fault> {
    Ok(lock(&a.0).get(i).cloned())
}

fn array_set<T: Item>(a: &ArrayObj<T>, (i, v): (usize, T), _: &Cx) -> Result<(), Fault> {
    let mut a = lock(&a.0);
    let len = a.len();
    *a.get_mut(i)
        .ok_or_else(|| Fault::Invalid(format!("array index {i} out of range for an array of {len} items")))? = v;
    Ok(())
}

fn array_len<T: Item>(a: &ArrayObj<T>, _: (), _: &Cx) -> Result<usize, Fault> {
    Ok(lock(&a.0).len())
}

fn array_to_vec<T: Item + Clone>(a: &ArrayObj<T>, _: (), _: &Cx) -> Result<Vec<T>, Fault> {
    Ok(lock(&a.0).clone())
}

impl<T: Item> ArrayProxy<T> {
    pub(crate) fn create(server: &Arc<ServerRef>, v: &[T]) -> Result<Self, ManagerError> {
        Ok(ArrayProxy {
            obj: ObjRef::create(server, None, None, new_array::<T>, v)?,
            _types: PhantomData,
        })
    }

    /// The item at `i` (a copy), if `i` is in range.
    pub fn get(&self, i: usize) -> Result<Option<T>, ManagerError>
    where
        T: Clone,
    {
        self.obj.call(array_get::<T>, &i)
    }

    /// Sets the item at `i`; an index out of range is
    /// [`ManagerError::InvalidArgument`].
    pub fn set(&self, i: usize, v: T) -> Result<(), ManagerError> {
        self.obj.call(array_set::<T>, &(i, v))
    }

    /// The array's length.
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.obj.call(array_len::<T>, &())
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// A copy of the whole array (one round trip).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError>
    where
        T: Clone,
    {
        self.obj.call(array_to_vec::<T>, &())
    }
}

/// Python's `Manager().Namespace()`: named values of any serde type (Python's
/// attributes: `ns.x = v` is `ns.set("x", v)`).
///
/// Values are kept encoded on the server, so `get` must ask for the type
/// that was set; another type is a [`ManagerError::Codec`] error. Handles
/// (queues, locks, proxies) cannot be namespace values: put them in a
/// [`DictProxy`](crate::DictProxy) instead.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let ns = m.namespace()?;
/// ns.set("x", 10)?;
/// ns.set("name", "worker")?;
/// assert_eq!(ns.get::<i32>("x")?, Some(10));
/// assert_eq!(ns.get::<String>("name")?.as_deref(), Some("worker"));
/// assert_eq!(ns.get::<i32>("y")?, None);
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
#[derive(Clone)]
pub struct NamespaceProxy {
    pub(crate) obj: ObjRef,
}

impl fmt::Debug for NamespaceProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamespaceProxy").field("id", &self.obj.id).finish()
    }
}

proxy_serde!(NamespaceProxy, NamespaceObj, "NamespaceProxy");

fn new_namespace(_: ()) -> Result<NamespaceObj, Fault> {
    Ok(NamespaceObj(Mutex::new(BTreeMap::new())))
}

fn ns_set(ns: &NamespaceObj, (k, v): (String, Vec<u8>), _: &Cx) -> Result<(), Fault> {
    lock(&ns.0).insert(k, v);
    Ok(())
}

fn ns_get(ns: &NamespaceObj, k: String, _: &Cx) -> Result<Option<Vec<u8>>, Fault> {
    Ok(lock(&ns.0).get(&k).cloned())
}

fn ns_remove(ns: &NamespaceObj, k: String, _: &Cx) -> Result<bool, Fault> {
    Ok(lock(&ns.0).remove(&k).is_some())
}

fn ns_names(ns: &NamespaceObj, _: (), _: &Cx) -> Result<Vec<String>, Fault> {
    Ok(lock(&ns.0).keys().cloned().collect())
}

impl NamespaceProxy {
    pub(crate) fn create(server: &Arc<ServerRef>) -> Result<Self, ManagerError> {
        Ok(NamespaceProxy {
            obj: ObjRef::create(server, None, None, new_namespace, &())?,
        })
    }

    /// Sets `name` to `v` (Python's `ns.name = v`).
    pub fn set<T: Serialize>(&self, name: &str, v: T) -> Result<(), ManagerError> {
        let frame = mp_codec::encode(&v)?;
        if !frame.fds().is_empty() {
            return Err(ManagerError::Codec(
                "a namespace value cannot hold handles (queues, locks, proxies): put them in a managed dict".into(),
            ));
        }
        self.obj.call(ns_set, &(name, frame.payload()))
    }

    /// The value of `name`, decoded as a `T`, if it was set.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        let bytes: Option<Vec<u8>> = self.obj.call(ns_get, name)?;
        match bytes {
            None => Ok(None),
            Some(b) => Ok(Some(mp_codec::decode_payload(&b, Vec::new()).map_err(|e| {
                ManagerError::Codec(format!("namespace value {name:?} is not of the type asked for: {e}"))
            })?)),
        }
    }

    /// Removes `name` (Python's `del ns.name`); whether it was set.
    pub fn remove(&self, name: &str) -> Result<bool, ManagerError> {
        self.obj.call(ns_remove, name)
    }

    /// The names set, in sorted order.
    pub fn names(&self) -> Result<Vec<String>, ManagerError> {
        self.obj.call(ns_names, &())
    }
}
