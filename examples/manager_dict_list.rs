//! A child process fills a managed dict with keys and values of several
//! types and reverses a managed list; the parent prints both. Twin of
//! seed 003 (its manager example, after part 5: sharing that works, "but
//! slow").
//!
//! Python's dict takes any hashable key and any value; a Rust map has one
//! key type and one value type. [`PyObj`], an enum of the kinds the seed
//! uses (`None`, int, float, str), stands for "any Python object" on both
//! sides, and prints like Python's `repr`.
//!
//! The seed's output, `{0.25: None, 1: '1', '2': 2}`, came from a Python
//! whose dicts had no order. Managed dicts keep insertion order (as Python's
//! have since 3.7), so the child inserts in that printed order.
//!
//! Run with `cargo run --example manager_dict_list`.

use std::error::Error;
use std::fmt;

use multiprocessing::{DictProxy, ListProxy, Manager, ManagerError, Process};
use serde::{Deserialize, Serialize};

/// A Python value of the kinds the seed's dict holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum PyObj {
    None,
    Int(i64),
    /// A float, kept as its bits (`f64::to_bits`): a map key must be
    /// `Hash + Eq`, and `f64` is neither (NaN != NaN). Equal bits are the
    /// same key; unlike Python, `0.0` and `-0.0` differ, and `1.0` is not
    /// the key `1`.
    Float(u64),
    Str(String),
}

impl PyObj {
    fn float(x: f64) -> PyObj {
        PyObj::Float(x.to_bits())
    }
}

/// Python's `repr`, enough for these values (a string is put in single
/// quotes as it is, without escaping).
impl fmt::Display for PyObj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyObj::None => f.write_str("None"),
            PyObj::Int(i) => write!(f, "{i}"),
            // `{:?}` keeps the `.0` of whole floats, as Python does (`1.0`).
            PyObj::Float(bits) => write!(f, "{:?}", f64::from_bits(*bits)),
            PyObj::Str(s) => write!(f, "'{s}'"),
        }
    }
}

fn f(d: DictProxy<PyObj, PyObj>, l: ListProxy<i64>) -> Result<(), ManagerError> {
    d.insert(PyObj::float(0.25), PyObj::None)?;
    d.insert(PyObj::Int(1), PyObj::Str("1".into()))?;
    d.insert(PyObj::Str("2".into()), PyObj::Int(2))?;
    l.reverse()?;
    Ok(())
}

/// Formats entries as Python prints a dict.
fn py_dict(items: &[(PyObj, PyObj)]) -> String {
    let entries: Vec<String> = items.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", entries.join(", "))
}

fn main() -> Result<(), Box<dyn Error>> {
    let manager = Manager::new()?;
    let d = manager.dict::<PyObj, PyObj>()?;
    let l = manager.list_from((0..10).collect())?; // Python: manager.list(range(10))
    let mut p = Process::new(f, (d.clone(), l.clone()));
    p.start()?;
    p.join()?;
    println!("{}", py_dict(&d.items()?));
    println!("{:?}", l.to_vec()?);
    Ok(())
}
