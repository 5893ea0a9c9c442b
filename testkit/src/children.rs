//! Children that a failing test cannot leave behind, and checks of how long
//! a call waited.

use std::time::{Duration, Instant};

use mp_process::Process;

use crate::{PATIENCE, check, finish, ok};

/// A child that is killed and reaped when dropped while still running, so a
/// failing test does not leave a process behind for the next one.
///
/// ```
/// let mut p = mp_testkit::Reaped(mp_process::Process::new(|| {}, ()));
/// p.start().unwrap();
/// assert_eq!(mp_testkit::finish(&mut p), Ok(0));
/// ```
#[derive(Debug)]
pub struct Reaped(pub Process);

impl std::ops::Deref for Reaped {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.pid().is_some() && self.0.exitcode().is_none() {
            let _ = self.0.kill();
            let _ = self.0.join_timeout(PATIENCE);
        }
    }
}

/// Several children started by one test, each [`Reaped`] when dropped.
///
/// ```
/// let mut r = mp_testkit::Reaper::new();
/// r.start(mp_process::Process::new(|| {}, ())).unwrap();
/// assert_eq!(r.finish_all(), Ok(()));
/// ```
#[derive(Debug, Default)]
pub struct Reaper(pub Vec<Reaped>);

impl Reaper {
    /// No children yet.
    pub fn new() -> Reaper {
        Reaper(Vec::new())
    }

    /// Starts `p` and keeps it.
    pub fn start(&mut self, mut p: Process) -> Result<(), String> {
        ok(p.start())?;
        self.0.push(Reaped(p));
        Ok(())
    }

    /// Joins every child (each within [`PATIENCE`]) and checks each exited with 0.
    pub fn finish_all(&mut self) -> Result<(), String> {
        self.0.iter_mut().try_for_each(|p| joined_ok(p))
    }
}

/// Joins a started child within [`PATIENCE`] and checks it exited with 0.
pub fn joined_ok(p: &mut Process) -> Result<(), String> {
    let code = finish(p)?;
    check(code == 0, format!("{} exited with {code}", p.get_name()))
}

/// What "at once" means for a call that must not wait: a generous bound, as
/// the machine is shared.
pub const AT_ONCE: Duration = Duration::from_secs(2);

/// Runs `f` and says how long it took.
///
/// ```
/// let (v, took) = mp_testkit::timed(|| 7);
/// assert_eq!(v, 7);
/// assert!(took < mp_testkit::AT_ONCE);
/// ```
pub fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let t0 = Instant::now();
    let r = f();
    (r, t0.elapsed())
}

/// Checks that a call that must return at once took less than [`AT_ONCE`].
pub fn at_once(what: &str, took: Duration) -> Result<(), String> {
    check(took < AT_ONCE, format!("{what} took {took:?}, expected no wait"))
}

/// Checks that a call that waits `t` before giving up took about that long:
/// at least `t`, and less than `t` + [`AT_ONCE`].
pub fn about(what: &str, took: Duration, t: Duration) -> Result<(), String> {
    check(
        took >= t && took < t + AT_ONCE,
        format!("{what} took {took:?}, expected about {t:?}"),
    )
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` descends from this process.
fn descends_from_me(pid: u32) -> bool {
    let me = std::process::id();
    let mut p = pid;
    for _ in 0..64 {
        match parent_of(p) {
            Some(pp) if pp == me => return true,
            Some(pp) if pp > 1 => p = pp,
            _ => return false,
        }
    }
    false
}

/// The processes this one has left behind: its descendants, and any
/// process running this executable or an executable `also` accepts (copies
/// of a test binary started as worker hosts, say), except itself and
/// `spare`.
pub fn strays(spare: &[u32], also: impl Fn(&std::path::Path) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let exe = std::env::current_exe().ok();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| {
                    let runs = std::fs::read_link(format!("/proc/{pid}/exe"))
                        .is_ok_and(|p| Some(&p) == exe.as_ref() || also(&p));
                    pid != me && !spare.contains(&pid) && (runs || descends_from_me(pid))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (at most 10 s) until no process is left behind ([`strays`]), then
/// checks that no child is an unreaped zombie.
///
/// ```no_run
/// // The last check of a test binary whose worker hosts are copies of it
/// // named `worker-copy`.
/// mp_testkit::nothing_left_behind(&[], |exe| exe.ends_with("worker-copy")).unwrap();
/// ```
pub fn nothing_left_behind(spare: &[u32], also: impl Fn(&std::path::Path) -> bool) -> Result<(), String> {
    let gone = crate::until(Duration::from_secs(10), || strays(spare, &also).is_empty());
    check(gone, format!("processes left behind: {:?}", strays(spare, &also)))?;
    check(crate::zombie_children() == 0, "no zombies")
}
