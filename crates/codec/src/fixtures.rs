//! Test values that use every part of serde's data model, shared by the
//! writer's and the reader's tests (both compare themselves with postcard).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every kind of enum variant.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
pub(crate) enum Shape {
    Unit,
    New(i32),
    Tuple(u8, i64),
    Struct { a: u16, b: Option<String> },
}

/// Every primitive, a byte string, options, a sequence, a map and a unit.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
pub(crate) struct All {
    pub(crate) b: bool,
    pub(crate) i8: i8,
    pub(crate) i16: i16,
    pub(crate) i32: i32,
    pub(crate) i64: i64,
    pub(crate) i128: i128,
    pub(crate) u8: u8,
    pub(crate) u16: u16,
    pub(crate) u32: u32,
    pub(crate) u64: u64,
    pub(crate) u128: u128,
    pub(crate) f32: f32,
    pub(crate) f64: f64,
    pub(crate) c: char,
    pub(crate) s: String,
    pub(crate) bytes: serde_bytes::ByteBuf,
    pub(crate) none: Option<u8>,
    pub(crate) some: Option<(u8, ())>,
    pub(crate) shapes: Vec<Shape>,
    pub(crate) map: BTreeMap<String, Vec<u64>>,
    pub(crate) unit: (),
}

impl All {
    /// Extreme values in every field; `text` goes into the struct variant.
    pub(crate) fn sample(text: String) -> All {
        All {
            b: true,
            i8: -5,
            i16: -300,
            i32: i32::MIN,
            i64: i64::MIN,
            i128: i128::MIN,
            u8: 200,
            u16: u16::MAX,
            u32: 70_000,
            u64: u64::MAX,
            u128: u128::MAX,
            f32: 1.5,
            f64: -2.25e300,
            c: 'é',
            s: "text ✓".into(),
            bytes: serde_bytes::ByteBuf::from(vec![1, 2, 3]),
            none: None,
            some: Some((9, ())),
            shapes: vec![
                Shape::Unit,
                Shape::New(-1),
                Shape::Tuple(3, 1 << 40),
                Shape::Struct { a: 500, b: Some(text) },
            ],
            map: [("k".to_string(), vec![1, 1 << 20]), (String::new(), Vec::new())]
                .into_iter()
                .collect(),
            unit: (),
        }
    }
}
