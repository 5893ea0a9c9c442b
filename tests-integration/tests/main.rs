//! Cross-crate integration suite (placeholder).
