//! The cross-crate integration suite: one binary, run by `cargo xtask test`
//! once per start method (`MP_START_METHOD`, read once mp-process exists).

mod facade;
mod spawned_child;
