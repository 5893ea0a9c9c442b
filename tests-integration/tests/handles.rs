//! Handles of every crate together, in children started by the default start
//! method: `cargo xtask test` runs this binary once per `MP_START_METHOD`, so
//! each run exercises fork, spawn or the fork server. It has its own
//! single-threaded main, because the fork method needs one (docs/ARCHITECTURE.md, fork
//! safety).

use std::process::ExitCode;
use std::time::Duration;

use mp_testkit::{Harness, PATIENCE, check, finish, ok};
use multiprocessing::connection::{Waitable, wait};
use multiprocessing::{
    Array, Barrier, Connection, DictProxy, Event, Lock, Manager, Pool, Process, ProcessPoolExecutor, Queue, QueueProxy,
    StartMethod, Value, get_start_method, pipe, pipe_simplex,
};

type Check = Result<(), String>;

/// Uses a handle of each kind it was given.
fn worker(conn: Connection, lock: Lock, total: Value<u64>, slots: Array<u32>, go: Barrier, done: Event) -> Check {
    let index = ok(go.wait_timeout(PATIENCE))?;
    for _ in 0..1000 {
        let _held = ok(lock.acquire())?;
        let v = total.get();
        total.set(v + 1);
    }
    ok(slots.set(index, std::process::id()))?;
    ok(conn.send(&(index, std::process::id())))?;
    done.set();
    Ok(())
}

/// Receives handles through a connection and uses them.
fn receiver(conn: Connection) -> Check {
    let (total, lock, reply): (Value<u64>, Lock, Connection) = ok(conn.recv())?;
    {
        let _held = ok(lock.acquire())?;
        total.set(total.get() + 41);
    }
    ok(reply.send(&"added 41"))
}

/// A queue item made of handles.
type Job = (Value<u64>, Lock, Connection);

/// Takes a queue out of a connection, then handles out of the queue, and
/// answers through the queue it was given.
fn queue_user(conn: Connection) -> Check {
    let (jobs, answers): (Queue<Job>, Queue<String>) = ok(conn.recv())?;
    let (total, lock, reply) = ok(jobs.get_timeout(PATIENCE))?;
    {
        let _held = ok(lock.acquire())?;
        total.set(total.get() * 2);
    }
    ok(reply.send(&"doubled"))?;
    ok(answers.put("done".to_string()))
}

/// Ends once told to through `go` (or when the parent goes away).
fn ends_when_told(go: Connection) {
    let _ = go.poll_timeout(PATIENCE);
}

// ---- scenarios -------------------------------------------------------------

fn the_start_method_is_the_one_asked_for() -> Check {
    let asked = std::env::var("MP_START_METHOD").unwrap_or_default();
    let m = get_start_method();
    let expected = match asked.as_str() {
        "fork" => StartMethod::Fork,
        "spawn" => StartMethod::Spawn,
        _ => StartMethod::ForkServer,
    };
    check(
        m == expected,
        format!("MP_START_METHOD={asked:?} but the default is {m:?}"),
    )
}

fn every_kind_of_handle_in_one_child_each() -> Check {
    const KIDS: usize = 3;
    let lock = ok(Lock::new())?;
    let total = ok(Value::new(0u64))?;
    let slots = ok(Array::<u32>::new(KIDS + 1))?;
    let go = ok(Barrier::new(KIDS + 1))?;
    let mut kids = Vec::new();
    let mut conns = Vec::new();
    let mut events = Vec::new();
    for _ in 0..KIDS {
        let (mine, theirs) = ok(pipe())?;
        let done = ok(Event::new())?;
        kids.push(Process::new(
            worker,
            (
                theirs,
                lock.clone(),
                total.clone(),
                slots.clone(),
                go.clone(),
                done.clone(),
            ),
        ));
        conns.push(mine);
        events.push(done);
    }
    for k in &mut kids {
        ok(k.start())?;
    }
    let mine = ok(go.wait_timeout(PATIENCE))?;
    let mut seen = vec![mine];
    for (c, e) in conns.iter().zip(&events) {
        check(ok(c.poll_timeout(PATIENCE))?, "a child never answered")?;
        let (index, pid): (usize, u32) = ok(c.recv())?;
        check(
            slots.get(index) == Some(pid),
            format!("slot {index} does not hold pid {pid}"),
        )?;
        check(e.wait_timeout(PATIENCE), "a child's event was not set")?;
        seen.push(index);
    }
    for k in &mut kids {
        check(finish(k)? == 0, format!("{} failed", k.get_name()))?;
    }
    seen.sort_unstable();
    check(seen == [0, 1, 2, 3], format!("barrier indexes {seen:?}"))?;
    check(total.get() == 3000, format!("locked increments gave {}", total.get()))
}

fn handles_travel_through_a_connection() -> Check {
    let (mine, theirs) = ok(pipe())?;
    let mut p = Process::new(receiver, (theirs,));
    ok(p.start())?;
    let total = ok(Value::new(1u64))?;
    let lock = ok(Lock::new())?;
    let (reply_r, reply_w) = ok(pipe_simplex())?;
    ok(mine.send(&(total.clone(), lock.clone(), reply_w)))?;
    check(ok(reply_r.poll_timeout(PATIENCE))?, "no reply")?;
    let said: String = ok(reply_r.recv())?;
    check(said == "added 41", format!("reply {said:?}"))?;
    check(finish(&mut p)? == 0, "the receiver failed")?;
    check(total.get() == 42, format!("total {}", total.get()))
}

fn queues_carry_handles_and_travel_through_connections() -> Check {
    let (mine, theirs) = ok(pipe())?;
    let mut p = Process::new(queue_user, (theirs,));
    ok(p.start())?;
    let jobs = ok(Queue::new())?;
    let answers: Queue<String> = ok(Queue::new())?;
    ok(mine.send(&(jobs.clone(), answers.clone())))?;
    let total = ok(Value::new(21u64))?;
    let (reply_r, reply_w) = ok(pipe_simplex())?;
    ok(jobs
        .put((total.clone(), ok(Lock::new())?, reply_w))
        .map_err(|e| e.to_string()))?;
    let said = ok(answers.get_timeout(PATIENCE))?;
    check(said == "done", format!("answer {said:?}"))?;
    check(
        ok(reply_r.poll_timeout(PATIENCE))?,
        "no reply through the connection from the queue",
    )?;
    let said: String = ok(reply_r.recv())?;
    check(said == "doubled", format!("reply {said:?}"))?;
    check(finish(&mut p)? == 0, "the queue user failed")?;
    check(total.get() == 42, format!("total {}", total.get()))
}

/// Gets a dict proxy through a connection, a queue proxy and a shared
/// queue out of that dict, and answers through both.
fn proxy_user(conn: Connection) -> Check {
    let d: DictProxy<String, (QueueProxy<String>, Queue<u64>)> = ok(conn.recv())?;
    let (answers, sums) = ok(d.get(&"channels".into()))?.ok_or("no channels in the dict")?;
    ok(sums.put(ok(d.len())? as u64 + 41).map_err(|e| e.to_string()))?;
    answers.put("from the child".into()).map_err(|e| e.to_string())
}

fn manager_proxies_travel_with_other_handles() -> Check {
    let m = ok(Manager::new())?;
    let d = ok(m.dict::<String, (QueueProxy<String>, Queue<u64>)>())?;
    let answers = ok(m.queue::<String>())?;
    let sums = ok(Queue::new())?;
    ok(d.insert("channels".into(), (answers.clone(), sums.clone())))?;
    let (mine, theirs) = ok(pipe())?;
    let mut p = Process::new(proxy_user, (theirs,));
    ok(p.start())?;
    ok(mine.send(&d))?;
    check(ok(sums.get_timeout(PATIENCE))? == 42, "the shared queue from the dict")?;
    let said = answers.get_timeout(PATIENCE).map_err(|e| e.to_string())?;
    check(said == "from the child", format!("answer {said:?}"))?;
    check(finish(&mut p)? == 0, "the proxy user failed")
}

fn wait_sees_processes_and_connections() -> Check {
    let (r, w) = ok(pipe_simplex())?;
    let (go_r, go_w) = ok(pipe_simplex())?;
    let mut p = Process::new(ends_when_told, (go_r,));
    ok(p.start())?;
    let ready = ok(wait(&[&p as &dyn Waitable, &r], Some(Duration::from_millis(50))))?;
    check(ready.is_empty(), format!("ready too early: {ready:?}"))?;
    ok(w.send(&1u8))?;
    let ready = ok(wait(&[&p as &dyn Waitable, &r], Some(PATIENCE)))?;
    check(ready.contains(&1), format!("the connection is not ready: {ready:?}"))?;
    let _: u8 = ok(r.recv())?;
    ok(go_w.send(&()))?;
    let ready = ok(wait(&[&p as &dyn Waitable], Some(PATIENCE)))?;
    check(ready == [0], format!("the process did not end: {ready:?}"))?;
    check(finish(&mut p)? == 0, "the child failed")
}

/// A pool task that uses a handle of each crate.
fn pool_task(
    conn: Connection,
    lock: Lock,
    total: Value<u64>,
    slots: Array<u32>,
    q: Queue<u32>,
    d: DictProxy<u32, u32>,
) -> Result<u32, String> {
    let me = ok(conn.recv::<u32>())?;
    {
        let _g = ok(lock.acquire())?;
        total.set(total.get() + u64::from(me));
    }
    ok(slots.set(me as usize, me * 10))?;
    ok(q.put(me).map_err(|e| e.to_string()))?;
    ok(d.insert(me, me + 100))?;
    Ok(me)
}

/// An executor task that answers through a manager queue (seed 004's
/// `Manager().Queue()` with a pool).
fn executor_task(answers: QueueProxy<String>, n: u32) -> Result<(), String> {
    answers.put(format!("task {n}")).map_err(|e| e.to_string())
}

fn pool_and_executor_tasks_get_handles() -> Check {
    let pool = ok(Pool::new(2))?;
    let m = ok(Manager::new())?;
    let (lock, total, slots) = (ok(Lock::new())?, ok(Value::new(0u64))?, ok(Array::<u32>::new(4))?);
    let (q, d) = (ok(Queue::new())?, ok(m.dict::<u32, u32>())?);
    let mut results = Vec::new();
    for i in 0..4u32 {
        let (mine, theirs) = ok(pipe())?;
        ok(mine.send(&i))?;
        let args = (theirs, lock.clone(), total.clone(), slots.clone(), q.clone(), d.clone());
        results.push(ok(pool.apply_async(pool_task, args))?);
    }
    for (i, r) in results.iter().enumerate() {
        check(ok(r.get_timeout(PATIENCE))? == Ok(i as u32), format!("task {i}"))?;
    }
    check(total.get() == 6, format!("total {}", total.get()))?;
    check(slots.to_vec() == vec![0, 10, 20, 30], "the array")?;
    let mut got: Vec<u32> = (0..4)
        .map(|_| q.get_timeout(PATIENCE))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    got.sort_unstable();
    check(got == vec![0, 1, 2, 3], "the queue")?;
    check(ok(d.len())? == 4, "the managed dict")?;
    let ex = ok(ProcessPoolExecutor::new(2))?;
    let answers = ok(m.queue::<String>())?;
    let fs: Vec<_> = (0..3)
        .map(|n| ex.submit(executor_task, (answers.clone(), n)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for f in &fs {
        ok(ok(f.result_timeout(PATIENCE))?)?;
    }
    check(answers.qsize().map_err(|e| e.to_string())? == 3, "the manager queue")
}

/// A trivial child target.
fn nothing() {}

/// The driver side of [`a_misspelt_start_method_starts_nothing`]: run with
/// `MP_START_METHOD=frok`, prints what each way of starting children gave.
fn misspelt_driver() -> ExitCode {
    let show = |what: &str, r: Result<(), String>| match r {
        Ok(()) => println!("{what}: started"),
        Err(e) => println!("{what}: {e}"),
    };
    let mut p = Process::new(nothing, ());
    show(
        "process",
        p.start().map_err(|e| e.to_string()).map(|()| {
            let _ = finish(&mut p);
        }),
    );
    show("pool", Pool::new(1).map(drop).map_err(|e| e.to_string()));
    show(
        "executor",
        ProcessPoolExecutor::new(1).map(drop).map_err(|e| e.to_string()),
    );
    show("manager", Manager::new().map(drop).map_err(|e| e.to_string()));
    ExitCode::SUCCESS
}

/// With `MP_START_METHOD` misspelt, a process, a pool, an executor and a
/// manager started with the process-wide method all fail, naming the
/// variable, its value and the valid names: none starts a child with a
/// method nobody asked for.
fn a_misspelt_start_method_starts_nothing() -> Check {
    use std::os::fd::AsFd;
    let child = ok(std::process::Command::new(ok(std::env::current_exe())?)
        .arg("--misspelt-start-method")
        .env("MP_START_METHOD", "frok")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn())?;
    // Its output is a few lines, well under a pipe's capacity: it can end
    // before anything reads them.
    let gone = ok(mp_sys::process::PidFd::open(child.id()))?;
    let mut set = [mp_sys::fd::PollFd::readable(gone.as_fd())];
    if ok(mp_sys::fd::poll(&mut set, Some(PATIENCE)))? == 0 {
        let _ = mp_sys::signal::kill(child.id(), mp_sys::signal::Signal::KILL);
    }
    let out = ok(child.wait_with_output())?;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    for what in ["process", "pool", "executor", "manager"] {
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{what}: ")))
            .ok_or(format!("no line for {what} in {out:?}"))?;
        for want in ["MP_START_METHOD", "\"frok\"", "fork, spawn, forkserver"] {
            check(
                line.contains(want),
                format!("{what} with MP_START_METHOD=frok gave {line:?}, without {want}"),
            )?;
        }
    }
    Ok(())
}

type Test = fn() -> Check;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--misspelt-start-method") {
        return misspelt_driver();
    }
    let tests: [(&str, Test); 8] = [
        (
            "the_start_method_is_the_one_asked_for",
            the_start_method_is_the_one_asked_for,
        ),
        (
            "every_kind_of_handle_in_one_child_each",
            every_kind_of_handle_in_one_child_each,
        ),
        (
            "handles_travel_through_a_connection",
            handles_travel_through_a_connection,
        ),
        (
            "queues_carry_handles_and_travel_through_connections",
            queues_carry_handles_and_travel_through_connections,
        ),
        (
            "wait_sees_processes_and_connections",
            wait_sees_processes_and_connections,
        ),
        (
            "manager_proxies_travel_with_other_handles",
            manager_proxies_travel_with_other_handles,
        ),
        (
            "pool_and_executor_tasks_get_handles",
            pool_and_executor_tasks_get_handles,
        ),
        (
            "a_misspelt_start_method_starts_nothing",
            a_misspelt_start_method_starts_nothing,
        ),
    ];
    let mut h = Harness::new(tests.len() + 1);
    let fds_before = mp_sys::fd::count_open_fds().unwrap_or(0);
    for (name, f) in tests {
        h.run(&format!("{name}::{:?}", get_start_method()), f);
    }
    h.run("no_descriptor_left_behind", || {
        let after = ok(mp_sys::fd::count_open_fds())?;
        // Kept on purpose for the process's life: under fork, a pidfd of
        // this process that forked children inherit as their parent's
        // watch; under the fork server, the socket to the server and the
        // server's pidfd.
        let listing: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        // And the region this process cuts pipes' rings from (one at a
        // time), once it made a pipe.
        let pipes_region = usize::from(listing.iter().any(|l| l.contains("/memfd:mp-pipes")));
        // Under fork, a child started while this process runs other threads
        // (a pool's, a manager client's) comes from the fork server instead,
        // which is then kept as under the forkserver method.
        let fork_server = usize::from(listing.iter().any(|l| l.starts_with("socket:")));
        let kept = pipes_region
            + match get_start_method() {
                StartMethod::Fork => 1 + 2 * fork_server,
                StartMethod::Spawn => 0,
                StartMethod::ForkServer => 2,
            };
        check(
            after == fds_before + kept,
            format!("open fds {fds_before} -> {after}, {kept} expected to be kept: {listing:?}"),
        )
    });
    h.finish()
}
