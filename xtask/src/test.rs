//! `cargo xtask test [--quick] [--no-examples]`: everything CI checks, in order.
//!
//! 1. lint (fmt, clippy, tidy), unless `--quick`;
//! 2. unit and integration tests of every crate (`--lib --bins --tests`),
//!    the cross-crate suite aside;
//! 3. doctests;
//! 4. the cross-crate integration suite (CPython's ported tests included)
//!    once per start method, with
//!    `MP_START_METHOD` set to `fork`, `spawn` and `forkserver`;
//! 5. the chaos suite (`cargo xtask chaos`);
//! 6. a smoke run of the criterion benches (each bench once, in test mode);
//! 7. the examples, with their stdout checked, unless `--no-examples`.
//!
//! `RUST_BACKTRACE=1` is set for every test run.

use crate::util::{Failed, Session};
use crate::{examples, lint};

/// The start methods the integration suite runs under, as `MP_START_METHOD`
/// spells them.
const START_METHODS: &[&str] = &["fork", "spawn", "forkserver"];

/// Options of `cargo xtask test`.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// Skip the lint steps.
    pub(crate) quick: bool,
    /// Skip building and running the examples.
    pub(crate) no_examples: bool,
}

impl Options {
    /// Parses the arguments after `test`.
    pub(crate) fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options::default();
        for arg in args {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--no-examples" => options.no_examples = true,
                other => return Err(format!("unknown option to `test`: {other}")),
            }
        }
        Ok(options)
    }
}

/// Runs the test steps, stopping after the first failing group.
pub(crate) fn run(session: &mut Session, options: &Options) -> Result<(), Failed> {
    if !options.quick {
        lint::run(session)?;
    }

    // The integration suite runs below, once per start method; here it
    // would only repeat the fork-server run.
    let mut unit = session.cargo([
        "test",
        "--workspace",
        "--exclude",
        "tests-integration",
        "--lib",
        "--bins",
        "--tests",
        "--no-fail-fast",
    ]);
    unit.env("RUST_BACKTRACE", "1");
    session.run("unit and crate tests", unit)?;

    let mut doc = session.cargo(["test", "--workspace", "--doc"]);
    doc.env("RUST_BACKTRACE", "1");
    session.run("doctests", doc)?;

    for method in START_METHODS {
        let mut suite = session.cargo(["test", "-p", "tests-integration", "--tests"]);
        suite.env("RUST_BACKTRACE", "1").env("MP_START_METHOD", method);
        session.step(&format!("integration ({method})"), |session| {
            println!("    the integration suite under start method `{method}`");
            session.exec(&mut suite)
        })?;
    }

    crate::chaos::run(session, &[])?;

    let mut benches = session.cargo(["test", "-p", "benches", "--benches"]);
    benches.env("RUST_BACKTRACE", "1");
    session.run("bench smoke run", benches)?;

    if !options.no_examples {
        examples::test(session)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = Options::parse(&[]).unwrap();
        assert!(!none.quick && !none.no_examples);
        let both = Options::parse(&args(&["--no-examples", "--quick"])).unwrap();
        assert!(both.quick && both.no_examples);
        assert!(Options::parse(&args(&["--fast"])).is_err());
    }
}
