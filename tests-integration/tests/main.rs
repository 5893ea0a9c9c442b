//! The cross-crate integration suite's libtest binary (facade re-exports, a
//! re-executed child); `handles.rs` is its single-threaded companion that
//! starts children. `cargo xtask test` runs both once per start method
//! (`MP_START_METHOD`).

mod facade;
mod spawned_child;
