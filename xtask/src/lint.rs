//! `cargo xtask lint`: rustfmt, clippy with warnings denied, then tidy.

use crate::tidy;
use crate::util::{Failed, Session};

/// Runs the lint steps, stopping at the first that fails.
pub(crate) fn run(session: &mut Session) -> Result<(), Failed> {
    let fmt = session.cargo(["fmt", "--all", "--", "--check"]);
    session.run("fmt", fmt)?;
    let clippy = session.cargo(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    session.run("clippy", clippy)?;
    tidy::run(session)
}
