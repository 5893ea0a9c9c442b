//! Project automation: `cargo xtask <task>` (the alias lives in
//! `.cargo/config.toml`). One file per task; see [`USAGE`].

mod bench;
mod chaos;
mod compare;
mod compare_cluster;
mod examples;
mod lint;
mod modules;
mod test;
mod tidy;
mod util;

use std::process::ExitCode;

use util::{Failed, Session};

/// What `cargo xtask help` prints.
const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  test [--quick] [--no-examples]
                      everything CI runs: lint, unit and crate tests, doctests,
                      the integration suite once per start method
                      (MP_START_METHOD=fork|spawn|forkserver), a smoke run of
                      the benches, and the examples with their stdout checked
                      against examples/expected/<name>.stdout
                      --quick        skip lint
                      --no-examples  skip the examples
  lint                cargo fmt --check, cargo clippy -D warnings, then tidy
  tidy                `//!` headers, `unsafe` only in crates/sys with
                      `// SAFETY:` comments and `# Safety` docs,
                      #![forbid(unsafe_code)] in the other crates
  examples [<name>...]
                      run the examples (all, or the named ones) and check
                      their stdout against examples/expected/<name>.stdout;
                      cluster_tour needs redis-server on PATH (skipped
                      otherwise)
  modules [crate...]  each crate's module graph from its `crate::` paths, in
                      layers bottom first; fails on an import circle (tidy
                      runs the same check on every crate)
  bless <name>...|--all
                      run examples and record their stdout as
                      examples/expected/<name>.stdout
  chaos [--release] [filter...]
                      the fault suite: pool workers, a lock holder, a queue
                      consumer and a manager server SIGKILLed mid-work, a
                      parent killed with daemonic children, 1,000 processes,
                      10,000 queues/locks/values, a cluster worker host
                      SIGKILLed and redis-server restarted mid-run (skipped
                      without redis-server); after each, no zombie, no
                      leaked fd or mapping, nothing new in /dev/shm
  compare [--quick] [--rounds N] [--only NAME...] [--unpinned-only]
          [--pinned-only] [--readme] [--cluster]
                      this library against CPython's multiprocessing, same
                      workloads (compare/WORKLOADS.md), alternating runs,
                      unpinned and pinned to CPU 0; prints the table and
                      writes target/compare/{compare.md,ratios.svg,runs.tsv};
                      --readme also updates README.md's table and
                      docs/compare.svg
                      --cluster: the cluster tier against Celery and RQ on
                      one redis-server it starts (Celery and RQ installed
                      from PyPI into target/compare/venv): Redis PING, one
                      task's round trip, 20,000 no-op tasks over 2 worker
                      processes; writes target/compare/cluster.md
                      (--readme: the table in README's Scaling out)
  bench [--] [criterion args...]
                      cargo bench -p benches, e.g. `cargo xtask bench -- --quick`
                      or `cargo xtask bench codec`; reports in target/criterion
  help                this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let mut session = Session::new();
    let result = match task.as_str() {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "test" => match test::Options::parse(rest) {
            Ok(options) => test::run(&mut session, &options),
            Err(message) => return usage_error(&message),
        },
        "lint" if rest.is_empty() => lint::run(&mut session),
        "tidy" if rest.is_empty() => tidy::run(&mut session),
        "lint" | "tidy" => return usage_error(&format!("`{task}` takes no arguments")),
        "examples" => examples::run(&mut session, rest),
        "bless" => examples::bless(&mut session, rest),
        "modules" => modules::run(&mut session, rest),
        "bench" => bench::run(&mut session, rest),
        "chaos" => chaos::run(&mut session, rest),
        "compare" => match compare::Options::parse(rest) {
            Ok(options) => compare::run(&mut session, &options),
            Err(message) => return usage_error(&message),
        },
        other => return usage_error(&format!("unknown task `{other}`")),
    };
    session.print_summary();
    match result {
        Ok(()) if !session.any_failed() => ExitCode::SUCCESS,
        Ok(()) | Err(Failed) => {
            eprintln!("\nerror: cargo xtask {task} failed");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}\n");
    eprint!("{USAGE}");
    ExitCode::from(2)
}
