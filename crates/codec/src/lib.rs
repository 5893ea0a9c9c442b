//! Serde values to frames (placeholder while the crate is written).
