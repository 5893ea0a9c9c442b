//! A one-minute tour of every primitive, Python's `multiprocessing` names
//! in Rust: processes under the fork, spawn and fork-server start methods;
//! pipes, listeners with an authkey and `connection::wait`; the three
//! queues; shared values, arrays and named segments; locks (one whose holder
//! is killed), semaphores, events, conditions and barriers; a manager's
//! proxies; and a pool and an executor that outlive a worker killed
//! mid-task. Each numbered section prints what it just did. Handles (pipe
//! ends, queues, locks, shared values, proxies) are ordinary arguments of a
//! child process, and travel inside messages too.
//!
//! Run with `cargo run --release --example tour`; `cargo xtask test` checks
//! what it prints against `examples/expected/tour.stdout`.

use std::error::Error;
use std::io::Write;
use std::time::Duration;

use multiprocessing::sys::signal::{Signal, kill};
use multiprocessing::{
    Array, Barrier, Client, Condition, Connection, DictProxy, Event, GetError, JoinableQueue, ListProxy, Listener,
    Lock, Manager, NamespaceProxy, Pool, Process, ProcessPoolExecutor, Queue, QueueProxy, RLock, Semaphore,
    ShareableList, SharedMemory, SimpleQueue, StartMethod, TaskError, Value, active_children, connection, cpu_count,
    current_process, exit, get_context, parent_process, pipe,
};
use serde::de::DeserializeOwned;

type Res<T = ()> = Result<T, Box<dyn Error>>;

/// How long any blocking call of the tour may wait before it counts as hung.
const T: Duration = Duration::from_secs(10);

fn main() -> Res {
    processes()?;
    who_is_who()?;
    pipes()?;
    listener_and_client()?;
    wait_on_several()?;
    queues()?;
    joinable_and_simple_queues()?;
    shared_memory()?;
    locks()?;
    semaphore_and_event()?;
    condition_and_barrier()?;
    manager()?;
    pool()?;
    executor()?;
    bad_input()?;
    Ok(())
}

fn processes() -> Res {
    println!("1. Processes: start, join and exitcode, under each start method");
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let out = Value::new(0u64)?;
        let mut p = get_context(m).process(square_into, (out.clone(), 12));
        p.start()?;
        let code = join(&mut p)?;
        println!(
            "   {m:?}: {} wrote 12 * 12 = {}, exit code {code}",
            p.get_name(),
            out.get()
        );
    }
    let mut panicking = Process::new(panics, ());
    panicking.start()?;
    println!(
        "   a child that panics exits with {} (the message goes to stderr)",
        join(&mut panicking)?
    );
    let (started, never) = (Event::new()?, Event::new()?);
    let mut waiting = Process::new(wait_for_nothing, (started.clone(), never));
    waiting.start()?;
    started.wait_timeout(T);
    waiting.terminate()?;
    println!("   terminate() on a waiting child: exit code {}", join(&mut waiting)?);
    Ok(())
}

fn square_into(out: Value<u64>, n: u64) {
    out.set(n * n);
}

fn panics() {
    panic!("this child panics on purpose");
}

fn wait_for_nothing(started: Event, never: Event) {
    started.set();
    never.wait_timeout(T);
}

fn who_is_who() -> Res {
    println!("2. current_process, parent_process, active_children, cpu_count");
    let me = current_process();
    println!(
        "   main is {:?} (pid {}), its parent_process() is {:?}",
        me.name(),
        me.pid(),
        parent_process().map(|p| p.pid())
    );
    let (reports, release) = (Queue::new()?, Event::new()?);
    let mut child = Process::new(introduce, (reports.clone(), release.clone())).name("reporter");
    child.start()?;
    let (name, parent, parent_pid): (String, String, u32) = reports.get_timeout(T)?;
    let children: Vec<String> = active_children().iter().map(|c| c.name().to_string()).collect();
    release.set();
    join(&mut child)?;
    println!(
        "   {name:?} says its parent is {parent:?} (the pid matches: {})",
        parent_pid == me.pid()
    );
    println!(
        "   active_children() while it ran: {children:?}; after join: {}",
        active_children().len()
    );
    println!("   cpu_count() = {}", cpu_count());
    Ok(())
}

fn introduce(reports: Queue<(String, String, u32)>, release: Event) -> Res {
    let parent = parent_process().ok_or("no parent")?;
    reports.put((current_process().name().into(), parent.name().into(), parent.pid()))?;
    release.wait_timeout(T);
    Ok(())
}

fn pipes() -> Res {
    println!("3. Pipe: serde values both ways, and a Connection handed to a child");
    let (mine, theirs) = pipe()?;
    let mut child = Process::new(shout_back, (theirs,));
    child.start()?;
    mine.send(&vec!["hello", "pipe"])?;
    println!(
        "   sent [\"hello\", \"pipe\"], the child answered {:?}",
        recv::<Vec<String>>(&mine)?
    );
    let (here, there) = pipe()?;
    mine.send(&there)?; // a Connection inside a message
    drop(there);
    println!(
        "   a pipe end sent through the pipe: the child answered on it {:?}",
        recv::<String>(&here)?
    );
    join(&mut child)?;
    let eof = mine.recv::<String>().err().is_some_and(|e| e.is_eof());
    println!("   after the child exited, recv() is an EOF error: {eof}");
    Ok(())
}

fn shout_back(conn: Connection) -> Res {
    let words: Vec<String> = recv(&conn)?;
    conn.send(&words.iter().map(|w| w.to_uppercase()).collect::<Vec<_>>())?;
    let other: Connection = recv(&conn)?;
    other.send(&"received with its file descriptor")?;
    Ok(())
}

fn listener_and_client() -> Res {
    println!("4. Listener and Client with an authkey (HMAC-SHA256 both ways)");
    let listener = Listener::bind("127.0.0.1:0", Some(b"tour key"))?;
    let mut good = Process::new(knock, (listener.address(), b"tour key".to_vec()));
    good.start()?;
    let conn = listener.accept_timeout(T)?;
    println!(
        "   the right key: accepted, and the client says {:?}",
        recv::<String>(&conn)?
    );
    join(&mut good)?;
    let mut bad = Process::new(knock, (listener.address(), b"a guess".to_vec()));
    bad.start()?;
    let refused = listener.accept_timeout(T).err().map(|e| e.to_string());
    println!("   a wrong key: accept() gives {refused:?}");
    println!("   and the client, refused too, exits with {}", join(&mut bad)?);
    Ok(())
}

fn knock(address: String, key: Vec<u8>) -> Res {
    let conn = Client::connect(&address, Some(&key))?;
    conn.send(&format!("hello from {}", current_process().name()))?;
    Ok(())
}

fn wait_on_several() -> Res {
    println!("5. connection::wait: which connections (and processes) are ready");
    let ((r0, w0), (r1, _w1), (r2, w2)) = (pipe()?, pipe()?, pipe()?); // _w1 stays here, silent
    let mut writer = Process::new(write_to_both, (w0, w2));
    writer.start()?;
    join(&mut writer)?;
    let ready = connection::wait(&[&r0, &r1, &r2, &writer], Some(T))?;
    println!("   a child wrote on pipes 0 and 2, then exited (item 3): wait -> {ready:?}");
    Ok(())
}

fn write_to_both(a: Connection, b: Connection) -> Res {
    a.send(&0)?;
    b.send(&2)?;
    Ok(())
}

fn queues() -> Res {
    println!("6. Queue: typed items in a shared ring, many producers and consumers");
    let (q, sums) = (Queue::with_maxsize(1000)?, Queue::new()?);
    let mut procs: Vec<Process> = (0..2u64)
        .map(|k| Process::new(produce, (q.clone(), k * 50_000, (k + 1) * 50_000)))
        .chain((0..2).map(|_| Process::new(consume, (q.clone(), sums.clone()))))
        .collect();
    start_all(&mut procs)?;
    join_all(&mut procs[..2])?;
    q.close(); // the consumers drain what is left, then see Closed
    let (mut n, mut sum) = (0, 0);
    for _ in 0..2 {
        let (count, s): (u64, u64) = sums.get_timeout(T)?;
        (n, sum) = (n + count, sum + s);
    }
    join_all(&mut procs[2..])?;
    println!("   2 producers x 50,000 items, 2 consumers: {n} received, sum {sum}");
    let events = Queue::new()?;
    let done = Event::new()?;
    events.put(done.clone())?; // an item holding a handle
    let mut setter = Process::new(set_what_comes, (events,));
    setter.start()?;
    join(&mut setter)?;
    println!(
        "   an Event put in the queue and set by the child who got it: {}",
        done.is_set()
    );
    Ok(())
}

fn produce(q: Queue<u64>, from: u64, to: u64) -> Res {
    for i in from..to {
        q.put_timeout(i, T)?;
    }
    Ok(())
}

fn consume(q: Queue<u64>, sums: Queue<(u64, u64)>) -> Res {
    let (mut n, mut sum) = (0, 0);
    loop {
        match q.get_timeout(T) {
            Ok(i) => (n, sum) = (n + 1, sum + i),
            Err(GetError::Closed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    sums.put((n, sum))?;
    Ok(())
}

fn set_what_comes(events: Queue<Event>) -> Res {
    events.get_timeout(T)?.set();
    Ok(())
}

fn joinable_and_simple_queues() -> Res {
    println!("7. JoinableQueue (task_done, join) and SimpleQueue");
    let (jobs, results) = (JoinableQueue::new()?, SimpleQueue::new()?);
    let mut workers: Vec<Process> = (0..2)
        .map(|_| Process::new(square_jobs, (jobs.clone(), results.clone())))
        .collect();
    start_all(&mut workers)?;
    for x in 1..=10u64 {
        jobs.put(x)?;
    }
    let all_done = jobs.join_timeout(T)?;
    jobs.close();
    let mut squares = (0..10)
        .map(|_| results.get_timeout(T))
        .collect::<Result<Vec<u64>, _>>()?;
    squares.sort_unstable();
    join_all(&mut workers)?;
    println!("   10 jobs, 2 workers: join_timeout -> {all_done}; the squares: {squares:?}");
    println!(
        "   one task_done() too many: {}",
        jobs.task_done().err().map(|e| e.to_string()).unwrap_or_default()
    );
    Ok(())
}

fn square_jobs(jobs: JoinableQueue<u64>, results: SimpleQueue<u64>) -> Res {
    loop {
        match jobs.get_timeout(T) {
            Ok(x) => {
                results.put(x * x)?;
                jobs.task_done()?;
            }
            Err(GetError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn shared_memory() -> Res {
    println!("8. Shared memory: Value, Array, SharedMemory, ShareableList");
    let counter = Value::new(0u64)?;
    let squares = Array::<u64>::new(4)?;
    let mut kids: Vec<Process> = (0..4)
        .map(|i| Process::new(count_and_fill, (counter.clone(), squares.clone(), i)))
        .collect();
    start_all(&mut kids)?;
    join_all(&mut kids)?;
    println!("   4 children x 10,000 `*counter.lock()? += 1`: {}", counter.get());
    println!("   each wrote its square in an Array: {:?}", squares.to_vec());
    let mut shm = SharedMemory::create(None, 16)?;
    shm.as_mut_slice()[..5].copy_from_slice(b"hello");
    let list = ShareableList::create(&[1i64, 2, 3], None)?;
    let mut child = Process::new(shout_and_double, (shm.clone(), list.name().to_string()));
    child.start()?;
    join(&mut child)?;
    println!(
        "   a SharedMemory passed to a child, upper-cased there: {:?}",
        String::from_utf8_lossy(&shm.as_slice()[..5])
    );
    println!(
        "   a ShareableList attached by name in the child, doubled: {:?}",
        list.to_vec()
    );
    shm.unlink()?; // named segments live until unlinked, as in Python
    list.shm().unlink()?;
    Ok(())
}

fn count_and_fill(counter: Value<u64>, squares: Array<u64>, i: usize) -> Res {
    for _ in 0..10_000 {
        // A read-modify-write under the value's lock: the total is exact.
        *counter.lock()? += 1;
    }
    squares.set(i, (i * i) as u64)?;
    Ok(())
}

fn shout_and_double(mut shm: SharedMemory, list_name: String) -> Res {
    shm.as_mut_slice()[..5].make_ascii_uppercase();
    let mut list = ShareableList::<i64>::attach(&list_name)?;
    for i in 0..list.len() {
        list.set(i, list.get(i).unwrap_or_default() * 2)?;
    }
    Ok(())
}

fn locks() -> Res {
    println!("9. Lock and RLock");
    let (lock, held) = (Lock::new()?, Event::new()?);
    let mut holder = Process::new(hold_and_hang, (lock.clone(), held.clone()));
    holder.start()?;
    held.wait_timeout(T);
    holder.kill()?;
    println!(
        "   a child took the Lock and was killed (exit code {})",
        join(&mut holder)?
    );
    match lock.acquire_timeout(T) {
        Err(e) if e.owner_died() => {
            let _guard = e.into_inner(); // like std's PoisonError: we hold the lock now
            println!(
                "   the next acquire: owner_died() is true, and the lock is ours: {}",
                lock.is_locked()
            );
        }
        other => println!("   unexpected: {:?}", other.map(|g| g.is_some())),
    }
    let rlock = RLock::new()?;
    let outer = rlock.acquire_timeout(T)?;
    let inner = rlock.acquire_timeout(T)?;
    let answers = SimpleQueue::new()?;
    let mut child = Process::new(try_rlock, (rlock.clone(), answers.clone()));
    child.start()?;
    let child_got_it: bool = answers.get_timeout(T)?;
    join(&mut child)?;
    println!(
        "   an RLock taken twice by main (count {}): a child's try_acquire -> {child_got_it}",
        rlock.count()
    );
    drop((inner, outer));
    Ok(())
}

fn hold_and_hang(lock: Lock, held: Event) -> Res {
    let _guard = lock.acquire_timeout(T)?.ok_or("the lock is held")?;
    held.set();
    loop {
        std::thread::park(); // until SIGKILL
    }
}

fn try_rlock(rlock: RLock, answers: SimpleQueue<bool>) -> Res {
    answers.put(rlock.try_acquire()?.is_some())?;
    Ok(())
}

fn semaphore_and_event() -> Res {
    println!("10. Semaphore and Event");
    let sem = Semaphore::new(2)?;
    let taken = [sem.try_acquire()?, sem.try_acquire()?, sem.try_acquire()?];
    let (go, done) = (Event::new()?, Event::new()?);
    let mut child = Process::new(release_on_go, (sem.clone(), go.clone(), done.clone()));
    child.start()?;
    let before = done.is_set();
    go.set();
    let after = done.wait_timeout(T);
    let third = sem.acquire_timeout(T)?;
    join(&mut child)?;
    println!("   Semaphore(2): try_acquire x3 -> {taken:?}; a child's release() lets a third in: {third}");
    println!("   Event: done before go.set(): {before}; after: {after}");
    Ok(())
}

fn release_on_go(sem: Semaphore, go: Event, done: Event) -> Res {
    if go.wait_timeout(T) {
        sem.release()?;
        done.set();
    }
    Ok(())
}

fn condition_and_barrier() -> Res {
    println!("11. Condition and Barrier");
    let (cond, cell) = (Condition::new(None)?, Value::new(0u32)?);
    let mut doubler = Process::new(double_when_set, (cond.clone(), cell.clone()));
    doubler.start()?;
    let guard = cond.acquire_timeout(T)?.ok_or("the condition's lock is held")?;
    cell.set(21);
    cond.notify_all()?;
    drop(guard);
    join(&mut doubler)?;
    println!(
        "   Condition: a child in wait_for(|| value != 0), notified, doubled 21 to {}",
        cell.get()
    );
    let barrier = Barrier::new(3)?;
    let mut parties: Vec<Process> = (0..2).map(|_| Process::new(meet, (barrier.clone(),))).collect();
    start_all(&mut parties)?;
    let mut indexes = vec![barrier.wait_timeout(T)? as i32];
    indexes.extend(join_all(&mut parties)?); // each child exits with its index
    indexes.sort_unstable();
    println!("   Barrier(3): main and 2 children passed it together, with indexes {indexes:?}");
    Ok(())
}

fn double_when_set(cond: Condition, cell: Value<u32>) -> Res {
    let mut guard = cond.acquire_timeout(T)?.ok_or("the condition's lock is held")?;
    if cond.wait_for(&mut guard, || cell.get() != 0, Some(T))? {
        cell.set(cell.get() * 2);
    }
    Ok(())
}

/// Exits with its barrier index (Python's `sys.exit(n)`).
fn meet(barrier: Barrier) -> Res {
    let index = barrier.wait_timeout(T)?;
    exit(index as i32)
}

fn manager() -> Res {
    println!("12. A Manager: a server process owning objects, used through typed proxies");
    let manager = Manager::new()?;
    let dict = manager.dict::<String, u64>()?;
    let list = manager.list_from((0..5u64).collect())?;
    let (ns, q) = (manager.namespace()?, manager.queue::<String>()?);
    let mut writer = Process::new(use_proxies, (dict.clone(), list.clone(), ns.clone(), q.clone()));
    writer.start()?;
    join(&mut writer)?;
    let pid = dict.get(&"pid".into())?;
    println!(
        "   the child set {:?} (the pid is its own: {})",
        dict.items()?,
        pid == writer.pid().map(u64::from)
    );
    println!("   reversed the list: {:?}", list.to_vec()?);
    println!("   set a namespace field: {:?}", ns.get::<String>("greeting")?);
    println!("   and put in a manager queue: {:?}", q.get_timeout(T)?);
    manager.shutdown()?;
    println!("   after shutdown(), a proxy call is an error: {}", dict.len().is_err());
    Ok(())
}

fn use_proxies(dict: DictProxy<String, u64>, list: ListProxy<u64>, ns: NamespaceProxy, q: QueueProxy<String>) -> Res {
    dict.insert("pid".into(), u64::from(std::process::id()))?;
    dict.insert("answer".into(), 42)?;
    list.reverse()?;
    ns.set("greeting", "hello from the child")?;
    q.put("done".into())?;
    Ok(())
}

fn pool() -> Res {
    println!("13. A Pool: map, apply_async, and imap through a worker's death");
    let pool = Pool::new(2)?;
    let squares = pool.map(square, 0..1_000_000u64)?;
    println!(
        "   map of x*x over 1,000,000 ints in 2 workers: the last is {}",
        squares[squares.len() - 1]
    );
    let a = pool.apply_async(square, (9,))?;
    println!("   apply_async(square, (9,)).get_timeout(..) = {:?}", a.get_timeout(T));
    let results: Vec<Result<u64, TaskError>> = pool.imap_chunked(die_at_5000, 0..10_000u64, 100)?.collect();
    let lost: Vec<(usize, &TaskError)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
        .collect();
    let right = results
        .iter()
        .enumerate()
        .filter(|(i, r)| r.as_ref().ok() == Some(&(*i as u64 * 2)))
        .count();
    println!("   a worker SIGKILLed at item 5000 of 10,000: {right} results right, lost {lost:?}");
    println!(
        "   (CPython's pool hangs forever here); the pool goes on: {}",
        pool.apply(square, (12,))?
    );
    Ok(())
}

fn square(x: u64) -> u64 {
    x * x
}

/// Kills its own worker with SIGKILL at item 5000.
fn die_at_5000(x: u64) -> u64 {
    if x == 5000 {
        let _ = kill(std::process::id(), Signal::KILL);
    }
    x * 2
}

fn executor() -> Res {
    println!("14. A ProcessPoolExecutor: futures, map, and a broken pool");
    let ex = ProcessPoolExecutor::new(2)?;
    let f = ex.submit(square, (7,))?;
    println!("   submit(square, (7,)).result_timeout(..) = {:?}", f.result_timeout(T));
    let mapped: Vec<u64> = ex.map(square, 1..=5u64)?.collect::<Result<_, _>>()?;
    println!("   map(square, 1..=5) = {mapped:?}");
    let g = ex.submit(die_at_5000, (5000,))?;
    println!(
        "   a worker dies: {:?}; a new task: {:?}",
        g.result_timeout(T),
        ex.submit(square, (1,)).err()
    );
    Ok(())
}

fn bad_input() -> Res {
    println!("15. Bad input is an error, never a panic or a hang");
    let (a, b) = pipe()?;
    a.send(&"not a bool")?;
    println!(
        "   a wrong type: {}",
        b.recv::<bool>().err().map(|e| e.to_string()).unwrap_or_default()
    );
    let listener = Listener::bind("127.0.0.1:0", None)?;
    let mut http = std::net::TcpStream::connect(listener.address())?;
    http.write_all(b"GET / HTTP/1.1\r\n\r\n")?;
    let conn = listener.accept_timeout(T)?;
    println!(
        "   an HTTP client on a Listener: {}",
        conn.recv::<String>().err().map(|e| e.to_string()).unwrap_or_default()
    );
    Ok(())
}

/// `p.join()` with a bound: a child still running after `T` is killed, and
/// the tour fails. Returns the exit code.
fn join(p: &mut Process) -> Res<i32> {
    p.join_timeout(T)?;
    if p.is_alive() {
        p.kill()?;
        p.join()?;
        return Err(format!("{} did not finish in time", p.get_name()).into());
    }
    Ok(p.exitcode().unwrap_or(i32::MIN))
}

fn start_all(procs: &mut [Process]) -> Res {
    for p in procs {
        p.start()?;
    }
    Ok(())
}

fn join_all(procs: &mut [Process]) -> Res<Vec<i32>> {
    procs.iter_mut().map(join).collect()
}

/// `conn.recv()` with a bound: an error if nothing arrives within `T`.
fn recv<V: DeserializeOwned>(conn: &Connection) -> Res<V> {
    if !conn.poll_timeout(T)? {
        return Err("nothing arrived in time".into());
    }
    Ok(conn.recv()?)
}
