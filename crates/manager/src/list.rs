//! `ListProxy`: a vector on the server.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use crate::client::{ObjRef, ServerRef, generic_proxy, proxy_serde};
use crate::error::Fault;
use crate::server::{Cx, lock};
use crate::{Item, ManagerError};

pub(crate) type ListObj<T> = Mutex<Vec<T>>;

/// Python's `Manager().list()`: a vector that lives on the manager's
/// server. `extend` and `to_vec` move many items in one round trip.
///
/// ```
/// let m = mp_manager::Manager::new()?;
/// let l = m.list_from(vec![3, 1, 2])?;
/// l.push(0)?;
/// l.sort()?;
/// assert_eq!(l.to_vec()?, [0, 1, 2, 3]);
/// l.reverse()?;
/// assert_eq!(l.get(0)?, Some(3));
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
pub struct ListProxy<T> {
    pub(crate) obj: ObjRef,
    pub(crate) _types: PhantomData<fn() -> T>,
}

generic_proxy!(ListProxy<T>);

proxy_serde!(ListProxy<T>, ListObj<T>, "ListProxy of this type", where T: Item);

fn new_list<T: Item>(v: Vec<T>) -> Result<ListObj<T>, Fault> {
    Ok(Mutex::new(v))
}

fn out_of_range(i: usize, len: usize) -> Fault {
    Fault::Invalid(format!("list index {i} out of range for a list of {len} items"))
}

fn push<T: Item>(l: &ListObj<T>, v: T, _: &Cx) -> Result<(), Fault> {
    lock(l).push(v);
    Ok(())
}

fn get<T: Item + Clone>(l: &ListObj<T>, i: usize, _: &Cx) -> Result<Option<T>, Fault> {
    Ok(lock(l).get(i).cloned())
}

fn set<T: Item>(l: &ListObj<T>, (i, v): (usize, T), _: &Cx) -> Result<(), Fault> {
    let mut l = lock(l);
    let len = l.len();
    *l.get_mut(i).ok_or_else(|| out_of_range(i, len))? = v;
    Ok(())
}

fn len<T: Item>(l: &ListObj<T>, _: (), _: &Cx) -> Result<usize, Fault> {
    Ok(lock(l).len())
}

fn pop<T: Item>(l: &ListObj<T>, _: (), _: &Cx) -> Result<Option<T>, Fault> {
    Ok(lock(l).pop())
}

fn insert<T: Item>(l: &ListObj<T>, (i, v): (usize, T), _: &Cx) -> Result<(), Fault> {
    let mut l = lock(l);
    let i = i.min(l.len());
    l.insert(i, v);
    Ok(())
}

fn remove_at<T: Item>(l: &ListObj<T>, i: usize, _: &Cx) -> Result<T, Fault> {
    let mut l = lock(l);
    if i >= l.len() {
        return Err(out_of_range(i, l.len()));
    }
    Ok(l.remove(i))
}

fn reverse<T: Item>(l: &ListObj<T>, _: (), _: &Cx) -> Result<(), Fault> {
    lock(l).reverse();
    Ok(())
}

fn sort<T: Item + Ord>(l: &ListObj<T>, _: (), _: &Cx) -> Result<(), Fault> {
    lock(l).sort();
    Ok(())
}

fn extend<T: Item>(l: &ListObj<T>, v: Vec<T>, _: &Cx) -> Result<(), Fault> {
    lock(l).extend(v);
    Ok(())
}

fn to_vec<T: Item + Clone>(l: &ListObj<T>, _: (), _: &Cx) -> Result<Vec<T>, Fault> {
    Ok(lock(l).clone())
}

fn clear<T: Item>(l: &ListObj<T>, _: (), _: &Cx) -> Result<(), Fault> {
    lock(l).clear();
    Ok(())
}

fn contains<T: Item + PartialEq>(l: &ListObj<T>, v: T, _: &Cx) -> Result<bool, Fault> {
    Ok(lock(l).contains(&v))
}

impl<T: Item> ListProxy<T> {
    pub(crate) fn create(server: &Arc<ServerRef>, items: &[T]) -> Result<Self, ManagerError> {
        Ok(ListProxy {
            obj: ObjRef::create(server, None, None, new_list::<T>, items)?,
            _types: PhantomData,
        })
    }

    /// Appends `v` (Python's `append`).
    pub fn push(&self, v: T) -> Result<(), ManagerError> {
        self.obj.call(push::<T>, &v)
    }

    /// The item at `i` (a copy), if `i` is in range.
    pub fn get(&self, i: usize) -> Result<Option<T>, ManagerError>
    where
        T: Clone,
    {
        self.obj.call(get::<T>, &i)
    }

    /// Replaces the item at `i`; an index out of range is
    /// [`ManagerError::InvalidArgument`].
    pub fn set(&self, i: usize, v: T) -> Result<(), ManagerError> {
        self.obj.call(set::<T>, &(i, v))
    }

    /// How many items the list has.
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.obj.call(len::<T>, &())
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// Removes and returns the last item.
    pub fn pop(&self) -> Result<Option<T>, ManagerError> {
        self.obj.call(pop::<T>, &())
    }

    /// Inserts `v` before index `i` (at the end when `i` is past it, as in
    /// Python).
    pub fn insert(&self, i: usize, v: T) -> Result<(), ManagerError> {
        self.obj.call(insert::<T>, &(i, v))
    }

    /// Removes and returns the item at `i` (Python's `pop(i)`); an index out
    /// of range is [`ManagerError::InvalidArgument`].
    pub fn remove_at(&self, i: usize) -> Result<T, ManagerError> {
        self.obj.call(remove_at::<T>, &i)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<(), ManagerError> {
        self.obj.call(reverse::<T>, &())
    }

    /// Sorts the list in place (stable).
    pub fn sort(&self) -> Result<(), ManagerError>
    where
        T: Ord,
    {
        self.obj.call(sort::<T>, &())
    }

    /// Appends every item of `items` (one round trip).
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<(), ManagerError> {
        let v: Vec<T> = items.into_iter().collect();
        self.obj.call(extend::<T>, &v)
    }

    /// A copy of the whole list (one round trip).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError>
    where
        T: Clone,
    {
        self.obj.call(to_vec::<T>, &())
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.obj.call(clear::<T>, &())
    }

    /// Whether the list holds an item equal to `v` (Python's `v in l`).
    pub fn contains(&self, v: &T) -> Result<bool, ManagerError>
    where
        T: PartialEq,
    {
        self.obj.call(contains::<T>, v)
    }
}
