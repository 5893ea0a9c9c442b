//! The operating-system layer of `multiprocessing` (placeholder while the crate is written).
