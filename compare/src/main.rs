//! `mp-compare`: the Rust side of `cargo xtask compare`.
//!
//! Runs one workload of `compare/WORKLOADS.md` per invocation, through the
//! `multiprocessing` facade crate, and prints one `name<TAB>value<TAB>unit`
//! line; `compare/python/workloads.py` is the CPython side, with the same
//! names, units and counts. The last rows are compared against other Rust
//! crates instead: their other side is `mp-peers` (`benches/peers`).
//!
//! ```text
//! mp-compare --list              # the workload names, in table order
//! mp-compare <name> [--quick]    # one workload; --quick uses the smaller counts
//! ```
//!
//! With the default feature `cluster`, the `cluster_*` workloads (listed by
//! `mp-compare --list-cluster`) are our side of `cargo xtask compare
//! --cluster`, against Celery and RQ on one redis-server; see
//! `src/cluster.rs`.
//!
//! An unknown name exits with status 2; a failed check or a library error
//! exits with status 1. Both print their message on stderr.

#![forbid(unsafe_code)]

#[cfg(feature = "cluster")]
mod cluster;
mod common;
mod manager;
mod pipe;
mod pool;
mod process;
mod queue;
mod shared;
mod sync;

use std::process::ExitCode;

use common::{Mode, Result};

/// One row of the table in `compare/WORKLOADS.md`.
struct Workload {
    name: &'static str,
    unit: &'static str,
    run: fn(Mode) -> Result<f64>,
}

const fn workload(name: &'static str, unit: &'static str, run: fn(Mode) -> Result<f64>) -> Workload {
    Workload { name, unit, run }
}

/// Every workload, in the table's order (the order of `--list`).
#[rustfmt::skip]
const WORKLOADS: &[Workload] = &[
    workload("process_start_join_fork",         "us",      process::start_join_fork),
    workload("process_start_join_forkserver",   "us",      process::start_join_forkserver),
    workload("process_start_join_spawn",        "us",      process::start_join_spawn),
    workload("pipe_rtt_bytes8",                 "us",      pipe::rtt_bytes8),
    workload("pipe_rtt_obj_int",                "us",      pipe::rtt_obj_int),
    workload("pipe_bandwidth_64MiB",            "MB/s",    pipe::bandwidth_64mib),
    workload("queue_throughput_1p1c",           "msg/s",   queue::throughput_1p1c),
    workload("queue_throughput_2p2c",           "msg/s",   queue::throughput_2p2c),
    workload("simplequeue_throughput_1p1c",     "msg/s",   queue::simplequeue_throughput_1p1c),
    workload("queue_pingpong_rtt",              "us",      queue::pingpong_rtt),
    workload("lock_uncontended",                "ns/pair", sync::lock_uncontended),
    workload("lock_contended_value_incr_2proc", "ops/s",   sync::lock_contended_value_incr_2proc),
    workload("array_child_sum_1M",              "ms",      shared::array_child_sum_1m),
    workload("array_child_sum_1M_guard",        "ms",      shared::array_child_sum_1m_guard),
    workload("array_locked_update_256MiB",      "us",      shared::array_locked_update_256mib),
    workload("pool_map_default_chunksize",      "tasks/s", pool::map_default_chunksize),
    workload("pool_map_chunksize1",             "tasks/s", pool::map_chunksize1),
    workload("pool_apply_async",                "tasks/s", pool::apply_async),
    workload("ppe_map_default_chunksize",       "tasks/s", pool::ppe_map_default_chunksize),
    workload("pool_startup_close_join",         "ms",      pool::startup_close_join),
    workload("manager_startup",                 "ms",      manager::startup),
    workload("manager_dict_set_from_child",     "us/op",   manager::dict_set_from_child),
    workload("manager_dict_get_from_child",     "us/op",   manager::dict_get_from_child),
    workload("event_pingpong_rtt",              "us",      sync::event_pingpong_rtt),
    workload("semaphore_pingpong_rtt",          "us",      sync::semaphore_pingpong_rtt),
    // Rows against Rust peers (the other side is `benches/peers`'s
    // `mp-peers`, not CPython).
    workload("pool_map_100k_procspawn",         "ms",      pool::map_100k),
    workload("pool_map_100k_thread_scope",      "ms",      pool::map_100k),
    workload("array_child_sum_1M_vec_floor",    "ms",      shared::array_child_sum_1m_guard),
];

/// The rows of `cargo xtask compare --cluster` (in its table's order).
#[cfg(feature = "cluster")]
#[rustfmt::skip]
const CLUSTER_WORKLOADS: &[Workload] = &[
    workload("cluster_ping_rtt",                "us",      cluster::ping_rtt),
    workload("cluster_floor_rtt",               "us",      cluster::floor_rtt),
    workload("cluster_apply_rtt",               "us",      cluster::apply_rtt),
    workload("cluster_tasks_chunksize1",        "tasks/s", cluster::tasks_chunksize1),
    workload("cluster_tasks_default_chunks",    "tasks/s", cluster::tasks_default_chunks),
];
#[cfg(not(feature = "cluster"))]
const CLUSTER_WORKLOADS: &[Workload] = &[];

const USAGE: &str = "usage: mp-compare --list | mp-compare --list-cluster | mp-compare <name> [--quick]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (name, mode) = match args.as_slice() {
        ["--list"] => {
            for w in WORKLOADS {
                println!("{}", w.name);
            }
            return ExitCode::SUCCESS;
        }
        ["--list-cluster"] => {
            for w in CLUSTER_WORKLOADS {
                println!("{}", w.name);
            }
            return ExitCode::SUCCESS;
        }
        [name] if !name.starts_with('-') => (*name, Mode::Full),
        [name, "--quick"] | ["--quick", name] if !name.starts_with('-') => (*name, Mode::Quick),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(w) = WORKLOADS.iter().chain(CLUSTER_WORKLOADS).find(|w| w.name == name) else {
        eprintln!("mp-compare: unknown workload {name:?} (`mp-compare --list` lists them)");
        return ExitCode::from(2);
    };
    match (w.run)(mode).and_then(format_value) {
        Ok(value) => {
            println!("{}\t{value}\t{}", w.name, w.unit);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mp-compare: {}: {e}", w.name);
            ExitCode::FAILURE
        }
    }
}

/// A plain decimal with at least 4 significant digits: all the integer
/// digits, and decimals down to the 4th significant digit (`2267`, `77.02`,
/// `0.08378`); never an exponent.
fn format_value(v: f64) -> Result<String> {
    common::ensure!(
        v.is_finite() && v >= 0.0,
        "measured {v}, not a finite non-negative value"
    );
    if v == 0.0 {
        return Ok("0".to_owned());
    }
    let decimals = (3 - v.log10().floor() as i32).clamp(0, 12) as usize;
    Ok(format!("{v:.decimals$}"))
}
