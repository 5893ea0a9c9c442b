//! `ObjectProxy`: a value of a user's type on the server, and the methods
//! it runs there.

use std::marker::PhantomData;
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ManagerError;
use crate::client::{ObjRef, generic_proxy};
use crate::server::{Cx, lock};

/// The server's copy of a registered or shared value.
pub(crate) type CustomObj<T> = Mutex<T>;

/// A method that a proxy runs on the server: a `fn` item (or a closure
/// that captures nothing) taking `&mut T` and 0 to 6 more arguments,
/// passed as a tuple. Its result travels back to the caller.
///
/// Implemented for every `Fn(&mut T, A1, ..) -> R` that is `Copy + Send +
/// 'static`; it must capture nothing (the server recreates it from its
/// type), which [`ObjectProxy::call`] checks.
pub trait Method<T, Args, R>: Copy + Send + 'static {
    /// Runs the method on `obj`.
    fn invoke(self, obj: &mut T, args: Args) -> R;
}

macro_rules! impl_method {
    ($($a:ident)*) => {
        impl<F, T, R, $($a,)*> Method<T, ($($a,)*), R> for F
        where
            F: Fn(&mut T, $($a),*) -> R + Copy + Send + 'static,
        {
            #[allow(non_snake_case, reason = "the arguments are named after their types")]
            fn invoke(self, obj: &mut T, args: ($($a,)*)) -> R {
                let ($($a,)*) = args;
                self(obj, $($a),*)
            }
        }
    };
}

impl_method!();
impl_method!(A1);
impl_method!(A1 A2);
impl_method!(A1 A2 A3);
impl_method!(A1 A2 A3 A4);
impl_method!(A1 A2 A3 A4 A5);
impl_method!(A1 A2 A3 A4 A5 A6);

/// A proxy to a value of type `T` on the server: a type registered with
/// [`BaseManagerBuilder::register`](crate::BaseManagerBuilder::register)
/// and made with [`BaseManager::create`](crate::BaseManager::create), or a
/// value shared by name. Its methods run on the server with
/// [`call`](Self::call), one caller at a time.
///
/// ```
/// use mp_manager::{BaseManager, ObjectProxy};
/// #[derive(Default)]
/// struct Counter { n: u64 }
/// impl Counter {
///     fn incr(&mut self, by: u64) -> u64 { self.n += by; self.n }
/// }
/// let m = BaseManager::builder().register::<Counter>("Counter").start()?;
/// let c: ObjectProxy<Counter> = m.create("Counter")?;
/// assert_eq!(c.call(Counter::incr, (5,))?, 5);
/// assert_eq!(c.call(Counter::incr, (2,))?, 7);
/// # Ok::<(), mp_manager::ManagerError>(())
/// ```
pub struct ObjectProxy<T> {
    pub(crate) obj: ObjRef,
    pub(crate) _types: PhantomData<fn() -> T>,
}

generic_proxy!(ObjectProxy<T>);

impl<T: Send + 'static> serde::Serialize for ObjectProxy<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.obj
            .serialize_tagged(mp_codec::handle::type_tag::<CustomObj<T>>(), s)
    }
}

impl<'de, T: Send + 'static> serde::Deserialize<'de> for ObjectProxy<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let obj = ObjRef::deserialize_tagged(
            d,
            mp_codec::handle::type_tag::<CustomObj<T>>(),
            "ObjectProxy of this type",
        )?;
        Ok(ObjectProxy {
            obj,
            _types: PhantomData,
        })
    }
}

impl<T: Send + 'static> ObjectProxy<T> {
    /// Runs `method` on the server's value with `args` (a tuple), and
    /// returns its result. A method that panics is
    /// [`ManagerError::Remote`]; the server goes on serving.
    pub fn call<F, A, R>(&self, method: F, args: A) -> Result<R, ManagerError>
    where
        F: Method<T, A, R>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.obj.call(
            move |o: &CustomObj<T>, a: A, _: &Cx| Ok(method.invoke(&mut lock(o), a)),
            &args,
        )
    }

    /// Forgets the object on the server (every proxy to it then gets
    /// [`ManagerError::NotFound`]). Objects otherwise live until the
    /// manager shuts down.
    pub fn release(self) -> Result<(), ManagerError> {
        self.obj.release()
    }
}
