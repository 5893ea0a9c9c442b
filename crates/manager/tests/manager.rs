//! mp-manager's proxies used from child processes under every start method
//! (the server started with the same method), from a single-threaded main
//! (the fork method needs one; see docs/ARCHITECTURE.md, fork safety).
//!
//! Run with `cargo test -p mp-manager --test manager [filter]`.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mp_connection::pipe;
use mp_manager::{
    BaseManager, DictProxy, EventProxy, LockProxy, Manager, ManagerError, NamespaceProxy, ObjectProxy, QueueProxy,
    ValueProxy,
};
use mp_process::{Process, StartMethod};
use mp_queue::{GetError, PutError};
use mp_sys::signal::{Signal, kill};
use mp_testkit::{METHODS, PATIENCE, Test, check, finish, ok, suite};

type Check = Result<(), String>;

fn child(m: StartMethod, p: Process) -> Result<Process, String> {
    let mut p = p.start_method(m);
    ok(p.start())?;
    Ok(p)
}

fn run(m: StartMethod, p: Process) -> Check {
    let mut p = child(m, p)?;
    let code = finish(&mut p)?;
    check(code == 0, format!("the child exited with {code}"))
}

// ---- child targets ---------------------------------------------------------

fn insert_range(d: DictProxy<u32, u32>, from: u32, n: u32) -> Result<(), ManagerError> {
    for k in from..from + n {
        d.insert(k, k * 2)?;
    }
    Ok(())
}

/// Uses every kind of proxy it is given.
fn use_everything(
    d: DictProxy<String, i64>,
    l: mp_manager::ListProxy<i32>,
    q: QueueProxy<String>,
    ns: NamespaceProxy,
    v: ValueProxy<f64>,
    a: mp_manager::ArrayProxy<u8>,
) -> Result<(), String> {
    ok(d.insert("child".into(), i64::from(mp_sys::process::pid())))?;
    ok(l.extend([4, 5, 6]))?;
    l.reverse().map_err(|e| e.to_string())?;
    ok(q.put("from the child".into()).map_err(|e| e.to_string()))?;
    ok(ns.set("answer", 42u8))?;
    ok(v.set(v.get().map_err(|e| e.to_string())? * 2.0))?;
    ok(a.set(2, 9))?;
    Ok(())
}

fn add_under_lock(lock: LockProxy, v: ValueProxy<u64>, n: u32) -> Result<(), ManagerError> {
    for _ in 0..n {
        let g = lock.acquire()?;
        let x = v.get()?;
        v.set(x + 1)?;
        g.release()?;
    }
    Ok(())
}

/// Takes the lock, says so, and waits to be killed (`never` stays silent).
fn hold_lock_forever(lock: LockProxy, held: EventProxy, never: mp_connection::Connection) -> Result<(), ManagerError> {
    let g = lock.acquire()?;
    held.set()?;
    let _ = never.poll_timeout(PATIENCE);
    drop(g);
    Ok(())
}

/// Blocks in a proxy call (a barrier of two that nobody else joins) until
/// the server is killed; exits 0 when the call failed with ServerGone
/// within 5 s.
fn blocked_until_server_dies(b: mp_manager::BarrierProxy) -> Result<(), String> {
    let t0 = Instant::now();
    match b.wait_timeout(PATIENCE) {
        Err(ManagerError::ServerGone(_)) => check(
            t0.elapsed() < Duration::from_secs(5),
            format!("the error came after {:?}", t0.elapsed()),
        ),
        other => Err(format!("expected ServerGone, got {other:?}")),
    }
}

fn produce(q: QueueProxy<u32>, n: u32) -> Result<(), String> {
    for i in 0..n {
        q.put(i).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn consume_sum(q: QueueProxy<u32>, n: u32, out: ValueProxy<u64>) -> Result<(), String> {
    let mut sum = 0u64;
    for _ in 0..n {
        sum += u64::from(q.get_timeout(PATIENCE).map_err(|e| e.to_string())?);
    }
    ok(out.set(sum))?;
    Ok(())
}

#[derive(Default)]
struct Counter {
    n: u64,
}

impl Counter {
    fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    fn get(&mut self) -> u64 {
        self.n
    }
    fn explode(&mut self, msg: String) -> u64 {
        panic!("{msg}")
    }
}

fn bump(c: ObjectProxy<Counter>, times: u32) -> Result<(), ManagerError> {
    for _ in 0..times {
        c.call(Counter::incr, (1,))?;
    }
    Ok(())
}

/// Serves a shared queue over TCP on a free port; sends the address back.
fn serve_remote(addr_out: mp_connection::Connection, key: Vec<u8>) -> Result<(), String> {
    let server = ok(BaseManager::builder()
        .share("jobs", VecDeque::<String>::new())
        .listen("127.0.0.1:0", &key))?;
    ok(addr_out.send(&server.address()))?;
    ok(server.serve_forever())
}

/// A separate process using the remote manager.
fn remote_client(addr: String, key: Vec<u8>) -> Result<(), String> {
    let r = ok(BaseManager::connect(&addr, &key))?;
    let jobs: ObjectProxy<VecDeque<String>> = ok(r.get("jobs"))?;
    ok(jobs.call(VecDeque::push_back, ("from a client process".to_string(),)))?;
    Ok(())
}

/// Starts a manager, sends its server's pid, and waits to be killed.
fn own_manager_then_wait(m: StartMethod, out: mp_connection::Connection) -> Result<(), String> {
    let mgr = ok(Manager::with_start_method(m))?;
    ok(out.send(&mgr.pid().ok_or("no server pid")?))?;
    let _ = out.poll_timeout(PATIENCE);
    Ok(())
}

// ---- scenarios under each start method --------------------------------------

/// Eight processes insert 1,000 distinct keys each at the same time.
fn eight_writers(m: StartMethod) -> Check {
    let mgr = ok(Manager::with_start_method(m))?;
    let d = ok(mgr.dict::<u32, u32>())?;
    let mut ps = Vec::new();
    for i in 0..8 {
        ps.push(child(m, Process::new(insert_range, (d.clone(), i * 1000, 1000)))?);
    }
    for p in &mut ps {
        let code = finish(p)?;
        check(code == 0, format!("a writer exited with {code}"))?;
    }
    check(ok(d.len())? == 8000, format!("{} keys", ok(d.len())?))?;
    let items = ok(d.items())?;
    check(items.iter().all(|&(k, v)| v == k * 2), "a value is wrong")?;
    let mut keys: Vec<u32> = items.iter().map(|&(k, _)| k).collect();
    keys.sort_unstable();
    check(keys == (0..8000).collect::<Vec<_>>(), "keys missing or doubled")
}

/// Every proxy type travels to a child and reaches the same object.
fn every_proxy_travels(m: StartMethod) -> Check {
    let mgr = ok(Manager::with_start_method(m))?;
    let d = ok(mgr.dict::<String, i64>())?;
    let l = ok(mgr.list_from(vec![1, 2, 3]))?;
    let q = ok(mgr.queue::<String>())?;
    let ns = ok(mgr.namespace())?;
    let v = ok(mgr.value(1.5f64))?;
    let a = ok(mgr.array(vec![0u8; 4]))?;
    let mut p = child(
        m,
        Process::new(
            use_everything,
            (d.clone(), l.clone(), q.clone(), ns.clone(), v.clone(), a.clone()),
        ),
    )?;
    let pid = p.pid().unwrap_or(0);
    check(finish(&mut p)? == 0, "the child failed")?;
    check(ok(d.get(&"child".into()))? == Some(i64::from(pid)), "dict")?;
    check(ok(l.to_vec())? == [6, 5, 4, 3, 2, 1], "list")?;
    check(q.get_nowait().ok().as_deref() == Some("from the child"), "queue")?;
    check(ok(ns.get::<u8>("answer"))? == Some(42), "namespace")?;
    check(ok(v.get())? == 3.0, "value")?;
    check(ok(a.to_vec())? == [0, 0, 9, 0], "array")
}

/// Four processes add 200 each to a value under a manager lock.
fn lock_serializes_children(m: StartMethod) -> Check {
    let mgr = ok(Manager::with_start_method(m))?;
    let lock = ok(mgr.lock())?;
    let v = ok(mgr.value(0u64))?;
    let mut ps = Vec::new();
    for _ in 0..4 {
        ps.push(child(m, Process::new(add_under_lock, (lock.clone(), v.clone(), 200)))?);
    }
    for p in &mut ps {
        check(finish(p)? == 0, "a child failed")?;
    }
    let total = ok(v.get())?;
    check(total == 800, format!("{total}, not 800"))
}

/// A process killed while holding a manager lock releases it.
fn killed_holder_releases_the_lock(m: StartMethod) -> Check {
    let mgr = ok(Manager::with_start_method(m))?;
    let lock = ok(mgr.lock())?;
    let held = ok(mgr.event())?;
    let (never, _silent) = ok(pipe())?;
    let mut p = child(m, Process::new(hold_lock_forever, (lock.clone(), held.clone(), never)))?;
    check(ok(held.wait_timeout(PATIENCE))?, "the child never took the lock")?;
    check(ok(lock.try_acquire())?.is_none(), "the lock is free while held")?;
    ok(p.kill())?;
    let _ = finish(&mut p);
    let g = ok(lock.acquire_timeout(Duration::from_secs(5)))?;
    check(g.is_some(), "the lock stayed held after its holder died")
}

/// Killing the server mid-call: the blocked caller gets an error quickly.
fn server_killed_mid_call(m: StartMethod) -> Check {
    let mgr = ok(Manager::with_start_method(m))?;
    let q = ok(mgr.queue::<u32>())?;
    let b = ok(mgr.barrier(2))?;
    let mut p = child(m, Process::new(blocked_until_server_dies, (b.clone(),)))?;
    // The child is in the middle of its call once the barrier counts it.
    let waiting = mp_testkit::until(PATIENCE, || b.n_waiting().ok() == Some(1));
    check(waiting, "the child never blocked in the barrier")?;
    let pid = mgr.pid().ok_or("no server pid")?;
    ok(kill(pid, Signal::KILL))?;
    let code = finish(&mut p)?;
    check(code == 0, format!("the blocked child exited with {code}"))?;
    let t0 = Instant::now();
    let r = q.qsize();
    check(
        matches!(r, Err(ManagerError::ServerGone(_))),
        format!("a call to a dead server gave {r:?}"),
    )?;
    check(t0.elapsed() < Duration::from_secs(2), "the error was slow")?;
    // Shutdown reaps the killed server.
    ok(mgr.shutdown())
}

/// A manager's server dies with the process that started it, even when
/// that process is killed.
fn server_dies_with_its_parent(m: StartMethod) -> Check {
    let (mine, theirs) = ok(pipe())?;
    let mut p = child(m, Process::new(own_manager_then_wait, (m, theirs)))?;
    let server: u32 = ok(mine.recv())?;
    check(ok(mp_sys::process::is_alive(server))?, "the server is not running")?;
    ok(p.kill())?;
    let _ = finish(&mut p);
    let gone = mp_testkit::until(PATIENCE, || !mp_sys::process::is_alive(server).unwrap_or(false));
    check(gone, format!("the server {server} outlived its killed parent"))
}

/// A queue proxy carries items from a producer child to a consumer child.
fn queue_between_children(m: StartMethod) -> Check {
    let mgr = ok(Manager::with_start_method(m))?;
    let q = ok(mgr.queue_with_maxsize::<u32>(10))?;
    let out = ok(mgr.value(0u64))?;
    let mut c = child(m, Process::new(consume_sum, (q.clone(), 500, out.clone())))?;
    run(m, Process::new(produce, (q.clone(), 500)))?;
    check(finish(&mut c)? == 0, "the consumer failed")?;
    let sum = ok(out.get())?;
    check(sum == (0..500u64).sum::<u64>(), format!("sum {sum}"))
}

/// A registered type, used from children; a panicking method is an error
/// and the server keeps serving.
fn registered_type_from_children(m: StartMethod) -> Check {
    let mgr = ok(BaseManager::builder()
        .register::<Counter>("Counter")
        .start_method(m)
        .start())?;
    let c: ObjectProxy<Counter> = ok(mgr.create("Counter"))?;
    let mut ps = Vec::new();
    for _ in 0..3 {
        ps.push(child(m, Process::new(bump, (c.clone(), 100)))?);
    }
    for p in &mut ps {
        check(finish(p)? == 0, "a child failed")?;
    }
    check(ok(c.call(Counter::get, ()))? == 300, "300 increments")?;
    let e = c.call(Counter::explode, ("boom".to_string(),));
    check(
        matches!(&e, Err(ManagerError::Remote(msg)) if msg.contains("boom")),
        format!("a panicking method gave {e:?}"),
    )?;
    check(ok(c.call(Counter::incr, (1,)))? == 301, "the server went on")?;
    let unknown = mgr.create::<Counter>("Nope");
    check(
        matches!(unknown, Err(ManagerError::NotFound(_))),
        format!("{unknown:?}"),
    )
}

/// A remote manager on 127.0.0.1, served by one process and used from
/// another; a wrong key is refused and the server goes on.
fn remote_manager_over_tcp(m: StartMethod) -> Check {
    let key = b"secret key".to_vec();
    let (rx, tx) = ok(pipe())?;
    let mut server = child(m, Process::new(serve_remote, (tx, key.clone())))?;
    let addr: String = ok(rx.recv())?;
    let wrong = BaseManager::connect(&addr, b"wrong key");
    let result = (|| {
        check(
            matches!(wrong, Err(ManagerError::Authentication(_))),
            format!("a wrong key gave {wrong:?}"),
        )?;
        run(m, Process::new(remote_client, (addr.clone(), key.clone())))?;
        let r = ok(BaseManager::connect(&addr, &key))?;
        let jobs: ObjectProxy<VecDeque<String>> = ok(r.get("jobs"))?;
        let front = ok(jobs.call(VecDeque::pop_front, ()))?;
        check(front.as_deref() == Some("from a client process"), format!("{front:?}"))?;
        let wrong_type = r.get::<Vec<u8>>("jobs");
        check(
            matches!(wrong_type, Err(ManagerError::WrongType(_))),
            format!("{wrong_type:?}"),
        )?;
        let missing = r.get::<Vec<u8>>("nothing");
        check(
            matches!(missing, Err(ManagerError::NotFound(_))),
            format!("{missing:?}"),
        )
    })();
    ok(server.terminate())?;
    let _ = finish(&mut server);
    result
}

// ---- local scenarios -------------------------------------------------------

fn dict_and_list_methods() -> Check {
    let mgr = ok(Manager::new())?;
    let d = ok(mgr.dict::<String, u32>())?;
    check(ok(d.insert("b".into(), 1))?.is_none(), "first insert")?;
    check(ok(d.insert("b".into(), 2))? == Some(1), "insert returns the old value")?;
    ok(d.update([("a".to_string(), 3), ("c".to_string(), 4)]))?;
    check(ok(d.keys())? == ["b", "a", "c"], "insertion order")?;
    check(ok(d.values())? == [2, 3, 4], "values")?;
    check(ok(d.remove(&"a".into()))? == Some(3), "remove")?;
    check(ok(d.keys())? == ["b", "c"], "order after remove")?;
    check(ok(d.contains_key(&"c".into()))?, "contains")?;
    ok(d.clear())?;
    check(ok(d.is_empty())?, "clear")?;

    let l = ok(mgr.list::<i32>())?;
    ok(l.extend([5, 3, 9]))?;
    ok(l.insert(0, 1))?;
    ok(l.insert(99, 7))?; // past the end: appended, as in Python
    check(ok(l.to_vec())? == [1, 5, 3, 9, 7], "insert")?;
    check(ok(l.remove_at(1))? == 5, "remove_at")?;
    check(
        matches!(l.remove_at(10), Err(ManagerError::InvalidArgument(_))),
        "remove_at out of range",
    )?;
    check(
        matches!(l.set(10, 1), Err(ManagerError::InvalidArgument(_))),
        "set out of range",
    )?;
    ok(l.sort())?;
    check(ok(l.to_vec())? == [1, 3, 7, 9], "sort")?;
    check(
        ok(l.pop())? == Some(9) && ok(l.get(0))? == Some(1) && ok(l.get(9))?.is_none(),
        "pop/get",
    )?;
    check(ok(l.contains(&3))?, "contains")?;
    // A large batch goes over the socket, not the page.
    let big: Vec<i32> = (0..200_000).collect();
    ok(l.clear())?;
    ok(l.extend(big.clone()))?;
    check(ok(l.to_vec())? == big, "a 200,000-item round trip")
}

fn queue_proxy_semantics() -> Check {
    let mgr = ok(Manager::new())?;
    let q = ok(mgr.queue_with_maxsize::<String>(1))?;
    ok(q.put("a".into()).map_err(|e| e.to_string()))?;
    check(ok(q.is_full())?, "full")?;
    check(
        matches!(q.put_nowait("b".into()), Err(PutError::Full(s)) if s == "b"),
        "put_nowait Full",
    )?;
    let t0 = Instant::now();
    check(
        matches!(
            q.put_timeout("c".into(), Duration::from_millis(200)),
            Err(PutError::Full(_))
        ),
        "put_timeout Full",
    )?;
    check(t0.elapsed() >= Duration::from_millis(190), "put_timeout returned early")?;
    check(q.get_nowait().ok().as_deref() == Some("a"), "get")?;
    let t0 = Instant::now();
    check(
        matches!(q.get_timeout(Duration::from_millis(200)), Err(GetError::Empty)),
        "get_timeout Empty",
    )?;
    check(t0.elapsed() >= Duration::from_millis(190), "get_timeout returned early")?;
    ok(q.put("d".into()).map_err(|e| e.to_string()))?;
    ok(q.close())?;
    check(matches!(q.put("e".into()), Err(PutError::Closed(_))), "put after close")?;
    check(q.get().ok().as_deref() == Some("d"), "drain after close")?;
    check(matches!(q.get(), Err(GetError::Closed)), "get after drain")
}

fn sync_proxies_between_threads() -> Check {
    let mgr = ok(Manager::new())?;
    // RLock: re-entrant for its thread, foreign release is an error.
    let r = ok(mgr.rlock())?;
    let g1 = ok(r.acquire())?;
    let g2 = ok(r.acquire())?;
    let r2 = r.clone();
    let other = std::thread::spawn(move || (r2.try_acquire().map(|g| g.is_some()), r2.release().is_err()));
    let (got, release_failed) = other.join().map_err(|_| "thread panicked")?;
    check(got.ok() == Some(false), "another thread took a held RLock")?;
    check(release_failed, "another thread released the RLock")?;
    drop(g2);
    drop(g1);
    // Semaphore.
    let s = ok(mgr.semaphore(2))?;
    check(
        ok(s.try_acquire())? && ok(s.try_acquire())? && !ok(s.try_acquire())?,
        "semaphore count",
    )?;
    ok(s.release())?;
    check(ok(s.get_value())? == 1, "semaphore value")?;
    // Condition: a thread waits until notified.
    let c = ok(mgr.condition())?;
    let flag = ok(mgr.value(false))?;
    let (c2, f2) = (c.clone(), flag.clone());
    let waiter = std::thread::spawn(move || -> Result<bool, ManagerError> {
        let mut g = c2.acquire()?;
        let f3 = f2.clone();
        c2.wait_for(&mut g, move || f3.get().unwrap_or(false), Some(PATIENCE))
    });
    {
        let g = ok(c.acquire())?;
        ok(flag.set(true))?;
        ok(c.notify_all())?;
        drop(g);
    }
    check(
        ok(waiter.join().map_err(|_| "thread panicked")?)?,
        "wait_for saw the flag",
    )?;
    check(
        matches!(c.notify(1), Err(ManagerError::InvalidArgument(_))),
        "notify without the lock",
    )?;
    // Barrier: three threads get the indexes 0, 1, 2.
    let b = ok(mgr.barrier(3))?;
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || b.wait())
        })
        .collect();
    let mut idx = vec![ok(b.wait())?];
    for h in hs {
        idx.push(ok(h.join().map_err(|_| "thread panicked")?)?);
    }
    idx.sort_unstable();
    check(idx == [0, 1, 2], format!("indexes {idx:?}"))?;
    // A timeout breaks it.
    check(
        matches!(b.wait_timeout(Duration::from_millis(50)), Err(ManagerError::Timeout)),
        "timeout",
    )?;
    check(ok(b.is_broken())?, "broken after a timeout")?;
    check(matches!(b.wait(), Err(ManagerError::BrokenBarrier)), "broken")?;
    ok(b.reset())?;
    check(!ok(b.is_broken())?, "reset")?;
    // Event.
    let e = ok(mgr.event())?;
    check(!ok(e.wait_timeout(Duration::from_millis(20)))?, "unset event")?;
    ok(e.set())?;
    check(ok(e.wait_timeout(Duration::ZERO))?, "set event")
}

/// Handles inside values: a managed dict of mp-queue queues and proxies.
fn handles_inside_values() -> Check {
    let mgr = ok(Manager::new())?;
    let d = ok(mgr.dict::<String, mp_queue::Queue<u32>>())?;
    let q = ok(mp_queue::Queue::<u32>::new())?;
    ok(q.put(7).map_err(|e| e.to_string()))?;
    ok(d.insert("q".into(), q))?;
    let back = ok(d.get(&"q".into()))?.ok_or("no queue")?;
    check(back.get_nowait().ok() == Some(7), "the queue came back")?;
    let proxies = ok(mgr.dict::<u8, EventProxy>())?;
    let e = ok(mgr.event())?;
    ok(proxies.insert(1, e.clone()))?;
    let e2 = ok(proxies.get(&1))?.ok_or("no proxy")?;
    ok(e2.set())?;
    check(ok(e.is_set())?, "the proxy from the dict reaches the same event")?;
    let ns = ok(mgr.namespace())?;
    check(
        matches!(ns.set("e", e), Err(ManagerError::Codec(_))),
        "a handle in a namespace",
    )
}

fn wrong_types_are_errors() -> Check {
    let mgr = ok(Manager::new())?;
    let d = ok(mgr.dict::<u32, u32>())?;
    let frame = ok(mp_codec::encode(&d))?;
    let as_other = mp_codec::decode::<DictProxy<String, u32>>(frame);
    check(
        as_other.is_err(),
        "a DictProxy<u32, u32> decoded as DictProxy<String, u32>",
    )?;
    let json = serde_json::to_string(&d);
    check(json.is_err(), "a proxy encoded as JSON (it holds a descriptor)")?;
    let ns = ok(mgr.namespace())?;
    ok(ns.set("x", "text"))?;
    check(
        matches!(ns.get::<u64>("x"), Err(ManagerError::Codec(_))),
        "namespace value of another type",
    )
}

fn shutdown_then_calls_fail() -> Check {
    let mgr = ok(Manager::new())?;
    let d = ok(mgr.dict::<u8, u8>())?;
    let pid = mgr.pid().ok_or("no pid")?;
    ok(mgr.shutdown())?;
    let r = d.len();
    check(
        matches!(r, Err(ManagerError::ServerGone(_))),
        format!("after shutdown: {r:?}"),
    )?;
    check(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the server was not reaped",
    )?;
    ok(mgr.shutdown()) // twice is fine
}

/// `shutdown` takes `&self` (the form `let m = Manager::new()?; ..;
/// m.shutdown()?`), a second one is Ok, and calls afterwards fail; the same
/// for a started `BaseManager`, a connected one, and two threads at once.
fn shutdown_through_a_shared_reference() -> Check {
    let m = ok(Manager::new())?;
    let d = ok(m.dict::<u8, u8>())?;
    ok(d.insert(1, 2))?;
    ok(m.shutdown())?;
    ok(m.shutdown())?;
    let r = d.len();
    check(
        matches!(r, Err(ManagerError::ServerGone(_))),
        format!("after shutdown: {r:?}"),
    )?;
    let r = m.dict::<u8, u8>();
    check(r.is_err(), format!("a new dict after shutdown: {r:?}"))?;

    let b = ok(BaseManager::builder().register::<Counter>("Counter").start())?;
    let c: ObjectProxy<Counter> = ok(b.create("Counter"))?;
    ok(b.shutdown())?;
    ok(b.shutdown())?;
    let r = c.call(Counter::incr, (1,));
    check(
        matches!(r, Err(ManagerError::ServerGone(_))),
        format!("after shutdown: {r:?}"),
    )?;

    // Two threads shut one manager down at once: both Ok, the server reaped.
    let m = std::sync::Arc::new(ok(Manager::new())?);
    let pid = m.pid().ok_or("no pid")?;
    let m2 = std::sync::Arc::clone(&m);
    let other = std::thread::spawn(move || m2.shutdown().map_err(|e| e.to_string()));
    ok(m.shutdown())?;
    ok(other.join().map_err(|_| "thread panicked")?)?;
    check(m.pid().is_none(), "a pid after shutdown")?;
    check(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the server was not reaped",
    )
}

/// A connected (remote) manager's shutdown closes its lines, twice is Ok,
/// and the remote server goes on.
fn remote_shutdown_through_a_shared_reference(m: StartMethod) -> Check {
    let key = b"another key".to_vec();
    let (rx, tx) = ok(pipe())?;
    let mut server = child(m, Process::new(serve_remote, (tx, key.clone())))?;
    let addr: String = ok(rx.recv())?;
    let result = (|| {
        let r = ok(BaseManager::connect(&addr, &key))?;
        let jobs: ObjectProxy<VecDeque<String>> = ok(r.get("jobs"))?;
        ok(jobs.call(VecDeque::push_back, ("one".to_string(),)))?;
        ok(r.shutdown())?;
        ok(r.shutdown())?;
        let again = ok(BaseManager::connect(&addr, &key))?;
        let jobs: ObjectProxy<VecDeque<String>> = ok(again.get("jobs"))?;
        let n = ok(jobs.call(|q: &mut VecDeque<String>| q.len(), ()))?;
        check(n == 1, format!("the remote server lost its value: {n} items"))
    })();
    ok(server.terminate())?;
    let _ = finish(&mut server);
    result
}

/// A queue proxy whose server died reports `Disconnected` (the item handed
/// back), not `Closed`; an orderly close is still `Closed`.
fn dead_server_is_disconnected_not_closed(m: StartMethod) -> Check {
    let mgr = ok(Manager::with_start_method(m))?;
    let q = ok(mgr.queue::<String>())?;
    let closed = ok(mgr.queue::<String>())?;
    ok(q.put("kept".into()).map_err(|e| e.to_string()))?;
    ok(closed.close())?;
    check(
        matches!(closed.put("late".into()), Err(PutError::Closed(s)) if s == "late"),
        "put after an orderly close is not Closed",
    )?;
    check(
        matches!(closed.get_nowait(), Err(GetError::Closed)),
        "get after an orderly close",
    )?;
    let pid = mgr.pid().ok_or("no server pid")?;
    ok(kill(pid, Signal::KILL))?;
    let r = q.put("lost".into());
    let shown = format!("{r:?}");
    check(
        matches!(&r, Err(PutError::Disconnected(s)) if s == "lost"),
        format!("put to a dead server gave {shown}"),
    )?;
    let e = r.unwrap_err();
    check(e.is_disconnected() && !e.is_closed(), "is_disconnected")?;
    check(e.to_string().contains("gone"), format!("the message: {e}"))?;
    check(e.into_inner() == "lost", "into_inner")?;
    for r in [q.get_nowait(), q.get_timeout(Duration::from_millis(100)), q.get()] {
        check(
            r == Err(GetError::Disconnected),
            format!("get from a dead server gave {r:?}"),
        )?;
    }
    let r = q.put_timeout("x".into(), Duration::MAX);
    check(
        matches!(r, Err(PutError::Disconnected(_))),
        format!("put_timeout: {r:?}"),
    )?;
    check(
        matches!(closed.get_nowait(), Err(GetError::Disconnected)),
        "a closed queue on a dead server",
    )?;
    // Reaps the killed server.
    ok(mgr.shutdown())?;
    // Shut down, the proxies know nothing of it: Disconnected as well.
    let mgr = ok(Manager::with_start_method(m))?;
    let q = ok(mgr.queue::<u32>())?;
    ok(mgr.shutdown())?;
    let r = q.put(3);
    check(
        matches!(r, Err(PutError::Disconnected(3))),
        format!("after shutdown: {r:?}"),
    )?;
    check(
        matches!(q.get_nowait(), Err(GetError::Disconnected)),
        "get after shutdown",
    )
}

/// `Duration::MAX` as a proxy timeout waits as long as it takes (here: not
/// at all), never panics.
fn huge_timeouts_do_not_panic() -> Check {
    let r = std::panic::catch_unwind(|| -> Check {
        let mgr = ok(Manager::new())?;
        let q = ok(mgr.queue::<u32>())?;
        ok(q.put_timeout(5, Duration::MAX).map_err(|e| e.to_string()))?;
        check(q.get_timeout(Duration::MAX) == Ok(5), "queue get_timeout")?;
        let l = ok(mgr.lock())?;
        check(ok(l.acquire_timeout(Duration::MAX))?.is_some(), "lock acquire_timeout")?;
        let r = ok(mgr.rlock())?;
        check(ok(r.acquire_timeout(Duration::MAX))?.is_some(), "rlock acquire_timeout")?;
        let s = ok(mgr.semaphore(1))?;
        check(ok(s.acquire_timeout(Duration::MAX))?, "semaphore acquire_timeout")?;
        let e = ok(mgr.event())?;
        ok(e.set())?;
        check(ok(e.wait_timeout(Duration::MAX))?, "event wait_timeout")?;
        let b = ok(mgr.barrier(1))?;
        check(ok(b.wait_timeout(Duration::MAX))? == 0, "barrier wait_timeout")?;
        let c = ok(mgr.condition())?;
        let mut g = ok(c.acquire_timeout(Duration::MAX))?.ok_or("condition acquire_timeout")?;
        check(
            ok(c.wait_for(&mut g, || true, Some(Duration::MAX)))?,
            "condition wait_for",
        )?;
        // A predicate that turns true after a notification, with a huge
        // timeout: the wait ends on the notification.
        let flag = ok(mgr.value(false))?;
        let (c2, f2) = (c.clone(), flag.clone());
        drop(g);
        let waiter = std::thread::spawn(move || -> Result<bool, ManagerError> {
            let mut g = c2.acquire()?;
            c2.wait_for(&mut g, || f2.get().unwrap_or(false), Some(Duration::MAX))
        });
        // Set the flag and notify until the waiter has seen it.
        let done = mp_testkit::until(PATIENCE, || {
            let Ok(Some(g)) = c.acquire_timeout(PATIENCE) else {
                return false;
            };
            let _ = flag.set(true);
            let _ = c.notify_all();
            drop(g);
            waiter.is_finished()
        });
        check(done, "the waiter never woke")?;
        check(
            ok(waiter.join().map_err(|_| "thread panicked")?)?,
            "wait_for with Duration::MAX",
        )
    });
    match r {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// A `Serialize` impl's own error message reaches the proxy's caller.
fn serde_messages_reach_the_caller() -> Check {
    let mgr = ok(BaseManager::builder().register::<Counter>("Counter").start())?;
    let c: ObjectProxy<Counter> = ok(mgr.create("Counter"))?;
    let r = c.call(|_: &mut Counter, _: Unlucky| 0u8, (Unlucky(13),));
    check(
        matches!(&r, Err(ManagerError::Codec(m)) if m.contains("13 is unlucky")),
        format!("a failing argument gave {r:?}"),
    )?;
    let q = ok(mgr.queue::<Unlucky>())?;
    let r = q.put(Unlucky(13));
    check(
        matches!(&r, Err(PutError::Encode(Unlucky(13), m)) if m.contains("13 is unlucky")),
        format!("a failing put gave {r:?}"),
    )?;
    // The server's decode of a value that refuses itself.
    let r = c.call(|_: &mut Counter, _: Picky| 0u8, (Picky(7),));
    check(
        matches!(&r, Err(ManagerError::Codec(m)) if m.contains("7 is not welcome")),
        format!("a failing decode on the server gave {r:?}"),
    )?;
    // The server's encode of a result that refuses itself.
    let r = c.call(|_: &mut Counter| Unlucky(13), ());
    check(
        matches!(&r, Err(ManagerError::Remote(m)) if m.contains("13 is unlucky")),
        format!("a failing result encode gave {r:?}"),
    )?;
    // The client's decode of a result that refuses itself.
    let r = c.call(|_: &mut Counter| Picky(7), ());
    check(
        matches!(&r, Err(ManagerError::Codec(m)) if m.contains("7 is not welcome")),
        format!("a failing result decode gave {r:?}"),
    )?;
    ok(mgr.shutdown())
}

/// Serializes as a `u32`, but refuses 13.
#[derive(Debug, PartialEq, serde::Deserialize)]
struct Unlucky(u32);

impl serde::Serialize for Unlucky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("13 is unlucky"));
        }
        s.serialize_u32(self.0)
    }
}

/// Deserializes from a `u32`, but refuses 7.
#[derive(Debug, serde::Serialize)]
struct Picky(u32);

impl<'de> serde::Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n == 7 {
            return Err(serde::de::Error::custom("7 is not welcome"));
        }
        Ok(Picky(n))
    }
}

fn no_leaks() -> Check {
    let fds = ok(mp_sys::fd::count_open_fds())?;
    let shm = mp_testkit::shm_entries();
    for _ in 0..20 {
        let m = ok(Manager::new())?;
        let d = ok(m.dict::<u8, u8>())?;
        ok(d.insert(1, 1))?;
        drop(d);
        drop(m);
    }
    let after = ok(mp_sys::fd::count_open_fds())?;
    check(after == fds, format!("{fds} fds before, {after} after 20 managers"))?;
    check(mp_testkit::shm_entries() == shm, "/dev/shm changed")?;
    let zombies = mp_testkit::zombie_children();
    check(zombies == 0, format!("{zombies} zombie children"))
}

fn main() -> ExitCode {
    let with_method: [(&str, mp_testkit::Case<StartMethod>); 11] = [
        ("eight_writers", eight_writers),
        ("every_proxy_travels", every_proxy_travels),
        ("lock_serializes_children", lock_serializes_children),
        ("killed_holder_releases_the_lock", killed_holder_releases_the_lock),
        ("server_killed_mid_call", server_killed_mid_call),
        ("server_dies_with_its_parent", server_dies_with_its_parent),
        ("queue_between_children", queue_between_children),
        ("registered_type_from_children", registered_type_from_children),
        ("remote_manager_over_tcp", remote_manager_over_tcp),
        (
            "remote_shutdown_through_a_shared_reference",
            remote_shutdown_through_a_shared_reference,
        ),
        (
            "dead_server_is_disconnected_not_closed",
            dead_server_is_disconnected_not_closed,
        ),
    ];
    let local: [(&str, Test); 10] = [
        ("dict_and_list_methods", dict_and_list_methods),
        ("queue_proxy_semantics", queue_proxy_semantics),
        ("sync_proxies_between_threads", sync_proxies_between_threads),
        ("handles_inside_values", handles_inside_values),
        ("wrong_types_are_errors", wrong_types_are_errors),
        ("shutdown_then_calls_fail", shutdown_then_calls_fail),
        (
            "shutdown_through_a_shared_reference",
            shutdown_through_a_shared_reference,
        ),
        ("huge_timeouts_do_not_panic", huge_timeouts_do_not_panic),
        ("serde_messages_reach_the_caller", serde_messages_reach_the_caller),
        ("no_leaks", no_leaks),
    ];
    suite(&local, &with_method, &METHODS)
}
