//! Hooks for this crate's own tests of bad input: start a child whose
//! bootstrap is corrupt in a chosen way. Not part of the public API.

use mp_codec::Frame;

use crate::child::Meta;
use crate::error::ProcessError;
use crate::method::StartMethod;

/// How the bootstrap is broken.
#[derive(Clone, Copy, Debug)]
pub enum Corruption {
    /// The target names a function of another binary (its tag does not match).
    ForeignTarget,
    /// The bootstrap message is not a frame at all.
    Garbage,
}

fn noop() {}

/// Starts (and for spawn, reaps) a child of `method` with a corrupt
/// bootstrap; returns the error the parent gets.
pub fn start_corrupt(method: StartMethod, how: Corruption) -> Result<(), ProcessError> {
    let entry = mp_sys::code::Entry::<Frame>::new(|_f: Frame| {
        noop();
        0
    })?;
    let (offset, tag) = entry.parts();
    let meta = Meta {
        name: "Corrupt-1".into(),
        identity: vec![1],
        daemon: false,
        parent_pid: std::process::id(),
        parent_name: "MainProcess".into(),
        method,
        target: (offset, tag ^ 0x5a5a),
    };
    let args = mp_codec::encode(&())?;
    match (method, how) {
        (StartMethod::ForkServer, Corruption::ForeignTarget) => crate::forkserver::start(&meta, &args).map(|_| ()),
        (_, Corruption::ForeignTarget) => crate::spawn::start(&meta, &args).map(|_| ()),
        (_, Corruption::Garbage) => crate::spawn::start_with_garbage(),
    }
}
