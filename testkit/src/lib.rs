//! A minimal test runner for test binaries with `harness = false`.
//!
//! Tests that fork must run from a single-threaded process (docs/ARCHITECTURE.md, fork
//! safety), so those binaries bring their own `main`. This runner gives them
//! what the standard harness gives: a name filter from the command line, one
//! `test NAME ... ok` line per test, and the closing
//! `test result: ok. N passed; M failed; ...` line that CI reads.
//!
//! ```
//! let mut h = mp_testkit::Harness::new(1);
//! h.run("arithmetic", || if 1 + 1 == 2 { Ok(()) } else { Err("no".into()) });
//! assert_eq!(h.finish(), std::process::ExitCode::SUCCESS);
//! ```

#[cfg(feature = "redis")]
pub mod redis;

use std::process::ExitCode;
use std::time::Instant;

#[cfg(feature = "process")]
mod children;
#[cfg(feature = "process")]
pub use children::{AT_ONCE, Reaped, Reaper, about, at_once, joined_ok, nothing_left_behind, strays, timed};

/// A test without arguments: `Err` describes the failure.
pub type Test = fn() -> Result<(), String>;

/// A test run once per case (a start method, say).
pub type Case<C> = fn(C) -> Result<(), String>;

/// The three start methods, for scenarios run under each.
#[cfg(feature = "process")]
pub const METHODS: [mp_process::StartMethod; 3] = [
    mp_process::StartMethod::Fork,
    mp_process::StartMethod::Spawn,
    mp_process::StartMethod::ForkServer,
];

/// Runs a whole test binary: the `local` tests once each, then every
/// scenario of `each` once per case (named `name::{case:?}`); the binary's
/// exit code.
///
/// ```
/// fn plain() -> Result<(), String> { Ok(()) }
/// fn doubled(n: u8) -> Result<(), String> { if n < 128 { Ok(()) } else { Err("overflow".into()) } }
/// let code = mp_testkit::suite(&[("plain", plain)], &[("doubled", doubled)], &[1u8, 2]);
/// assert_eq!(code, std::process::ExitCode::SUCCESS);
/// ```
pub fn suite<C: Copy + std::fmt::Debug>(local: &[(&str, Test)], each: &[(&str, Case<C>)], cases: &[C]) -> ExitCode {
    let mut h = Harness::new(local.len() + each.len() * cases.len());
    for &(name, f) in local {
        h.run(name, f);
    }
    for &(name, f) in each {
        h.run_each(name, cases, f);
    }
    h.finish()
}

/// Runs named tests one after another on the calling thread.
///
/// It reads the command line as libtest does, so `cargo test -- NAME`,
/// `--exact`, `--skip`, `--list` (and `--format terse`, `--ignored`, the
/// forms `cargo nextest` uses) work on `harness = false` binaries too.
/// Options that only tune libtest's own runner (`--nocapture`,
/// `--test-threads`, `--quiet`, `--color`, ...) are accepted and have nothing
/// to change here: tests run one after another and print as they go.
#[derive(Debug)]
pub struct Harness {
    args: Args,
    passed: usize,
    failed: usize,
    filtered: usize,
    ignored: usize,
    listed: usize,
    started: Instant,
}

/// The libtest command line, as far as a sequential runner needs it.
#[derive(Debug, Default, PartialEq)]
struct Args {
    /// Name filters: a test runs if its name contains one (or equals one, with `exact`).
    filters: Vec<String>,
    /// Names (or parts, without `exact`) to skip.
    skip: Vec<String>,
    /// `--exact`: filters and skips match whole names.
    exact: bool,
    /// `--list`: print the names, run nothing.
    list: bool,
    /// `--format terse` with `--list`: only the `name: test` lines.
    terse: bool,
    /// `--ignored`: run (or list) only the ignored tests.
    ignored_only: bool,
    /// `--include-ignored`: run the ignored tests too.
    include_ignored: bool,
}

impl Args {
    /// Parses libtest's options; unknown flags are reported on stderr and
    /// otherwise ignored, as they cannot change a sequential run.
    fn parse(args: impl IntoIterator<Item = String>) -> Args {
        let mut out = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let value = |args: &mut dyn Iterator<Item = String>| inline.clone().or_else(|| args.next());
            match flag.as_str() {
                "--exact" => out.exact = true,
                "--list" => out.list = true,
                "--ignored" => out.ignored_only = true,
                "--include-ignored" => out.include_ignored = true,
                "--skip" => out.skip.extend(value(&mut args)),
                "--format" => out.terse = value(&mut args).as_deref() == Some("terse"),
                "-q" | "--quiet" => {}
                "--nocapture" | "--no-capture" | "--show-output" | "--test" | "--bench" | "--no-fail-fast" => {}
                "--test-threads" | "--color" | "--logfile" | "-Z" | "--report-time" => {
                    if !flag.ends_with("report-time") {
                        let _ = value(&mut args);
                    }
                }
                f if f.starts_with('-') => eprintln!("note: {f} has no effect on this test runner"),
                _ => out.filters.push(arg),
            }
        }
        out
    }

    /// Whether the test `name` is selected by the filters and skips.
    fn matches(&self, name: &str) -> bool {
        let hit = |p: &String| {
            if self.exact {
                name == p
            } else {
                name.contains(p.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(hit)) && !self.skip.iter().any(hit)
    }

    /// Whether the test `name` runs (an ignored one runs only when asked for).
    fn selects(&self, name: &str) -> bool {
        !self.ignored_only && self.matches(name)
    }
}

impl Harness {
    /// A runner for `total` tests, filtered by the non-flag arguments of the
    /// command line (a test runs if its name contains one of them).
    pub fn new(total: usize) -> Harness {
        let args = Args::parse(std::env::args().skip(1));
        if !args.list {
            println!("\nrunning {total} tests");
        }
        Harness {
            args,
            passed: 0,
            failed: 0,
            filtered: 0,
            ignored: 0,
            listed: 0,
            started: Instant::now(),
        }
    }

    /// Runs `test` unless the command line excludes `name`, and reports it
    /// (or, under `--list`, prints its name).
    pub fn run(&mut self, name: &str, test: impl FnOnce() -> Result<(), String>) {
        if !self.args.selects(name) {
            self.filtered += 1;
            return;
        }
        if self.args.list {
            println!("{name}: test");
            self.listed += 1;
            return;
        }
        let t0 = Instant::now();
        match test() {
            Ok(()) => {
                println!("test {name} ... ok ({:.0} ms)", t0.elapsed().as_secs_f64() * 1000.0);
                self.passed += 1;
            }
            Err(msg) => {
                println!("test {name} ... FAILED\n    {msg}");
                self.failed += 1;
            }
        }
    }

    /// A test known to fail for a reason not fixed yet: skipped with an
    /// `ignored, REASON` line (libtest's form), and run only when the command
    /// line asks for ignored tests (`--ignored` or `--include-ignored`).
    pub fn run_ignored(&mut self, name: &str, reason: &str, test: impl FnOnce() -> Result<(), String>) {
        if !self.args.matches(name) {
            self.filtered += 1;
            return;
        }
        if self.args.ignored_only || self.args.include_ignored {
            let args = std::mem::take(&mut self.args.ignored_only);
            self.run(name, test);
            self.args.ignored_only = args;
            return;
        }
        if self.args.list {
            println!("{name}: test");
            self.listed += 1;
            return;
        }
        println!("test {name} ... ignored, {reason}");
        self.ignored += 1;
    }

    /// Runs `test` once for each of `cases`, named `name::{case:?}` (a
    /// scenario under each start method, say).
    pub fn run_each<C: Copy + std::fmt::Debug>(&mut self, name: &str, cases: &[C], test: Case<C>) {
        for &c in cases {
            self.run(&format!("{name}::{c:?}"), || test(c));
        }
    }

    /// Prints the closing line; failure if any test failed.
    pub fn finish(self) -> ExitCode {
        if self.args.list {
            if !self.args.terse {
                println!("\n{} tests, 0 benchmarks", self.listed);
            }
            return ExitCode::SUCCESS;
        }
        let verdict = if self.failed == 0 { "ok" } else { "FAILED" };
        println!(
            "\ntest result: {verdict}. {} passed; {} failed; {} ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
            self.passed,
            self.failed,
            self.ignored,
            self.filtered,
            self.started.elapsed().as_secs_f64()
        );
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// `Ok(())` if `cond` holds, else the failure `what`.
///
/// ```
/// assert!(mp_testkit::check(true, "fine").is_ok());
/// assert_eq!(mp_testkit::check(false, "broken"), Err("broken".to_string()));
/// ```
pub fn check(cond: bool, what: impl Into<String>) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.into()) }
}

/// How long a test waits for anything that should happen at once.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// A result with its error as text, for `?` in a test.
///
/// ```
/// assert_eq!(mp_testkit::ok("7".parse::<u8>()), Ok(7));
/// assert!(mp_testkit::ok("x".parse::<u8>()).is_err());
/// ```
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// The names in `/dev/shm`, sorted: compare before and after a test to see
/// that it left no named shared memory behind.
///
/// ```
/// let before = mp_testkit::shm_entries();
/// assert_eq!(mp_testkit::shm_entries(), before);
/// ```
pub fn shm_entries() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Joins a started process within [`PATIENCE`] and returns its exit code;
/// kills and reaps it if it hangs, so no test leaves a child behind.
///
/// ```
/// let mut p = mp_process::Process::new(|| {}, ());
/// p.start().unwrap();
/// assert_eq!(mp_testkit::finish(&mut p), Ok(0));
/// ```
#[cfg(feature = "process")]
pub fn finish(p: &mut mp_process::Process) -> Result<i32, String> {
    ok(p.join_timeout(PATIENCE))?;
    match p.exitcode() {
        Some(c) => Ok(c),
        None => {
            let _ = p.kill();
            let _ = p.join_timeout(PATIENCE);
            Err(format!("{} did not exit within {PATIENCE:?}", p.get_name()))
        }
    }
}

/// Waits until `cond` holds, for at most `timeout`, giving the CPU away
/// between checks; whether it held. For a state no event announces (a
/// barrier's count of waiting parties, say); everything that has an event, a
/// pipe or a timeout form should wait on that instead.
///
/// ```
/// let t0 = std::time::Instant::now();
/// assert!(mp_testkit::until(std::time::Duration::from_secs(1), || t0.elapsed().as_millis() >= 1));
/// assert!(!mp_testkit::until(std::time::Duration::ZERO, || false));
/// ```
pub fn until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    // A timeout past the clock's range waits forever.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        if cond() {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::thread::yield_now();
    }
}

/// How many of this process's children are zombies (exited, not reaped).
///
/// ```
/// assert_eq!(mp_testkit::zombie_children(), 0);
/// ```
pub fn zombie_children() -> usize {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|s| {
                    let after_name = s.rsplit_once(')').map_or("", |x| x.1);
                    let mut f = after_name.split_whitespace();
                    f.next() == Some("Z") && f.next().and_then(|p| p.parse::<u32>().ok()) == Some(me)
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Args;

    fn parse(line: &str) -> Args {
        Args::parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn filters_match_parts_or_whole_names() {
        let a = parse("queue");
        assert!(a.selects("queue::Fork") && !a.selects("lock"));
        let exact = parse("--exact queue");
        assert!(exact.selects("queue") && !exact.selects("queue::Fork"));
        assert!(parse("").selects("anything"));
    }

    #[test]
    fn skip_and_ignored() {
        let a = parse("--skip Fork --skip=Spawn");
        assert!(!a.selects("queue::Fork") && !a.selects("queue::Spawn") && a.selects("queue::Threads"));
        assert!(!parse("--ignored").selects("queue"));
        assert!(parse("--include-ignored").selects("queue") && parse("--include-ignored").include_ignored);
    }

    #[test]
    fn nextest_forms() {
        let list = parse("--list --format terse --ignored");
        assert!(list.list && list.terse && list.ignored_only);
        let run = parse("--exact a::b --nocapture --test-threads 1 --color=never -q");
        assert_eq!(run.filters, ["a::b"]);
        assert!(run.exact && !run.list);
    }
}
