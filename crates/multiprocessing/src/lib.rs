//! Python's `multiprocessing` for Rust (placeholder while the crate is written).
