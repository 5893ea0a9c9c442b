//! `cargo xtask compare`: this library against CPython's `multiprocessing`,
//! side by side, on this machine.
//!
//! Both sides run the same workloads (`compare/WORKLOADS.md`): the Rust
//! side is the `mp-compare` binary, the Python side
//! `compare/python/workloads.py` (stdlib only). Each run is a fresh process
//! that measures one workload and prints `name<TAB>value<TAB>unit`.
//!
//! For each placement (unpinned, then everything pinned to CPU 0 with
//! `taskset -c 0`), each round runs every workload once on each side, the
//! order alternating from one run to the next (A B, B A, ...), so a slow
//! patch of the machine hits both sides alike. A row reports each side's
//! median over the rounds with its min–max spread, and the speed-up (how
//! many times faster ours is: CPython's time over ours, or our throughput
//! over CPython's) against the target the primitive's issue set.
//!
//! Other processes running at the same time change these figures by
//! several times on this 2-CPU VM, so each round also records the CPU time
//! used by processes other than the ones under test (`foreign load`: the
//! machine's busy time less our reaped children's), and the report says
//! how high it went.
//!
//! Output: the table on stdout, and under `target/compare/`: `compare.md`
//! (the table with the machine and date), `ratios.svg` (a bar chart of the
//! speed-ups, log scale, with the targets) and `runs.tsv` (every run).
//! `--readme` also puts the table into README.md (between the
//! `compare:begin`/`compare:end` markers) and the chart into
//! `docs/compare.svg`.
//!
//! A few rows compare against another Rust crate instead of CPython (a
//! competitor, or the floor of what any library could do): their other
//! side is the `mp-peers` binary of `benches/peers`, a package outside the
//! workspace so that nothing of the library depends on the peer. It takes
//! the same command line as the other two programs, and these rows get a
//! table of their own.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{Failed, Session};

/// Which way a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
}

/// What our side of a row is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Against {
    /// CPython's `multiprocessing`: `compare/python/workloads.py`.
    CPython,
    /// Another Rust crate (named here, for the table), run by `mp-peers`.
    Peer(&'static str),
}

/// A workload, and the speed-up over the other side its issue asks for.
#[derive(Debug)]
struct Workload {
    name: &'static str,
    better: Better,
    /// At least this many times faster than the other side (below 1: at
    /// most 1/target times slower); `None`: no target.
    target: Option<f64>,
    /// Where the target comes from.
    issue: &'static str,
    against: Against,
}

const fn w(name: &'static str, better: Better, target: Option<f64>, issue: &'static str) -> Workload {
    Workload {
        name,
        better,
        target,
        issue,
        against: Against::CPython,
    }
}

/// A row against a Rust peer.
const fn peer(name: &'static str, peer: &'static str, better: Better, target: Option<f64>) -> Workload {
    Workload {
        name,
        better,
        target,
        issue: "",
        against: Against::Peer(peer),
    }
}

/// Every workload, in `compare/WORKLOADS.md`'s order, with its target.
const WORKLOADS: &[Workload] = &[
    w("process_start_join_fork", Better::Lower, Some(10.0), "#3"),
    w("process_start_join_forkserver", Better::Lower, Some(30.0), "#3"),
    w("process_start_join_spawn", Better::Lower, Some(40.0), "#3"),
    w("pipe_rtt_bytes8", Better::Lower, Some(3.0), "#4"),
    w("pipe_rtt_obj_int", Better::Lower, None, ""),
    w("pipe_bandwidth_64MiB", Better::Higher, Some(3.0), "#4"),
    w("queue_throughput_1p1c", Better::Higher, Some(20.0), "#7"),
    w("queue_throughput_2p2c", Better::Higher, Some(10.0), "#7"),
    w("simplequeue_throughput_1p1c", Better::Higher, None, ""),
    w("queue_pingpong_rtt", Better::Lower, Some(3.0), "#7"),
    w("lock_uncontended", Better::Lower, Some(3.0), "#5"),
    w("lock_contended_value_incr_2proc", Better::Higher, Some(5.0), "#5 #6"),
    w("array_child_sum_1M", Better::Lower, Some(20.0), "#6"),
    w("array_child_sum_1M_guard", Better::Lower, Some(20.0), "#22"),
    w("array_locked_update_256MiB", Better::Lower, Some(10.0), "#22"),
    w("pool_map_default_chunksize", Better::Higher, Some(10.0), "#9"),
    w("pool_map_chunksize1", Better::Higher, Some(10.0), "#9"),
    w("pool_apply_async", Better::Higher, Some(10.0), "#9"),
    w("ppe_map_default_chunksize", Better::Higher, Some(20.0), "#9"),
    w("pool_startup_close_join", Better::Lower, Some(3.0), "#9"),
    w("manager_startup", Better::Lower, Some(1.0), "#8"),
    w("manager_dict_set_from_child", Better::Lower, Some(3.0), "#8"),
    w("manager_dict_get_from_child", Better::Lower, Some(3.0), "#8"),
    w("event_pingpong_rtt", Better::Lower, Some(1.0), "#5"),
    w("semaphore_pingpong_rtt", Better::Lower, Some(1.0), "#5"),
    // Against Rust peers: 1.5x faster than procspawn given the same chunks
    // by hand, and within 4x of two threads doing the work in-process.
    peer("pool_map_100k_procspawn", "procspawn 1.0.2", Better::Lower, Some(1.5)),
    peer(
        "pool_map_100k_thread_scope",
        "thread::scope floor",
        Better::Lower,
        Some(0.25),
    ),
    // Summing a shared Array through its guard: within 2x of summing a
    // local Vec (#22).
    peer(
        "array_child_sum_1M_vec_floor",
        "local Vec floor",
        Better::Lower,
        Some(0.5),
    ),
];

/// How long one run may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Foreign load (cores, over a round) above which the figures are suspect.
pub(crate) const NOISY: f64 = 0.1;

/// Where the processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Wherever the scheduler puts them.
    Unpinned,
    /// Every process of both sides on CPU 0 (`taskset -c 0`).
    Pinned,
}

impl Placement {
    fn label(self) -> &'static str {
        match self {
            Placement::Unpinned => "unpinned",
            Placement::Pinned => "pinned to CPU 0",
        }
    }
}

/// Options of `cargo xtask compare`.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    rounds: Option<usize>,
    only: Vec<String>,
    placements: Vec<Placement>,
    pub(crate) readme: bool,
    /// `--cluster`: the cluster tier against Celery and RQ instead
    /// (`compare_cluster.rs`).
    pub(crate) cluster: bool,
}

impl Options {
    /// Parses the arguments after `compare`.
    pub(crate) fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            quick: false,
            rounds: None,
            only: Vec::new(),
            placements: vec![Placement::Unpinned, Placement::Pinned],
            readme: false,
            cluster: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => o.quick = true,
                "--readme" => o.readme = true,
                "--cluster" => o.cluster = true,
                "--unpinned-only" => o.placements = vec![Placement::Unpinned],
                "--pinned-only" => o.placements = vec![Placement::Pinned],
                "--rounds" => {
                    let n = it.next().ok_or("--rounds needs a number")?;
                    let n: usize = n.parse().map_err(|_| format!("--rounds {n}: not a number"))?;
                    if n == 0 {
                        return Err("--rounds must be at least 1".into());
                    }
                    o.rounds = Some(n);
                }
                "--only" => o.only.push(
                    it.next()
                        .ok_or("--only needs a workload name (or part of one)")?
                        .clone(),
                ),
                other => return Err(format!("unknown option to `compare`: {other}")),
            }
        }
        Ok(o)
    }

    pub(crate) fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.quick { 3 } else { 5 })
    }

    /// Whether `--only` (if given) picks `w`.
    fn chooses(&self, w: &Workload) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| w.name.contains(o.as_str()))
    }
}

/// The programs of the three sides.
struct Programs<'a> {
    /// `mp-compare`: ours.
    ours: &'a Path,
    /// `workloads.py`: CPython's.
    script: &'a Path,
    /// `mp-peers`: the Rust peers'.
    peers: &'a Path,
}

/// How the log names a side of `w`.
fn side_name(side: Side, w: &Workload) -> &'static str {
    match (side, w.against) {
        (Side::Ours, _) => "Ours",
        (Side::Other, Against::CPython) => "Python",
        (Side::Other, Against::Peer(p)) => p,
    }
}

/// One side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// CPython, or the row's Rust peer.
    Other,
    Ours,
}

/// One run's figure.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) value: f64,
    pub(crate) unit: String,
}

/// The runs of one workload under one placement.
#[derive(Debug)]
struct Row {
    workload: &'static Workload,
    placement: Placement,
    /// CPython's runs, or the peer's.
    other: Vec<Run>,
    ours: Vec<Run>,
}

impl Row {
    fn unit(&self) -> &str {
        self.ours.first().or(self.other.first()).map_or("", |r| r.unit.as_str())
    }

    /// How many times faster ours is (medians).
    fn speedup(&self) -> Option<f64> {
        let (py, ours) = (median(&self.other)?, median(&self.ours)?);
        let s = match self.workload.better {
            Better::Lower => py / ours,
            Better::Higher => ours / py,
        };
        s.is_finite().then_some(s)
    }

    fn meets(&self) -> Option<bool> {
        Some(self.speedup()? >= self.workload.target?)
    }
}

pub(crate) fn median(runs: &[Run]) -> Option<f64> {
    let mut v: Vec<f64> = runs.iter().map(|r| r.value).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub(crate) fn spread(runs: &[Run]) -> (f64, f64) {
    runs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
        (lo.min(r.value), hi.max(r.value))
    })
}

/// Runs the comparison and writes its reports.
pub(crate) fn run(session: &mut Session, options: &Options) -> Result<(), Failed> {
    if options.cluster {
        return crate::compare_cluster::run(session, options);
    }
    // Without the `cluster` feature: the local rows as a default user of
    // `multiprocessing` gets them.
    session.run(
        "build mp-compare (release, --no-default-features: no cluster tier)",
        session.cargo([
            "build",
            "--release",
            "--quiet",
            "-p",
            "mp-compare",
            "--no-default-features",
        ]),
    )?;
    let ours = session.target_dir().join("release").join("mp-compare");
    let script = session.root().join("compare").join("python").join("workloads.py");
    let peers = session.target_dir().join("release").join("mp-peers");
    let with_peers = WORKLOADS
        .iter()
        .any(|w| matches!(w.against, Against::Peer(_)) && options.chooses(w));
    if with_peers {
        let manifest = session.root().join("benches").join("peers").join("Cargo.toml");
        let mut cmd = session.cargo(["build", "--release", "--quiet", "--manifest-path"]);
        cmd.arg(&manifest).arg("--target-dir").arg(session.target_dir());
        session.run("build mp-peers (release; benches/peers, outside the workspace)", cmd)?;
    }
    let programs = Programs {
        ours: &ours,
        script: &script,
        peers: &peers,
    };
    let out_dir = session.target_dir().join("compare");
    let root = session.root().to_path_buf();
    session.step("compare", |_| {
        let machine = Machine::probe();
        let chosen: Vec<&'static Workload> = WORKLOADS.iter().filter(|w| options.chooses(w)).collect();
        if chosen.is_empty() {
            eprintln!("error: no workload matches {:?}", options.only);
            return Err(Failed);
        }
        check_lists(&programs, with_peers)?;
        println!(
            "    {} workloads x {} rounds x {} placement(s), {} mode; machine: {}",
            chosen.len(),
            options.rounds(),
            options.placements.len(),
            if options.quick { "quick" } else { "full" },
            machine.summary()
        );
        let idle = machine_load(Duration::from_millis(500));
        println!("    load before starting: {idle:.2} cores busy");
        let started = Instant::now();
        let mut rows = Vec::new();
        let mut log = String::from("placement\tround\tworkload\tside\tvalue\tunit\tseconds\n");
        let mut foreign_loads = Vec::new();
        let mut failures = 0;
        let mut clock = Clock::new();
        for &placement in &options.placements {
            let mut these: Vec<Row> = chosen
                .iter()
                .map(|&workload| Row {
                    workload,
                    placement,
                    other: Vec::new(),
                    ours: Vec::new(),
                })
                .collect();
            for round in 0..options.rounds() {
                let round_mark = clock.mark();
                for (i, row) in these.iter_mut().enumerate() {
                    let order = if (round + i) % 2 == 0 {
                        [Side::Other, Side::Ours]
                    } else {
                        [Side::Ours, Side::Other]
                    };
                    for side in order {
                        let mut cmd = command(side, placement, &programs, row.workload, options.quick);
                        let t0 = Instant::now();
                        match measure(&mut cmd, row.workload.name) {
                            Ok((value, unit)) => {
                                let _ = writeln!(
                                    log,
                                    "{}\t{}\t{}\t{}\t{value}\t{unit}\t{:.3}",
                                    placement.label(),
                                    round + 1,
                                    row.workload.name,
                                    side_name(side, row.workload),
                                    t0.elapsed().as_secs_f64()
                                );
                                let run = Run { value, unit };
                                match side {
                                    Side::Other => row.other.push(run),
                                    Side::Ours => row.ours.push(run),
                                }
                            }
                            Err(e) => {
                                failures += 1;
                                eprintln!(
                                    "error: {} {} ({}): {e}",
                                    side_name(side, row.workload),
                                    row.workload.name,
                                    placement.label()
                                );
                            }
                        }
                    }
                }
                let (foreign, secs) = clock.foreign_since(round_mark);
                foreign_loads.push(foreign);
                println!(
                    "    {} round {}/{}: {secs:.1} s, other processes used {foreign:.2} cores",
                    placement.label(),
                    round + 1,
                    options.rounds()
                );
            }
            rows.extend(these);
        }
        let elapsed = started.elapsed();
        let table = markdown_table(&rows, &options.placements);
        let worst = foreign_loads.iter().copied().fold(0.0, f64::max);
        let mean = foreign_loads.iter().sum::<f64>() / foreign_loads.len().max(1) as f64;
        let load_note = format!(
            "Other processes used {mean:.2} cores on average during the rounds, {worst:.2} at most{}.",
            if worst > NOISY {
                " (more than an idle machine: treat the figures with care)"
            } else {
                ""
            }
        );
        println!("\n{table}");
        println!(
            "    {} runs in {:.0} s",
            rows.len() * options.rounds() * 2,
            elapsed.as_secs_f64()
        );
        let heading = format!(
            "Measured {} on {} with `cargo xtask compare{}` ({} rounds, {:.0} s); CPython {}.",
            machine.date,
            machine.summary(),
            if options.quick { " --quick" } else { "" },
            options.rounds(),
            elapsed.as_secs_f64(),
            machine.python,
        );
        let svg = chart(
            &rows,
            &options.placements,
            &format!("{} · {}", machine.date, machine.summary()),
        );
        let md = format!("{heading} {load_note}\n\n{table}\n{LEGEND}\n");
        println!("    {load_note}");
        write(&out_dir.join("compare.md"), &md)?;
        write(&out_dir.join("ratios.svg"), &svg)?;
        write(&out_dir.join("runs.tsv"), &log)?;
        println!("    wrote {}/{{compare.md,ratios.svg,runs.tsv}}", out_dir.display());
        if options.readme {
            update_readme(&root, &md, &svg)?;
            println!("    updated README.md and docs/compare.svg");
        }
        if failures > 0 {
            eprintln!("error: {failures} run(s) failed");
            return Err(Failed);
        }
        Ok(())
    })
}

/// Each program must list its workloads as this table does: `mp-compare`
/// all of them, `workloads.py` the rows against CPython, `mp-peers` (when
/// built) the rows against Rust peers.
fn check_lists(programs: &Programs<'_>, with_peers: bool) -> Result<(), Failed> {
    let names =
        |keep: fn(&Workload) -> bool| -> Vec<&str> { WORKLOADS.iter().filter(|w| keep(w)).map(|w| w.name).collect() };
    let mut checks = vec![
        ("mp-compare", Command::new(programs.ours), names(|_| true)),
        (
            "workloads.py",
            {
                let mut c = Command::new("python3");
                c.arg(programs.script);
                c
            },
            names(|w| w.against == Against::CPython),
        ),
    ];
    if with_peers {
        checks.push((
            "mp-peers",
            Command::new(programs.peers),
            names(|w| w.against != Against::CPython),
        ));
    }
    for (who, mut cmd, expected) in checks {
        let out = cmd.arg("--list").output().map_err(|e| {
            eprintln!("error: cannot run {who}: {e}");
            Failed
        })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let listed: Vec<&str> = text.lines().collect();
        if !out.status.success() || listed != expected {
            eprintln!("error: `{who} --list` does not match xtask's table:\n{text}");
            return Err(Failed);
        }
    }
    Ok(())
}

fn command(side: Side, placement: Placement, programs: &Programs<'_>, w: &Workload, quick: bool) -> Command {
    let program: &Path = match (side, w.against) {
        (Side::Ours, _) => programs.ours,
        (Side::Other, Against::CPython) => Path::new("python3"),
        (Side::Other, Against::Peer(_)) => programs.peers,
    };
    let mut cmd = match placement {
        Placement::Unpinned => Command::new(program),
        Placement::Pinned => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(program);
            c
        }
    };
    if side == Side::Other && w.against == Against::CPython {
        cmd.arg(programs.script);
    }
    cmd.arg(w.name);
    if quick {
        cmd.arg("--quick");
    }
    cmd
}

/// Runs one workload in its own process group (killed whole if it
/// overruns) and reads its figure.
pub(crate) fn measure(cmd: &mut Command, name: &str) -> Result<(f64, String), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let pgid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(RUN_LIMIT) {
        Ok(out) => out.map_err(|e| e.to_string())?,
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
            let _ = rx.recv();
            return Err(format!("killed after {RUN_LIMIT:?}"));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        ));
    }
    let line = stdout.lines().last().unwrap_or("");
    let fields: Vec<&str> = line.split('\t').collect();
    match fields[..] {
        [n, v, unit] if n == name => match v.parse::<f64>() {
            Ok(value) if value.is_finite() && value > 0.0 => Ok((value, unit.to_string())),
            _ => Err(format!("not a positive number: {line:?}")),
        },
        _ => Err(format!("expected `{name}<TAB>value<TAB>unit`, got {line:?}")),
    }
}

/// CPU time used on the machine, and by our own children, to tell how much
/// of it went to other processes.
pub(crate) struct Clock {
    pub(crate) ticks_per_sec: f64,
}

/// A point on the [`Clock`]: when, the machine's busy ticks, our
/// children's ticks.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    at: Instant,
    busy: u64,
    children: u64,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0);
        Clock { ticks_per_sec: ticks }
    }

    pub(crate) fn mark(&mut self) -> Mark {
        Mark {
            at: Instant::now(),
            busy: machine_busy_ticks(),
            children: children_ticks(),
        }
    }

    /// The cores other processes kept busy since `m`, and the seconds
    /// since.
    pub(crate) fn foreign_since(&mut self, m: Mark) -> (f64, f64) {
        let now = self.mark();
        let secs = now.at.duration_since(m.at).as_secs_f64();
        let others = now.busy.saturating_sub(m.busy) as f64 - now.children.saturating_sub(m.children) as f64;
        ((others.max(0.0) / self.ticks_per_sec / secs.max(1e-3)).max(0.0), secs)
    }
}

/// Busy ticks of all CPUs (`/proc/stat`: user, nice, system, irq, softirq,
/// steal).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum()
}

/// The user and system ticks of our reaped children (`/proc/self/stat`
/// fields `cutime` and `cstime`).
fn children_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so cutime (16) and cstime (17)
    // are at 13 and 14 here.
    [13, 14].iter().filter_map(|&i| f.get(i)?.parse::<u64>().ok()).sum()
}

/// Cores busy over `d`, whoever used them.
pub(crate) fn machine_load(d: Duration) -> f64 {
    let mut clock = Clock::new();
    let m = clock.mark();
    std::thread::sleep(d);
    let now = clock.mark();
    let secs = now.at.duration_since(m.at).as_secs_f64();
    now.busy.saturating_sub(m.busy) as f64 / clock.ticks_per_sec / secs
}

/// What the figures were measured on.
pub(crate) struct Machine {
    cpu: String,
    cpus: usize,
    kernel: String,
    pub(crate) python: String,
    pub(crate) date: String,
}

impl Machine {
    pub(crate) fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|x| x.1.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let text = |cmd: &mut Command| {
            cmd.output()
                .ok()
                .map(|o| {
                    let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
                    String::from_utf8_lossy(&s).trim().to_string()
                })
                .unwrap_or_default()
        };
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            python: text(Command::new("python3").arg("--version"))
                .trim_start_matches("Python ")
                .to_string(),
            date: text(Command::new("date").args(["-u", "+%Y-%m-%d"])),
        }
    }

    pub(crate) fn summary(&self) -> String {
        format!("{}, {} CPUs, Linux {}", self.cpu, self.cpus, self.kernel)
    }
}

/// A figure with about three significant digits, large ones with a k or M.
pub(crate) fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e7 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e5 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub(crate) fn cell(runs: &[Run]) -> String {
    match median(runs) {
        None => "failed".into(),
        Some(m) if runs.len() == 1 => num(m),
        Some(m) => {
            let (lo, hi) = spread(runs);
            format!("{} ({}–{})", num(m), num(lo), num(hi))
        }
    }
}

pub(crate) fn times(s: Option<f64>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s >= 10.0 => format!("{s:.0}×"),
        Some(s) if s < 1.0 => format!("{s:.2}×"),
        Some(s) => format!("{s:.1}×"),
    }
}

/// The rows against CPython, then (if any) the rows against Rust peers in a
/// table of their own.
fn markdown_table(rows: &[Row], placements: &[Placement]) -> String {
    let mut t = String::new();
    if rows.iter().any(|r| r.workload.against == Against::CPython) {
        t.push_str(&one_table(rows, placements, false));
    }
    if rows.iter().any(|r| r.workload.against != Against::CPython) {
        if !t.is_empty() {
            t.push('\n');
        }
        t.push_str("Against other Rust crates (the other side is `benches/peers`'s `mp-peers`):\n\n");
        t.push_str(&one_table(rows, placements, true));
    }
    t
}

fn one_table(rows: &[Row], placements: &[Placement], peers: bool) -> String {
    let mut t = String::from(if peers {
        "| workload | peer | unit |"
    } else {
        "| workload | unit |"
    });
    let mut rule = String::from(if peers { "|---|---|---|" } else { "|---|---|" });
    let other = if peers { "peer" } else { "CPython" };
    for p in placements {
        let _ = write!(t, " {other}, {0} | ours, {0} | speed-up, {0} |", p.label());
        rule.push_str("---:|---:|---:|");
    }
    t.push_str(" target | met |\n");
    rule.push_str("---:|:---:|\n");
    t.push_str(&rule);
    for w in WORKLOADS.iter().filter(|w| (w.against != Against::CPython) == peers) {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.workload.name == w.name).collect();
        let Some(first) = mine.first() else { continue };
        match w.against {
            Against::Peer(p) => {
                let _ = write!(t, "| {} | {p} | {} |", w.name, first.unit());
            }
            Against::CPython => {
                let _ = write!(t, "| {} | {} |", w.name, first.unit());
            }
        }
        let mut verdicts = Vec::new();
        for p in placements {
            match mine.iter().find(|r| r.placement == *p) {
                Some(r) => {
                    let _ = write!(
                        t,
                        " {} | {} | **{}** |",
                        cell(&r.other),
                        cell(&r.ours),
                        times(r.speedup())
                    );
                    verdicts.push(r.meets());
                }
                None => t.push_str(" | | |"),
            }
        }
        let target = match (w.target, w.issue) {
            (None, _) => "–".into(),
            (Some(x), "") => format!("≥ {}", times(Some(x))),
            (Some(x), issue) => format!("≥ {} ({issue})", times(Some(x))),
        };
        let met = if verdicts.iter().all(|v| v.is_none()) {
            "–"
        } else if verdicts.iter().all(|v| *v == Some(true)) {
            "yes"
        } else if verdicts.contains(&Some(true)) {
            "partly"
        } else {
            "**no**"
        };
        let _ = writeln!(t, " {target} | {met} |");
    }
    t
}

const LEGEND: &str = "Each cell: median over the rounds (min–max). Speed-up: how many times faster ours is \
     (CPython's time / ours, or our rate / CPython's; for a row against a Rust peer, the peer's). Target: \
     what the issue asks for (below 1×: at most that many times slower, as against a floor); \"partly\": \
     met under one placement only.";

/// An SVG bar chart of the speed-ups: one group of bars per workload (one
/// bar per placement), a log scale, a line at 1× and a tick at each target.
fn chart(rows: &[Row], placements: &[Placement], subtitle: &str) -> String {
    const LABEL_W: f64 = 250.0;
    const PLOT_W: f64 = 560.0;
    const BAR_H: f64 = 9.0;
    const TOP: f64 = 62.0;
    let colors = ["#4e79a7", "#f28e2b"];
    let names: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| rows.iter().any(|r| r.workload.name == w.name))
        .collect();
    let group_h = BAR_H * placements.len() as f64 + 8.0;
    let height = TOP + group_h * names.len() as f64 + 40.0;
    let width = LABEL_W + PLOT_W + 70.0;
    let max = rows
        .iter()
        .filter_map(Row::speedup)
        .chain(WORKLOADS.iter().filter_map(|w| w.target))
        .fold(10.0, f64::max);
    // From 0.5×, or lower for a target or figure below it (a floor's).
    let min = rows
        .iter()
        .filter_map(Row::speedup)
        .chain(WORKLOADS.iter().filter_map(|w| w.target))
        .fold(0.5, f64::min)
        .max(0.01);
    let (lo, hi) = (min.log10(), (max * 1.5).log10());
    let x = |v: f64| LABEL_W + (v.max(min).log10() - lo) / (hi - lo) * PLOT_W;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="14" font-weight="bold">Speed-up over CPython's multiprocessing, or the Rust peer named (log scale; higher is better)</text>"#
    );
    let _ = writeln!(s, r##"<text x="10" y="34" fill="#555">{}</text>"##, escape(subtitle));
    for (k, p) in placements.iter().enumerate() {
        let lx = 10.0 + 170.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="42" width="10" height="10" fill="{}"/><text x="{}" y="51">{}</text>"#,
            colors[k % 2],
            lx + 14.0,
            p.label()
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{0}" y1="46" x2="{0}" y2="52" stroke="black" stroke-width="2"/><text x="{1}" y="51">target</text>"#,
        10.0 + 170.0 * placements.len() as f64,
        14.0 + 170.0 * placements.len() as f64
    );
    let bottom = TOP + group_h * names.len() as f64;
    let mut tick = 10f64.powf(lo.floor());
    while tick <= 10f64.powf(hi) {
        for m in [1.0, 2.0, 5.0] {
            let v = tick * m;
            if v >= min && v.log10() <= hi {
                let _ = writeln!(
                    s,
                    r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{bottom}" stroke="{1}"/><text x="{0:.1}" y="{2}" text-anchor="middle" fill="#555">{v}×</text>"##,
                    x(v),
                    if m == 1.0 { "#999" } else { "#e4e4e4" },
                    bottom + 14.0
                );
            }
        }
        tick *= 10.0;
    }
    for (i, w) in names.iter().enumerate() {
        let y0 = TOP + group_h * i as f64 + 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 6.0,
            y0 + BAR_H * placements.len() as f64 / 2.0 + 4.0,
            w.name
        );
        for (k, p) in placements.iter().enumerate() {
            let Some(sp) = rows
                .iter()
                .find(|r| r.workload.name == w.name && r.placement == *p)
                .and_then(Row::speedup)
            else {
                continue;
            };
            let y = y0 + BAR_H * k as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{LABEL_W}" y="{y:.1}" width="{:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
                (x(sp) - LABEL_W).max(1.0),
                BAR_H - 1.0,
                colors[k % 2],
                x(sp) + 3.0,
                y + BAR_H - 1.5,
                times(Some(sp))
            );
        }
        if let Some(t) = w.target {
            let _ = writeln!(
                s,
                r#"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="black" stroke-width="2"/>"#,
                x(t),
                y0 - 2.0,
                y0 + BAR_H * placements.len() as f64 + 1.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), Failed> {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(path, text))
        .map_err(|e| {
            eprintln!("error: cannot write {}: {e}", path.display());
            Failed
        })
}

const BEGIN: &str = "<!-- compare:begin (written by `cargo xtask compare --readme`) -->";
const END: &str = "<!-- compare:end -->";

/// Puts the table between README.md's markers and the chart in
/// `docs/compare.svg`.
fn update_readme(root: &Path, md: &str, svg: &str) -> Result<(), Failed> {
    let body = format!("{md}\n![Speed-up over CPython per workload](docs/compare.svg)\n");
    replace_readme_section(root, BEGIN, END, &body)?;
    write(&root.join("docs").join("compare.svg"), svg)
}

/// Replaces what lies between README.md's markers `begin` and `end` (the
/// `begin` line stays) with `body`.
pub(crate) fn replace_readme_section(root: &Path, begin: &str, end: &str, body: &str) -> Result<(), Failed> {
    let path = root.join("README.md");
    let readme = std::fs::read_to_string(&path).map_err(|e| {
        eprintln!("error: cannot read README.md: {e}");
        Failed
    })?;
    let (Some(b), Some(e)) = (readme.find(begin), readme.find(end)) else {
        eprintln!("error: README.md has no `{begin}` ... `{end}` section");
        return Err(Failed);
    };
    write(&path, &format!("{}{begin}\n{body}{}", &readme[..b], &readme[e..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(v: &[f64]) -> Vec<Run> {
        v.iter()
            .map(|&value| Run {
                value,
                unit: "us".into(),
            })
            .collect()
    }

    #[test]
    fn options() {
        let args = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = Options::parse(&args(&["--quick", "--only", "pipe", "--pinned-only"])).unwrap();
        assert!(o.quick && o.only == ["pipe"] && o.placements == [Placement::Pinned] && o.rounds() == 3);
        assert_eq!(Options::parse(&args(&["--rounds", "7"])).unwrap().rounds(), 7);
        let c = Options::parse(&args(&["--cluster", "--rounds", "3", "--readme"])).unwrap();
        assert!(c.cluster && c.readme && c.rounds() == 3);
        assert!(!Options::parse(&args(&[])).unwrap().cluster);
        assert!(Options::parse(&args(&["--rounds", "0"])).is_err());
        assert!(Options::parse(&args(&["--only"])).is_err());
        assert!(Options::parse(&args(&["--fast"])).is_err());
    }

    #[test]
    fn medians_and_speedups() {
        assert_eq!(median(&runs(&[3.0, 1.0, 2.0])), Some(2.0));
        assert_eq!(median(&runs(&[4.0, 1.0, 2.0, 3.0])), Some(2.5));
        assert_eq!(median(&[]), None);
        let lower = Row {
            workload: &WORKLOADS[0],
            placement: Placement::Unpinned,
            other: runs(&[2000.0]),
            ours: runs(&[100.0]),
        };
        assert_eq!(lower.speedup(), Some(20.0));
        assert_eq!(lower.meets(), Some(true));
        let higher = Row {
            workload: WORKLOADS.iter().find(|w| w.better == Better::Higher).unwrap(),
            placement: Placement::Pinned,
            other: runs(&[100.0]),
            ours: runs(&[250.0]),
        };
        assert_eq!(higher.speedup(), Some(2.5));
        assert_eq!(higher.meets(), Some(false));
    }

    #[test]
    fn the_table_matches_workloads_md() {
        let md =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../compare/WORKLOADS.md")).unwrap();
        // (name, better, whether it is under the heading of the rows
        // against Rust peers).
        let mut peers = false;
        let listed: Vec<(&str, &str, bool)> = md
            .lines()
            .filter_map(|l| {
                peers |= l.starts_with("## Rows against Rust peers");
                let f: Vec<&str> = l.split('|').map(str::trim).collect();
                (f.len() > 4 && (f[3] == "lower" || f[3] == "higher")).then(|| (f[1], f[3], peers))
            })
            .collect();
        let ours: Vec<(&str, &str, bool)> = WORKLOADS
            .iter()
            .map(|w| {
                (
                    w.name,
                    if w.better == Better::Lower { "lower" } else { "higher" },
                    w.against != Against::CPython,
                )
            })
            .collect();
        assert_eq!(listed, ours);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(9_882_430.0), "9.88M");
        assert_eq!(num(155_441.0), "155k");
        assert_eq!(num(2267.0), "2267");
        assert_eq!(num(7.021), "7.02");
        assert_eq!(num(0.0812), "0.081");
        assert_eq!(times(Some(12.4)), "12×");
        assert_eq!(times(Some(2.46)), "2.5×");
        assert_eq!(times(Some(0.25)), "0.25×");
    }
}
