//! Serde adapters that keep the messages of custom errors.
//!
//! postcard turns every `serde::ser::Error::custom(msg)` and
//! `serde::de::Error::custom(msg)` into one fixed error ("Serde
//! Serialization Error"), so a `Serialize` impl that fails with "13 is
//! unlucky", or a `Deserialize` impl that refuses a value (a `try_from`, a
//! visitor's `invalid_value`), would reach the caller as that text alone.
//! [`Ser`] and [`De`] wrap postcard's serializer and deserializer with an
//! error type of their own, [`Error`], whose `custom` keeps the message.
//!
//! Where a value nests inside another, postcard's own code sits between the
//! two levels and carries only postcard's error. The message crosses it in a
//! [`Slot`]: the inner level puts it there as it fails ([`Slot::lower_ser`],
//! [`Slot::lower_de`]), and the wrapper method of the level above, the first
//! code of ours the error reaches, takes it back out ([`Slot::lift`]).
//!
//! Every method forwards to postcard's, so the bytes are postcard's. The
//! forwarding is not free (through it a 1 MiB `Vec<u8>` encodes element by
//! element, not as a copy), so the codec runs a value through these
//! adapters only after postcard alone has failed with a custom error, and
//! for frames that carry descriptors (see `frame::decode_payload`).

use std::cell::Cell;
use std::fmt::{self, Display};

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::ser::{self, Serialize, Serializer};

/// An error of the wrapped serializer or deserializer, or a custom error's
/// message.
#[derive(Debug)]
pub(crate) enum Error<E> {
    /// The wrapped format's own error (postcard's: a full buffer, bad bytes).
    Inner(E),
    /// What a `Serialize` or `Deserialize` impl said, word for word.
    Custom(String),
}

impl<E: Display> Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Inner(e) => e.fmt(f),
            Error::Custom(m) => f.write_str(m),
        }
    }
}

impl<E: std::error::Error> std::error::Error for Error<E> {}

impl<E: ser::Error> ser::Error for Error<E> {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}

impl<E: de::Error> de::Error for Error<E> {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}

/// Carries a custom error's message across postcard's code, from a nested
/// level to the one above it.
#[derive(Default)]
pub(crate) struct Slot(Cell<Option<String>>);

impl Slot {
    /// An error that came back through postcard: the message a nested
    /// level left, or postcard's own error.
    fn lift<E>(&self, e: E) -> Error<E> {
        match self.0.take() {
            Some(m) => Error::Custom(m),
            None => Error::Inner(e),
        }
    }

    /// An error to hand to postcard's serializer: a message is left here
    /// for the level above.
    fn lower_ser<E: ser::Error>(&self, e: Error<E>) -> E {
        match e {
            Error::Inner(e) => e,
            Error::Custom(m) => {
                let e = E::custom(&m);
                self.0.set(Some(m));
                e
            }
        }
    }

    /// [`lower_ser`](Self::lower_ser) for postcard's deserializer.
    fn lower_de<E: de::Error>(&self, e: Error<E>) -> E {
        match e {
            Error::Inner(e) => e,
            Error::Custom(m) => {
                let e = E::custom(&m);
                self.0.set(Some(m));
                e
            }
        }
    }
}

/// Serializes `value` with postcard into `flavor`, keeping custom errors'
/// messages.
pub(crate) fn serialize<T, F>(value: &T, flavor: F) -> Result<F::Output, Error<postcard::Error>>
where
    T: Serialize + ?Sized,
    F: postcard::ser_flavors::Flavor,
{
    let slot = Slot::default();
    let mut ser = postcard::Serializer { output: flavor };
    value.serialize(Ser {
        inner: &mut ser,
        slot: &slot,
    })?;
    ser.output
        .finalize()
        .map_err(|_| Error::Inner(postcard::Error::SerializeBufferFull))
}

/// Deserializes a `T` from the front of `bytes` with postcard, keeping
/// custom errors' messages; the bytes after it.
pub(crate) fn take_from_bytes<'a, T: de::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<(T, &'a [u8]), Error<postcard::Error>> {
    let slot = Slot::default();
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(De {
        inner: &mut de,
        slot: &slot,
    })?;
    let rest = de.finalize().map_err(Error::Inner)?;
    Ok((value, rest))
}

// ---------------------------------------------------------------- serializing

/// A serializer whose errors keep their messages.
pub(crate) struct Ser<'s, S> {
    inner: S,
    slot: &'s Slot,
}

/// A nested value, serialized through [`Ser`] whatever serializer postcard
/// hands it.
struct Wrap<'s, 'v, T: ?Sized> {
    value: &'v T,
    slot: &'s Slot,
}

impl<T: Serialize + ?Sized> Serialize for Wrap<'_, '_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let slot = self.slot;
        self.value
            .serialize(Ser { inner: s, slot })
            .map_err(|e| slot.lower_ser(e))
    }
}

impl<'s, 'v, T: ?Sized> Wrap<'s, 'v, T> {
    fn new(value: &'v T, slot: &'s Slot) -> Self {
        Wrap { value, slot }
    }
}

/// A compound value (sequence, map, struct...) being serialized.
pub(crate) struct Compound<'s, C> {
    inner: C,
    slot: &'s Slot,
}

macro_rules! forward_ser {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $name(self, $($arg: $ty),*) -> Result<S::Ok, Self::Error> {
                let slot = self.slot;
                self.inner.$name($($arg),*).map_err(|e| slot.lift(e))
            }
        )*
    };
}

macro_rules! forward_ser_compound {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $out:ident;)*) => {
        $(
            fn $name(self, $($arg: $ty),*) -> Result<Self::$out, Self::Error> {
                let slot = self.slot;
                self.inner
                    .$name($($arg),*)
                    .map(|inner| Compound { inner, slot })
                    .map_err(|e| slot.lift(e))
            }
        )*
    };
}

impl<'s, S: Serializer> Serializer for Ser<'s, S> {
    type Ok = S::Ok;
    type Error = Error<S::Error>;
    type SerializeSeq = Compound<'s, S::SerializeSeq>;
    type SerializeTuple = Compound<'s, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'s, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'s, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'s, S::SerializeMap>;
    type SerializeStruct = Compound<'s, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'s, S::SerializeStructVariant>;

    forward_ser! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    forward_ser_compound! {
        serialize_seq(len: Option<usize>) -> SerializeSeq;
        serialize_tuple(len: usize) -> SerializeTuple;
        serialize_tuple_struct(name: &'static str, len: usize) -> SerializeTupleStruct;
        serialize_tuple_variant(name: &'static str, index: u32, variant: &'static str, len: usize)
            -> SerializeTupleVariant;
        serialize_map(len: Option<usize>) -> SerializeMap;
        serialize_struct(name: &'static str, len: usize) -> SerializeStruct;
        serialize_struct_variant(name: &'static str, index: u32, variant: &'static str, len: usize)
            -> SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, Self::Error> {
        let slot = self.slot;
        self.inner
            .serialize_some(&Wrap::new(value, slot))
            .map_err(|e| slot.lift(e))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, Self::Error> {
        let slot = self.slot;
        self.inner
            .serialize_newtype_struct(name, &Wrap::new(value, slot))
            .map_err(|e| slot.lift(e))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, Self::Error> {
        let slot = self.slot;
        self.inner
            .serialize_newtype_variant(name, index, variant, &Wrap::new(value, slot))
            .map_err(|e| slot.lift(e))
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<S::Ok, Self::Error> {
        let slot = self.slot;
        self.inner.collect_str(value).map_err(|e| slot.lift(e))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// `end` of a compound serializer.
macro_rules! compound_end {
    () => {
        fn end(self) -> Result<C::Ok, Self::Error> {
            let slot = self.slot;
            self.inner.end().map_err(|e| slot.lift(e))
        }
    };
}

/// A compound serializer whose values go through `$method(value)`:
/// sequences, tuples, tuple structs and tuple variants.
macro_rules! compound_positional {
    ($($trait:ident::$method:ident),* $(,)?) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = Error<C::Error>;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
                let slot = self.slot;
                self.inner.$method(&Wrap::new(value, slot)).map_err(|e| slot.lift(e))
            }

            compound_end!();
        }
    )*};
}

compound_positional!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// A compound serializer of named fields: structs and struct variants.
macro_rules! compound_named {
    ($($trait:ident),* $(,)?) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = Error<C::Error>;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Self::Error> {
                let slot = self.slot;
                self.inner.serialize_field(key, &Wrap::new(value, slot)).map_err(|e| slot.lift(e))
            }

            fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
                let slot = self.slot;
                self.inner.skip_field(key).map_err(|e| slot.lift(e))
            }

            compound_end!();
        }
    )*};
}

compound_named!(SerializeStruct, SerializeStructVariant);

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = Error<C::Error>;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        let slot = self.slot;
        self.inner
            .serialize_key(&Wrap::new(key, slot))
            .map_err(|e| slot.lift(e))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let slot = self.slot;
        self.inner
            .serialize_value(&Wrap::new(value, slot))
            .map_err(|e| slot.lift(e))
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), Self::Error> {
        let slot = self.slot;
        self.inner
            .serialize_entry(&Wrap::new(key, slot), &Wrap::new(value, slot))
            .map_err(|e| slot.lift(e))
    }

    compound_end!();
}

// ---------------------------------------------------------------- deserializing

/// A deserializer whose errors keep their messages.
pub(crate) struct De<'s, D> {
    inner: D,
    slot: &'s Slot,
}

/// A visitor that hands its own visitor [`Error`]s, and the nested
/// deserializers and accesses wrapped.
struct Vis<'s, V> {
    inner: V,
    slot: &'s Slot,
}

/// A seed that deserializes through [`De`].
struct Seed<'s, T> {
    inner: T,
    slot: &'s Slot,
}

struct SeqAcc<'s, A> {
    inner: A,
    slot: &'s Slot,
}

struct MapAcc<'s, A> {
    inner: A,
    slot: &'s Slot,
}

struct EnumAcc<'s, A> {
    inner: A,
    slot: &'s Slot,
}

struct VarAcc<'s, A> {
    inner: A,
    slot: &'s Slot,
}

macro_rules! forward_de {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $name<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
                let slot = self.slot;
                self.inner
                    .$name($($arg,)* Vis { inner: visitor, slot })
                    .map_err(|e| slot.lift(e))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for De<'_, D> {
    type Error = Error<D::Error>;

    forward_de! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($name:ident($ty:ty);)*) => {
        $(
            fn $name<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                let slot = self.slot;
                self.inner.$name::<Error<E>>(v).map_err(|e| slot.lower_de(e))
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Vis<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        let slot = self.slot;
        self.inner.visit_none::<Error<E>>().map_err(|e| slot.lower_de(e))
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        let slot = self.slot;
        self.inner.visit_unit::<Error<E>>().map_err(|e| slot.lower_de(e))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let slot = self.slot;
        self.inner
            .visit_some(De { inner: d, slot })
            .map_err(|e| slot.lower_de(e))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let slot = self.slot;
        self.inner
            .visit_newtype_struct(De { inner: d, slot })
            .map_err(|e| slot.lower_de(e))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        self.inner
            .visit_seq(SeqAcc { inner: seq, slot })
            .map_err(|e| slot.lower_de(e))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        self.inner
            .visit_map(MapAcc { inner: map, slot })
            .map_err(|e| slot.lower_de(e))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        self.inner
            .visit_enum(EnumAcc { inner: data, slot })
            .map_err(|e| slot.lower_de(e))
    }
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        let slot = self.slot;
        self.inner
            .deserialize(De { inner: d, slot })
            .map_err(|e| slot.lower_de(e))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for SeqAcc<'_, A> {
    type Error = Error<A::Error>;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        let slot = self.slot;
        self.inner
            .next_element_seed(Seed { inner: seed, slot })
            .map_err(|e| slot.lift(e))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for MapAcc<'_, A> {
    type Error = Error<A::Error>;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let slot = self.slot;
        self.inner
            .next_key_seed(Seed { inner: seed, slot })
            .map_err(|e| slot.lift(e))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Self::Error> {
        let slot = self.slot;
        self.inner
            .next_value_seed(Seed { inner: seed, slot })
            .map_err(|e| slot.lift(e))
    }

    fn next_entry_seed<K: DeserializeSeed<'de>, T: DeserializeSeed<'de>>(
        &mut self,
        kseed: K,
        vseed: T,
    ) -> Result<Option<(K::Value, T::Value)>, Self::Error> {
        let slot = self.slot;
        self.inner
            .next_entry_seed(Seed { inner: kseed, slot }, Seed { inner: vseed, slot })
            .map_err(|e| slot.lift(e))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, 's, A: EnumAccess<'de>> EnumAccess<'de> for EnumAcc<'s, A> {
    type Error = Error<A::Error>;
    type Variant = VarAcc<'s, A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant), Self::Error> {
        let slot = self.slot;
        self.inner
            .variant_seed(Seed { inner: seed, slot })
            .map(|(v, inner)| (v, VarAcc { inner, slot }))
            .map_err(|e| slot.lift(e))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for VarAcc<'_, A> {
    type Error = Error<A::Error>;

    fn unit_variant(self) -> Result<(), Self::Error> {
        let slot = self.slot;
        self.inner.unit_variant().map_err(|e| slot.lift(e))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Self::Error> {
        let slot = self.slot;
        self.inner
            .newtype_variant_seed(Seed { inner: seed, slot })
            .map_err(|e| slot.lift(e))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Self::Error> {
        let slot = self.slot;
        self.inner
            .tuple_variant(len, Vis { inner: visitor, slot })
            .map_err(|e| slot.lift(e))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let slot = self.slot;
        self.inner
            .struct_variant(fields, Vis { inner: visitor, slot })
            .map_err(|e| slot.lift(e))
    }
}
