//! `cargo xtask bench [--] [criterion args...]`: runs the criterion benches of
//! the `benches` package, e.g. `cargo xtask bench -- --quick` or
//! `cargo xtask bench codec` (a filter on bench IDs).

use crate::util::{Failed, Session};

/// Runs `cargo bench -p benches -- <args>` and says where the reports are.
pub(crate) fn run(session: &mut Session, args: &[String]) -> Result<(), Failed> {
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    let mut cmd = session.cargo(["bench", "-p", "benches"]);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let result = session.run("bench", cmd);
    let reports = session.target_dir().join("criterion");
    println!("\n    criterion's results are in {}", reports.display());
    let html = reports.join("report/index.html");
    if html.is_file() {
        println!("    HTML report: {}", html.display());
    }
    result
}
