//! Five processes each set `dic[i] = 100` in one managed dict, after a
//! short sleep; the parent polls until none is alive, then prints the dict.
//! Twin of seed 002 (sharing data between processes: Manager).
//!
//! The seed's parent spins on `is_alive()` without pausing; here it sleeps
//! 10 ms between checks, then joins every child. The children insert
//! concurrently, so the dict's insertion order varies from run to run: the
//! entries are sorted by key before printing.
//!
//! Run with `cargo run --example manager_dict_five`.

use std::error::Error;
use std::thread::sleep;
use std::time::Duration;

use multiprocessing::{DictProxy, Manager, ManagerError, Process};

fn task(arg: i64, dic: DictProxy<i64, i64>) -> Result<(), ManagerError> {
    // The seed sleeps 2 s; 200 ms shows the same thing.
    sleep(Duration::from_millis(200));
    dic.insert(arg, 100)?;
    Ok(())
}

/// Formats entries as Python prints a dict: `{0: 100, 1: 100}`.
fn py_dict(items: &[(i64, i64)]) -> String {
    let entries: Vec<String> = items.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", entries.join(", "))
}

fn main() -> Result<(), Box<dyn Error>> {
    let m = Manager::new()?;
    let dic = m.dict::<i64, i64>()?;
    let mut process_list = Vec::new();
    for i in 0..5 {
        let mut p = Process::new(task, (i, dic.clone()));
        p.start()?;
        process_list.push(p);
    }
    while process_list.iter_mut().any(|p| p.is_alive()) {
        sleep(Duration::from_millis(10));
    }
    for p in &mut process_list {
        p.join()?;
    }
    // Insertion order depends on which child ran first: sort by key.
    let mut items = dic.items()?;
    items.sort_unstable();
    println!("{}", py_dict(&items));
    Ok(())
}
