//! Running the examples and checking what they print (`cargo xtask test`'s last
//! step), and `cargo xtask bless`, which records what they print.
//!
//! Every `examples/<stem>.rs` is built (dev profile) and run as
//! `<target>/debug/examples/<stem>` in its own process group, with stdin null,
//! a 120 s timeout (the whole group is killed on timeout) and its stdout and
//! stderr captured. It passes when it exits with status 0, leaves no process
//! behind in its group, and its stdout matches `examples/expected/<stem>.stdout`.
//!
//! # The expected-output format
//!
//! - Lines are compared after trimming trailing whitespace (so `\r\n` and
//!   trailing spaces do not matter); blank lines at the end of either side are
//!   ignored.
//! - In an expected line, `[..]` matches any run of characters (possibly none)
//!   within that line, e.g. `worker [..] got [..] items`. It never spans lines.
//! - If the first line of the expected file is exactly `#unordered`, the other
//!   lines are compared as a multiset: each expected line must match a distinct
//!   actual line, and the numbers of lines must be equal. Use it for output
//!   whose order depends on scheduling (several processes printing).
//! - Otherwise lines are compared in order.
//!
//! # Examples that need a program
//!
//! An example listed in [`NEEDS`] runs only when its program is on `PATH`
//! (`cluster_tour` starts its own `redis-server`); otherwise its step says
//! `skipped: no <program>` and passes, and `bless` refuses it.
//!
//! `cargo xtask examples [<stem>...]` runs and checks the named examples (or
//! all of them), as the last step of `cargo xtask test` does.
//!
//! `cargo xtask bless <stem>` (or `--all`) writes an example's current stdout
//! to its expected file; put the `[..]` wildcards and `#unordered` in by hand
//! afterwards where the output varies from run to run.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{Failed, Session, relative};

/// How long one example may run.
const TIMEOUT: Duration = Duration::from_secs(120);

/// How long the processes an example started may outlive it.
const GRACE: Duration = Duration::from_secs(5);

/// The first line that switches an expected file to unordered comparison.
const UNORDERED: &str = "#unordered";

/// The wildcard of an expected line.
const WILDCARD: &str = "[..]";

/// Examples that run only when a program is on `PATH`: (stem, program).
const NEEDS: &[(&str, &str)] = &[("cluster_tour", "redis-server")];

/// The program example `stem` needs that is not on `PATH`, if any.
fn missing_program(stem: &str) -> Option<&'static str> {
    let &(_, program) = NEEDS.iter().find(|(s, _)| *s == stem)?;
    (!on_path(program)).then_some(program)
}

/// Whether an executable file `program` is in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The stems of `examples/*.rs`, sorted.
fn example_stems(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root.join("examples")) else {
        return Vec::new();
    };
    let mut stems: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    stems.sort();
    stems
}

fn expected_path(root: &Path, stem: &str) -> PathBuf {
    root.join("examples/expected").join(format!("{stem}.stdout"))
}

fn build(session: &mut Session) -> Result<(), Failed> {
    let cmd = session.cargo(["build", "-p", "examples", "--examples"]);
    session.run("build examples", cmd)
}

/// The examples step of `cargo xtask test`: builds them, then runs and checks
/// each one (all of them, even after a failure).
pub(crate) fn test(session: &mut Session) -> Result<(), Failed> {
    run(session, &[])
}

/// `cargo xtask examples [<stem>...]`: builds the examples, then runs and
/// checks the named ones (all when none is named), even after a failure.
pub(crate) fn run(session: &mut Session, args: &[String]) -> Result<(), Failed> {
    let root = session.root().to_path_buf();
    let all = example_stems(&root);
    let stems: Vec<String> = if args.is_empty() {
        all
    } else {
        let named: Vec<String> = args.iter().map(|arg| arg.trim_end_matches(".rs").to_owned()).collect();
        if let Some(unknown) = named.iter().find(|stem| !all.contains(stem)) {
            eprintln!("error: no example `examples/{unknown}.rs`");
            eprintln!("       examples: {}", all.join(", "));
            return Err(Failed);
        }
        named
    };
    build(session)?;
    let mut result = Ok(());
    for stem in stems {
        let step = session.step(&format!("example {stem}"), |session| check(session, &stem));
        result = result.and(step);
    }
    result
}

/// Runs one example and compares its stdout with the expected file.
fn check(session: &Session, stem: &str) -> Result<(), Failed> {
    if let Some(program) = missing_program(stem) {
        println!("    skipped: no {program}");
        return Ok(());
    }
    let root = session.root();
    let expected_file = expected_path(root, stem);
    let output = run_example(session, stem)?;
    let expected = match fs::read_to_string(&expected_file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!(
                "error: cannot read {}: {err}\n       create it with `cargo xtask bless {stem}` \
                 and check what it recorded",
                relative(root, &expected_file)
            );
            print_stream("stdout", &output.stdout);
            return Err(Failed);
        }
    };
    match compare(&expected, &output.stdout) {
        Ok(()) => {
            println!(
                "    stdout matches {} ({:.1} s)",
                relative(root, &expected_file),
                output.elapsed.as_secs_f64()
            );
            Ok(())
        }
        Err(diff) => {
            eprintln!(
                "error: stdout of `{stem}` does not match {}",
                relative(root, &expected_file)
            );
            eprintln!("{diff}");
            print_stream("stderr", &output.stderr);
            eprintln!(
                "       if the new output is right, run `cargo xtask bless {stem}` \
                 (and restore any `[..]` or `#unordered`)"
            );
            Err(Failed)
        }
    }
}

/// `cargo xtask bless <stem>...|--all`.
pub(crate) fn bless(session: &mut Session, args: &[String]) -> Result<(), Failed> {
    let root = session.root().to_path_buf();
    let all = example_stems(&root);
    let stems: Vec<String> = if args.iter().any(|arg| arg == "--all") {
        all.clone()
    } else if args.is_empty() {
        eprintln!("error: `cargo xtask bless` needs example names or `--all`");
        eprintln!("       examples: {}", all.join(", "));
        return Err(Failed);
    } else {
        args.iter().map(|arg| arg.trim_end_matches(".rs").to_owned()).collect()
    };
    if let Some(unknown) = stems.iter().find(|stem| !all.contains(stem)) {
        eprintln!("error: no example `examples/{unknown}.rs`");
        eprintln!("       examples: {}", all.join(", "));
        return Err(Failed);
    }
    if let Some((stem, program)) = stems.iter().find_map(|s| Some((s, missing_program(s)?))) {
        eprintln!("error: `{stem}` needs {program}, which is not on PATH; install it to bless `{stem}`");
        return Err(Failed);
    }
    build(session)?;
    let mut result = Ok(());
    for stem in &stems {
        let step = session.step(&format!("bless {stem}"), |session| {
            let output = run_example(session, stem)?;
            let path = expected_path(&root, stem);
            let write = fs::create_dir_all(path.parent().expect("has a parent"))
                .and_then(|()| fs::write(&path, &output.stdout));
            match write {
                Ok(()) => {
                    println!(
                        "    wrote {} ({} lines)",
                        relative(&root, &path),
                        output.stdout.lines().count()
                    );
                    Ok(())
                }
                Err(err) => {
                    eprintln!("error: cannot write {}: {err}", relative(&root, &path));
                    Err(Failed)
                }
            }
        });
        result = result.and(step);
    }
    result
}

/// What a successful run printed.
#[derive(Debug)]
struct Output {
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs the built example `stem`; fails (printing why) when it cannot start,
/// times out, exits unsuccessfully or leaves processes behind.
fn run_example(session: &Session, stem: &str) -> Result<Output, Failed> {
    let exe = session.target_dir().join("debug/examples").join(stem);
    let mut cmd = Command::new(&exe);
    cmd.current_dir(session.root()).env("RUST_BACKTRACE", "1");
    println!("    $ {} (timeout {} s)", session.display(&cmd), TIMEOUT.as_secs());
    let run = run_captured(cmd, TIMEOUT, GRACE);
    let problem = match &run.outcome {
        Outcome::Exited(status) if status.success() => {
            return Ok(Output {
                stdout: run.stdout,
                stderr: run.stderr,
                elapsed: run.elapsed,
            });
        }
        Outcome::Exited(status) => format!("`{stem}` failed: {status}"),
        Outcome::NotStarted(err) if err.kind() == std::io::ErrorKind::NotFound => format!(
            "cannot start {}: {err}\n       (is `examples/{stem}.rs` listed as an `[[example]]` \
             in examples/Cargo.toml?)",
            exe.display()
        ),
        Outcome::NotStarted(err) => format!("cannot start {}: {err}", exe.display()),
        Outcome::TimedOut => format!(
            "`{stem}` did not finish within {} s; killed its process group",
            TIMEOUT.as_secs()
        ),
        Outcome::LeftProcesses(status) => format!(
            "`{stem}` exited ({status}) but left processes running in its process group \
             for more than {} s (killed them); every child must be joined or reaped",
            GRACE.as_secs()
        ),
    };
    eprintln!("error: {problem}");
    if !matches!(run.outcome, Outcome::NotStarted(_)) {
        print_stream("stdout", &run.stdout);
        print_stream("stderr", &run.stderr);
    }
    Err(Failed)
}

/// How a captured run ended.
#[derive(Debug)]
enum Outcome {
    /// It exited and its process group is empty.
    Exited(ExitStatus),
    NotStarted(std::io::Error),
    /// Still running at the timeout; its process group was killed.
    TimedOut,
    /// It exited, but processes of its group (or holding its stdout/stderr)
    /// were still there after the grace period; they were killed.
    LeftProcesses(ExitStatus),
}

/// A captured run: how it ended and what it printed (as far as it got).
#[derive(Debug)]
struct Run {
    outcome: Outcome,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs `cmd` in its own process group with stdin null and stdout and stderr
/// captured. After `timeout` the whole group is killed; processes of the group
/// still alive `grace` after the leader exited are killed too.
fn run_captured(mut cmd: Command, timeout: Duration, grace: Duration) -> Run {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            return Run {
                outcome: Outcome::NotStarted(err),
                stdout: String::new(),
                stderr: String::new(),
                elapsed: start.elapsed(),
            };
        }
    };
    let pgid = child.id();
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());

    let exited = wait_in_background(child);
    let status = match exited.recv_timeout(timeout) {
        Ok(Ok(status)) => Some(status),
        Ok(Err(err)) => {
            eprintln!("error: waiting for the example: {err}");
            None
        }
        Err(_) => None,
    };
    let elapsed = start.elapsed();
    let outcome = match status {
        None => {
            // The group includes the leader; its waiter thread then reaps it.
            kill_group(pgid);
            let _ = exited.recv_timeout(Duration::from_secs(10));
            Outcome::TimedOut
        }
        Some(status) => {
            // Its stdout and stderr close when the last process holding them
            // (the leader, or children it left) is gone.
            let deadline = Instant::now() + grace;
            let mut leftovers = !wait_closed(&stdout, deadline) || !wait_closed(&stderr, deadline);
            // A member that closed its pipes may still be on its way out for
            // a moment; one that keeps running past the grace period is left
            // behind. (Exited members waiting for init to reap them are not.)
            while !leftovers && group_alive(pgid) {
                if Instant::now() >= deadline {
                    leftovers = true;
                } else {
                    thread::yield_now();
                }
            }
            if leftovers {
                kill_group(pgid);
                Outcome::LeftProcesses(status)
            } else {
                Outcome::Exited(status)
            }
        }
    };
    // Killed processes release the pipes at once; one that left the group
    // and still holds them would keep us waiting, so the wait is bounded.
    let until = Instant::now() + Duration::from_secs(2);
    Run {
        outcome,
        stdout: collect(&stdout, until),
        stderr: collect(&stderr, until),
        elapsed,
    }
}

/// A pipe being read to its end on a thread.
#[derive(Debug)]
struct Reader {
    done: mpsc::Receiver<()>,
    text: Arc<Mutex<Vec<u8>>>,
}

/// Reads a pipe to its end on a thread, keeping what arrived so far visible.
fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> Reader {
    let (tx, done) = mpsc::channel();
    let text = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut pipe) = pipe {
        let text = Arc::clone(&text);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => text
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]),
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
    }
    // Without a pipe, `tx` is dropped here and the reader counts as closed.
    Reader { done, text }
}

/// Whether the pipe reached its end before `deadline`.
fn wait_closed(reader: &Reader, deadline: Instant) -> bool {
    match reader
        .done
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
        Err(mpsc::RecvTimeoutError::Timeout) => false,
    }
}

/// What was read from the pipe, waiting for its end until `deadline`.
fn collect(reader: &Reader, deadline: Instant) -> String {
    wait_closed(reader, deadline);
    let bytes = reader.text.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits for `child` on a thread of its own; the receiver gets its status,
/// so the caller can wait with a timeout (`recv_timeout`).
pub(crate) fn wait_in_background(mut child: Child) -> mpsc::Receiver<std::io::Result<ExitStatus>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx
}

/// Sends SIGKILL to every process in group `pgid` (std has no killpg, and
/// xtask has no dependencies, so this runs kill(1)).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Whether any running process is left in group `pgid` (from `/proc`; an
/// exited one waiting to be reaped does not count). The group id cannot be
/// reused while a member lives, so this does not see strangers.
fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else { return false };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| {
            // Fields after the command name, which sits in parentheses and may
            // hold spaces: state, ppid, pgrp.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
            pgrp == Some(pgid) && state != "Z" && state != "X"
        })
}

fn print_stream(name: &str, text: &str) {
    if text.trim().is_empty() {
        eprintln!("       ({name} was empty)");
        return;
    }
    eprintln!("------ {name} ------");
    eprint!("{text}");
    if !text.ends_with('\n') {
        eprintln!();
    }
    eprintln!("------ end of {name} ------");
}

// ---------------------------------------------------------------------------
// Matching.

/// The lines of `text`, trimmed at the end, without trailing blank lines.
fn normalized_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|line| line.is_empty()) {
        lines.pop();
    }
    lines
}

/// Whether `actual` matches the expected line `pattern`, where `[..]` matches
/// any run of characters.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split(WILDCARD).collect();
    let (first, rest) = parts.split_first().expect("split yields at least one part");
    let Some((last, middle)) = rest.split_last() else {
        return pattern == actual;
    };
    let Some(mut remaining) = actual.strip_prefix(first) else {
        return false;
    };
    // Taking each middle part at its leftmost place leaves the most room for
    // the ones after it.
    for part in middle {
        match remaining.find(part) {
            Some(pos) => remaining = &remaining[pos + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

/// Compares an example's stdout with its expected file; on a mismatch the
/// error is a readable report.
pub(crate) fn compare(expected: &str, actual: &str) -> Result<(), String> {
    let mut expected = normalized_lines(expected);
    let actual = normalized_lines(actual);
    if expected.first() == Some(&UNORDERED) {
        expected.remove(0);
        compare_unordered(&expected, &actual)
    } else {
        compare_ordered(&expected, &actual)
    }
}

fn compare_ordered(expected: &[&str], actual: &[&str]) -> Result<(), String> {
    if expected.len() == actual.len() && expected.iter().zip(actual).all(|(e, a)| line_matches(e, a)) {
        return Ok(());
    }
    let mut report = String::from("       diff (`-` expected, `+` actual, ` ` both):\n");
    for line in diff(expected, actual) {
        let (mark, text) = match line {
            DiffLine::Both(text) => (' ', text),
            DiffLine::Expected(text) => ('-', text),
            DiffLine::Actual(text) => ('+', text),
        };
        report.push_str(&format!("       {mark} {text}\n"));
    }
    Err(report)
}

#[derive(Debug, PartialEq, Eq)]
enum DiffLine<'a> {
    Both(&'a str),
    Expected(&'a str),
    Actual(&'a str),
}

/// A line diff from a longest common subsequence, with "equal" meaning the
/// actual line matches the expected pattern.
fn diff<'a>(expected: &[&'a str], actual: &[&'a str]) -> Vec<DiffLine<'a>> {
    let (n, m) = (expected.len(), actual.len());
    // Outputs are short; for a huge one, fall back to listing both sides.
    if n.saturating_mul(m) > 4_000_000 {
        let mut out: Vec<_> = expected.iter().map(|e| DiffLine::Expected(e)).collect();
        out.extend(actual.iter().map(|a| DiffLine::Actual(a)));
        return out;
    }
    // lcs[i][j]: the longest common subsequence of expected[i..] and actual[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if line_matches(expected[i], actual[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && line_matches(expected[i], actual[j]) {
            out.push(DiffLine::Both(actual[j]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // On a tie the expected line goes first, as in `diff -u`.
            out.push(DiffLine::Expected(expected[i]));
            i += 1;
        } else {
            out.push(DiffLine::Actual(actual[j]));
            j += 1;
        }
    }
    out
}

fn compare_unordered(expected: &[&str], actual: &[&str]) -> Result<(), String> {
    let pairing = max_matching(expected, actual);
    let matched = pairing.iter().filter(|p| p.is_some()).count();
    if matched == expected.len() && matched == actual.len() {
        return Ok(());
    }
    let mut report = format!(
        "       unordered comparison: {} expected lines, {} actual lines, {matched} paired\n",
        expected.len(),
        actual.len()
    );
    let mut used = vec![false; actual.len()];
    for j in pairing.iter().flatten() {
        used[*j] = true;
    }
    let unmatched_expected: Vec<&str> = expected
        .iter()
        .zip(&pairing)
        .filter(|(_, p)| p.is_none())
        .map(|(e, _)| *e)
        .collect();
    let unmatched_actual: Vec<&str> = actual
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(a, _)| *a)
        .collect();
    if !unmatched_expected.is_empty() {
        report.push_str("       expected lines with no actual line to match:\n");
        for line in unmatched_expected {
            report.push_str(&format!("       - {line}\n"));
        }
    }
    if !unmatched_actual.is_empty() {
        report.push_str("       actual lines that no expected line matched:\n");
        for line in unmatched_actual {
            report.push_str(&format!("       + {line}\n"));
        }
    }
    Err(report)
}

/// A maximum pairing of expected patterns with distinct actual lines (Kuhn's
/// augmenting paths), so that `[..]` lines cannot steal a line a more specific
/// pattern needs. Entry `i` is the actual line paired with `expected[i]`.
fn max_matching(expected: &[&str], actual: &[&str]) -> Vec<Option<usize>> {
    let edges: Vec<Vec<usize>> = expected
        .iter()
        .map(|e| (0..actual.len()).filter(|&j| line_matches(e, actual[j])).collect())
        .collect();
    // owner[j]: the expected line actual line j is paired with.
    let mut owner: Vec<Option<usize>> = vec![None; actual.len()];

    fn augment(i: usize, edges: &[Vec<usize>], owner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
        for &j in &edges[i] {
            if seen[j] {
                continue;
            }
            seen[j] = true;
            if owner[j].is_none_or(|k| augment(k, edges, owner, seen)) {
                owner[j] = Some(i);
                return true;
            }
        }
        false
    }

    for i in 0..expected.len() {
        let mut seen = vec![false; actual.len()];
        augment(i, &edges, &mut owner, &mut seen);
    }
    let mut pairing = vec![None; expected.len()];
    for (j, i) in owner.iter().enumerate() {
        if let Some(i) = i {
            pairing[*i] = Some(j);
        }
    }
    pairing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_lines() {
        assert!(line_matches("hello", "hello"));
        assert!(!line_matches("hello", "hello!"));
        assert!(line_matches("pid [..]", "pid 4242"));
        assert!(line_matches("pid [..]", "pid "));
        assert!(!line_matches("pid [..]", "pi 4242"));
        assert!(line_matches("[..] done", "worker 3 done"));
        assert!(!line_matches("[..] done", "worker 3 done."));
        assert!(line_matches("[..]", ""));
        assert!(line_matches("[..]", "anything at all"));
    }

    #[test]
    fn several_wildcards_in_a_line() {
        let pattern = "worker [..] got [..] items in [..] ms";
        assert!(line_matches(pattern, "worker 1 got 10 items in 3.5 ms"));
        assert!(line_matches(pattern, "worker got got got items in items in ms ms"));
        assert!(!line_matches(pattern, "worker 1 got 10 things in 3.5 ms"));
        assert!(!line_matches(pattern, "worker 1 got 10 items in 3.5 s"));
        assert!(line_matches("[..]-[..]", "a-b"));
        assert!(line_matches("[..][..]x", "yx"));
        // The prefix and the suffix may not share characters.
        assert!(!line_matches("ab[..]ba", "aba"));
        assert!(line_matches("ab[..]ba", "abba"));
    }

    #[test]
    fn ordered_comparison() {
        assert_eq!(compare("a\nb [..]\n", "a\nb 12\n"), Ok(()));
        // Trailing whitespace, CRLF and trailing blank lines do not count.
        assert_eq!(compare("a\nb\n\n", "a  \r\nb\r\n"), Ok(()));
        // Leading whitespace and order do.
        assert!(compare("a\n", " a\n").is_err());
        assert!(compare("a\nb\n", "b\na\n").is_err());
        assert!(compare("a\n", "a\na\n").is_err());
        assert!(compare("a\nb\n", "a\n").is_err());
    }

    #[test]
    fn ordered_diff_is_readable() {
        let report = compare("one\ntwo\nthree\n", "one\n2\nthree\nfour\n").unwrap_err();
        let body: Vec<&str> = report.lines().skip(1).map(str::trim).collect();
        assert_eq!(body, ["one", "- two", "+ 2", "three", "+ four"]);
    }

    #[test]
    fn unordered_comparison() {
        let expected = "#unordered\nworker 1 done\nworker 2 done\nall done\n";
        assert_eq!(compare(expected, "worker 2 done\nall done\nworker 1 done\n"), Ok(()));
        assert!(compare(expected, "worker 2 done\nall done\nworker 3 done\n").is_err());
        // `#unordered` only counts as the first line.
        assert!(compare("a\n#unordered\nb\n", "b\na\n").is_err());
        // Without the marker the same lines must come in order.
        assert!(compare("worker 1 done\nworker 2 done\n", "worker 2 done\nworker 1 done\n").is_err());
    }

    #[test]
    fn unordered_wildcards_pair_exactly() {
        // A greedy pairing would give "x" to `[..]` and then fail on "x".
        let expected = "#unordered\n[..]\nx\n";
        assert_eq!(compare(expected, "x\ny\n"), Ok(()));
        let expected = "#unordered\na[..]\n[..]b\n";
        assert_eq!(compare(expected, "ab\nac\n"), Ok(()));
        assert!(compare(expected, "ac\nad\n").is_err());
    }

    #[test]
    fn unordered_counts_must_agree() {
        let expected = "#unordered\nping\nping\npong\n";
        assert_eq!(compare(expected, "ping\npong\nping\n"), Ok(()));
        let missing = compare(expected, "ping\npong\n").unwrap_err();
        assert!(missing.contains("3 expected lines, 2 actual lines"), "{missing}");
        assert!(missing.contains("- ping"), "{missing}");
        let extra = compare(expected, "ping\nping\npong\npong\n").unwrap_err();
        assert!(extra.contains("+ pong"), "{extra}");
        let wrong = compare("#unordered\n[..] ok\n[..] ok\n", "a ok\nb fail\n").unwrap_err();
        assert!(wrong.contains("- [..] ok") && wrong.contains("+ b fail"), "{wrong}");
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    const LONG: Duration = Duration::from_secs(20);

    #[test]
    fn captured_run_success() {
        let run = run_captured(sh("echo out; echo err >&2; read x; echo \"[$x]\""), LONG, LONG);
        assert!(matches!(run.outcome, Outcome::Exited(s) if s.success()), "{run:?}");
        // stdin is null, so `read` sees end of file at once.
        assert_eq!(run.stdout, "out\n[]\n");
        assert_eq!(run.stderr, "err\n");
    }

    #[test]
    fn captured_run_failure_keeps_output() {
        let run = run_captured(sh("echo partial; exit 3"), LONG, LONG);
        assert!(
            matches!(run.outcome, Outcome::Exited(s) if s.code() == Some(3)),
            "{run:?}"
        );
        assert_eq!(run.stdout, "partial\n");
    }

    #[test]
    fn captured_run_timeout_kills_the_group() {
        let start = Instant::now();
        let run = run_captured(
            sh("echo started; sleep 30 & sleep 30"),
            Duration::from_millis(300),
            LONG,
        );
        assert!(matches!(run.outcome, Outcome::TimedOut), "{run:?}");
        assert_eq!(run.stdout, "started\n");
        // Had the background sleep survived, it would hold stdout open and
        // collecting it would have waited.
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn captured_run_reports_leftover_processes() {
        // A leftover holding stdout open.
        let run = run_captured(sh("sleep 30 & echo bye"), LONG, Duration::from_millis(300));
        assert!(matches!(run.outcome, Outcome::LeftProcesses(_)), "{run:?}");
        assert_eq!(run.stdout, "bye\n");
        // A leftover with its stdio closed, still in the group.
        let run = run_captured(
            sh("sleep 30 >/dev/null 2>&1 </dev/null & echo bye"),
            LONG,
            Duration::from_millis(300),
        );
        assert!(matches!(run.outcome, Outcome::LeftProcesses(_)), "{run:?}");
        // A short-lived child that is gone within the grace period is fine.
        let run = run_captured(sh("sleep 0.1 >/dev/null & echo bye"), LONG, LONG);
        assert!(matches!(run.outcome, Outcome::Exited(s) if s.success()), "{run:?}");
    }

    #[test]
    fn captured_run_not_started() {
        let run = run_captured(Command::new("/nonexistent/example"), LONG, LONG);
        assert!(matches!(run.outcome, Outcome::NotStarted(_)), "{run:?}");
    }

    #[test]
    fn programs_on_path() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-for-xtask"));
        // Only the listed examples need anything.
        assert_eq!(missing_program("tour"), None);
        assert_eq!(missing_program("cluster_tour").is_some(), !on_path("redis-server"));
    }

    #[test]
    fn empty_outputs() {
        assert_eq!(compare("", ""), Ok(()));
        assert_eq!(compare("#unordered\n", "\n"), Ok(()));
        assert!(compare("", "something\n").is_err());
    }
}
