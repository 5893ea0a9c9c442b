//! Who this process is (name, identity, daemon flag, parent), and the
//! children it started.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

use std::os::fd::{AsFd, OwnedFd};

use mp_sys::process::PidFd;

use crate::handle::ChildState;

/// This process as the library sees it.
#[derive(Clone, Debug)]
pub(crate) struct Me {
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    /// Started by this library (a child), as opposed to the main process.
    pub(crate) is_child: bool,
    pub(crate) parent: Option<(u32, String)>,
}

static ME: Mutex<Option<Me>> = Mutex::new(None);
static PARENT: Mutex<Option<Arc<PidFd>>> = Mutex::new(None);
static COUNTER: AtomicU32 = AtomicU32::new(1);
static CHILDREN: Mutex<Vec<Arc<ChildState>>> = Mutex::new(Vec::new());
/// In a fork server's child: where to write the exit code as it exits.
static STATUS: Mutex<Option<OwnedFd>> = Mutex::new(None);

pub(crate) fn set_status_pipe(fd: OwnedFd) {
    *lock(&STATUS) = Some(fd);
}

/// Tells the parent of a fork server's child its exit code before the
/// process ends (the server reports it again after reaping).
pub(crate) fn report_exit(code: i32) {
    if let Some(fd) = lock(&STATUS).take() {
        let _ = mp_sys::fd::write_all(fd.as_fd(), &code.to_le_bytes());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn me() -> Me {
    lock(&ME).clone().unwrap_or_else(|| Me {
        name: "MainProcess".into(),
        identity: Vec::new(),
        daemon: false,
        is_child: false,
        parent: None,
    })
}

/// Makes this (new) process the child described: called first thing in a
/// spawned or fork-server child.
pub(crate) fn become_child(name: String, identity: Vec<u32>, daemon: bool, parent: (u32, String)) {
    let watch = PidFd::open(parent.0).ok().map(Arc::new);
    switch_to(
        Me {
            name,
            identity,
            daemon,
            is_child: true,
            parent: Some(parent),
        },
        watch,
    );
}

/// A pidfd of this process, opened once and kept, so a forked child can
/// take it over as its parent's watch without a system call.
static SELF_WATCH: Mutex<Option<Arc<PidFd>>> = Mutex::new(None);

/// In the parent, before a fork: makes sure [`SELF_WATCH`] is open.
pub(crate) fn prepare_fork() {
    let mut w = lock(&SELF_WATCH);
    if w.is_none() {
        *w = PidFd::open(mp_sys::process::pid()).ok().map(Arc::new);
    }
}

/// Makes a forked child the child described. `me` was built by the parent
/// before the fork, and the parent's watch is the inherited [`SELF_WATCH`],
/// so the child allocates nothing and makes no system call here: every page
/// a forked child writes is a copy-on-write fault (about 2 µs each here),
/// and this switch used to cost seven of them.
pub(crate) fn become_forked_child(me: Me) {
    let watch = lock(&SELF_WATCH).take();
    switch_to(me, watch);
}

fn switch_to(me: Me, watch: Option<Arc<PidFd>>) {
    // The parent's values are forgotten, not dropped: dropping them would
    // write to the parent's heap pages (freeing memory, decrementing
    // reference counts), each write a page copy, for memory this process
    // never uses again.
    std::mem::forget(std::mem::replace(&mut *lock(&PARENT), watch));
    std::mem::forget(lock(&ME).replace(me));
    COUNTER.store(1, Ordering::Release);
    // A forked child inherits its parent's list of children; they are not
    // its own, and their descriptors (pidfds, status pipes) are closed here
    // so that no child holds a sibling's.
    let mut children = lock(&CHILDREN);
    if !children.is_empty() {
        for c in children.iter() {
            c.disown();
        }
        std::mem::forget(std::mem::take(&mut *children));
    }
}

/// The identity and default name of the next child: `Process-3`, or
/// `Process-1:2` for a child's child.
pub(crate) fn next_child() -> (Vec<u32>, String) {
    let mut identity = me().identity;
    identity.push(COUNTER.fetch_add(1, Ordering::AcqRel));
    let name = format!(
        "Process-{}",
        identity.iter().map(u32::to_string).collect::<Vec<_>>().join(":")
    );
    (identity, name)
}

pub(crate) fn register(child: Arc<ChildState>) {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        // Python's behaviour when the main process returns: terminate the
        // daemonic children, join the others.
        let _ = mp_sys::process::at_exit(finalize_children);
    });
    lock(&CHILDREN).push(child);
}

pub(crate) fn forget_reaped() {
    lock(&CHILDREN).retain(|c| c.exitcode().is_none());
}

/// Terminates the daemonic children and joins the others (at exit of the
/// main process, and at the end of every child).
pub(crate) fn finalize_children() {
    let children = std::mem::take(&mut *lock(&CHILDREN));
    for c in &children {
        if c.daemon && c.exitcode().is_none() {
            let _ = c.signal(mp_sys::signal::Signal::TERM);
        }
    }
    for c in &children {
        // Daemonic children were asked to stop; give them a moment, then kill.
        if c.daemon && c.wait_timeout(Duration::from_secs(1)).ok().flatten().is_none() {
            let _ = c.signal(mp_sys::signal::Signal::KILL);
        }
        let _ = c.wait();
    }
    crate::hooks::run_at_exit();
}

/// A process known to this one: itself, its parent, or a child.
///
/// ```
/// let me = mp_process::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert!(me.is_alive());
/// assert!(mp_process::parent_process().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
    daemon: bool,
    watch: Watch,
}

#[derive(Clone, Debug)]
enum Watch {
    Me,
    Pid(Option<Arc<PidFd>>),
    Child(Arc<ChildState>),
}

impl ProcessInfo {
    /// The process's name (`MainProcess` for the root).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it is daemonic.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Whether it is still running (for the parent: turns false when it dies).
    pub fn is_alive(&self) -> bool {
        match &self.watch {
            Watch::Me => true,
            Watch::Pid(fd) => fd.as_ref().is_some_and(|f| f.is_alive()),
            Watch::Child(c) => c.is_alive(),
        }
    }
}

/// This process (Python's `multiprocessing.current_process()`).
pub fn current_process() -> ProcessInfo {
    let me = me();
    ProcessInfo {
        name: me.name,
        pid: mp_sys::process::pid(),
        daemon: me.daemon,
        watch: Watch::Me,
    }
}

/// The process that started this one, or `None` in the main process.
///
/// ```
/// assert!(mp_process::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    let (pid, name) = me().parent?;
    Some(ProcessInfo {
        name,
        pid,
        daemon: false,
        watch: Watch::Pid(lock(&PARENT).clone()),
    })
}

/// The children of this process that are still running; finished ones are
/// reaped by the call (Python's `active_children()`).
///
/// ```
/// assert!(mp_process::active_children().is_empty());
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let mut children = lock(&CHILDREN);
    children.retain(|c| c.is_alive());
    children
        .iter()
        .map(|c| ProcessInfo {
            name: c.name.clone(),
            pid: c.pid,
            daemon: c.daemon,
            watch: Watch::Child(Arc::clone(c)),
        })
        .collect()
}

/// Ends this process with `code` (Python's `sys.exit(n)` inside a child).
///
/// In a child started by this library it joins the child's own children
/// first (and terminates its daemonic ones), flushes stdout, and exits with
/// `code`, which becomes its `exitcode`. In the main process it is
/// `std::process::exit`.
///
/// ```no_run
/// mp_process::exit(3);
/// ```
pub fn exit(code: i32) -> ! {
    use std::io::Write;
    if me().is_child {
        finalize_children();
        report_exit(code);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        mp_sys::process::exit_now(code)
    }
    std::process::exit(code)
}
