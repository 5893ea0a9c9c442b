//! Ten processes, one after the other, each set `dic[i] = 200 + i` in one
//! managed dict and print its values; then the parent prints the dict.
//! Twin of seed 000 (part 3: processing the same data from several
//! processes with `Manager`).
//!
//! Each child is joined before the next one starts, as in the seed, so the
//! lines come in order: every child sees the entries of those before it,
//! and the last one sees ten. A plain `HashMap` passed to the children
//! would be a copy in each (see `no_shared_memory`); the managed dict lives
//! in the manager's server process, and every proxy reaches it.
//!
//! Run with `cargo run --example manager_dict_writers`.

use std::error::Error;

use multiprocessing::{DictProxy, Manager, ManagerError, Process};

fn f1(i: i64, dic: DictProxy<i64, i64>) -> Result<(), ManagerError> {
    dic.insert(i, 200 + i)?;
    // Python: `print(dic.values())`
    println!("{:?}", dic.values()?);
    Ok(())
}

/// Formats entries as Python prints a dict: `{0: 200, 1: 201}`.
fn py_dict(items: &[(i64, i64)]) -> String {
    let entries: Vec<String> = items.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", entries.join(", "))
}

fn main() -> Result<(), Box<dyn Error>> {
    let manager = Manager::new()?;
    let dic = manager.dict::<i64, i64>()?;
    for i in 0..10 {
        let mut p = Process::new(f1, (i, dic.clone()));
        p.start()?;
        p.join()?;
    }
    // The children ran one at a time, so the insertion order is 0..10.
    println!("{}", py_dict(&dic.items()?));
    Ok(())
}
