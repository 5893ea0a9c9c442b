//! CPython's own multiprocessing tests, ported (see docs/conformance.md):
//! the process part (`_TestProcess`, `_TestSubclassingProcess`, `_TestQueue`,
//! `TestSimpleQueue`, `TestStartMethod`). Its own single-threaded main,
//! because children may be forked; `cargo xtask test` runs it once per
//! `MP_START_METHOD`.
//!
//! Each test is named `<CPython class>::<method>` and ports that method's
//! intent with this library's API; CPython's sleeps are shortened to tens of
//! milliseconds and its waits run on events with a timeout. Tests that need
//! this process's standard streams broken or captured re-run this binary
//! with `CPYTHON_PROCESS_SCENARIO` set.

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use mp_sys::signal::Signal;
use mp_testkit::{
    Harness, METHODS, PATIENCE, Reaped, Reaper, about, at_once, check, finish, ok, timed, until, zombie_children,
};
use multiprocessing::{
    Connection, Context, Event, GetError, JoinableQueue, Process, ProcessError, PutError, Queue, Run, SimpleQueue,
    StartMethod, active_children, connection, cpu_count, current_process, exit, get_context, get_start_method,
    parent_process, pipe, pipe_simplex, set_start_method,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

type Check = Result<(), String>;

/// CPython's `DELTA`: a short pause that is the work of a child.
const DELTA: Duration = Duration::from_millis(10);
/// CPython's `TIMEOUT1` and `TIMEOUT3`, shortened.
const TIMEOUT1: Duration = Duration::from_millis(50);
const TIMEOUT3: Duration = Duration::from_millis(30);
// ---- _TestProcess ------------------------------------------------------------

/// Whether a child with pid `pid` is among `active_children()`.
fn is_active(pid: Option<u32>) -> bool {
    pid.is_some_and(|pid| active_children().iter().any(|c| c.pid() == pid))
}

fn process_test_current() -> Check {
    let current = current_process();
    check(current.is_alive(), "the current process is not alive")?;
    check(!current.is_daemon(), "the main process is daemonic")?;
    check(
        current.pid() == std::process::id(),
        format!("pid {} instead of {}", current.pid(), std::process::id()),
    )?;
    check(current.name() == "MainProcess", format!("name {}", current.name()))
}

/// Sends back the argument it was given.
fn args_child<T: Serialize + DeserializeOwned + Send + 'static>(q: Queue<T>, arg: T) -> Check {
    ok(q.put(arg))
}

/// Starts `args_child` with `arg`, checks it comes back equal.
fn args_case<T>(arg: T) -> Check
where
    T: Serialize + DeserializeOwned + Send + PartialEq + std::fmt::Debug + Clone + 'static,
{
    let q = ok(Queue::with_maxsize(1))?;
    let mut kids = Reaper::new();
    kids.start(Process::new(args_child::<T>, (q.clone(), arg.clone())).daemon(true))?;
    let child_args = ok(q.get_timeout(PATIENCE))?;
    check(child_args == arg, format!("the child got {child_args:?} for {arg:?}"))?;
    kids.finish_all()
}

fn process_test_args_argument() -> Check {
    // CPython passes `args` as a list or a tuple; here it is a tuple of
    // typed arguments, whatever their types.
    args_case(1i64)?;
    args_case("str".to_string())?;
    args_case(vec![1i64])?;
    args_case((1i64,))
}

fn noop() {}

fn process_test_daemon_argument() -> Check {
    // By default a process takes the daemon flag of the current process.
    let proc0 = Process::new(noop, ());
    check(
        proc0.is_daemon() == current_process().is_daemon(),
        "the daemon flag is not the current process's",
    )?;
    let proc1 = Process::new(noop, ()).daemon(true);
    check(proc1.is_daemon(), "daemon(true) is not daemonic")?;
    let proc2 = Process::new(noop, ()).daemon(false);
    check(!proc2.is_daemon(), "daemon(false) is daemonic")
}

fn send_parent_process(wconn: Connection) -> Check {
    let parent = parent_process().ok_or("a child has no parent_process")?;
    ok(wconn.send(&(parent.pid(), parent.name().to_string())))
}

fn process_test_parent_process_attributes() -> Check {
    check(parent_process().is_none(), "the main process has a parent_process")?;
    let (rconn, wconn) = ok(pipe_simplex())?;
    let mut kids = Reaper::new();
    kids.start(Process::new(send_parent_process, (wconn,)))?;
    kids.finish_all()?;
    check(ok(rconn.poll_timeout(PATIENCE))?, "the child sent nothing")?;
    let (parent_pid, parent_name): (u32, String) = ok(rconn.recv())?;
    check(
        parent_pid == current_process().pid(),
        format!("parent pid {parent_pid}, expected {}", current_process().pid()),
    )?;
    check(parent_pid == std::process::id(), "the parent pid is not this process's")?;
    check(
        parent_name == current_process().name(),
        format!("parent name {parent_name}"),
    )
}

fn create_grandchild(wconn: Connection) -> Check {
    let mut p = Process::new(report_parent_status, (wconn,));
    ok(p.start())?;
    // CPython sleeps 300 s here: the test terminates this process.
    std::thread::sleep(PATIENCE);
    Ok(())
}

fn report_parent_status(wconn: Connection) -> Check {
    let parent = parent_process().ok_or("a grandchild has no parent_process")?;
    let status = |alive: bool| if alive { "alive" } else { "not alive" };
    ok(wconn.send(&status(parent.is_alive())))?;
    // CPython: `parent_process().join(timeout)`, waiting for it to end.
    until(PATIENCE, || !parent.is_alive());
    ok(wconn.send(&status(parent.is_alive())))
}

fn process_test_parent_process() -> Check {
    // A child starts a grandchild; the child is terminated and the
    // grandchild notices the death of its parent.
    let (rconn, wconn) = ok(pipe_simplex())?;
    let mut p = Process::new(create_grandchild, (wconn,));
    ok(p.start())?;
    let mut kids = Reaper(vec![Reaped(p)]);

    check(
        ok(rconn.poll_timeout(PATIENCE))?,
        "could not communicate with the grandchild",
    )?;
    let status: String = ok(rconn.recv())?;
    check(
        status == "alive",
        format!("the grandchild first saw its parent {status}"),
    )?;

    ok(kids.0[0].terminate())?;
    ok(kids.0[0].join_timeout(PATIENCE))?;

    check(
        ok(rconn.poll_timeout(PATIENCE))?,
        "could not communicate with the grandchild",
    )?;
    let status: String = ok(rconn.recv())?;
    check(
        status == "not alive",
        format!("the grandchild then saw its parent {status}"),
    )
}

/// CPython's `_test`: sends back its arguments, its name and its pid.
fn process_child(q: Queue<String>, a: i32, b: i32, kwargs: Vec<(String, f64)>) -> Check {
    let current = current_process();
    ok(q.put(format!("{:?}", (a, b))))?;
    ok(q.put(format!("{kwargs:?}")))?;
    ok(q.put(current.name().to_string()))?;
    ok(q.put(current.pid().to_string()))
}

fn process_test_process() -> Check {
    let q = ok(Queue::with_maxsize(1))?;
    // CPython's kwargs={'hello': 23, 'bye': 2.54}: Rust has no keyword
    // arguments, so they travel as one more argument.
    let kwargs = vec![("hello".to_string(), 23.0), ("bye".to_string(), 2.54)];
    let mut p = Process::new(process_child, (q.clone(), 1, 2, kwargs.clone()))
        .name("SomeProcess")
        .daemon(true);

    check(!p.is_alive(), "a process is alive before start")?;
    check(p.is_daemon(), "daemon(true) is not daemonic")?;
    check(
        !is_active(p.pid()) && p.pid().is_none(),
        "a process has a pid before start",
    )?;
    check(p.exitcode().is_none(), "a process has an exit code before start")?;

    ok(p.start())?;
    let mut kids = Reaper(vec![Reaped(p)]);
    let p = &mut kids.0[0];

    check(p.exitcode().is_none(), "a started process has an exit code")?;
    check(p.is_alive(), "a started process is not alive")?;
    check(is_active(p.pid()), "a started process is not among active_children")?;

    let get = || ok(q.get_timeout(PATIENCE));
    check(get()? == format!("{:?}", (1, 2)), "the arguments changed")?;
    check(get()? == format!("{kwargs:?}"), "the keyword arguments changed")?;
    let name = get()?;
    check(
        name == p.get_name() && name == "SomeProcess",
        format!("the child is named {name}"),
    )?;
    let pid = get()?;
    check(
        Some(pid.clone()) == p.pid().map(|p| p.to_string()),
        format!("the child's pid {pid}"),
    )?;

    let code = finish(p)?;
    check(code == 0, format!("exit code {code}"))?;
    check(p.exitcode() == Some(0), "no exit code after join")?;
    check(!p.is_alive(), "a joined process is alive")?;
    check(!is_active(p.pid()), "a joined process is among active_children")
}

/// This thread's kernel id (`/proc/thread-self` is `PID/task/TID`).
fn native_thread_id() -> Result<u32, String> {
    let link = ok(std::fs::read_link("/proc/thread-self"))?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("cannot read a thread id from {}", link.display()))
}

fn mainthread_native_id_child(q: Queue<u32>) -> Check {
    ok(q.put(native_thread_id()?))
}

fn process_test_process_mainthread_native_id() -> Check {
    let current_mainthread_native_id = native_thread_id()?;
    let q = ok(Queue::with_maxsize(1))?;
    let mut kids = Reaper::new();
    kids.start(Process::new(mainthread_native_id_child, (q.clone(),)))?;
    let child_mainthread_native_id = ok(q.get_timeout(PATIENCE))?;
    kids.finish_all()?;
    check(
        current_mainthread_native_id != child_mainthread_native_id,
        format!("the child's main thread has the parent's id {child_mainthread_native_id}"),
    )
}

/// CPython's `_sleep_some`: a child that runs until it is stopped.
fn sleep_some() {
    std::thread::sleep(PATIENCE);
}

/// CPython's `_kill_process`: the exit code after `meth`.
fn kill_process(meth: fn(&mut Process) -> Result<(), ProcessError>) -> Result<Option<i32>, String> {
    let mut kids = Reaper::new();
    kids.start(Process::new(sleep_some, ()).daemon(true))?;
    let p = &mut kids.0[0];

    check(p.is_alive(), "a started process is not alive")?;
    check(is_active(p.pid()), "a started process is not among active_children")?;
    check(p.exitcode().is_none(), "a started process has an exit code")?;

    let (r, took) = timed(|| p.join_timeout(Duration::ZERO));
    ok(r)?;
    at_once("join_timeout(0)", took)?;
    check(p.is_alive(), "a running process is not alive after join_timeout(0)")?;

    ok(meth(p))?;

    let (r, took) = timed(|| p.join_timeout(PATIENCE));
    ok(r)?;
    at_once("join after a signal", took)?;
    check(!p.is_alive(), "a stopped process is alive")?;
    check(!is_active(p.pid()), "a stopped process is among active_children")?;
    ok(p.join())?;
    Ok(p.exitcode())
}

fn process_test_terminate() -> Check {
    let exitcode = kill_process(Process::terminate)?;
    check(exitcode == Some(-15), format!("exit code {exitcode:?} after terminate"))
}

fn process_test_kill() -> Check {
    let exitcode = kill_process(Process::kill)?;
    check(exitcode == Some(-9), format!("exit code {exitcode:?} after kill"))
}

fn process_test_cpu_count() -> Check {
    let cpus = cpu_count();
    check(cpus >= 1, format!("cpu_count {cpus}"))
}

fn wait_for_event(e: Event) -> Check {
    check(e.wait_timeout(PATIENCE), "the event was never set")
}

fn process_test_active_children() -> Check {
    // CPython's child sleeps DELTA; this one waits for an event, so it is
    // surely still running when active_children is read.
    let go = ok(Event::new())?;
    let p = Process::new(wait_for_event, (go.clone(),)).daemon(true);
    check(!is_active(p.pid()), "an unstarted process is among active_children")?;
    let mut kids = Reaper::new();
    kids.start(p)?;
    check(
        is_active(kids.0[0].pid()),
        "a started process is not among active_children",
    )?;
    go.set();
    kids.finish_all()?;
    check(!is_active(kids.0[0].pid()), "a joined process is among active_children")
}

fn recursion(wconn: Connection, id: Vec<u32>) -> Check {
    ok(wconn.send(&id))?;
    if id.len() < 2 {
        for i in 0..2 {
            let mut next = id.clone();
            next.push(i);
            let mut p = Process::new(recursion, (wconn.clone(), next));
            ok(p.start())?;
            let code = finish(&mut p)?;
            check(code == 0, format!("{} exited with {code}", p.get_name()))?;
        }
    }
    Ok(())
}

fn process_test_recursion() -> Check {
    let (rconn, wconn) = ok(pipe_simplex())?;
    recursion(wconn, Vec::new())?;
    // Every writer is gone (this process's end went with `recursion`'s
    // argument), so the messages end with end-of-file.
    let mut result: Vec<Vec<u32>> = Vec::new();
    while ok(rconn.poll())? {
        match rconn.recv() {
            Ok(id) => result.push(id),
            Err(e) if e.is_eof() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let expected: Vec<Vec<u32>> = vec![vec![], vec![0], vec![0, 0], vec![0, 1], vec![1], vec![1, 0], vec![1, 1]];
    check(result == expected, format!("{result:?}"))
}

fn process_test_sentinel() -> Check {
    let event = ok(Event::new())?;
    let p = Process::new(wait_for_event, (event.clone(),));
    check(p.sentinel().is_err(), "an unstarted process has a sentinel")?;
    let mut kids = Reaper::new();
    kids.start(p)?;
    let sentinel = ok(kids.0[0].sentinel())?;
    check(
        ok(connection::wait(&[&*kids.0[0]], Some(Duration::ZERO)))?.is_empty(),
        "a running process's sentinel is ready",
    )?;
    event.set();
    kids.finish_all()?;
    check(
        ok(connection::wait(&[&*kids.0[0]], Some(Duration::from_secs(1))))? == [0],
        "an ended process's sentinel is not ready",
    )?;
    drop(sentinel);
    Ok(())
}

fn close_child(q: Queue<Option<u8>>) -> Check {
    ok(q.get_timeout(PATIENCE))?;
    Ok(())
}

fn process_test_close() -> Check {
    let q = ok(Queue::new())?;
    let mut kids = Reaper::new();
    kids.start(Process::new(close_child, (q.clone(),)).daemon(true))?;
    let p = &mut kids.0[0];
    check(p.is_alive(), "a started process is not alive")?;
    // The child is still alive: it cannot be closed.
    check(
        matches!(p.close(), Err(ProcessError::StillRunning(_))),
        "close succeeded on a running process",
    )?;
    ok(q.put(None))?;
    let code = finish(p)?;
    check(!p.is_alive(), "a joined process is alive")?;
    check(code == 0, format!("exit code {code}"))?;
    ok(p.close())?;
    // CPython's `is_alive()` raises after close; here it is a bool, and
    // false.
    check(!p.is_alive(), "a closed process is alive")?;
    check(
        matches!(p.join(), Err(ProcessError::Closed(_))),
        "join after close did not fail",
    )?;
    check(
        matches!(p.terminate(), Err(ProcessError::Closed(_))),
        "terminate after close did not fail",
    )?;
    // A second close is fine.
    ok(p.close())
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn process_test_many_processes() -> Check {
    let n = if get_start_method() == StartMethod::Spawn {
        5
    } else {
        100
    };
    // Try to overwhelm the fork server with events.
    let mut kids = Reaper::new();
    for _ in 0..n {
        kids.start(Process::new(sleep_ms, (10,)))?;
    }
    kids.finish_all()?;

    let mut kids = Reaper::new();
    for _ in 0..n {
        kids.start(Process::new(sleep_some, ()))?;
    }
    for p in &mut kids.0 {
        ok(p.terminate())?;
    }
    for p in &mut kids.0 {
        let code = finish(p)?;
        check(
            code == -15,
            format!("{} exited with {code} after terminate", p.get_name()),
        )?;
    }
    Ok(())
}

/// CPython's `DummyCallable`: puts 5 twice. Its pipe end `_keep` is its
/// stand-in for the callable itself, which the parent must not keep.
fn dummy_callable(q: Queue<u8>, _keep: Connection) -> Check {
    ok(q.put(5))?;
    ok(q.put(5))
}

fn process_test_lose_target_ref() -> Check {
    // CPython checks with a weak reference that the parent drops the target
    // once the child runs; here the arguments go (`start` drops them in the
    // parent), which a pipe end shows: once the child has ended, the other
    // end reads end-of-file, so no copy is left in the parent.
    let q = ok(Queue::new())?;
    let (r, w) = ok(pipe_simplex())?;
    let mut kids = Reaper::new();
    kids.start(Process::new(dummy_callable, (q.clone(), w)))?;
    kids.finish_all()?;
    check(ok(r.poll_timeout(PATIENCE))?, "the pipe is neither readable nor closed")?;
    let eof = match r.recv::<u8>() {
        Err(e) => e.is_eof(),
        Ok(_) => false,
    };
    check(eof, "the parent still holds the child's argument")?;
    check(ok(q.get_timeout(PATIENCE))? == 5, "the child did not put 5")
}

/// The number of open descriptors of this process.
fn fd_count() -> Result<usize, String> {
    Ok(ok(std::fs::read_dir("/proc/self/fd"))?.count())
}

fn fd_inflation_child(evt: Event, q: Queue<usize>) -> Check {
    ok(q.put(fd_count()?))?;
    check(evt.wait_timeout(PATIENCE), "the event was never set")
}

fn process_test_child_fd_inflation() -> Check {
    // The number of fds in a child does not grow with the number of running
    // children. Not under fork: a forked child inherits every descriptor by
    // design (CPython skips it too).
    if get_start_method() == StartMethod::Fork {
        println!("    (skipped under fork, as in CPython)");
        return Ok(());
    }
    const N: usize = 5;
    let evt = ok(Event::new())?;
    let q = ok(Queue::new())?;
    let mut kids = Reaper::new();
    for _ in 0..N {
        kids.start(Process::new(fd_inflation_child, (evt.clone(), q.clone())))?;
    }
    let mut fd_counts = Vec::new();
    for _ in 0..N {
        fd_counts.push(ok(q.get_timeout(PATIENCE))?);
    }
    evt.set();
    kids.finish_all()?;
    let first = fd_counts[0];
    check(
        fd_counts.iter().all(|&c| c == first),
        format!("fd counts {fd_counts:?}"),
    )
}

fn sleep_and_set_event(evt: Event, delay_ms: u64) {
    std::thread::sleep(Duration::from_millis(delay_ms));
    evt.set();
}

/// The processes whose parent is this one.
fn direct_children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                    let after_name = stat.rsplit_once(')')?.1;
                    let ppid: u32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
                    (ppid == me).then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// CPython's `check_forkserver_death`: after the fork server dies, new
/// processes still start (the server is started again).
fn check_forkserver_death(signal: Signal) -> Check {
    if get_start_method() != StartMethod::ForkServer {
        println!("    (skipped: only under forkserver, as in CPython)");
        return Ok(());
    }
    // The first process sleeps 500 ms.
    let delay = 500;
    let evt = ok(Event::new())?;
    let mut kids = Reaper::new();
    kids.start(Process::new(sleep_and_set_event, (evt.clone(), delay)))?;

    // The server is this process's only direct child: its children are the
    // server's.
    let servers = direct_children();
    let [pid] = servers[..] else {
        return Err(format!(
            "expected one fork server among the children, found {servers:?}"
        ));
    };
    ok(mp_sys::signal::kill(pid, signal))?;
    // Give the server time to die and the first process time to end.
    std::thread::sleep(Duration::from_millis(delay * 2));

    let evt2 = ok(Event::new())?;
    let mut p2 = Process::new(sleep_and_set_event, (evt2.clone(), 0));
    let started = p2.start();
    if started.is_ok() {
        kids.0.push(Reaped(p2));
    }
    ok(started)?;
    let p2 = kids.0.last_mut().ok_or("no second process")?;
    let code = finish(p2).map_err(|e| format!("the second process: {e}"))?;
    check(evt2.is_set(), "the second process did not set its event")?;
    check(code == 0, format!("the second process exited with {code}"))?;

    // CPython accepts the exit code 255 for the first process (its status
    // may go with the server), but not that it did not run.
    let p = &mut kids.0[0];
    let joined = p.join_timeout(PATIENCE).map_err(|e| e.to_string());
    check(
        evt.is_set(),
        format!("the first process did not set its event (join: {joined:?})"),
    )?;
    joined.map_err(|e| format!("the first process: {e}"))?;
    let code = p.exitcode();
    check(
        code == Some(0) || code == Some(255),
        format!("the first process exited with {code:?}"),
    )
}

fn process_test_forkserver_sigint() -> Check {
    check_forkserver_death(Signal::INT)
}

fn process_test_forkserver_sigkill() -> Check {
    check_forkserver_death(Signal::KILL)
}

fn set_event(evt: Event) {
    evt.set();
}

/// A child that leaves output behind for the exit to flush, on streams
/// that may be broken, and sets `evt`.
fn leave_output_and_set_event(evt: Event) {
    print!("unflushed output of the child");
    let _ = std::io::stderr().write_all(b"output of the child on stderr\n");
    evt.set();
}

/// How a scenario's standard stream is given to it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stream {
    /// A pipe the test reads (stderr) or `/dev/null` (stdout).
    Fine,
    /// A pipe whose reading end is closed: writes fail with `EPIPE`
    /// (CPython's closed `StringIO`).
    BrokenPipe,
    /// A descriptor open for reading only: writes fail with `EBADF`
    /// (CPython's `None` stream).
    Unwritable,
}

/// The environment variable that makes this binary run one scenario
/// instead of its tests (for tests that need this process's own standard
/// streams broken or captured).
const SCENARIO: &str = "CPYTHON_PROCESS_SCENARIO";
/// A scenario's argument.
const SCENARIO_ARG: &str = "CPYTHON_PROCESS_SCENARIO_ARG";

fn stdio(stream: Stream) -> Result<Stdio, String> {
    Ok(match stream {
        Stream::Fine | Stream::BrokenPipe => Stdio::piped(),
        Stream::Unwritable => Stdio::from(ok(std::fs::File::open("/dev/null"))?),
    })
}

/// Runs this binary on scenario `name` with the given streams; its exit
/// code and what it wrote on stderr (when `stderr` is `Fine`).
fn run_scenario(name: &str, arg: &str, stdout: Stream, stderr: Stream) -> Result<(Option<i32>, String), String> {
    let exe = ok(std::env::current_exe())?;
    let mut child = ok(Command::new(exe)
        .env(SCENARIO, name)
        .env(SCENARIO_ARG, arg)
        .stdin(Stdio::null())
        .stdout(if stdout == Stream::Fine {
            Stdio::null()
        } else {
            stdio(stdout)?
        })
        .stderr(stdio(stderr)?)
        .spawn())?;
    // Close the reading ends of the broken pipes before the scenario writes.
    drop(child.stdout.take());
    let err_pipe = child.stderr.take().filter(|_| stderr == Stream::Fine);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut err = String::new();
        if let Some(mut pipe) = err_pipe {
            let _ = pipe.read_to_string(&mut err);
        }
        let status = child.wait();
        let _ = tx.send(());
        (status, err)
    });
    if rx.recv_timeout(PATIENCE).is_err() {
        let _ = mp_sys::signal::kill(pid, Signal::KILL);
    }
    let (status, err) = waiter
        .join()
        .map_err(|_| "the scenario's waiter panicked".to_string())?;
    Ok((ok(status)?.code(), err))
}

/// Runs `test` as a scenario's body: exit code 0 if it passes, else 1 with
/// the failure on stderr (which may be broken: then the code says it).
fn scenario_result(r: Check) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "scenario failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// CPython's `test_error_on_stdio_flush_1` in a scenario whose streams are
/// broken: output waits in this process's buffer while a child starts and
/// ends.
fn scenario_stdio_flush_parent() -> Check {
    print!("unflushed output of the parent");
    let evt = ok(Event::new())?;
    let mut kids = Reaper::new();
    kids.start(Process::new(set_event, (evt.clone(),)))?;
    kids.finish_all()?;
    check(evt.is_set(), "the child did not set the event")
}

/// CPython's `test_error_on_stdio_flush_2`: the child's streams are broken
/// and it leaves output to flush when it exits.
fn scenario_stdio_flush_child() -> Check {
    let evt = ok(Event::new())?;
    let mut kids = Reaper::new();
    kids.start(Process::new(leave_output_and_set_event, (evt.clone(),)))?;
    kids.finish_all()?;
    check(evt.is_set(), "the child did not set the event")
}

fn stdio_flush(scenario: &str) -> Check {
    for (stdout, stderr) in [
        (Stream::BrokenPipe, Stream::Fine),
        (Stream::Unwritable, Stream::Fine),
        (Stream::Fine, Stream::BrokenPipe),
        (Stream::Fine, Stream::Unwritable),
    ] {
        let (code, err) = run_scenario(scenario, "", stdout, stderr)?;
        check(
            code == Some(0),
            format!("with stdout {stdout:?} and stderr {stderr:?}: exit code {code:?}, stderr {err:?}"),
        )?;
    }
    Ok(())
}

fn process_test_error_on_stdio_flush_1() -> Check {
    stdio_flush("stdio_flush_parent")
}

fn process_test_error_on_stdio_flush_2() -> Check {
    stdio_flush("stdio_flush_child")
}

// ---- _TestSubclassingProcess -------------------------------------------------

/// CPython's `_UpperCaser`, a `Process` subclass: its `run` answers each
/// string with its upper case until `None`.
#[derive(Serialize, Deserialize)]
struct UpperCaser {
    child_conn: Connection,
}

impl Run for UpperCaser {
    fn run(self) {
        while let Ok(Some(s)) = self.child_conn.recv::<Option<String>>() {
            if self.child_conn.send(&s.to_uppercase()).is_err() {
                return;
            }
        }
    }
}

fn submit(parent_conn: &Connection, s: &str) -> Result<String, String> {
    ok(parent_conn.send(&Some(s)))?;
    check(
        ok(parent_conn.poll_timeout(PATIENCE))?,
        "the upper-caser did not answer",
    )?;
    ok(parent_conn.recv())
}

fn subclassing_test_subclassing() -> Check {
    let (child_conn, parent_conn) = ok(pipe())?;
    let mut kids = Reaper::new();
    kids.start(Process::from_run(UpperCaser { child_conn }).daemon(true))?;
    check(submit(&parent_conn, "hello")? == "HELLO", "hello")?;
    check(submit(&parent_conn, "world")? == "WORLD", "world")?;
    ok(parent_conn.send(&None::<String>))?;
    kids.finish_all()
}

/// Divides by zero, CPython's `1/0 # MARKER`.
fn zero_division(zero: i32) {
    println!("{}", 1 / std::hint::black_box(zero));
}

fn scenario_stderr_flush() -> Check {
    let mut p = Process::new(zero_division, (0,));
    ok(p.start())?;
    let code = finish(&mut p)?;
    check(code == 1, format!("a panicking child exited with {code}"))
}

fn subclassing_test_stderr_flush() -> Check {
    // The child's error report reaches stderr before it exits (CPython issue
    // #13812: the traceback was lost). Here the panic message, with its
    // place in the source, under the `Process <name>:` line.
    let (code, err) = run_scenario("stderr_flush", "", Stream::Fine, Stream::Fine)?;
    check(code == Some(0), format!("the scenario failed ({code:?}): {err}"))?;
    check(err.contains("Process Process-1"), format!("no process name in {err:?}"))?;
    check(
        err.contains("attempt to divide by zero"),
        format!("no panic message in {err:?}"),
    )?;
    check(err.contains("cpython_process.rs"), format!("no source file in {err:?}"))
}

/// Ends with `sys.exit(reason)` for a reason that is not a number: Python
/// prints it and exits with 1, as a target returning `Err(reason)` does.
fn exit_with_reason(reason: String) -> Result<(), String> {
    Err(reason)
}

fn scenario_sys_exit(reason: String) -> Check {
    let mut p = Process::new(exit_with_reason, (reason,)).daemon(true);
    ok(p.start())?;
    let code = finish(&mut p)?;
    check(code == 1, format!("exit code {code}"))
}

fn exit_with(code: Option<i32>) {
    if let Some(code) = code {
        exit(code);
    }
}

fn subclassing_test_sys_exit() -> Check {
    for reason in [format!("{:?}", [1, 2, 3]), "ignore this".to_string()] {
        let (code, err) = run_scenario("sys_exit", &reason, Stream::Fine, Stream::Fine)?;
        check(code == Some(0), format!("the scenario failed ({code:?}): {err}"))?;
        check(
            err.lines().any(|l| l.trim_end() == reason),
            format!("stderr {err:?} does not show {reason:?}"),
        )?;
    }
    // sys.exit(True), (False), (8), (None), (): 1, 0, 8, 0, 0.
    let cases = [(Some(1), 1), (Some(0), 0), (Some(8), 8), (None, 0)];
    for (arg, expected) in cases {
        let mut p = Process::new(exit_with, (arg,)).daemon(true);
        ok(p.start())?;
        let code = finish(&mut p)?;
        check(code == expected, format!("exit({arg:?}) gave exit code {code}"))?;
    }
    Ok(())
}

// ---- TestStartMethod -------------------------------------------------------

fn report_start_method(conn: Connection) -> Check {
    ok(conn.send(&get_start_method()))
}

/// CPython's `check_context`: a child of `ctx` reports its start method.
fn check_context(ctx: Context) -> Check {
    let (r, w) = ok(pipe_simplex())?;
    let mut kids = Reaper::new();
    kids.start(ctx.process(report_start_method, (w,)))?;
    check(ok(r.poll_timeout(PATIENCE))?, "the child sent nothing")?;
    let child_method: StartMethod = ok(r.recv())?;
    kids.finish_all()?;
    check(
        child_method == ctx.start_method(),
        format!("a child of {:?} reports {child_method:?}", ctx.start_method()),
    )
}

fn start_method_test_context() -> Check {
    // CPython also checks that a context refuses set_start_method: a
    // Context here has no such method.
    let mut failures = Vec::new();
    for m in METHODS {
        let ctx = get_context(m);
        check(
            ctx.start_method() == m,
            format!("get_context({m:?}) is {:?}", ctx.start_method()),
        )?;
        check(get_context(m) == ctx, "two contexts of one method differ")?;
        if let Err(e) = check_context(ctx) {
            failures.push(e);
        }
    }
    check(failures.is_empty(), failures.join("; "))
}

/// CPython's `test_set_get`, in a fresh process (the start method can be
/// set only before the first start, and CPython's `force=True` does not
/// exist): each method can be set and read back, the one set last is the
/// one children use, and another cannot be set after a start.
fn scenario_set_get(last: &str) -> Check {
    for m in METHODS {
        ok(set_start_method(m))?;
        check(
            get_start_method() == m,
            format!("set {m:?}, got {:?}", get_start_method()),
        )?;
    }
    let method = match last {
        "fork" => StartMethod::Fork,
        "spawn" => StartMethod::Spawn,
        _ => StartMethod::ForkServer,
    };
    ok(set_start_method(method))?;
    // `multiprocessing` itself as the context: processes of the default.
    let (r, w) = ok(pipe_simplex())?;
    let mut kids = Reaper::new();
    kids.start(Process::new(report_start_method, (w,)))?;
    check(ok(r.poll_timeout(PATIENCE))?, "the child sent nothing")?;
    let child_method: StartMethod = ok(r.recv())?;
    kids.finish_all()?;
    check(
        child_method == method,
        format!("set {method:?}, the child reports {child_method:?}"),
    )?;
    check(get_context(method).start_method() == method, "the context differs")?;
    ok(set_start_method(method))?;
    let other = if method == StartMethod::Spawn {
        StartMethod::Fork
    } else {
        StartMethod::Spawn
    };
    check(
        matches!(set_start_method(other), Err(ProcessError::StartMethodFixed(_))),
        "the start method changed after a process started",
    )
}

fn start_method_test_set_get() -> Check {
    let mut count = 0;
    for m in ["fork", "spawn", "forkserver"] {
        let (code, err) = run_scenario("set_get", m, Stream::Fine, Stream::Fine)?;
        check(code == Some(0), format!("{m}: the scenario failed ({code:?}): {err}"))?;
        count += 1;
    }
    check(count >= 1, "no start method could be set")
}

fn put_pid(q: Queue<u32>) -> Check {
    ok(q.put(std::process::id()))
}

fn start_method_test_mixed_startmethod() -> Check {
    // CPython: a queue of the fork context cannot go to a spawned child
    // (its locks are fork-only), and queues of the other contexts go to
    // children of every method. Here a queue is not tied to a start method:
    // one queue goes to children of all three, which use it.
    let queue = ok(Queue::new())?;
    for m in METHODS {
        let mut kids = Reaper::new();
        kids.start(get_context(m).process(put_pid, (queue.clone(),)))?;
        kids.finish_all()?;
        let got = ok(queue.get_timeout(PATIENCE))?;
        check(
            Some(got) == kids.0[0].pid(),
            format!("a child of {m:?} put pid {got}, not its own"),
        )?;
    }
    Ok(())
}

fn put_one_in_queue(queue: Queue<u8>) -> Check {
    ok(queue.put(1))
}

fn put_two_and_nest_once(queue: Queue<u8>) -> Check {
    ok(queue.put(2))?;
    let mut process = Process::new(put_one_in_queue, (queue,));
    ok(process.start())?;
    let code = finish(&mut process)?;
    check(code == 0, format!("the grandchild exited with {code}"))
}

fn start_method_test_nested_startmethod() -> Check {
    // A child can pass its own arguments on to a process of its own
    // (CPython gh-108520).
    let queue = ok(Queue::new())?;
    let mut kids = Reaper::new();
    kids.start(Process::new(put_two_and_nest_once, (queue.clone(),)))?;
    kids.finish_all()?;
    let mut results = Vec::new();
    while let Ok(v) = queue.get_nowait() {
        results.push(v);
    }
    results.sort_unstable();
    check(results == [1, 2], format!("results {results:?}"))
}

// ---- _TestQueue --------------------------------------------------------------

fn queue_put_child(queue: Queue<u32>, child_can_start: Event, parent_can_continue: Event) -> Check {
    check(child_can_start.wait_timeout(PATIENCE), "child_can_start was never set")?;
    for _ in 0..6 {
        ok(queue.get_timeout(PATIENCE))?;
    }
    parent_can_continue.set();
    Ok(())
}

fn queue_test_put() -> Check {
    const MAXSIZE: usize = 6;
    let queue = ok(Queue::with_maxsize(MAXSIZE))?;
    let child_can_start = ok(Event::new())?;
    let parent_can_continue = ok(Event::new())?;
    let mut kids = Reaper::new();
    kids.start(
        Process::new(
            queue_put_child,
            (queue.clone(), child_can_start.clone(), parent_can_continue.clone()),
        )
        .daemon(true),
    )?;

    check(queue.is_empty(), "a new queue is not empty")?;
    check(!queue.is_full(), "a new queue is full")?;

    ok(queue.put(1))?;
    ok(queue.put(2))?;
    ok(queue.put_timeout(3, PATIENCE))?;
    ok(queue.put_nowait(4))?;
    ok(queue.put_nowait(5))?;
    ok(queue.put_nowait(6))?;

    check(!queue.is_empty(), "a queue of 6 items is empty")?;
    check(
        queue.is_full(),
        format!("a queue of 6 items of maxsize 6 is not full: {queue:?}"),
    )?;

    let (r, took) = timed(|| queue.put_nowait(7));
    check(
        matches!(r, Err(PutError::Full(7))),
        format!("put_nowait on a full queue: {r:?}"),
    )?;
    at_once("put_nowait on a full queue", took)?;

    let (r, took) = timed(|| queue.put_timeout(7, TIMEOUT1));
    check(
        matches!(r, Err(PutError::Full(7))),
        format!("put_timeout on a full queue: {r:?}"),
    )?;
    about("put_timeout on a full queue", took, TIMEOUT1)?;

    let (r, took) = timed(|| queue.put_timeout(7, TIMEOUT3));
    check(
        matches!(r, Err(PutError::Full(7))),
        format!("put_timeout on a full queue: {r:?}"),
    )?;
    about("put_timeout on a full queue", took, TIMEOUT3)?;

    child_can_start.set();
    check(
        parent_can_continue.wait_timeout(PATIENCE),
        "the child never took its 6 items",
    )?;

    check(
        queue.is_empty(),
        "the queue is not empty after the child took every item",
    )?;
    check(!queue.is_full(), "an empty queue is full")?;
    kids.finish_all()
}

fn queue_get_child(queue: Queue<u32>, child_can_start: Event, parent_can_continue: Event) -> Check {
    check(child_can_start.wait_timeout(PATIENCE), "child_can_start was never set")?;
    for i in 2..=5 {
        ok(queue.put(i))?;
    }
    parent_can_continue.set();
    Ok(())
}

fn queue_test_get() -> Check {
    let queue = ok(Queue::new())?;
    let child_can_start = ok(Event::new())?;
    let parent_can_continue = ok(Event::new())?;
    let mut kids = Reaper::new();
    kids.start(
        Process::new(
            queue_get_child,
            (queue.clone(), child_can_start.clone(), parent_can_continue.clone()),
        )
        .daemon(true),
    )?;

    check(queue.is_empty(), "a new queue is not empty")?;
    child_can_start.set();
    check(
        parent_can_continue.wait_timeout(PATIENCE),
        "the child never put its items",
    )?;
    check(!queue.is_empty(), "the queue is empty after the child put 4 items")?;

    check(ok(queue.get())? == 2, "first item is not 2")?;
    check(ok(queue.get_timeout(PATIENCE))? == 3, "second item is not 3")?;
    check(
        ok(queue.get_timeout(Duration::from_secs(1)))? == 4,
        "third item is not 4",
    )?;
    check(ok(queue.get_nowait())? == 5, "fourth item is not 5")?;
    check(queue.is_empty(), "the queue is not empty after 4 gets")?;

    let (r, took) = timed(|| queue.get_nowait());
    check(
        r == Err(GetError::Empty),
        format!("get_nowait on an empty queue: {r:?}"),
    )?;
    at_once("get_nowait on an empty queue", took)?;

    let (r, took) = timed(|| queue.get_timeout(TIMEOUT1));
    check(
        r == Err(GetError::Empty),
        format!("get_timeout on an empty queue: {r:?}"),
    )?;
    about("get_timeout on an empty queue", took, TIMEOUT1)?;

    let (r, took) = timed(|| queue.get_timeout(TIMEOUT3));
    check(
        r == Err(GetError::Empty),
        format!("get_timeout on an empty queue: {r:?}"),
    )?;
    about("get_timeout on an empty queue", took, TIMEOUT3)?;
    kids.finish_all()
}

fn queue_fork_child(queue: Queue<u32>) -> Check {
    for i in 10..20 {
        ok(queue.put(i))?;
    }
    Ok(())
}

fn queue_test_fork() -> Check {
    let queue = ok(Queue::new())?;
    for i in 0..10 {
        ok(queue.put(i))?;
    }
    let mut kids = Reaper::new();
    kids.start(Process::new(queue_fork_child, (queue.clone(),)).daemon(true))?;
    for i in 0..20 {
        let got = ok(queue.get_timeout(PATIENCE))?;
        check(got == i, format!("item {i} came out as {got}"))?;
    }
    let r = queue.get_nowait();
    check(r == Err(GetError::Empty), format!("a 21st item: {r:?}"))?;
    kids.finish_all()
}

fn queue_test_qsize() -> Check {
    let q = ok(Queue::new())?;
    check(q.qsize() == 0, "a new queue's qsize is not 0")?;
    ok(q.put(1))?;
    check(q.qsize() == 1, format!("qsize {} after one put", q.qsize()))?;
    ok(q.put(5))?;
    check(q.qsize() == 2, format!("qsize {} after two puts", q.qsize()))?;
    ok(q.get_timeout(PATIENCE))?;
    check(q.qsize() == 1, format!("qsize {} after a get", q.qsize()))?;
    ok(q.get_timeout(PATIENCE))?;
    check(q.qsize() == 0, format!("qsize {} after two gets", q.qsize()))
}

/// Takes items until `None`, marking each done after a short piece of work.
fn queue_task_done_worker(q: JoinableQueue<Option<u32>>) -> Check {
    while ok(q.get_timeout(PATIENCE))?.is_some() {
        std::thread::sleep(DELTA);
        ok(q.task_done())?;
    }
    Ok(())
}

fn queue_test_task_done() -> Check {
    let queue = ok(JoinableQueue::new())?;
    let mut kids = Reaper::new();
    for _ in 0..4 {
        kids.start(Process::new(queue_task_done_worker, (queue.clone(),)).daemon(true))?;
    }
    for i in 0..10 {
        ok(queue.put(Some(i)))?;
    }
    check(ok(queue.join_timeout(PATIENCE))?, "join: the tasks were never all done")?;
    check(queue.unfinished_tasks() == 0, "unfinished tasks after join")?;
    for _ in 0..4 {
        ok(queue.put(None))?;
    }
    kids.finish_all()
}

fn queue_test_timeout() -> Check {
    let q = ok(Queue::<u8>::new())?;
    let (r, took) = timed(|| q.get_timeout(Duration::from_millis(200)));
    check(
        r == Err(GetError::Empty),
        format!("get_timeout on an empty queue: {r:?}"),
    )?;
    check(
        took >= Duration::from_millis(100),
        format!("get_timeout(200 ms) gave up after {took:?}"),
    )
}

/// An item whose encoding fails, as CPython's `NotSerializable` whose
/// `__reduce__` raises; `serialize` records that it was called.
#[derive(Debug, Default, Deserialize)]
struct NotSerializable {
    #[serde(skip)]
    reduce_was_called: AtomicBool,
}

impl Serialize for NotSerializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        self.reduce_was_called.store(true, Ordering::SeqCst);
        Err(serde::ser::Error::custom("NotSerializable cannot be encoded"))
    }
}

/// A queue item that is either encodable or not.
#[derive(Debug, Serialize, Deserialize)]
enum Item {
    Bad(NotSerializable),
    Good(bool),
}

fn queue_test_queue_feeder_donot_stop_onexc() -> Check {
    let q = ok(Queue::new())?;
    let r = q.put(Item::Bad(NotSerializable::default()));
    check(
        matches!(r, Err(PutError::Encode(Item::Bad(_), _))),
        format!("putting an item that cannot be encoded: {r:?}"),
    )?;
    ok(q.put(Item::Good(true)))?;
    let got = ok(q.get_timeout(PATIENCE))?;
    check(matches!(got, Item::Good(true)), format!("got {got:?}"))?;

    // The size stays right after a failed put (bpo-33078).
    let q = ok(Queue::with_maxsize(1))?;
    let r = q.put_timeout(Item::Bad(NotSerializable::default()), PATIENCE);
    check(
        matches!(r, Err(PutError::Encode(..))),
        format!("putting an item that cannot be encoded: {r:?}"),
    )?;
    ok(q.put_timeout(Item::Good(true), PATIENCE))?;
    check(q.qsize() == 1, format!("qsize {} after one good put", q.qsize()))?;
    let got = ok(q.get_timeout(PATIENCE))?;
    check(matches!(got, Item::Good(true)), format!("got {got:?}"))?;
    check(q.is_empty(), "the queue is not empty after its only item was taken")
}

fn queue_test_queue_feeder_on_queue_feeder_error() -> Check {
    // CPython's hook `_on_queue_feeder_error(e, obj)` is the put's error
    // here: it carries the encoding error and gives the item back.
    let q = ok(Queue::new())?;
    let err = match q.put(Item::Bad(NotSerializable::default())) {
        Err(e) => e,
        Ok(()) => return Err("an item that cannot be encoded was put".into()),
    };
    let message = err.to_string();
    check(
        message.contains("NotSerializable cannot be encoded"),
        format!("error {message:?}"),
    )?;
    let on_queue_feeder_error_was_called = matches!(err, PutError::Encode(..));
    let obj = err.into_inner();
    let reduce_was_called = match &obj {
        Item::Bad(n) => n.reduce_was_called.load(Ordering::SeqCst),
        Item::Good(_) => false,
    };
    ok(q.put(Item::Good(true)))?;
    let got = ok(q.get_timeout(PATIENCE))?;
    check(matches!(got, Item::Good(true)), format!("got {got:?}"))?;
    check(reduce_was_called, "the item's serialize was not called")?;
    check(
        on_queue_feeder_error_was_called,
        "the failure was not reported as an encoding error",
    )
}

fn queue_test_closed_queue_empty_exceptions() -> Check {
    // An unused closed queue reads as empty, without an error.
    let q = ok(Queue::<String>::new())?;
    q.close();
    check(q.is_empty(), "an unused closed Queue is not empty")?;
    let q = ok(JoinableQueue::<String>::new())?;
    q.close();
    check(q.is_empty(), "an unused closed JoinableQueue is not empty")?;

    // A used closed queue: CPython's `empty()` raises OSError; `is_empty` is
    // a bool here, and the closed state shows on the get, once drained.
    let q = ok(Queue::new())?;
    ok(q.put("foo".to_string()))?;
    q.close();
    check(!q.is_empty(), "a closed Queue lost its item")?;
    check(ok(q.get_nowait())? == "foo", "a closed Queue's item changed")?;
    let r = q.get_nowait();
    check(
        r == Err(GetError::Closed),
        format!("get on a drained closed Queue: {r:?}"),
    )?;
    let q = ok(JoinableQueue::new())?;
    ok(q.put("foo".to_string()))?;
    q.close();
    check(ok(q.get_nowait())? == "foo", "a closed JoinableQueue's item changed")?;
    let r = q.get_nowait();
    check(
        r == Err(GetError::Closed),
        format!("get on a drained closed JoinableQueue: {r:?}"),
    )
}

fn queue_test_closed_queue_put_get_exceptions() -> Check {
    let q = ok(Queue::<String>::new())?;
    q.close();
    let r = q.put("foo".to_string());
    check(
        matches!(&r, Err(PutError::Closed(s)) if s == "foo"),
        format!("put on a closed Queue: {r:?}"),
    )?;
    check(
        r.err().is_some_and(|e| e.to_string().contains("closed")),
        "the error does not say closed",
    )?;
    let (r, took) = timed(|| q.get_timeout(PATIENCE));
    check(r == Err(GetError::Closed), format!("get on a closed Queue: {r:?}"))?;
    at_once("get on a closed Queue", took)?;

    let q = ok(JoinableQueue::<String>::new())?;
    q.close();
    let r = q.put("foo".to_string());
    check(
        matches!(&r, Err(PutError::Closed(s)) if s == "foo"),
        format!("put on a closed JoinableQueue: {r:?}"),
    )?;
    let (r, took) = timed(|| q.get_timeout(PATIENCE));
    check(
        r == Err(GetError::Closed),
        format!("get on a closed JoinableQueue: {r:?}"),
    )?;
    at_once("get on a closed JoinableQueue", took)
}

// ---- TestSimpleQueue ---------------------------------------------------------

fn simple_queue_empty_child(queue: SimpleQueue<bool>, child_can_start: Event, parent_can_continue: Event) -> Check {
    let waited = child_can_start.wait_timeout(PATIENCE);
    let r = queue
        .put(queue.is_empty())
        .and_then(|()| queue.put(queue.is_empty()))
        .map_err(|e| e.to_string());
    parent_can_continue.set();
    check(waited, "child_can_start was never set")?;
    r
}

fn simple_queue_test_empty_exceptions() -> Check {
    // CPython: `empty()` on a closed SimpleQueue raises OSError. Here
    // `is_empty` is a bool; a closed SimpleQueue refuses puts and its gets
    // report the closure at once instead.
    let q = ok(SimpleQueue::<u8>::new())?;
    q.close();
    check(
        q.put(1).is_err_and(|e| e.is_closed()),
        "put on a closed SimpleQueue did not fail",
    )?;
    let (r, took) = timed(|| q.get_timeout(PATIENCE));
    check(
        r == Err(GetError::Closed),
        format!("get on a closed SimpleQueue: {r:?}"),
    )?;
    at_once("get on a closed SimpleQueue", took)
}

fn simple_queue_test_empty() -> Check {
    let queue = ok(SimpleQueue::new())?;
    let child_can_start = ok(Event::new())?;
    let parent_can_continue = ok(Event::new())?;
    let mut kids = Reaper::new();
    kids.start(
        Process::new(
            simple_queue_empty_child,
            (queue.clone(), child_can_start.clone(), parent_can_continue.clone()),
        )
        .daemon(true),
    )?;
    check(queue.is_empty(), "a new SimpleQueue is not empty")?;
    child_can_start.set();
    check(parent_can_continue.wait_timeout(PATIENCE), "the child never answered")?;
    check(!queue.is_empty(), "the SimpleQueue is empty after the child's puts")?;
    check(
        ok(queue.get_timeout(PATIENCE))?,
        "the child saw a non-empty queue first",
    )?;
    check(
        !ok(queue.get_timeout(PATIENCE))?,
        "the child saw an empty queue after its put",
    )?;
    check(queue.is_empty(), "the SimpleQueue is not empty after two gets")?;
    kids.finish_all()
}

fn simple_queue_test_close() -> Check {
    let queue = ok(SimpleQueue::<u8>::new())?;
    queue.close();
    // Closing a queue twice does not fail, and leaves it closed.
    queue.close();
    check(
        queue.put(1).is_err_and(|e| e.is_closed()),
        "a twice-closed SimpleQueue takes puts",
    )
}

fn simple_queue_test_closed() -> Check {
    // CPython checks that both private pipe ends are closed: here both ends
    // of the queue refuse, in this handle and in a clone.
    let queue = ok(SimpleQueue::<u8>::new())?;
    let other = queue.clone();
    queue.close();
    check(
        other.put(1).is_err_and(|e| e.is_closed()),
        "the writer end is not closed",
    )?;
    let r = other.get_timeout(PATIENCE);
    check(
        r == Err(GetError::Closed),
        format!("the reader end is not closed: {r:?}"),
    )
}

// ---- main --------------------------------------------------------------------

const TESTS: &[(&str, mp_testkit::Test)] = &[
    ("_TestProcess::test_current", process_test_current),
    ("_TestProcess::test_args_argument", process_test_args_argument),
    ("_TestProcess::test_daemon_argument", process_test_daemon_argument),
    (
        "_TestProcess::test_parent_process_attributes",
        process_test_parent_process_attributes,
    ),
    ("_TestProcess::test_parent_process", process_test_parent_process),
    ("_TestProcess::test_process", process_test_process),
    (
        "_TestProcess::test_process_mainthread_native_id",
        process_test_process_mainthread_native_id,
    ),
    ("_TestProcess::test_terminate", process_test_terminate),
    ("_TestProcess::test_kill", process_test_kill),
    ("_TestProcess::test_cpu_count", process_test_cpu_count),
    ("_TestProcess::test_active_children", process_test_active_children),
    ("_TestProcess::test_recursion", process_test_recursion),
    ("_TestProcess::test_sentinel", process_test_sentinel),
    ("_TestProcess::test_close", process_test_close),
    ("_TestProcess::test_many_processes", process_test_many_processes),
    ("_TestProcess::test_lose_target_ref", process_test_lose_target_ref),
    ("_TestProcess::test_child_fd_inflation", process_test_child_fd_inflation),
    (
        "_TestProcess::test_error_on_stdio_flush_1",
        process_test_error_on_stdio_flush_1,
    ),
    (
        "_TestProcess::test_error_on_stdio_flush_2",
        process_test_error_on_stdio_flush_2,
    ),
    ("_TestProcess::test_forkserver_sigint", process_test_forkserver_sigint),
    ("_TestProcess::test_forkserver_sigkill", process_test_forkserver_sigkill),
    (
        "_TestSubclassingProcess::test_subclassing",
        subclassing_test_subclassing,
    ),
    (
        "_TestSubclassingProcess::test_stderr_flush",
        subclassing_test_stderr_flush,
    ),
    ("_TestSubclassingProcess::test_sys_exit", subclassing_test_sys_exit),
    ("_TestQueue::test_put", queue_test_put),
    ("_TestQueue::test_get", queue_test_get),
    ("_TestQueue::test_fork", queue_test_fork),
    ("_TestQueue::test_qsize", queue_test_qsize),
    ("_TestQueue::test_task_done", queue_test_task_done),
    ("_TestQueue::test_timeout", queue_test_timeout),
    (
        "_TestQueue::test_queue_feeder_donot_stop_onexc",
        queue_test_queue_feeder_donot_stop_onexc,
    ),
    (
        "_TestQueue::test_queue_feeder_on_queue_feeder_error",
        queue_test_queue_feeder_on_queue_feeder_error,
    ),
    (
        "_TestQueue::test_closed_queue_empty_exceptions",
        queue_test_closed_queue_empty_exceptions,
    ),
    (
        "_TestQueue::test_closed_queue_put_get_exceptions",
        queue_test_closed_queue_put_get_exceptions,
    ),
    (
        "TestSimpleQueue::test_empty_exceptions",
        simple_queue_test_empty_exceptions,
    ),
    ("TestSimpleQueue::test_empty", simple_queue_test_empty),
    ("TestSimpleQueue::test_close", simple_queue_test_close),
    ("TestSimpleQueue::test_closed", simple_queue_test_closed),
    ("TestStartMethod::test_context", start_method_test_context),
    ("TestStartMethod::test_set_get", start_method_test_set_get),
    (
        "TestStartMethod::test_mixed_startmethod",
        start_method_test_mixed_startmethod,
    ),
    (
        "TestStartMethod::test_nested_startmethod",
        start_method_test_nested_startmethod,
    ),
];

fn main() -> ExitCode {
    if let Ok(name) = std::env::var(SCENARIO) {
        let arg = std::env::var(SCENARIO_ARG).unwrap_or_default();
        return scenario_result(match name.as_str() {
            "stdio_flush_parent" => scenario_stdio_flush_parent(),
            "stdio_flush_child" => scenario_stdio_flush_child(),
            "stderr_flush" => scenario_stderr_flush(),
            "sys_exit" => scenario_sys_exit(arg),
            "set_get" => scenario_set_get(&arg),
            other => Err(format!("no scenario {other:?}")),
        });
    }
    let mut h = Harness::new(TESTS.len() + 1);
    for (name, test) in TESTS {
        h.run(name, test);
    }
    h.run("no_zombie_is_left", || {
        let n = zombie_children();
        check(n == 0, format!("{n} zombie children left"))
    });
    h.finish()
}
