//! Pipe benchmarks: ping-pong round trips (8 raw bytes, an integer value)
//! and a 64 MiB `send_bytes` to a child; IDs match
//! `../shared/bench/python/bench_pipe.py` (`pipe_rtt_bytes8_median`,
//! `pipe_rtt_obj_int_median`, `pipe_bandwidth_64MiB`), beside raw-socket
//! baselines: the same exchanges with bare `write`/`read` on a socket pair,
//! no framing and no spin. `pipe_create` times making and dropping a pipe
//! (a socket pair and its shared ring's memfd), beside a bare socket pair.
//!
//! The round-trip figures are medians, as Python's are: each sample times
//! every round trip on its own and reports the median of them (criterion
//! then shows the spread of those medians across samples).
//!
//! Run with `cargo xtask bench connection`; compare under the same CPU
//! placement as Python (`taskset -c 0 cargo xtask bench connection` against
//! `taskset -c 0 python3 bench_pipe.py`).

mod common;

use std::os::fd::AsFd;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use mp_connection::{Connection, pipe};
use mp_process::{Process, StartMethod, get_context};
use mp_sys::socket::{SocketKind, socketpair};

const MIB: usize = 1 << 20;
const BIG: usize = 64 * MIB;

fn echo_bytes(conn: Connection) -> Result<(), mp_connection::ConnectionError> {
    loop {
        let b = conn.recv_bytes()?;
        if b.is_empty() {
            return Ok(());
        }
        conn.send_bytes(&b)?;
    }
}

fn echo_int(conn: Connection) -> Result<(), mp_connection::ConnectionError> {
    while let Some(x) = conn.recv::<Option<i64>>()? {
        conn.send(&Some(x))?;
    }
    Ok(())
}

fn sink(data: Connection, ack: Connection) -> Result<(), mp_connection::ConnectionError> {
    ack.send(&0usize)?;
    loop {
        let b = data.recv_bytes()?;
        ack.send(&b.len())?;
        if b.is_empty() {
            return Ok(());
        }
    }
}

fn started(mut p: Process) -> Process {
    p.start().expect("start the echo child");
    p
}

fn rtt(c: &mut Criterion) {
    let ctx = get_context(StartMethod::Fork);
    let mut g = c.benchmark_group("pipe_rtt");
    g.sample_size(30).measurement_time(Duration::from_secs(3));

    let (a, b) = pipe().expect("pipe");
    let mut child = started(ctx.process(echo_bytes, (b,)));
    let msg = *b"12345678";
    for _ in 0..200 {
        a.send_bytes(&msg).expect("send");
        a.recv_bytes().expect("recv");
    }
    g.bench_function("pipe_rtt_bytes8_median", |bch| {
        bch.iter_custom(|iters| {
            common::median_of(iters, || {
                a.send_bytes(&msg).expect("send");
                assert_eq!(a.recv_bytes().expect("recv").len(), 8);
            })
        })
    });
    a.send_bytes(b"").expect("stop");
    child.join().expect("join");

    let (a, b) = pipe().expect("pipe");
    let mut child = started(ctx.process(echo_int, (b,)));
    let mut i = 0i64;
    g.bench_function("pipe_rtt_obj_int_median", |bch| {
        bch.iter_custom(|iters| {
            common::median_of(iters, || {
                i += 1;
                a.send(&Some(i)).expect("send");
                assert_eq!(a.recv::<Option<i64>>().expect("recv"), Some(i));
            })
        })
    });
    a.send(&None::<i64>).expect("stop");
    child.join().expect("join");

    // Baseline: 8 bytes each way with bare write/read on a socket pair.
    let (a, b) = socketpair(SocketKind::Stream).expect("socketpair");
    let raw = mp_sys::process::fork_run(move || {
        let mut buf = [0u8; 8];
        loop {
            match mp_sys::fd::read(b.as_fd(), &mut buf) {
                Ok(8) => {
                    if mp_sys::fd::write_all(b.as_fd(), &buf).is_err() {
                        return 1;
                    }
                }
                _ => return 0,
            }
        }
    })
    .expect("fork");
    g.bench_function("baseline_raw_socketpair_rtt_bytes8_median", |bch| {
        let mut buf = [0u8; 8];
        bch.iter_custom(|iters| {
            common::median_of(iters, || {
                mp_sys::fd::write_all(a.as_fd(), &msg).expect("write");
                let mut got = 0;
                while got < 8 {
                    got += mp_sys::fd::read(a.as_fd(), &mut buf[got..]).expect("read");
                }
            })
        })
    });
    stop(raw);
    g.finish();
}

/// Ends a forked baseline child (it holds a copy of the parent's end too, so
/// it would never see the end of file) and reaps it.
fn stop(mut raw: mp_sys::process::Child) {
    raw.signal(mp_sys::signal::Signal::KILL).expect("kill");
    raw.wait().expect("reap");
}

fn bandwidth(c: &mut Criterion) {
    let ctx = get_context(StartMethod::Fork);
    let mut g = c.benchmark_group("pipe_bandwidth");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(BIG as u64));
    let data = vec![0u8; BIG];

    let (wr, rd) = pipe().expect("pipe");
    let (ack_rd, ack_wr) = pipe().expect("pipe");
    let mut child = started(ctx.process(sink, (rd, ack_wr)));
    assert!(ack_rd.poll_timeout(Duration::from_secs(30)).expect("poll"));
    assert_eq!(ack_rd.recv::<usize>().expect("ready"), 0);
    g.bench_function("pipe_bandwidth_64MiB", |bch| {
        bch.iter(|| {
            wr.send_bytes(&data).expect("send");
            assert_eq!(ack_rd.recv::<usize>().expect("ack"), BIG);
        })
    });
    wr.send_bytes(b"").expect("stop");
    child.join().expect("join");

    // Baseline: the same bytes with bare writes and reads (64 KiB at a
    // time into one reused buffer), a one-byte ack.
    let (a, b) = socketpair(SocketKind::Stream).expect("socketpair");
    let raw = mp_sys::process::fork_run(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut got = 0;
            while got < BIG {
                match mp_sys::fd::read(b.as_fd(), &mut buf[..(BIG - got).min(64 * 1024)]) {
                    Ok(0) | Err(_) => return 0,
                    Ok(n) => got += n,
                }
            }
            if mp_sys::fd::write_all(b.as_fd(), b"k").is_err() {
                return 1;
            }
        }
    })
    .expect("fork");
    g.bench_function("baseline_raw_socketpair_64MiB", |bch| {
        bch.iter(|| {
            mp_sys::fd::write_all(a.as_fd(), &data).expect("write");
            let mut k = [0u8; 1];
            assert_eq!(mp_sys::fd::read(a.as_fd(), &mut k).expect("ack"), 1);
        })
    });
    stop(raw);
    g.finish();
}

fn create(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe_create");
    g.bench_function("pipe_create_drop", |bch| bch.iter(|| pipe().expect("pipe")));
    g.bench_function("baseline_raw_socketpair_create_drop", |bch| {
        bch.iter(|| socketpair(SocketKind::Stream).expect("socketpair"))
    });
    g.finish();
}

criterion_group!(benches, rtt, bandwidth, create);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
