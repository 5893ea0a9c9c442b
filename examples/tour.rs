//! A tour of what the library has so far: shared memory that never leaks,
//! messages whose handles travel beside their bytes, a forked child that
//! writes through a handle it received, the errors a bad peer gets,
//! Python-style processes under the three start methods, locks, events and
//! barriers shared between processes, queues, a manager's dict and list,
//! and a pool and an executor that survive a worker killed mid-task.
//!
//! Run with `cargo run --release --example tour`.

use std::error::Error;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use multiprocessing::codec::{self, CodecError};
use multiprocessing::sys::process::{Fork, exit_now, try_fork};
use multiprocessing::sys::region::Region;
use multiprocessing::sys::socket::{SocketKind, socketpair};
use multiprocessing::{
    Barrier, DictProxy, Event, GetError, ListProxy, Lock, Manager, ManagerError, Pool, Process, ProcessPoolExecutor,
    Queue, StartMethod, TaskError, get_context,
};
use serde::{Deserialize, Serialize};

/// A message with two handles inside: each region travels as a file
/// descriptor, and the receiver maps the same memory.
#[derive(Serialize, Deserialize)]
struct Job {
    name: String,
    #[serde(with = "multiprocessing::codec::handle::region")]
    text: Region,
    #[serde(with = "multiprocessing::codec::handle::region")]
    counter: Region,
}

fn main() -> Result<(), Box<dyn Error>> {
    println!("1. Shared memory: a memfd region, freed by the kernel with its last holder");
    let text = Region::create("tour-text", 4096)?;
    let counter = Region::create("tour-counter", 8)?;
    println!(
        "   two regions of {} and {} bytes, nothing in /dev/shm",
        text.len(),
        counter.len()
    );

    println!("2. A socket pair, and a child forked before the message exists");
    let (parent_end, child_end) = socketpair(SocketKind::Stream)?;
    let mut child = match try_fork()? {
        Fork::Child => {
            let code = match child_main(child_end) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("child: {e}");
                    1
                }
            };
            exit_now(code)
        }
        Fork::Parent(child) => child,
    };

    println!("3. The parent sends a Job holding both regions");
    let job = Job {
        name: "tour".into(),
        text,
        counter,
    };
    let frame = codec::encode(&job)?;
    println!(
        "   frame: {} bytes, {} file descriptors beside them",
        frame.as_bytes().len(),
        frame.fds().len()
    );
    codec::send_frame(parent_end.as_fd(), &frame)?;

    let reply: String = codec::recv(parent_end.as_fd())?;
    println!("5. The child replied {reply:?}");
    let status = child
        .wait_timeout(Duration::from_secs(10))?
        .ok_or("the child did not exit")?;
    println!("   child exited with code {}", status.exitcode());
    let mut buf = [0u8; 22];
    job.text.read(0, &mut buf)?;
    println!(
        "   the parent reads {:?} from its own mapping",
        String::from_utf8_lossy(&buf)
    );
    println!("   counter = {}", job.counter.atomic_u64(0)?.load(Ordering::Acquire));

    println!("6. Bad input is an error, never a panic or a hang");
    let wrong = codec::decode::<bool>(codec::encode(&"not a bool")?);
    println!(
        "   wrong type: {}",
        wrong.err().map(|e| e.to_string()).unwrap_or_default()
    );
    let (a, b) = socketpair(SocketKind::Stream)?;
    multiprocessing::sys::fd::write_all(a.as_fd(), b"GET / HTTP/1.1\r\n")?;
    drop(a);
    let garbage = codec::recv_frame(b.as_fd(), &Default::default());
    if let Err(e @ CodecError::Corrupt(_)) = garbage {
        println!("   garbage: {e}");
    }
    let json = serde_json_like_error();
    println!("   a handle in another format: {json}");

    println!("7. Processes, as in Python, under each start method");
    let cell = Region::create("tour-square", 8)?;
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = get_context(m).process(square_into, (Cell(cell.try_clone()?), 12));
        p.start()?;
        p.join()?;
        let got = cell.atomic_u64(0)?.load(Ordering::Acquire);
        println!(
            "   {m:?}: {} exited with {:?} after writing 12 * 12 = {got}",
            p.get_name(),
            p.exitcode()
        );
        cell.atomic_u64(0)?.store(0, Ordering::Release);
    }
    let mut failing = Process::new(fail, ());
    failing.start()?;
    failing.join()?;
    println!(
        "   a target returning Err exits with {:?} (its message went to stderr)",
        failing.exitcode()
    );

    println!("8. Locks, events and barriers shared with children");
    let lock = Lock::new()?;
    let total = Region::create("tour-total", 8)?;
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(Process::new(
            add_under_lock,
            (lock.clone(), Cell(total.try_clone()?), 10_000u64),
        ));
    }
    for w in &mut workers {
        w.start()?;
    }
    for w in &mut workers {
        w.join()?;
    }
    println!(
        "   4 processes x 10,000 increments under one Lock: {}",
        total.atomic_u64(0)?.load(Ordering::Acquire)
    );
    let held = Event::new()?;
    let mut holder = Process::new(hold_and_hang, (lock.clone(), held.clone()));
    holder.start()?;
    held.wait_timeout(Duration::from_secs(10));
    holder.kill()?;
    match lock.acquire_timeout(Duration::from_secs(10)) {
        Err(e) if e.owner_died() => {
            drop(e.into_inner());
            println!("   a holder killed with SIGKILL: the next acquire reports owner_died and holds the lock");
        }
        other => println!("   unexpected: {:?}", other.map(|g| g.is_some())),
    }
    holder.join()?;
    let barrier = Barrier::new(3)?;
    let mut parties: Vec<Process> = (0..2).map(|_| Process::new(meet, (barrier.clone(),))).collect();
    for p in &mut parties {
        p.start()?;
    }
    let mine = barrier.wait_timeout(Duration::from_secs(10))?;
    let mut codes: Vec<i32> = vec![mine as i32];
    for p in &mut parties {
        p.join()?;
        codes.push(p.exitcode().unwrap_or(-1));
    }
    codes.sort_unstable();
    println!("   a Barrier of 3 gave the parties indexes {codes:?}");

    println!("9. Queues: typed items in a shared ring, many producers and consumers");
    let q = Queue::with_maxsize(1000)?;
    let sums = Queue::new()?;
    let mut procs: Vec<Process> = (0..2u64)
        .map(|k| Process::new(produce, (q.clone(), k * 50_000, (k + 1) * 50_000)))
        .chain((0..2).map(|_| Process::new(consume, (q.clone(), sums.clone()))))
        .collect();
    for p in &mut procs {
        p.start()?;
    }
    for p in &mut procs[..2] {
        p.join()?;
    }
    q.close(); // the consumers drain what is left, then see Closed
    let (mut n, mut sum) = (0, 0);
    for _ in 0..2 {
        let (count, s): (u64, u64) = sums.get_timeout(Duration::from_secs(30))?;
        n += count;
        sum += s;
    }
    for p in &mut procs[2..] {
        p.join()?;
    }
    println!(
        "   2 producers x 50,000 items, 2 consumers: {n} received, sum {sum} (expected {})",
        (0..100_000u64).sum::<u64>()
    );
    let events = Queue::new()?;
    let done = Event::new()?;
    events.put(done.clone())?; // an item holding a handle
    let mut setter = Process::new(set_what_comes, (events.clone(),));
    setter.start()?;
    setter.join()?;
    println!(
        "   an Event sent through the queue, set by the child: {}",
        done.is_set()
    );

    println!("10. A Manager: a server process owning a dict and a list, used through proxies");
    let manager = Manager::new()?;
    let dict = manager.dict::<String, u64>()?;
    let list = manager.list_from((0..5u64).collect())?;
    let mut writer = Process::new(write_and_reverse, (dict.clone(), list.clone()));
    writer.start()?;
    writer.join()?;
    let pid = dict.get(&"pid".into())?;
    println!(
        "   the child set {:?} (the pid is its own: {})",
        dict.items()?,
        pid == writer.pid().map(u64::from)
    );
    println!("   and reversed the list: {:?}", list.to_vec()?);

    println!("11. A Pool and a ProcessPoolExecutor");
    let pool = Pool::new(2)?;
    let squares = pool.map(square, 0..1_000_000u64)?;
    println!(
        "   map of x*x over 1,000,000 ints in 2 workers: the last is {}",
        squares[squares.len() - 1]
    );
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
    let ex = ProcessPoolExecutor::new(2)?;
    let f = ex.submit(square, (7,))?;
    println!("   an executor future: {:?}", f.result());
    let g = ex.submit(die_at_5000, (5000,))?;
    println!(
        "   a worker dies: {:?}; a new task: {:?}",
        g.result(),
        ex.submit(square, (1,)).err()
    );
    Ok(())
}

fn square(x: u64) -> u64 {
    x * x
}

/// Kills its own worker with SIGKILL at item 5000.
fn die_at_5000(x: u64) -> u64 {
    if x == 5000 {
        let _ = multiprocessing::sys::signal::kill(std::process::id(), multiprocessing::sys::signal::Signal::KILL);
    }
    x * 2
}

fn write_and_reverse(dict: DictProxy<String, u64>, list: ListProxy<u64>) -> Result<(), ManagerError> {
    dict.insert("pid".into(), u64::from(std::process::id()))?;
    dict.insert("answer".into(), 42)?;
    list.reverse()?;
    Ok(())
}

fn produce(q: Queue<u64>, from: u64, to: u64) -> Result<(), Box<dyn Error>> {
    for i in from..to {
        q.put(i)?;
    }
    Ok(())
}

fn consume(q: Queue<u64>, sums: Queue<(u64, u64)>) -> Result<(), Box<dyn Error>> {
    let (mut n, mut sum) = (0, 0);
    loop {
        match q.get() {
            Ok(i) => {
                n += 1;
                sum += i;
            }
            Err(GetError::Closed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    sums.put((n, sum))?;
    Ok(())
}

fn set_what_comes(events: Queue<Event>) -> Result<(), Box<dyn Error>> {
    events.get()?.set();
    Ok(())
}

fn add_under_lock(lock: Lock, cell: Cell, n: u64) -> Result<(), Box<dyn Error>> {
    let word = cell.0.atomic_u64(0)?;
    for _ in 0..n {
        let _guard = lock.acquire()?;
        // A plain read and write: only the lock keeps the total exact.
        word.store(word.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    Ok(())
}

fn hold_and_hang(lock: Lock, held: Event) -> Result<(), Box<dyn Error>> {
    let _guard = lock.acquire()?;
    held.set();
    loop {
        std::thread::park();
    }
}

/// Exits with its barrier index.
fn meet(barrier: Barrier) -> Result<(), Box<dyn Error>> {
    let index = barrier.wait_timeout(Duration::from_secs(10))?;
    multiprocessing::exit(index as i32)
}

/// A region handle as a target argument.
#[derive(Serialize, Deserialize)]
struct Cell(#[serde(with = "multiprocessing::codec::handle::region")] Region);

fn square_into(cell: Cell, n: u64) -> Result<(), String> {
    cell.0
        .atomic_u64(0)
        .map_err(|e| e.to_string())?
        .store(n * n, Ordering::Release);
    Ok(())
}

fn fail() -> Result<(), String> {
    Err("this target fails on purpose".into())
}

fn child_main(sock: std::os::fd::OwnedFd) -> Result<(), Box<dyn Error>> {
    let job: Job = codec::recv(sock.as_fd())?;
    println!(
        "4. The child received job {:?} and writes through both handles",
        job.name
    );
    job.text.write(0, b"written by the child!!")?;
    job.counter.atomic_u64(0)?.fetch_add(41, Ordering::AcqRel);
    job.counter.atomic_u64(0)?.fetch_add(1, Ordering::AcqRel);
    codec::send(sock.as_fd(), &"done")?;
    Ok(())
}

/// What a handle says when a format other than the codec tries to encode it.
fn serde_json_like_error() -> String {
    match multiprocessing::codec::handle::put_fd(std::io::stdin().as_fd()) {
        Ok(_) => "unexpectedly accepted".into(),
        Err(e) => e.to_string(),
    }
}
