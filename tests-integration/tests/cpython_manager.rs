//! CPython's own multiprocessing tests, ported (see docs/conformance.md):
//! the manager part. Its own single-threaded main, because children may be forked;
//! `cargo xtask test` runs it once per `MP_START_METHOD`.
//!
//! Each test is named after the CPython method it ports and keeps its
//! assertions where they have a Rust counterpart; docs/conformance.md
//! says, method by method, what was ported and what does not apply.

use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use mp_testkit::{Harness, PATIENCE, Reaped, check, finish, ok, until};
use multiprocessing::{
    ArrayProxy, BarrierProxy, BaseManager, ConditionProxy, Connection, DictProxy, EventProxy, GetError, ListProxy,
    LockProxy, Manager, ManagerError, NamespaceProxy, ObjectProxy, Process, QueueProxy, RLockProxy, SemaphoreProxy,
    ShareableList, SharedError, SharedMemory, ValueProxy, pipe,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

type Check = Result<(), String>;

// ---- helpers -----------------------------------------------------------------

/// Compares two values, naming what was compared.
fn eq<T: PartialEq + std::fmt::Debug>(got: T, expected: T, what: &str) -> Check {
    check(got == expected, format!("{what}: got {got:?}, expected {expected:?}"))
}

// ---- _TestContainers -----------------------------------------------------------

/// A Python list item of the test: an int or a string.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
enum Py {
    Int(i64),
    Str(String),
}

fn ints(r: std::ops::Range<i64>) -> Vec<Py> {
    r.map(Py::Int).collect()
}

fn test_list() -> Check {
    let m = ok(Manager::new())?;
    let a = ok(m.list_from(ints(0..10)))?;
    eq(ok(a.to_vec())?, ints(0..10), "a[:]")?;

    let b = ok(m.list::<Py>())?;
    eq(ok(b.to_vec())?, vec![], "b[:]")?;

    ok(b.extend(ints(0..5)))?;
    eq(ok(b.to_vec())?, ints(0..5), "b[:] after extend")?;
    eq(ok(b.get(2))?, Some(Py::Int(2)), "b[2]")?;
    eq(ok(b.to_vec())?[2..].to_vec(), ints(2..5), "b[2:10]")?;

    // b *= 2
    ok(b.extend(ok(b.to_vec())?))?;
    let twice: Vec<Py> = ints(0..5).into_iter().chain(ints(0..5)).collect();
    eq(ok(b.to_vec())?, twice.clone(), "b *= 2")?;

    // b + [5, 6]
    let mut plus = ok(b.to_vec())?;
    plus.extend(ints(5..7));
    let mut expected = twice.clone();
    expected.extend(ints(5..7));
    eq(plus, expected, "b + [5, 6]")?;

    eq(ok(a.to_vec())?, ints(0..10), "a[:] unchanged")?;

    let e = ok(m.list_from(vec![a.clone(), b.clone()]))?;
    let mut elements = Vec::new();
    for element in ok(e.to_vec())? {
        elements.push(ok(element.to_vec())?);
    }
    eq(elements, vec![ints(0..10), twice], "[element[:] for element in e]")?;

    let f = ok(m.list_from(vec![a.clone()]))?;
    ok(a.push(Py::Str("hello".into())))?;
    let f0 = ok(f.get(0))?.ok_or("f[0] is missing")?;
    let mut expected = ints(0..10);
    expected.push(Py::Str("hello".into()));
    eq(ok(f0.to_vec())?, expected, "f[0][:]")
}

fn test_list_iter() -> Check {
    let m = ok(Manager::new())?;
    let a = ok(m.list_from((0..10).collect::<Vec<i64>>()))?;
    // An iterator over the proxy: one item at a time, by index.
    let mut it = 0;
    let mut seen = Vec::new();
    while let Some(x) = ok(a.get(it))? {
        seen.push(x);
        it += 1;
    }
    eq(seen, (0..10).collect(), "list(it)")?;
    eq(ok(a.get(it))?, None, "list(it) when exhausted")?;
    // The list modified during the iteration: the iterator sees it.
    let it = 0;
    ok(a.set(0, 100))?;
    eq(ok(a.get(it))?, Some(100), "next(it) after a[0] = 100")
}

fn test_list_proxy_in_list() -> Check {
    let m = ok(Manager::new())?;
    let mut inner = Vec::new();
    for _ in 0..3 {
        inner.push(ok(m.list_from(vec![0i64, 1, 2]))?);
    }
    let a = ok(m.list_from(inner))?;
    let item = |i: usize| -> Result<ListProxy<i64>, String> { ok(a.get(i))?.ok_or(format!("a[{i}] is missing")) };
    for i in 0..3 {
        eq(ok(item(i)?.to_vec())?, vec![0, 1, 2], "inner[:]")?;
    }

    let a0 = item(0)?;
    let last = ok(a0.len())? - 1;
    ok(a0.set(last, 55))?;
    eq(ok(item(0)?.to_vec())?, vec![0, 1, 55], "a[0][:]")?;
    for i in 1..3 {
        eq(ok(item(i)?.to_vec())?, vec![0, 1, 2], "a[i][:]")?;
    }

    eq(ok(item(1)?.pop())?, Some(2), "a[1].pop()")?;
    eq(ok(item(1)?.len())?, 2, "len(a[1])")?;
    for i in [0, 2] {
        eq(ok(item(i)?.len())?, 3, "len(a[i])")?;
    }
    Ok(())
}

fn letters() -> Vec<(i64, String)> {
    (65..70).map(|i| (i, char::from(i as u8).to_string())).collect()
}

fn test_dict() -> Check {
    let m = ok(Manager::new())?;
    let d = ok(m.dict::<i64, String>())?;
    for (i, c) in letters() {
        ok(d.insert(i, c))?;
    }
    let copy: BTreeMap<i64, String> = ok(d.items())?.into_iter().collect();
    eq(copy, letters().into_iter().collect(), "d.copy()")?;
    let mut keys = ok(d.keys())?;
    keys.sort_unstable();
    eq(keys, (65..70).collect(), "sorted(d.keys())")?;
    let mut values = ok(d.values())?;
    values.sort_unstable();
    eq(
        values,
        letters().into_iter().map(|(_, c)| c).collect(),
        "sorted(d.values())",
    )?;
    let mut items = ok(d.items())?;
    items.sort_unstable();
    eq(items, letters(), "sorted(d.items())")
}

fn test_dict_iter() -> Check {
    let m = ok(Manager::new())?;
    let d = ok(m.dict::<i64, String>())?;
    for (i, c) in letters() {
        ok(d.insert(i, c))?;
    }
    // Keys come in insertion order.
    eq(ok(d.keys())?, (65..70).collect(), "list(iter(d))")
}

type Pets = DictProxy<String, i64>;

/// An item of `outer` in `test_dict_proxy_nested`: a plain list, or a
/// proxy.
#[derive(Serialize, Deserialize, Clone)]
enum Outer {
    Plain(Vec<i64>),
    Proxy(ListProxy<Pets>),
}

fn named(entries: &[(&str, i64)]) -> Vec<(String, i64)> {
    entries.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

fn test_dict_proxy_nested() -> Check {
    let m = ok(Manager::new())?;
    let s = |k: &str| k.to_string();
    let pets: Pets = ok(m.dict())?;
    ok(pets.update(named(&[("ferrets", 2), ("hamsters", 4)])))?;
    let supplies: Pets = ok(m.dict())?;
    ok(supplies.update(named(&[("water", 10), ("feed", 3)])))?;
    let d = ok(m.dict::<String, Pets>())?;
    ok(d.insert(s("pets"), pets.clone()))?;
    ok(d.insert(s("supplies"), supplies.clone()))?;
    let entry = |k: &str| -> Result<Pets, String> { ok(d.get(&s(k)))?.ok_or(format!("d[{k:?}] is missing")) };

    eq(ok(supplies.get(&s("water")))?, Some(10), "supplies['water']")?;
    eq(
        ok(entry("supplies")?.get(&s("water")))?,
        Some(10),
        "d['supplies']['water']",
    )?;

    ok(entry("supplies")?.insert(s("blankets"), 5))?;
    eq(ok(supplies.get(&s("blankets")))?, Some(5), "supplies['blankets']")?;
    eq(
        ok(entry("supplies")?.get(&s("blankets")))?,
        Some(5),
        "d['supplies']['blankets']",
    )?;

    ok(entry("supplies")?.insert(s("water"), 7))?;
    eq(ok(supplies.get(&s("water")))?, Some(7), "supplies['water']")?;
    eq(
        ok(entry("supplies")?.get(&s("water")))?,
        Some(7),
        "d['supplies']['water']",
    )?;

    drop(pets);
    drop(supplies);
    eq(ok(entry("pets")?.get(&s("ferrets")))?, Some(2), "d['pets']['ferrets']")?;
    ok(entry("supplies")?.insert(s("blankets"), 11))?;
    eq(
        ok(entry("supplies")?.get(&s("blankets")))?,
        Some(11),
        "d['supplies']['blankets']",
    )?;

    let pets = entry("pets")?;
    let supplies = entry("supplies")?;
    ok(supplies.insert(s("water"), 7))?;
    eq(ok(supplies.get(&s("water")))?, Some(7), "supplies['water']")?;
    eq(
        ok(entry("supplies")?.get(&s("water")))?,
        Some(7),
        "d['supplies']['water']",
    )?;

    ok(d.clear())?;
    eq(ok(d.len())?, 0, "len(d)")?;
    eq(
        ok(supplies.get(&s("water")))?,
        Some(7),
        "supplies['water'] after d.clear()",
    )?;
    eq(
        ok(pets.get(&s("hamsters")))?,
        Some(4),
        "pets['hamsters'] after d.clear()",
    )?;

    let l = ok(m.list_from(vec![pets.clone(), supplies.clone()]))?;
    let l0 = || -> Result<Pets, String> { ok(l.get(0))?.ok_or("l[0] is missing".to_string()) };
    ok(l0()?.insert(s("marmots"), 1))?;
    eq(ok(pets.get(&s("marmots")))?, Some(1), "pets['marmots']")?;
    eq(ok(l0()?.get(&s("marmots")))?, Some(1), "l[0]['marmots']")?;

    drop(pets);
    drop(supplies);
    eq(ok(l0()?.get(&s("marmots")))?, Some(1), "l[0]['marmots'] after del")?;

    let outer = ok(m.list_from(vec![Outer::Plain(vec![88, 99]), Outer::Proxy(l.clone())]))?;
    check(
        matches!(ok(outer.get(0))?, Some(Outer::Plain(_))),
        "outer[0] is not a plain list",
    )?;
    let Some(Outer::Proxy(last)) = ok(outer.get(1))? else {
        return Err("outer[-1] is not a list proxy".into());
    };
    let n = ok(last.len())?;
    let inner = ok(last.get(n - 1))?.ok_or("outer[-1][-1] is missing")?;
    eq(ok(inner.get(&s("feed")))?, Some(3), "outer[-1][-1]['feed']")
}

fn test_nested_queue() -> Check {
    let m = ok(Manager::new())?;
    let a = ok(m.list::<QueueProxy<i64>>())?;
    ok(a.push(ok(m.queue())?))?;
    let a0 = ok(a.get(0))?.ok_or("a[0] is missing")?;
    ok(a0.put(123).map_err(|e| format!("{e:?}")))?;
    let a0 = ok(a.get(0))?.ok_or("a[0] is missing")?;
    eq(ok(a0.get_timeout(PATIENCE))?, 123, "a[0].get()")?;

    let b = ok(m.dict::<i64, QueueProxy<i64>>())?;
    ok(b.insert(0, ok(m.queue())?))?;
    let b0 = ok(b.get(&0))?.ok_or("b[0] is missing")?;
    ok(b0.put(456).map_err(|e| format!("{e:?}")))?;
    let b0 = ok(b.get(&0))?.ok_or("b[0] is missing")?;
    eq(ok(b0.get_timeout(PATIENCE))?, 456, "b[0].get()")
}

fn test_namespace() -> Check {
    let m = ok(Manager::new())?;
    let n = ok(m.namespace())?;
    ok(n.set("name", "Bob"))?;
    ok(n.set("job", "Builder"))?;
    ok(n.set("_hidden", "hidden"))?;
    let name = ok(n.get::<String>("name"))?;
    let job = ok(n.get::<String>("job"))?;
    eq(
        (name.as_deref(), job.as_deref()),
        (Some("Bob"), Some("Builder")),
        "(n.name, n.job)",
    )?;
    check(ok(n.remove("job"))?, "del n.job found no job")?;
    let names = ok(n.names())?;
    check(
        names.iter().any(|x| x == "name") && !names.iter().any(|x| x == "job"),
        format!("names after del n.job: {names:?}"),
    )?;
    check(ok(n.get::<String>("name"))?.is_some(), "hasattr(n, 'name') is false")?;
    check(ok(n.get::<String>("job"))?.is_none(), "hasattr(n, 'job') is true")
}

// ---- _TestMyManager --------------------------------------------------------------

/// CPython's `FooBar`, registered as `Foo` and `Bar`.
#[derive(Default)]
struct FooBar;

impl FooBar {
    fn f(&mut self) -> String {
        "f()".into()
    }

    fn g(&mut self) {
        panic!("ValueError raised by FooBar.g on purpose");
    }

    fn _h(&mut self) -> String {
        "_h()".into()
    }
}

/// CPython's `baz` generator behind an `IteratorProxy`: `next` on the
/// server.
#[derive(Default)]
struct Baz {
    i: u64,
}

impl Baz {
    fn next(&mut self) -> Option<u64> {
        (self.i < 10).then(|| {
            self.i += 1;
            (self.i - 1) * (self.i - 1)
        })
    }
}

fn my_manager() -> Result<BaseManager, String> {
    ok(BaseManager::builder()
        .register::<FooBar>("Foo")
        .register::<FooBar>("Bar")
        .register::<Baz>("baz")
        .start())
}

/// `common`: the registered types' methods run on the server; a method
/// that fails there is an error here. Returns a proxy for checks after the
/// manager is gone.
fn my_manager_common(manager: &BaseManager) -> Result<ObjectProxy<FooBar>, String> {
    let foo_obj: ObjectProxy<FooBar> = ok(manager.create("Foo"))?;
    let bar_obj: ObjectProxy<FooBar> = ok(manager.create("Bar"))?;
    let baz_obj: ObjectProxy<Baz> = ok(manager.create("baz"))?;

    eq(ok(foo_obj.call(FooBar::f, ()))?, "f()".to_string(), "foo.f()")?;
    let g = foo_obj.call(FooBar::g, ());
    check(matches!(g, Err(ManagerError::Remote(_))), format!("foo.g() gave {g:?}"))?;
    eq(
        ok(foo_obj.call(FooBar::f, ()))?,
        "f()".to_string(),
        "foo.f() after g failed",
    )?;

    eq(ok(bar_obj.call(FooBar::f, ()))?, "f()".to_string(), "bar.f()")?;
    eq(ok(bar_obj.call(FooBar::_h, ()))?, "_h()".to_string(), "bar._h()")?;

    let mut squares = Vec::new();
    while let Some(x) = ok(baz_obj.call(Baz::next, ()))? {
        squares.push(x);
    }
    eq(squares, (0..10).map(|i| i * i).collect(), "list(baz)")?;
    Ok(foo_obj)
}

/// After the manager is gone: its process is, and a proxy call fails.
fn manager_gone(pid: Option<u32>, foo_obj: &ObjectProxy<FooBar>) -> Check {
    let pid = pid.ok_or("the manager had no process")?;
    check(
        !ok(multiprocessing::sys::process::is_alive(pid))?,
        "the manager's process is still alive",
    )?;
    let r = foo_obj.call(FooBar::f, ());
    check(
        r.as_ref().is_err_and(ManagerError::is_server_gone),
        format!("a call after shutdown gave {r:?}"),
    )
}

fn test_mymanager() -> Check {
    let manager = my_manager()?;
    let foo_obj = my_manager_common(&manager)?;
    let pid = manager.pid();
    ok(manager.shutdown())?;
    manager_gone(pid, &foo_obj)
}

fn test_mymanager_context() -> Check {
    // Python's `with manager:` starts the manager and shuts it down.
    let (pid, foo_obj) = {
        let manager = my_manager()?;
        (manager.pid(), my_manager_common(&manager)?)
    };
    manager_gone(pid, &foo_obj)
}

fn test_mymanager_context_prestarted() -> Check {
    let manager = my_manager()?;
    let pid = manager.pid();
    // The `with` block around a started manager: dropping it shuts it down.
    let foo_obj = {
        let manager = manager;
        my_manager_common(&manager)?
    };
    manager_gone(pid, &foo_obj)
}

// ---- _TestRemoteManager and _TestManagerRestart -----------------------------------

/// CPython's `values`: `['hello world', None, True, 2.25, 'hallå
/// världen', 'привіт світ', b'hallå världen']`.
type Values = (String, Option<()>, bool, f64, String, String, Vec<u8>);

fn values() -> Values {
    (
        "hello world".into(),
        None,
        true,
        2.25,
        "hall\u{e5} v\u{e4}rlden".into(),
        "\u{43f}\u{440}\u{438}\u{432}\u{456}\u{442} \u{441}\u{432}\u{456}\u{442}".into(),
        b"hall\xe5 v\xe4rlden".to_vec(),
    )
}

/// A manager server in a child: shares an empty `Q` as `get_queue` at
/// `address` and reports the address it bound (or why it could not).
fn queue_server<Q: Default + Serialize + DeserializeOwned + Send + 'static>(
    conn: Connection,
    address: String,
    authkey: Vec<u8>,
) -> Check {
    match BaseManager::builder()
        .share("get_queue", Q::default())
        .listen(&address, &authkey)
    {
        Ok(server) => {
            ok(conn.send(&Ok::<String, String>(server.address())))?;
            ok(server.serve_forever())
        }
        Err(e) => {
            let _ = conn.send(&Err::<String, String>(e.to_string()));
            Err(e.to_string())
        }
    }
}

/// A served manager's process: terminated and reaped when dropped.
struct Served(Reaped);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.terminate();
        let _ = finish(&mut self.0);
    }
}

/// Starts [`queue_server`] and returns it with the address it serves.
fn serve_queue<Q: Default + Serialize + DeserializeOwned + Send + 'static>(
    address: &str,
    authkey: &[u8],
) -> Result<(Served, Result<String, String>), String> {
    let (mine, theirs) = ok(pipe())?;
    let mut p = Reaped(Process::new(queue_server::<Q>, (theirs, address.to_string(), authkey.to_vec())).daemon(true));
    ok(p.start())?;
    let served = Served(p);
    check(ok(mine.poll_timeout(PATIENCE))?, "the manager server never reported")?;
    let bound: Result<String, String> = ok(mine.recv())?;
    Ok((served, bound))
}

fn authkey() -> Result<Vec<u8>, String> {
    let mut key = vec![0u8; 32];
    ok(multiprocessing::sys::random::fill(&mut key))?;
    Ok(key)
}

type RemoteQueue = VecDeque<Values>;

/// `_putter` of `_TestRemoteManager`.
fn remote_putter(address: String, authkey: Vec<u8>) -> Check {
    let manager = ok(BaseManager::connect(&address, &authkey))?;
    let queue: ObjectProxy<RemoteQueue> = ok(manager.get("get_queue"))?;
    ok(queue.call(RemoteQueue::push_back, (values(),)))
}

/// A method whose argument the wire cannot carry (Python's `time.sleep`
/// through xmlrpclib): a handle, over TCP.
fn put_handle(_q: &mut RemoteQueue, _c: Connection) {}

fn test_remote() -> Check {
    let authkey = authkey()?;
    let (_server, address) = serve_queue::<RemoteQueue>("127.0.0.1:0", &authkey)?;
    let address = address?;

    let mut p = Reaped(Process::new(remote_putter, (address.clone(), authkey.clone())).daemon(true));
    ok(p.start())?;

    let manager2 = ok(BaseManager::connect(&address, &authkey))?;
    let queue: ObjectProxy<RemoteQueue> = ok(manager2.get("get_queue"))?;
    // Python's queue.get() blocks until the putter's item is there.
    check(finish(&mut p)? == 0, "the putter failed")?;
    let got = ok(queue.call(RemoteQueue::pop_front, ()))?;
    eq(got, Some(values()), "queue.get()")?;

    let (_keep, handle) = ok(pipe())?;
    let r = queue.call(put_handle, (handle,));
    check(
        matches!(r, Err(ManagerError::Codec(_))),
        format!("sending a handle to a remote manager gave {r:?}"),
    )?;
    eq(
        ok(queue.call(|q: &mut RemoteQueue| q.len(), ()))?,
        0,
        "the queue after the refused call",
    )
}

type RestartQueue = VecDeque<String>;

/// `_putter` of `_TestManagerRestart`.
fn restart_putter(address: String, authkey: Vec<u8>) -> Check {
    let manager = ok(BaseManager::connect(&address, &authkey))?;
    let queue: ObjectProxy<RestartQueue> = ok(manager.get("get_queue"))?;
    ok(queue.call(RestartQueue::push_back, ("hello world".to_string(),)))
}

fn test_rapid_restart() -> Check {
    let authkey = authkey()?;
    let addr = {
        let (server, address) = serve_queue::<RestartQueue>("127.0.0.1:0", &authkey)?;
        let address = address?;
        let mut p = Reaped(Process::new(restart_putter, (address.clone(), authkey.clone())));
        ok(p.start())?;
        check(finish(&mut p)? == 0, "the putter failed")?;
        let manager = ok(BaseManager::connect(&address, &authkey))?;
        let queue: ObjectProxy<RestartQueue> = ok(manager.get("get_queue"))?;
        eq(
            ok(queue.call(RestartQueue::pop_front, ()))?,
            Some("hello world".to_string()),
            "queue.get()",
        )?;
        drop(queue);
        drop(manager);
        drop(server); // shut down: terminated and reaped
        address
    };
    // A new manager at the same address at once.
    let (_server, again) = serve_queue::<RestartQueue>(&addr, &authkey)?;
    let again = again.map_err(|e| format!("restarting at {addr}: {e}"))?;
    eq(again, addr, "the address of the restarted manager")
}

// ---- TestManagerExceptions --------------------------------------------------------

/// An error that owns nothing of the proxy that returned it.
fn detached<E: std::error::Error + Send + Sync + 'static>(e: E) -> E {
    e
}

fn test_queue_get() -> Check {
    let m = ok(Manager::new())?;
    let queue = ok(m.queue::<i64>())?;
    match queue.get_nowait().map_err(detached) {
        Err(GetError::Empty) => {}
        other => return Err(format!("get_nowait on an empty queue gave {other:?}")),
    }
    ok(queue.put(1).map_err(|e| format!("{e:?}")))?;
    eq(ok(queue.get_nowait())?, 1, "the queue after Empty")?;
    ok(m.shutdown())
}

// ---- TestSyncManagerTypes ---------------------------------------------------------

/// `run_worker`: runs `worker` on `obj` in a child and checks that it
/// exited with 0.
fn run_worker<T, F>(worker: F, obj: T) -> Check
where
    F: multiprocessing::process::Target<(T,)>,
    (T,): multiprocessing::process::Args,
{
    let mut p = Reaped(Process::new(worker, (obj,)).daemon(true));
    ok(p.start())?;
    let code = finish(&mut p)?;
    check(code == 0, format!("the worker exited with {code}"))
}

fn child_event(obj: EventProxy) -> Check {
    check(ok(obj.is_set())?, "the event is not set in the child")?;
    check(ok(obj.wait_timeout(PATIENCE))?, "wait() on a set event timed out")?;
    ok(obj.clear())?;
    check(
        !ok(obj.wait_timeout(Duration::from_millis(1)))?,
        "wait(0.001) after clear() is true",
    )
}

fn test_sync_event() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.event())?;
    ok(o.set())?;
    run_worker(child_event, o.clone())?;
    check(!ok(o.is_set())?, "the event is still set")?;
    check(!ok(o.wait_timeout(Duration::from_millis(1)))?, "wait(0.001) is true")
}

fn child_lock(obj: LockProxy) -> Check {
    // Acquire and keep it: the guard would release it when dropped.
    std::mem::forget(ok(obj.acquire())?);
    Ok(())
}

fn test_sync_lock() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.lock())?;
    run_worker(child_lock, o.clone())?;
    // A deliberate difference (README, "Semantic differences"): the server
    // releases a manager lock whose holder died, where Python's stays locked
    // for another process to release. So the lock turns free by itself,
    // and then behaves as CPython's test wants: one acquire and release
    // work, and a release of the unlocked lock is an error.
    let freed = until(PATIENCE, || matches!(o.is_locked(), Ok(false)));
    check(freed, "the lock of a child that exited holding it stayed locked")?;
    let guard = ok(o.acquire())?;
    ok(guard.release())?;
    let again = o.release();
    check(again.is_err(), format!("a release of the unlocked lock gave {again:?}"))
}

fn child_rlock(obj: RLockProxy) -> Check {
    let guard = ok(obj.acquire())?;
    ok(guard.release())
}

fn test_sync_rlock() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.rlock())?;
    run_worker(child_rlock, o.clone())
}

fn child_semaphore(obj: SemaphoreProxy) -> Check {
    ok(obj.acquire())
}

fn test_sync_semaphore() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.semaphore(1))?;
    run_worker(child_semaphore, o.clone())?;
    eq(ok(o.get_value())?, 0, "the value after the child's acquire")?;
    ok(o.release())
}

fn test_sync_bounded_semaphore() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.bounded_semaphore(1))?;
    run_worker(child_semaphore, o.clone())?;
    ok(o.release())
}

fn child_condition(obj: ConditionProxy) -> Check {
    let guard = ok(obj.acquire())?;
    ok(guard.release())
}

fn test_sync_condition() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.condition())?;
    run_worker(child_condition, o.clone())
}

fn child_barrier(obj: BarrierProxy) -> Check {
    eq(ok(obj.parties())?, 5, "obj.parties")?;
    ok(obj.reset())
}

fn test_sync_barrier() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.barrier(5))?;
    run_worker(child_barrier, o.clone())
}

fn child_queue(obj: QueueProxy<i64>) -> Check {
    eq(ok(obj.qsize())?, 2, "obj.qsize()")?;
    check(ok(obj.is_full())?, "obj.full() is false")?;
    check(!ok(obj.is_empty())?, "obj.empty() is true")?;
    eq(ok(obj.get_timeout(PATIENCE))?, 5, "obj.get()")?;
    check(!ok(obj.is_empty())?, "obj.empty() is true after one get")?;
    eq(ok(obj.get_timeout(PATIENCE))?, 6, "obj.get()")?;
    check(ok(obj.is_empty())?, "obj.empty() is false after two gets")
}

fn test_sync_queue() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.queue_with_maxsize::<i64>(2))?;
    ok(o.put(5).map_err(|e| format!("{e:?}")))?;
    ok(o.put(6).map_err(|e| format!("{e:?}")))?;
    run_worker(child_queue, o.clone())?;
    check(ok(o.is_empty())?, "o.empty() is false")?;
    check(!ok(o.is_full())?, "o.full() is true")
}

fn child_list(obj: ListProxy<i64>) -> Check {
    eq(ok(obj.get(0))?, Some(5), "obj[0]")?;
    let items = ok(obj.to_vec())?;
    eq(items.iter().filter(|&&x| x == 5).count(), 1, "obj.count(5)")?;
    eq(items.iter().position(|&x| x == 5), Some(0), "obj.index(5)")?;
    check(ok(obj.contains(&5))?, "5 in obj is false")?;
    ok(obj.sort())?;
    ok(obj.reverse())?;
    for _x in ok(obj.to_vec())? {}
    eq(ok(obj.len())?, 1, "len(obj)")?;
    eq(ok(obj.remove_at(0))?, 5, "obj.pop(0)")
}

fn test_sync_list() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.list::<i64>())?;
    ok(o.push(5))?;
    run_worker(child_list, o.clone())?;
    eq(ok(o.len())?, 0, "len(o)")
}

fn child_dict(obj: DictProxy<String, i64>) -> Check {
    let foo_key = "foo".to_string();
    eq(ok(obj.len())?, 1, "len(obj)")?;
    eq(ok(obj.get(&foo_key))?, Some(5), "obj['foo']")?;
    eq(ok(obj.get(&foo_key))?, Some(5), "obj.get('foo')")?;
    eq(ok(obj.items())?, vec![(foo_key.clone(), 5)], "list(obj.items())")?;
    eq(ok(obj.keys())?, vec![foo_key.clone()], "list(obj.keys())")?;
    eq(ok(obj.values())?, vec![5], "list(obj.values())")?;
    let copy: BTreeMap<String, i64> = ok(obj.items())?.into_iter().collect();
    eq(copy, [(foo_key.clone(), 5)].into_iter().collect(), "obj.copy()")?;
    // popitem(): the last item, removed.
    let (k, v) = ok(obj.items())?.pop().ok_or("popitem on an empty dict")?;
    eq(ok(obj.remove(&k))?, Some(v), "popitem's removal")?;
    eq((k, v), (foo_key, 5), "obj.popitem()")
}

fn test_sync_dict() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.dict::<String, i64>())?;
    ok(o.insert("foo".into(), 5))?;
    run_worker(child_dict, o.clone())?;
    eq(ok(o.len())?, 0, "len(o)")
}

fn child_value(obj: ValueProxy<i32>) -> Check {
    eq(ok(obj.get())?, 1, "obj.value")?;
    eq(ok(obj.get())?, 1, "obj.get()")?;
    ok(obj.set(2).map(drop))
}

fn test_sync_value() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.value(1i32))?;
    run_worker(child_value, o.clone())?;
    eq(ok(o.get())?, 2, "o.value")?;
    eq(ok(o.get())?, 2, "o.get()")
}

fn child_array(obj: ArrayProxy<i32>) -> Check {
    eq(ok(obj.get(0))?, Some(0), "obj[0]")?;
    eq(ok(obj.get(1))?, Some(1), "obj[1]")?;
    eq(ok(obj.len())?, 2, "len(obj)")?;
    eq(ok(obj.to_vec())?, vec![0, 1], "list(obj)")
}

fn test_sync_array() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.array(vec![0i32, 1]))?;
    run_worker(child_array, o.clone())
}

fn child_namespace(obj: NamespaceProxy) -> Check {
    eq(ok(obj.get::<i32>("x"))?, Some(0), "obj.x")?;
    eq(ok(obj.get::<i32>("y"))?, Some(1), "obj.y")
}

fn test_sync_namespace() -> Check {
    let m = ok(Manager::new())?;
    let o = ok(m.namespace())?;
    ok(o.set("x", 0i32))?;
    ok(o.set("y", 1i32))?;
    run_worker(child_namespace, o.clone())
}

// ---- _TestSharedMemory ------------------------------------------------------------

/// `_new_shm_name`: a name with this process's id, so that parallel runs
/// do not collide.
fn new_shm_name(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id())
}

/// Unlinks a segment when dropped, if it is still there (Python's
/// `addCleanup(sms.unlink)`), so a failing test leaves nothing in /dev/shm.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = multiprocessing::sys::shm::unlink(&self.0);
    }
}

/// `_attach_existing_shmem_then_write`, by name.
fn attach_then_write(name: String, binary_data: Vec<u8>) -> Check {
    let mut local_sms = ok(SharedMemory::attach(&name))?;
    local_sms.as_mut_slice()[..binary_data.len()].copy_from_slice(&binary_data);
    ok(local_sms.close())
}

/// `_attach_existing_shmem_then_write`, given the segment itself.
fn write_then_close(mut local_sms: SharedMemory, binary_data: Vec<u8>) -> Check {
    local_sms.as_mut_slice()[..binary_data.len()].copy_from_slice(&binary_data);
    ok(local_sms.close())
}

fn test_shared_memory_name_with_embedded_null() -> Check {
    let name_tsmb = new_shm_name("test01_null");
    let _sms = ok(SharedMemory::create(Some(&name_tsmb), 512))?;
    let _unlink = Unlink(name_tsmb.clone());
    let r = SharedMemory::attach(&format!("{name_tsmb}\0a"));
    check(
        matches!(r, Err(SharedError::InvalidArgument(_))),
        format!("attaching a name with a NUL byte gave {r:?}"),
    )
}

fn test_shared_memory_basics() -> Check {
    let name_tsmb = new_shm_name("test01_tsmb");
    let mut sms = ok(SharedMemory::create(Some(&name_tsmb), 512))?;
    let _unlink = Unlink(name_tsmb.clone());

    // Attributes.
    eq(sms.name(), name_tsmb.as_str(), "sms.name")?;
    check(sms.size() >= 512, format!("sms.size is {}", sms.size()))?;
    check(sms.as_slice().len() >= sms.size(), "len(sms.buf) < sms.size")?;

    // The repr.
    let repr = format!("{sms:?}");
    check(
        repr.contains(&name_tsmb) && repr.contains(&sms.size().to_string()),
        format!("repr {repr}"),
    )?;

    // Through the buffer.
    sms.as_mut_slice()[0] = 42;
    eq(sms.as_slice()[0], 42, "sms.buf[0]")?;

    // Attached elsewhere.
    let mut also_sms = ok(SharedMemory::attach(&name_tsmb))?;
    eq(also_sms.as_slice()[0], 42, "also_sms.buf[0]")?;
    ok(also_sms.close())?;

    // Attaching takes the segment's size (Python ignores a size given);
    // asking for more than the segment holds is an error here.
    let mut same_sms = ok(SharedMemory::attach(&name_tsmb))?;
    check(
        same_sms.size() < 20 * sms.size(),
        "the attached size is not the segment's",
    )?;
    ok(same_sms.close())?;
    let r = SharedMemory::attach_with_size(&name_tsmb, 20 * sms.size());
    check(r.is_err(), format!("attaching with 20 times the size gave {r:?}"))?;

    // A name unlinked twice.
    let name_dblunlink = new_shm_name("test01_dblunlink");
    let mut sms_uno = ok(SharedMemory::create(Some(&name_dblunlink), 5000))?;
    let _unlink_uno = Unlink(name_dblunlink.clone());
    check(sms_uno.size() >= 5000, "sms_uno.size < 5000")?;
    let mut sms_duo = ok(SharedMemory::attach(&name_dblunlink))?;
    ok(sms_duo.unlink())?;
    ok(sms_duo.close())?;
    ok(sms_uno.close())?;
    let r = sms_uno.unlink();
    check(
        matches!(r, Err(SharedError::NotFound(_))),
        format!("a second unlink gave {r:?}"),
    )?;

    // A name in use.
    let r = SharedMemory::create(Some(&name_tsmb), 512);
    check(
        matches!(r, Err(SharedError::AlreadyExists(_))),
        format!("creating a name in use gave {r:?}"),
    )?;

    // No such segment.
    let r = SharedMemory::attach("test01_notthere");
    check(
        matches!(r, Err(SharedError::NotFound(_))),
        format!("attaching a missing name gave {r:?}"),
    )?;

    ok(sms.close())
}

fn test_invalid_shared_memory_creation() -> Check {
    // Negative sizes and a missing size cannot be written: `size` is a
    // `usize` argument.
    let r = SharedMemory::create(None, 0);
    if let Ok(s) = &r {
        let _ = s.unlink();
    }
    check(
        matches!(r, Err(SharedError::InvalidArgument(_))),
        format!("a segment of size 0 gave {r:?}"),
    )
}

fn test_shared_memory_pickle_unpickle() -> Check {
    let mut sms = ok(SharedMemory::create(None, 512))?;
    let _unlink = Unlink(sms.name().to_string());
    sms.as_mut_slice()[0..6].copy_from_slice(b"pickle");

    let pickled_sms = ok(multiprocessing::codec::encode(&sms))?;
    let mut sms2: SharedMemory = ok(multiprocessing::codec::decode(pickled_sms))?;
    eq(sms.name(), sms2.name(), "sms2.name")?;
    eq(&sms.as_slice()[0..6], b"pickle", "sms.buf[0:6]")?;
    eq(&sms2.as_slice()[0..6], b"pickle", "sms2.buf[0:6]")?;

    sms.as_mut_slice()[0..6].copy_from_slice(b"newval");
    eq(&sms.as_slice()[0..6], b"newval", "sms.buf[0:6]")?;
    eq(&sms2.as_slice()[0..6], b"newval", "sms2.buf[0:6]")?;

    sms2.as_mut_slice()[0..6].copy_from_slice(b"oldval");
    eq(&sms.as_slice()[0..6], b"oldval", "sms.buf[0:6]")?;
    eq(&sms2.as_slice()[0..6], b"oldval", "sms2.buf[0:6]")
}

fn test_shared_memory_pickle_unpickle_dead_object() -> Check {
    let mut sms = ok(SharedMemory::create(None, 512))?;
    let _unlink = Unlink(sms.name().to_string());
    sms.as_mut_slice()[0..6].copy_from_slice(b"pickle");
    let pickled_sms = ok(multiprocessing::codec::encode(&sms))?;
    ok(sms.close())?;
    ok(sms.unlink())?;
    let r = multiprocessing::codec::decode::<SharedMemory>(pickled_sms);
    check(r.is_err(), format!("unpickling an unlinked segment gave {r:?}"))
}

fn test_shared_memory_across_processes() -> Check {
    let mut sms = ok(SharedMemory::create(None, 512))?;
    let _unlink = Unlink(sms.name().to_string());

    // By name.
    let mut p = Reaped(Process::new(attach_then_write, (sms.name().to_string(), b"howdy".to_vec())).daemon(true));
    ok(p.start())?;
    check(finish(&mut p)? == 0, "the child attaching by name failed")?;
    eq(&sms.as_slice()[..5], b"howdy", "sms.buf[:5]")?;

    // The segment itself, as a handle.
    let mut p = Reaped(Process::new(write_then_close, (sms.clone(), b"HELLO".to_vec())).daemon(true));
    ok(p.start())?;
    check(finish(&mut p)? == 0, "the child given the segment failed")?;
    eq(&sms.as_slice()[..5], b"HELLO", "sms.buf[:5]")?;

    ok(sms.close())
}

fn test_shared_memory_shareable_list_basics() -> Check {
    // Python's list mixes types; here every item is an i64.
    let mut sl = ok(ShareableList::create(&[7i64, 8, -273, 100, 0, 1, 42], None))?;
    let _unlink = Unlink(sl.name().to_string());

    // The repr.
    let repr = format!("{sl:?}");
    check(
        repr.contains(sl.shm().name()) && repr.contains(&format!("{:?}", sl.to_vec())),
        format!("repr {repr}"),
    )?;

    // Out of range.
    eq(sl.get(7), None, "sl[7]")?;
    let r = sl.set(7, 2);
    check(
        matches!(r, Err(SharedError::OutOfRange { index: 7, len: 7 })),
        format!("sl[7] = 2 gave {r:?}"),
    )?;

    eq(sl.len(), 7, "len(sl)")?;

    let items = sl.to_vec();
    eq(items.iter().position(|&x| x == 1000), None, "sl.index(1000)")?;
    eq(items.iter().position(|&x| x == 100), Some(3), "sl.index(100)")?;

    eq(sl.get(0), Some(7), "sl[0]")?;
    eq(sl.get(sl.len() - 2), Some(1), "sl[-2]")?;
    eq(sl.to_vec(), vec![7, 8, -273, 100, 0, 1, 42], "tuple(sl)")?;

    ok(sl.set(3, 42))?;
    eq(sl.get(3), Some(42), "sl[3]")?;

    let items = sl.to_vec();
    eq(items.iter().filter(|&&x| x == 42).count(), 2, "sl.count(42)")?;
    eq(items.iter().filter(|&&x| x == 8).count(), 1, "sl.count(8)")?;
    eq(items.iter().filter(|&&x| x == 99).count(), 0, "sl.count(99)")?;

    // A duplicate under a name of ours.
    let name_duplicate = new_shm_name("test03_duplicate");
    let mut sl_copy = ok(ShareableList::create(&sl.to_vec(), Some(&name_duplicate)))?;
    let _unlink_copy = Unlink(name_duplicate.clone());
    check(sl.shm().name() != sl_copy.shm().name(), "the copy has the same name")?;
    eq(sl_copy.shm().name(), name_duplicate.as_str(), "sl_copy.shm.name")?;
    eq(sl.to_vec(), sl_copy.to_vec(), "list(sl_copy)")?;
    let last = sl_copy.len() - 1;
    ok(sl_copy.set(last, 77))?;
    eq(sl_copy.get(last), Some(77), "sl_copy[-1]")?;
    check(sl.get(last) != Some(77), "sl[-1] changed with the copy")?;
    ok(sl_copy.shm().unlink())?;

    // A second handle on the same list.
    let mut sl_tethered = ok(ShareableList::<i64>::attach(sl.shm().name()))?;
    eq(sl.shm().name(), sl_tethered.shm().name(), "sl_tethered.shm.name")?;
    ok(sl_tethered.set(last, 880))?;
    eq(sl.get(last), Some(880), "sl[-1] after sl_tethered[-1] = 880")?;
    drop(sl_tethered);

    // An empty list.
    let empty_sl = ok(ShareableList::<i64>::create(&[], None))?;
    let _unlink_empty = Unlink(empty_sl.name().to_string());
    eq(empty_sl.len(), 0, "len(empty_sl)")?;
    eq(
        empty_sl.to_vec().iter().filter(|&&x| x == 0).count(),
        0,
        "empty_sl.count(0)",
    )?;
    eq(
        empty_sl.to_vec().iter().position(|&x| x == 0),
        None,
        "empty_sl.index(0)",
    )?;
    ok(empty_sl.shm().unlink())
}

fn test_shared_memory_shareable_list_pickling() -> Check {
    let mut sl = ok(ShareableList::create(&(0..10).collect::<Vec<i64>>(), None))?;
    let _unlink = Unlink(sl.name().to_string());

    let serialized_sl = ok(multiprocessing::codec::encode(&sl))?;
    let serialized_len = serialized_sl.payload().len();
    let mut deserialized_sl: ShareableList<i64> = ok(multiprocessing::codec::decode(serialized_sl))?;
    eq(deserialized_sl.get(9), Some(9), "deserialized_sl[-1]")?;

    ok(deserialized_sl.set(4, 1000))?;
    eq(sl.get(4), Some(1000), "sl[4] after deserialized_sl[4] = 1000")?;
    ok(sl.set(3, 2000))?;
    eq(
        deserialized_sl.get(3),
        Some(2000),
        "deserialized_sl[3] after sl[3] = 2000",
    )?;

    let larger_sl = ok(ShareableList::create(&(0..400).collect::<Vec<i64>>(), None))?;
    let _unlink_larger = Unlink(larger_sl.name().to_string());
    let serialized_larger_sl = ok(multiprocessing::codec::encode(&larger_sl))?;
    eq(
        serialized_len,
        serialized_larger_sl.payload().len(),
        "the pickles' lengths",
    )?;
    Ok(())
}

fn test_shared_memory_shareable_list_pickling_dead_object() -> Check {
    let sl = ok(ShareableList::create(&(0..10).collect::<Vec<i64>>(), None))?;
    let _unlink = Unlink(sl.name().to_string());
    let serialized_sl = ok(multiprocessing::codec::encode(&sl))?;
    ok(sl.shm().unlink())?;
    drop(sl);
    let r = multiprocessing::codec::decode::<ShareableList<i64>>(serialized_sl);
    check(r.is_err(), format!("unpickling an unlinked list gave {r:?}"))
}

fn test_shared_memory_server_ignores_sigint() -> Check {
    // There is no SharedMemoryManager: segments need no server. CPython's
    // fix (bpo-36368) is in every manager's server, so it is checked on a
    // Manager: a SIGINT (a Ctrl-C in the terminal) must not end it.
    let m = ok(Manager::new())?;
    let sl = ok(m.list_from((0..10).collect::<Vec<i64>>()))?;
    eq(ok(sl.len())?, 10, "the list before SIGINT")?;
    let pid = m.pid().ok_or("the manager has no process")?;
    ok(multiprocessing::sys::signal::kill(
        pid,
        multiprocessing::sys::signal::Signal::INT,
    ))?;
    // Give the signal time to land: a server that dies of it is gone by
    // then.
    let died = until(Duration::from_secs(1), || {
        !matches!(multiprocessing::sys::process::is_alive(pid), Ok(true))
    });
    check(!died, "the manager's server died of SIGINT")?;
    let sl2 = ok(m.list_from((0..10).collect::<Vec<i64>>()))?;
    eq(ok(sl2.len())?, 10, "a list made after SIGINT")
}

/// Creates a segment, sends its name, and waits to be killed.
fn create_and_wait(conn: Connection) -> Check {
    let sm = ok(SharedMemory::create(None, 10))?;
    ok(conn.send(&sm.name().to_string()))?;
    let _ = conn.poll_timeout(PATIENCE);
    Ok(())
}

fn test_shared_memory_cleaned_after_process_termination() -> Check {
    let (mine, theirs) = ok(pipe())?;
    let mut p = Reaped(Process::new(create_and_wait, (theirs,)));
    ok(p.start())?;
    check(ok(mine.poll_timeout(PATIENCE))?, "the child sent no name")?;
    let name: String = ok(mine.recv())?;
    let _unlink = Unlink(name.clone());
    // A deliberate difference (README, "Semantic differences"): there is no
    // resource tracker, so a named segment follows its contract (whoever
    // created it unlinks it) even when its creator is killed. CPython's
    // tracker would unlink it once the killed program's tracker saw it go.
    // So the segment is still there, and the parent can attach to it and
    // unlink it (`_unlink`).
    ok(p.terminate())?;
    finish(&mut p)?;
    let shm = ok(SharedMemory::attach(&name))?;
    check(shm.size() > 0, format!("the segment {name:?} is empty"))
}

fn no_zombie_children_left() -> Check {
    let z = mp_testkit::zombie_children();
    check(z == 0, format!("{z} zombie children left"))
}

fn main() -> ExitCode {
    let tests: &[(&str, mp_testkit::Test)] = &[
        ("_TestContainers::test_list", test_list),
        ("_TestContainers::test_list_iter", test_list_iter),
        ("_TestContainers::test_list_proxy_in_list", test_list_proxy_in_list),
        ("_TestContainers::test_dict", test_dict),
        ("_TestContainers::test_dict_iter", test_dict_iter),
        ("_TestContainers::test_dict_proxy_nested", test_dict_proxy_nested),
        ("_TestContainers::test_nested_queue", test_nested_queue),
        ("_TestContainers::test_namespace", test_namespace),
        ("_TestMyManager::test_mymanager", test_mymanager),
        ("_TestMyManager::test_mymanager_context", test_mymanager_context),
        (
            "_TestMyManager::test_mymanager_context_prestarted",
            test_mymanager_context_prestarted,
        ),
        ("_TestRemoteManager::test_remote", test_remote),
        ("_TestManagerRestart::test_rapid_restart", test_rapid_restart),
        ("TestManagerExceptions::test_queue_get", test_queue_get),
        ("TestSyncManagerTypes::test_event", test_sync_event),
        ("TestSyncManagerTypes::test_lock", test_sync_lock),
        ("TestSyncManagerTypes::test_rlock", test_sync_rlock),
        ("TestSyncManagerTypes::test_semaphore", test_sync_semaphore),
        (
            "TestSyncManagerTypes::test_bounded_semaphore",
            test_sync_bounded_semaphore,
        ),
        ("TestSyncManagerTypes::test_condition", test_sync_condition),
        ("TestSyncManagerTypes::test_barrier", test_sync_barrier),
        ("TestSyncManagerTypes::test_queue", test_sync_queue),
        ("TestSyncManagerTypes::test_list", test_sync_list),
        ("TestSyncManagerTypes::test_dict", test_sync_dict),
        ("TestSyncManagerTypes::test_value", test_sync_value),
        ("TestSyncManagerTypes::test_array", test_sync_array),
        ("TestSyncManagerTypes::test_namespace", test_sync_namespace),
        (
            "_TestSharedMemory::test_shared_memory_name_with_embedded_null",
            test_shared_memory_name_with_embedded_null,
        ),
        (
            "_TestSharedMemory::test_shared_memory_basics",
            test_shared_memory_basics,
        ),
        (
            "_TestSharedMemory::test_invalid_shared_memory_creation",
            test_invalid_shared_memory_creation,
        ),
        (
            "_TestSharedMemory::test_shared_memory_pickle_unpickle",
            test_shared_memory_pickle_unpickle,
        ),
        (
            "_TestSharedMemory::test_shared_memory_pickle_unpickle_dead_object",
            test_shared_memory_pickle_unpickle_dead_object,
        ),
        (
            "_TestSharedMemory::test_shared_memory_across_processes",
            test_shared_memory_across_processes,
        ),
        (
            "_TestSharedMemory::test_shared_memory_SharedMemoryServer_ignores_sigint",
            test_shared_memory_server_ignores_sigint,
        ),
        (
            "_TestSharedMemory::test_shared_memory_ShareableList_basics",
            test_shared_memory_shareable_list_basics,
        ),
        (
            "_TestSharedMemory::test_shared_memory_ShareableList_pickling",
            test_shared_memory_shareable_list_pickling,
        ),
        (
            "_TestSharedMemory::test_shared_memory_ShareableList_pickling_dead_object",
            test_shared_memory_shareable_list_pickling_dead_object,
        ),
        (
            "_TestSharedMemory::test_shared_memory_cleaned_after_process_termination",
            test_shared_memory_cleaned_after_process_termination,
        ),
    ];
    let mut h = Harness::new(tests.len() + 1);
    for &(name, f) in tests {
        h.run(name, f);
    }
    h.run("zombie_children", no_zombie_children_left);
    h.finish()
}
