//! Running steps: each prints `==> name` and its command, is timed, and lands in
//! the summary table printed at the end.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A step failed; the details were printed when it happened.
#[derive(Debug)]
pub(crate) struct Failed;

/// The outcome of one step, for the summary table.
#[derive(Debug)]
struct StepResult {
    name: String,
    passed: bool,
    elapsed: Duration,
}

/// Where the workspace is, how to call cargo, and the steps run so far.
#[derive(Debug)]
pub(crate) struct Session {
    root: PathBuf,
    cargo: OsString,
    target_dir: PathBuf,
    /// `CARGO_TARGET_DIR` made absolute, handed to every cargo we start, so
    /// that a relative value means the same directory for them and for us.
    target_dir_env: Option<PathBuf>,
    steps: Vec<StepResult>,
}

impl Session {
    /// Finds the workspace root (the parent of `xtask/`) and cargo (`$CARGO`).
    pub(crate) fn new() -> Session {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives one level below the workspace root")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir_env = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|dir| !dir.is_empty())
            .map(|dir| {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    // Cargo reads a relative value against its working directory,
                    // which for `cargo xtask` was ours.
                    std::env::current_dir().map_or(dir.clone(), |cwd| cwd.join(&dir))
                }
            });
        let target_dir = target_dir_env.clone().unwrap_or_else(|| root.join("target"));
        Session {
            root,
            cargo,
            target_dir,
            target_dir_env,
            steps: Vec::new(),
        }
    }

    /// The workspace root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Cargo's target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
    pub(crate) fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// `cargo <args>`, run from the workspace root.
    pub(crate) fn cargo<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.cargo);
        cmd.args(args).current_dir(&self.root);
        if let Some(dir) = &self.target_dir_env {
            cmd.env("CARGO_TARGET_DIR", dir);
        }
        cmd
    }

    /// Runs `f` as a step called `name`: prints the header, times it and
    /// records whether it passed.
    pub(crate) fn step(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Session) -> Result<(), Failed>,
    ) -> Result<(), Failed> {
        println!("\n==> {name}");
        let start = Instant::now();
        let result = f(self);
        let elapsed = start.elapsed();
        match &result {
            Ok(()) => println!("--- {name}: ok ({:.1} s)", elapsed.as_secs_f64()),
            Err(Failed) => println!("--- {name}: FAILED ({:.1} s)", elapsed.as_secs_f64()),
        }
        self.steps.push(StepResult {
            name: name.to_owned(),
            passed: result.is_ok(),
            elapsed,
        });
        result
    }

    /// Runs `cmd` as a step called `name`, with the terminal as its stdio.
    pub(crate) fn run(&mut self, name: &str, mut cmd: Command) -> Result<(), Failed> {
        self.step(name, |session| session.exec(&mut cmd))
    }

    /// Prints `cmd` and runs it with the terminal as its stdio; it fails
    /// unless the command exits with status 0.
    pub(crate) fn exec(&self, cmd: &mut Command) -> Result<(), Failed> {
        println!("    $ {}", self.display(cmd));
        match cmd.status() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => {
                eprintln!("error: `{}` failed: {status}", self.display(cmd));
                Err(Failed)
            }
            Err(err) => {
                eprintln!("error: could not start `{}`: {err}", self.display(cmd));
                Err(Failed)
            }
        }
    }

    /// A shell-like rendering of `cmd`: the environment it sets, then the
    /// program (`cargo` for `$CARGO`) and its arguments.
    pub(crate) fn display<'a>(&'a self, cmd: &'a Command) -> impl fmt::Display + 'a {
        DisplayCommand { session: self, cmd }
    }

    /// Whether any step so far failed.
    pub(crate) fn any_failed(&self) -> bool {
        self.steps.iter().any(|step| !step.passed)
    }

    /// Prints the table of steps with their result and duration.
    pub(crate) fn print_summary(&self) {
        if self.steps.is_empty() {
            return;
        }
        let width = self
            .steps
            .iter()
            .map(|step| step.name.len())
            .max()
            .unwrap_or(0)
            .max("total".len());
        println!("\n==> summary");
        println!("    {:<width$}  result  seconds", "step");
        let mut total = Duration::ZERO;
        for step in &self.steps {
            total += step.elapsed;
            let result = if step.passed { "ok" } else { "FAIL" };
            println!(
                "    {:<width$}  {result:<6}  {:>7.1}",
                step.name,
                step.elapsed.as_secs_f64()
            );
        }
        let failed = self.steps.iter().filter(|step| !step.passed).count();
        let verdict = if failed == 0 { "ok" } else { "FAIL" };
        println!("    {:<width$}  {verdict:<6}  {:>7.1}", "total", total.as_secs_f64());
        if failed > 0 {
            println!("    {failed} of {} steps failed", self.steps.len());
        }
    }
}

#[derive(Debug)]
struct DisplayCommand<'a> {
    session: &'a Session,
    cmd: &'a Command,
}

impl fmt::Display for DisplayCommand<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in self.cmd.get_envs() {
            if key == "CARGO_TARGET_DIR" && self.session.target_dir_env.is_some() {
                continue; // Passed through from the user's environment.
            }
            if let Some(value) = value {
                write!(f, "{}={} ", key.to_string_lossy(), quote(value))?;
            }
        }
        let program = self.cmd.get_program();
        if program == self.session.cargo {
            f.write_str("cargo")?;
        } else {
            f.write_str(&quote(program))?;
        }
        for arg in self.cmd.get_args() {
            write!(f, " {}", quote(arg))?;
        }
        Ok(())
    }
}

/// Quotes `s` for a shell when it holds anything but plain characters.
fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A path relative to `root` with `/` separators, for messages.
pub(crate) fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(OsStr::new("--test-threads=2")), "--test-threads=2");
        assert_eq!(quote(OsStr::new("a b")), "'a b'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(quote(OsStr::new("")), "''");
    }
}
