//! `cargo xtask compare --cluster`: the cluster tier (mp-cluster) against
//! Celery and RQ, side by side in one run on one `redis-server`.
//!
//! It builds `mp-compare` with its default feature `cluster`, makes a venv
//! under `target/compare/venv` and installs `celery[redis]`, `rq` and
//! `redis` from PyPI into it when they are missing, starts its own
//! `redis-server` (a free port of 127.0.0.1, no persistence) and the
//! workers of each system, each with 2 worker processes:
//!
//! - ours: `mp-compare` run with `MP_CLUSTER_WORKER` (a worker host of 2
//!   local worker processes), keys in namespace `compare` of db 0;
//! - Celery: `celery -A cluster worker --concurrency 2` (prefork), broker
//!   and result backend on db 1;
//! - RQ: two `rq worker` (RQ's default worker, a forked work horse per
//!   job) on db 2.
//!
//! Then, for several rounds, each row's sides run one after the other in
//! an order that turns from round to round, each a fresh client process
//! printing `name<TAB>value<TAB>unit` (`compare/src/cluster.rs`,
//! `compare/python/cluster.py`; `compare/WORKLOADS.md` says what each
//! measures). The report gives each side's median with its min–max, the
//! ratios, the round trips in PINGs, and whether the goals are met: at
//! least 20 times Celery's and RQ's tasks per second, and a round trip
//! within 3 PINGs. Every process it started is stopped (its whole process
//! group) at the end, also when a run fails.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::compare::{Clock, Machine, NOISY, Options, Run, cell, measure, median, num, times, write};
use crate::util::{Failed, Session};

/// The goal for tasks per second: this many times Celery's and RQ's.
const TASKS_GOAL: f64 = 20.0;
/// The goal for one task's round trip: within this many PINGs.
const RTT_GOAL_PINGS: f64 = 3.0;
/// Tasks of the throughput rows (as in `compare/src/cluster.rs` and
/// `cluster.py`): ours and Celery's, and RQ's (fewer, see [`rq_tasks`]).
const TASKS: (u64, u64) = (20_000, 5_000);
const RQ_TASKS: (u64, u64) = (500, 200);
/// How long a worker system may take to stop on SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long a new redis-server has to answer PING.
const START_WAIT: Duration = Duration::from_secs(10);
/// The Python packages the venv needs (celery's `redis` extra brings what
/// kombu's Redis transport imports).
const PACKAGES: &[&str] = &["celery[redis]", "rq", "redis"];

/// Who runs a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Ours,
    Celery,
    Rq,
}

/// One measurement: which system, and the workload name its program knows.
#[derive(Debug, Clone, Copy)]
struct Side {
    system: System,
    name: &'static str,
}

const fn side(system: System, name: &'static str) -> Side {
    Side { system, name }
}

/// A row of the table: its sides, measured in turn.
#[derive(Debug)]
struct RowDef {
    key: Key,
    label: &'static str,
    unit: &'static str,
    sides: &'static [Side],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Ping,
    Floor,
    Rtt,
    Tasks,
    Chunked,
}

const ROWS: &[RowDef] = &[
    RowDef {
        key: Key::Ping,
        label: "Redis PING round trip (ours: the `redis` crate; Celery, RQ: redis-py)",
        unit: "µs",
        sides: &[
            side(System::Ours, "cluster_ping_rtt"),
            side(System::Celery, "redis_ping_rtt"),
        ],
    },
    RowDef {
        key: Key::Floor,
        label: "a bare echo through Redis: `XADD`, a blocked `XREADGROUP` that answers with `XADD`, a blocked \
                `XREAD` (the `redis` crate, no library code: the floor of any round trip through Redis)",
        unit: "µs",
        sides: &[side(System::Ours, "cluster_floor_rtt")],
    },
    RowDef {
        key: Key::Rtt,
        label: "one task's round trip, warm (`apply` / `delay().get()` / `enqueue` + result)",
        unit: "µs",
        sides: &[
            side(System::Ours, "cluster_apply_rtt"),
            side(System::Celery, "celery_apply_rtt"),
            side(System::Rq, "rq_apply_rtt"),
        ],
    },
    RowDef {
        key: Key::Tasks,
        label: "no-op tasks over 2 worker processes, one message per task",
        unit: "tasks/s",
        sides: &[
            side(System::Ours, "cluster_tasks_chunksize1"),
            side(System::Celery, "celery_tasks"),
            side(System::Rq, "rq_tasks"),
        ],
    },
    RowDef {
        key: Key::Chunked,
        label: "the same tasks, ours with `map`'s default chunks",
        unit: "tasks/s",
        sides: &[side(System::Ours, "cluster_tasks_default_chunks")],
    },
];

/// The programs and the server's URL.
struct Setup {
    ours: PathBuf,
    python: PathBuf,
    script: PathBuf,
    url: String,
}

impl Setup {
    fn command(&self, s: Side, quick: bool) -> Command {
        let mut cmd = match s.system {
            System::Ours => Command::new(&self.ours),
            System::Celery | System::Rq => {
                let mut c = Command::new(&self.python);
                c.arg(&self.script);
                c
            }
        };
        cmd.arg(s.name);
        if quick {
            cmd.arg("--quick");
        }
        cmd.env("MP_COMPARE_REDIS", format!("{}/0", self.url))
            .env("MP_COMPARE_NAMESPACE", NAMESPACE)
            .env("MP_COMPARE_CELERY", format!("{}/1", self.url))
            .env("MP_COMPARE_RQ", format!("{}/2", self.url));
        cmd
    }
}

/// Our key namespace on db 0.
const NAMESPACE: &str = "compare";

/// Processes started in process groups of their own, each group stopped
/// (SIGTERM, then SIGKILL after [`STOP_WAIT`]) and reaped when this is
/// dropped, so a failed run leaves nothing behind.
#[derive(Default)]
struct Group {
    children: Vec<(String, Child)>,
}

impl Group {
    fn spawn(&mut self, name: &str, cmd: &mut Command, log: &Path) -> Result<(), Failed> {
        let out = std::fs::File::create(log).map_err(|e| {
            eprintln!("error: cannot create {}: {e}", log.display());
            Failed
        })?;
        let err = out.try_clone().map_err(|_| Failed)?;
        self.start(name, cmd.stdout(out).stderr(err))?;
        Ok(())
    }

    /// [`spawn`](Group::spawn), with its standard output copied to `log`
    /// by a thread that sends on the receiver once a line contains
    /// `ready` (the receiver disconnects if the output ends first).
    fn spawn_until(
        &mut self,
        name: &str,
        cmd: &mut Command,
        log: &Path,
        ready: &'static str,
    ) -> Result<mpsc::Receiver<()>, Failed> {
        let mut out = std::fs::File::create(log).map_err(|e| {
            eprintln!("error: cannot create {}: {e}", log.display());
            Failed
        })?;
        let err = out.try_clone().map_err(|_| Failed)?;
        let child = self.start(name, cmd.stdout(Stdio::piped()).stderr(err))?;
        let pipe = child.stdout.take().ok_or(Failed)?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)) {
                let Ok(line) = line else { break };
                let _ = writeln!(out, "{line}");
                if line.contains(ready)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        Ok(rx)
    }

    /// Starts `cmd` (its outputs set) in a process group of its own.
    fn start(&mut self, name: &str, cmd: &mut Command) -> Result<&mut Child, Failed> {
        let child = cmd.stdin(Stdio::null()).process_group(0).spawn().map_err(|e| {
            eprintln!("error: cannot start {name}: {e}");
            Failed
        })?;
        self.children.push((name.to_string(), child));
        Ok(&mut self.children.last_mut().ok_or(Failed)?.1)
    }

    /// The first one that has exited, with its status.
    fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|(name, c)| match c.try_wait() {
            Ok(Some(status)) => Some(format!("{name} exited ({status})")),
            _ => None,
        })
    }

    fn stop(&mut self) {
        // Newest first: the workers before the server they talk to.
        for (name, child) in self.children.drain(..).rev() {
            let pgid = child.id();
            signal_group("TERM", pgid);
            let exited = crate::examples::wait_in_background(child);
            if exited.recv_timeout(STOP_WAIT).is_err() {
                eprintln!("    {name} did not stop within {STOP_WAIT:?} of SIGTERM: SIGKILL");
            }
            // The rest of its group (worker processes) too, whether or not
            // the leader is gone; its waiter thread has reaped the leader, or
            // does now.
            signal_group("KILL", pgid);
            let _ = exited.recv_timeout(STOP_WAIT);
            let left = group_members(pgid);
            if !left.is_empty() {
                eprintln!("    warning: processes of {name}'s group left after SIGKILL: {left:?}");
            }
        }
    }
}

impl Group {
    /// The CPU ticks (user and system, with their reaped children's) of
    /// every live process of these groups: the servers and workers, whose
    /// time is not foreign load.
    fn ticks(&self) -> u64 {
        let groups: Vec<u32> = self.children.iter().map(|(_, c)| c.id()).collect();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                // After the name: pgrp is the 3rd field, utime..cstime the
                // 12th to 15th.
                let pgrp: u32 = f.get(2)?.parse().ok()?;
                groups.contains(&pgrp).then(|| {
                    f.get(11..15)
                        .map_or(0, |t| t.iter().filter_map(|x| x.parse::<u64>().ok()).sum::<u64>())
                })
            })
            .sum()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(sig: &str, pgid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// The live processes (not zombies) of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |x| x.1);
            let f: Vec<&str> = after.split_whitespace().collect();
            // After the name: state, ppid, pgrp.
            f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
        })
        .collect()
}

/// Runs the comparison and writes `target/compare/cluster.md`.
pub(crate) fn run(session: &mut Session, options: &Options) -> Result<(), Failed> {
    session.run(
        "build mp-compare (release, with the cluster tier)",
        session.cargo(["build", "--release", "--quiet", "-p", "mp-compare"]),
    )?;
    let out_dir = session.target_dir().join("compare");
    let venv = out_dir.join("venv");
    session.step("Python venv with celery, rq, redis (PyPI)", |s| ensure_venv(s, &venv))?;
    let root = session.root().to_path_buf();
    let ours = session.target_dir().join("release").join("mp-compare");
    session.step("compare --cluster", |_| {
        let listed = Command::new(&ours).arg("--list-cluster").output().map_err(|e| {
            eprintln!("error: cannot run mp-compare: {e}");
            Failed
        })?;
        let want: Vec<&str> = ROWS
            .iter()
            .flat_map(|r| r.sides.iter().filter(|s| s.system == System::Ours).map(|s| s.name))
            .collect();
        if String::from_utf8_lossy(&listed.stdout).lines().collect::<Vec<_>>() != want {
            eprintln!("error: `mp-compare --list-cluster` does not list {want:?}: was it built with `cluster`?");
            return Err(Failed);
        }
        let logs = out_dir.join("cluster-logs");
        std::fs::create_dir_all(&logs).map_err(|e| {
            eprintln!("error: cannot create {}: {e}", logs.display());
            Failed
        })?;
        let mut group = Group::default();
        let url = start_redis(&mut group, &logs)?;
        let setup = Setup {
            ours: ours.clone(),
            python: venv.join("bin").join("python"),
            script: root.join("compare").join("python").join("cluster.py"),
            url,
        };
        start_workers(&mut group, &setup, &venv, &root, &logs)?;
        let result = measure_all(&setup, options, &mut group, &out_dir, &root);
        group.stop();
        result
    })
}

/// Makes the venv and installs [`PACKAGES`] unless they import already.
fn ensure_venv(session: &Session, venv: &Path) -> Result<(), Failed> {
    let python = venv.join("bin").join("python");
    if !python.exists() {
        session.exec(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    }
    let imports = || {
        Command::new(&python)
            .args(["-c", "import celery, rq, redis, packaging"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !imports() {
        session.exec(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(PACKAGES),
        )?;
    }
    if !imports() {
        eprintln!(
            "error: celery, rq and redis do not import in {} after pip install",
            venv.display()
        );
        return Err(Failed);
    }
    Ok(())
}

/// Starts `redis-server` on a free port of 127.0.0.1 without persistence
/// and waits until it answers `PING`; its URL without a db.
fn start_redis(group: &mut Group, logs: &Path) -> Result<String, Failed> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| {
            eprintln!("error: no free port on 127.0.0.1: {e}");
            Failed
        })?
        .port();
    let ready = group.spawn_until(
        "redis-server",
        Command::new("redis-server").args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--databases",
            "4",
        ]),
        &logs.join("redis-server.log"),
        "Ready to accept connections",
    )?;
    match ready.recv_timeout(START_WAIT) {
        Ok(()) if ping(port) => {}
        Ok(()) => {
            eprintln!("error: redis-server on 127.0.0.1:{port} said it was ready but does not answer PING");
            return Err(Failed);
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let why = group
                .exited()
                .unwrap_or_else(|| "redis-server closed its output".into());
            eprintln!(
                "error: {why} (is redis-server installed? see {}/redis-server.log)",
                logs.display()
            );
            return Err(Failed);
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("error: redis-server on 127.0.0.1:{port} was not ready within {START_WAIT:?}");
            return Err(Failed);
        }
    }
    let version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("    redis-server on 127.0.0.1:{port} ({version})");
    Ok(format!("redis://127.0.0.1:{port}"))
}

fn ping(port: u16) -> bool {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Ours, Celery's and RQ's workers, 2 worker processes each.
fn start_workers(group: &mut Group, setup: &Setup, venv: &Path, root: &Path, logs: &Path) -> Result<(), Failed> {
    let python_dir = root.join("compare").join("python");
    group.spawn(
        "our worker host",
        Command::new(&setup.ours)
            .env("MP_CLUSTER_WORKER", format!("{}/0", setup.url))
            .env("MP_CLUSTER_PROCESSES", "2")
            .env("MP_CLUSTER_NAMESPACE", NAMESPACE),
        &logs.join("ours.log"),
    )?;
    group.spawn(
        "celery worker",
        Command::new(venv.join("bin").join("celery"))
            .args([
                "-A",
                "cluster",
                "worker",
                "--concurrency",
                "2",
                "-P",
                "prefork",
                "-l",
                "warning",
            ])
            .current_dir(&python_dir)
            .env("MP_COMPARE_CELERY", format!("{}/1", setup.url)),
        &logs.join("celery.log"),
    )?;
    for i in 1..=2 {
        group.spawn(
            &format!("rq worker {i}"),
            Command::new(venv.join("bin").join("rq"))
                .args(["worker", "--quiet", "-u", &format!("{}/2", setup.url), "-P"])
                .arg(&python_dir)
                .arg("compare"),
            &logs.join(format!("rq{i}.log")),
        )?;
    }
    println!(
        "    workers: ours (a worker host of 2 processes), celery (prefork, concurrency 2), 2 rq workers; logs in {}",
        logs.display()
    );
    Ok(())
}

/// The runs of one row, per system.
#[derive(Debug, Default)]
struct Runs {
    ours: Vec<Run>,
    celery: Vec<Run>,
    rq: Vec<Run>,
}

impl Runs {
    fn of(&self, s: System) -> &[Run] {
        match s {
            System::Ours => &self.ours,
            System::Celery => &self.celery,
            System::Rq => &self.rq,
        }
    }

    fn push(&mut self, s: System, r: Run) {
        match s {
            System::Ours => self.ours.push(r),
            System::Celery => self.celery.push(r),
            System::Rq => self.rq.push(r),
        }
    }
}

fn measure_all(setup: &Setup, options: &Options, group: &mut Group, out_dir: &Path, root: &Path) -> Result<(), Failed> {
    let machine = Machine::probe();
    let rounds = options.rounds();
    println!("    {rounds} rounds; machine: {}", machine.summary());
    let started = Instant::now();
    let mut results: Vec<Runs> = ROWS.iter().map(|_| Runs::default()).collect();
    let mut log = String::from("round\tworkload\tsystem\tvalue\tunit\tseconds\n");
    let mut clock = Clock::new();
    let mut foreign = Vec::new();
    let mut failures = 0;
    for round in 0..rounds {
        let mark = clock.mark();
        let ours_mark = group.ticks();
        for (i, row) in ROWS.iter().enumerate() {
            // The order turns from round to round (and row to row), so a
            // slow patch of the machine does not always hit one system.
            let n = row.sides.len();
            for k in 0..n {
                let s = row.sides[(k + round + i) % n];
                if let Some(why) = group.exited() {
                    eprintln!(
                        "error: {why} during the run; its log is under {}",
                        out_dir.join("cluster-logs").display()
                    );
                    return Err(Failed);
                }
                let t0 = Instant::now();
                match measure(&mut setup.command(s, options.quick), s.name) {
                    Ok((value, unit)) => {
                        let _ = writeln!(
                            log,
                            "{}\t{}\t{:?}\t{value}\t{unit}\t{:.3}",
                            round + 1,
                            s.name,
                            s.system,
                            t0.elapsed().as_secs_f64()
                        );
                        println!("    round {} {:<30} {:>12} {unit}", round + 1, s.name, num(value));
                        results[i].push(s.system, Run { value, unit });
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("error: {}: {e}", s.name);
                    }
                }
            }
        }
        let (f, secs) = clock.foreign_since(mark);
        // The workers and the server are ours, not foreign, though not
        // reaped yet.
        let ours = group.ticks().saturating_sub(ours_mark) as f64 / clock.ticks_per_sec / secs.max(1e-3);
        let f = (f - ours).max(0.0);
        foreign.push(f);
        println!(
            "    round {}/{rounds}: {secs:.1} s, other processes used {f:.2} cores",
            round + 1
        );
    }
    let elapsed = started.elapsed();
    let versions = python_versions(&setup.python);
    let quick = options.quick;
    let (table, verdict) = report(&results, quick);
    let worst = foreign.iter().copied().fold(0.0, f64::max);
    let heading = format!(
        "Measured {} on {} with `cargo xtask compare --cluster{}` ({rounds} rounds, {:.0} s, one redis-server {}); \
         Python {}, {versions}. Other processes used {worst:.2} cores at most during a round{}.",
        machine.date,
        machine.summary(),
        if quick { " --quick" } else { "" },
        elapsed.as_secs_f64(),
        redis_version(),
        machine.python,
        if worst > NOISY {
            " (more than an idle machine: treat the figures with care)"
        } else {
            ""
        },
    );
    let md = format!("{heading}\n\n{table}\n{verdict}\n");
    println!("\n{md}");
    write(&out_dir.join("cluster.md"), &md)?;
    write(&out_dir.join("cluster-runs.tsv"), &log)?;
    println!("    wrote {}/{{cluster.md,cluster-runs.tsv}}", out_dir.display());
    if options.readme {
        update_readme(root, &md)?;
        println!("    updated README.md (\"Scaling out\")");
    }
    if failures > 0 {
        eprintln!("error: {failures} run(s) failed");
        return Err(Failed);
    }
    Ok(())
}

/// The table, and the lines on the goals.
fn report(results: &[Runs], quick: bool) -> (String, String) {
    let pick = |p: (u64, u64)| if quick { p.1 } else { p.0 };
    let (tasks, rq_tasks) = (pick(TASKS), pick(RQ_TASKS));
    let mut t = String::from("| measure | unit | ours | Celery | RQ | ours vs Celery | ours vs RQ |\n");
    t.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    let med = |k: Key, s: System| -> Option<f64> {
        let i = ROWS.iter().position(|r| r.key == k)?;
        median(results[i].of(s))
    };
    for (row, runs) in ROWS.iter().zip(results) {
        let label = match row.key {
            Key::Tasks => format!(
                "{} ({tasks}; RQ: {rq_tasks}, its forked job per task is slow)",
                row.label
            ),
            Key::Chunked => format!("{} ({tasks})", row.label),
            _ => row.label.to_string(),
        };
        let (ours, celery, rq) = match row.key {
            // Celery and RQ both talk to Redis through redis-py.
            Key::Ping => (cell(&runs.ours), cell(&runs.celery), cell(&runs.celery)),
            Key::Chunked | Key::Floor => (cell(&runs.ours), "–".into(), "–".into()),
            _ => (cell(&runs.ours), cell(&runs.celery), cell(&runs.rq)),
        };
        let ratio = |other: System| -> String {
            let base = if row.key == Key::Chunked { Key::Tasks } else { row.key };
            match (median(&runs.ours), med(base, other)) {
                (Some(o), Some(x)) if row.key != Key::Ping && row.key != Key::Floor => {
                    times(Some(if row.unit == "µs" { x / o } else { o / x }))
                }
                _ => "–".into(),
            }
        };
        let _ = writeln!(
            t,
            "| {label} | {} | {ours} | {celery} | {rq} | {} | {} |",
            row.unit,
            bold(ratio(System::Celery)),
            bold(ratio(System::Rq))
        );
    }
    let mut v = String::from(
        "Each cell: the median over the rounds (min–max). Ratios: how many times faster ours is (their time over \
         ours, or our rate over theirs; the chunked row against their one-message rows).\n\n",
    );
    let in_pings = |s: System, ping: System| -> Option<f64> { Some(med(Key::Rtt, s)? / med(Key::Ping, ping)?) };
    let fmt = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.1}"));
    let _ = writeln!(
        v,
        "Round trip in PINGs of its own client: ours {}, Celery {}, RQ {}.\n",
        fmt(in_pings(System::Ours, System::Ours)),
        fmt(in_pings(System::Celery, System::Celery)),
        fmt(in_pings(System::Rq, System::Celery)),
    );
    let ours_over = |a: Key, b: Key| Some(med(a, System::Ours)? / med(b, System::Ours)?);
    let _ = writeln!(
        v,
        "The bare echo through Redis in PINGs: {}; our round trip over that echo: {}.\n",
        fmt(ours_over(Key::Floor, Key::Ping)),
        fmt(ours_over(Key::Rtt, Key::Floor)),
    );
    let goal = |ok: bool| if ok { "met" } else { "**not met**" };
    let tasks_ratio = |s: System| Some(med(Key::Tasks, System::Ours)? / med(Key::Tasks, s)?);
    for (name, s) in [("Celery", System::Celery), ("RQ", System::Rq)] {
        match tasks_ratio(s) {
            Some(r) => {
                let _ = writeln!(
                    v,
                    "- Goal: at least {TASKS_GOAL:.0}× {name}'s tasks/s, one message per task: {} ({r:.1}×{}).",
                    goal(r >= TASKS_GOAL),
                    if r < TASKS_GOAL {
                        format!(", {:.1}× short", TASKS_GOAL / r)
                    } else {
                        String::new()
                    }
                );
            }
            None => {
                let _ = writeln!(v, "- Goal: at least {TASKS_GOAL:.0}× {name}'s tasks/s: not measured.");
            }
        }
    }
    match in_pings(System::Ours, System::Ours) {
        Some(p) => {
            let _ = writeln!(
                v,
                "- Goal: a round trip within {RTT_GOAL_PINGS:.0} PINGs (our client's, measured in the same run): {} \
                 ({p:.1} PINGs{}).",
                goal(p <= RTT_GOAL_PINGS),
                if p > RTT_GOAL_PINGS {
                    format!(", {:.1}× over", p / RTT_GOAL_PINGS)
                } else {
                    String::new()
                }
            );
        }
        None => {
            let _ = writeln!(
                v,
                "- Goal: a round trip within {RTT_GOAL_PINGS:.0} PINGs: not measured."
            );
        }
    }
    (t, v)
}

/// A ratio in bold, a dash as it is.
fn bold(s: String) -> String {
    if s == "–" { s } else { format!("**{s}**") }
}

/// The versions of the Python packages, for the heading.
fn python_versions(python: &Path) -> String {
    Command::new(python)
        .args([
            "-c",
            "from importlib.metadata import version as v; \
             print(f\"Celery {v('celery')}, RQ {v('rq')}, redis-py {v('redis')}\")",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn redis_version() -> String {
    let out = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .map_or_else(|| "(version unknown)".into(), |v| v.to_string())
}

const BEGIN: &str = "<!-- compare-cluster:begin (written by `cargo xtask compare --cluster --readme`) -->";
const END: &str = "<!-- compare-cluster:end -->";

/// Puts the report between README.md's cluster markers.
fn update_readme(root: &Path, md: &str) -> Result<(), Failed> {
    crate::compare::replace_readme_section(root, BEGIN, END, md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(v: &[f64]) -> Vec<Run> {
        v.iter()
            .map(|&value| Run {
                value,
                unit: "x".into(),
            })
            .collect()
    }

    #[test]
    fn the_report_judges_the_goals() {
        let mut r: Vec<Runs> = ROWS.iter().map(|_| Runs::default()).collect();
        r[0].ours = runs(&[20.0]);
        r[0].celery = runs(&[50.0]);
        r[1].ours = runs(&[40.0]);
        r[2].ours = runs(&[50.0, 60.0, 70.0]);
        r[2].celery = runs(&[4000.0]);
        r[2].rq = runs(&[200_000.0]);
        r[3].ours = runs(&[10_000.0]);
        r[3].celery = runs(&[400.0]);
        r[3].rq = runs(&[10.0]);
        r[4].ours = runs(&[1e6]);
        let (t, v) = report(&r, false);
        assert!(t.contains("| 60.0 (50.0–70.0) |"), "{t}");
        // 4000 / 60, 200000 / 60; 10000 / 400, 10000 / 10.
        assert!(t.contains("**67×** | **3333×** |"), "{t}");
        assert!(t.contains("**25×** | **1000×** |"), "{t}");
        assert!(v.contains("Celery's tasks/s, one message per task: met (25.0×)"), "{v}");
        assert!(
            v.contains("within 3 PINGs (our client's, measured in the same run): met (3.0 PINGs)"),
            "{v}"
        );
        assert!(
            v.contains("The bare echo through Redis in PINGs: 2.0; our round trip over that echo: 1.5."),
            "{v}"
        );
        r[2].ours = runs(&[100.0]);
        r[3].ours = runs(&[5000.0]);
        let (_, v) = report(&r, false);
        assert!(v.contains("**not met** (12.5×, 1.6× short)"), "{v}");
        assert!(v.contains("**not met** (5.0 PINGs, 1.7× over)"), "{v}");
    }

    #[test]
    fn ours_are_listed_in_the_table_s_order() {
        let ours: Vec<&str> = ROWS
            .iter()
            .flat_map(|r| r.sides.iter().filter(|s| s.system == System::Ours).map(|s| s.name))
            .collect();
        assert_eq!(
            ours,
            [
                "cluster_ping_rtt",
                "cluster_floor_rtt",
                "cluster_apply_rtt",
                "cluster_tasks_chunksize1",
                "cluster_tasks_default_chunks"
            ]
        );
    }
}
