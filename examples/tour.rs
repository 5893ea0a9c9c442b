//! A tour of the library (placeholder while the crates are written).
fn main() {}
