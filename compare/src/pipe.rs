//! `pipe_*`: round trips to a forked echo child over a duplex `pipe()`, and
//! the bandwidth of one 64 MiB `send_bytes`.
//!
//! The timed round trips use the plain blocking `recv`: a child that dies
//! closes its end, so the parent's `recv` fails instead of hanging.

use multiprocessing::{Connection, StartMethod, get_context, pipe};

use crate::common::{Mode, Result, ensure, join, median_time, micros, recv_report, start};

/// Untimed round trips before the timed ones.
const WARM_UPS: usize = 200;

/// Untimed 64 MiB transfers before the timed ones.
const BANDWIDTH_WARM_UPS: usize = 1;

/// The bytes of each `pipe_rtt_bytes8` round trip.
const MSG: &[u8; 8] = b"12345678";

/// Ends [`echo_int`] (the timed values are indexes, never negative).
const STOP: i64 = -1;

/// Bytes in one `pipe_bandwidth_64MiB` transfer.
const BIG: usize = 64 << 20;

/// Sends back every message until an empty one.
fn echo_bytes(conn: Connection) -> Result<()> {
    loop {
        let b = conn.recv_bytes()?;
        if b.is_empty() {
            return Ok(());
        }
        conn.send_bytes(&b)?;
    }
}

/// Sends back every integer until [`STOP`].
fn echo_int(conn: Connection) -> Result<()> {
    loop {
        let x: i64 = conn.recv()?;
        if x == STOP {
            return Ok(());
        }
        conn.send(&x)?;
    }
}

/// Says it is ready, then answers each of `transfers` messages with its
/// length.
fn sink(conn: Connection, transfers: usize) -> Result<()> {
    conn.send(&"ready")?;
    for _ in 0..transfers {
        conn.send(&conn.recv_bytes()?.len())?;
    }
    Ok(())
}

/// Median round trip, in µs, of 8 bytes with `send_bytes` / `recv_bytes`.
pub(crate) fn rtt_bytes8(mode: Mode) -> Result<f64> {
    let (conn, theirs) = pipe()?;
    let mut child = start(get_context(StartMethod::Fork).process(echo_bytes, (theirs,)))?;
    let median = median_time(WARM_UPS, mode.pick(20_000, 5_000), |_| {
        conn.send_bytes(MSG)?;
        let back = conn.recv_bytes()?;
        ensure!(back == MSG, "the echo sent back {back:?}");
        Ok(())
    })?;
    conn.send_bytes(b"")?;
    join(&mut child)?;
    Ok(micros(median))
}

/// Median round trip, in µs, of an `i64` with `send` / `recv`.
pub(crate) fn rtt_obj_int(mode: Mode) -> Result<f64> {
    let (conn, theirs) = pipe()?;
    let mut child = start(get_context(StartMethod::Fork).process(echo_int, (theirs,)))?;
    let median = median_time(WARM_UPS, mode.pick(20_000, 5_000), |i| {
        let x = i as i64;
        conn.send(&x)?;
        let back: i64 = conn.recv()?;
        ensure!(back == x, "sent {x}, the echo sent back {back}");
        Ok(())
    })?;
    conn.send(&STOP)?;
    join(&mut child)?;
    Ok(micros(median))
}

/// Median rate, in MB/s (1e6 bytes), of sending 64 MiB with one
/// `send_bytes` until the child acknowledges the length it received.
pub(crate) fn bandwidth_64mib(mode: Mode) -> Result<f64> {
    let reps = mode.pick(5, 3);
    let data = vec![0u8; BIG];
    let (conn, theirs) = pipe()?;
    let transfers = BANDWIDTH_WARM_UPS + reps;
    let mut child = start(get_context(StartMethod::Fork).process(sink, (theirs, transfers)))?;
    let ready: String = recv_report(&conn)?;
    ensure!(ready == "ready", "the child said {ready:?}");
    let transfer = median_time(BANDWIDTH_WARM_UPS, reps, |_| {
        conn.send_bytes(&data)?;
        let got: usize = recv_report(&conn)?;
        ensure!(got == BIG, "sent {BIG} bytes, the child received {got}");
        Ok(())
    })?;
    join(&mut child)?;
    Ok(BIG as f64 / transfer.as_secs_f64() / 1e6)
}
