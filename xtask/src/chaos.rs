//! `cargo xtask chaos [--release] [filter...]`: the fault suite (the
//! `mp-chaos` binary): processes killed at the worst moments, and many
//! processes and objects made and dropped, each followed by a check that
//! nothing was left behind. It prints a Markdown table of scenario,
//! outcome and what was checked. `cargo xtask test` runs it too.

use crate::util::{Failed, Session};

/// Runs the suite, built with the test profile (or `--release`), keeping
/// only the scenarios whose names contain one of the filters.
pub(crate) fn run(session: &mut Session, args: &[String]) -> Result<(), Failed> {
    let release = args.iter().any(|a| a == "--release");
    if let Some(bad) = args.iter().find(|a| a.starts_with('-') && *a != "--release") {
        eprintln!("error: unknown option to `chaos`: {bad}");
        return Err(Failed);
    }
    let mut cmd = session.cargo(["run", "--quiet", "-p", "mp-chaos"]);
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--").args(args.iter().filter(|a| !a.starts_with('-')));
    cmd.env("RUST_BACKTRACE", "1");
    session.run("chaos", cmd)
}
