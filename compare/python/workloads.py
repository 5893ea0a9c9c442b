#!/usr/bin/env python3
"""CPython side of `cargo xtask compare`: the stdlib `multiprocessing` workloads.

The Rust side is `compare/src/main.rs` (binary `mp-compare`). Both programs
implement the workloads specified in `compare/WORKLOADS.md` (names, units,
full/quick counts and what is measured) and share one command line:

    python3 workloads.py --list             # workload names, one a line, table order
    python3 workloads.py <name> [--quick]   # run one workload, print name<TAB>value<TAB>unit

Every run creates what it needs, warms it up, measures, checks its result,
joins every child and closes every pool/manager it opened. A failed check (or
a hang caught by the watchdog) prints a message on stderr and exits non-zero;
an unknown workload name or bad usage exits with status 2.

Start method: `fork` for everything except `process_start_join_forkserver` and
`process_start_join_spawn`. Timings use `time.perf_counter_ns`, which is
CLOCK_MONOTONIC on Linux and so comparable between parent and children.

Python 3.11, standard library only.
"""
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

now_ns = time.perf_counter_ns

QUICK = False            # set by main() from --quick
BARRIER_TIMEOUT = 60.0   # seconds; a child that never arrives breaks the barrier
WATCHDOG = {False: 300, True: 60}   # whole-workload limit in seconds (full, quick)


class CheckFailed(Exception):
    """A workload produced a wrong result or could not finish."""


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def pick(full, quick):
    return quick if QUICK else full


def fork_ctx():
    return mp.get_context("fork")


def median_ns(samples):
    return statistics.median(samples)


def rate(count, elapsed_ns, what):
    check(elapsed_ns > 0, f"{what}: non-positive elapsed time {elapsed_ns} ns")
    return count / (elapsed_ns / 1e9)


def recv_from(conn, what, procs=()):
    """conn.recv(), failing fast instead of hanging if the pipe is closed or
    one of `procs` (the children of this workload) dies with an error."""
    live = list(procs)
    while True:
        ready = mp.connection.wait([conn] + [p.sentinel for p in live])
        if conn in ready:
            try:
                return conn.recv()
            except EOFError:
                raise CheckFailed(f"{what}: the child closed its pipe without "
                                  "answering (did it crash?)") from None
        for p in [p for p in live if p.sentinel in ready]:
            p.join()
            check(p.exitcode == 0, f"{what}: child {p.name} (pid {p.pid}) exited "
                                   f"with code {p.exitcode} before answering")
            live.remove(p)


def join_all(procs, what):
    for p in procs:
        p.join()
    for p in procs:
        check(p.exitcode == 0, f"{what}: child {p.name} (pid {p.pid}) exited "
                               f"with code {p.exitcode}")


def start_all(procs, child_ends=()):
    """Start the children, then drop the parent's copies of the children's
    pipe ends so that a crashed child shows up as EOF instead of a hang."""
    for p in procs:
        p.start()
    for c in child_ends:
        c.close()


# ----------------------------------------------------------------------------
# Children's targets (module level: picklable for spawn/forkserver).

def _noop():
    pass


def _echo_bytes(conn):
    while True:
        b = conn.recv_bytes()
        if not b:
            break
        conn.send_bytes(b)
    conn.close()


def _echo_obj(conn):
    while True:
        x = conn.recv()
        if x is None:
            break
        conn.send(x)
    conn.close()


def _bytes_sink(conn, transfers):
    conn.send("ready")
    for _ in range(transfers):
        conn.send(len(conn.recv_bytes()))
    conn.close()


_WARM_ITEM = -1   # one per producer, taken by the consumers before the Barrier


def _producer(q, lo, hi, barrier):
    q.put(_WARM_ITEM)
    barrier.wait(BARRIER_TIMEOUT)
    put = q.put
    for i in range(lo, hi):
        put(i)
    put(None)   # sentinel: nprod == ncons, so one per consumer


def _consumer(q, barrier, conn):
    first = q.get()
    barrier.wait(BARRIER_TIMEOUT)
    t_start = now_ns()
    get = q.get
    count = total = 0
    while True:
        x = get()
        if x is None:
            break
        count += 1
        total += x
    t_end = now_ns()
    conn.send((first, count, total, t_start, t_end))
    conn.close()


def _queue_echo(qin, qout):
    while True:
        x = qin.get()
        if x is None:
            break
        qout.put(x)


def _incr(v, n, barrier, conn):
    with v.get_lock():          # warm-up: touch the lock and the value
        v.value
    barrier.wait(BARRIER_TIMEOUT)
    t_start = now_ns()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    conn.send((t_start, now_ns()))
    conn.close()


def _array_sum(arr, conn):
    t0 = now_ns()
    s = sum(arr[:])
    t1 = now_ns()
    conn.send((s, t1 - t0))
    conn.close()


def _array_update(arr, n, conn):
    t0 = now_ns()
    for _ in range(n):
        with arr.get_lock():
            arr[7] += 1
    t1 = now_ns()
    conn.send((arr[7], t1 - t0))
    conn.close()


def _sq(x):
    return x * x


def _dict_child(d, n, conn):
    for k in range(min(100, n)):    # warm-up: the proxy connects on first use
        d[k] = k
        d[k]
    t0 = now_ns()
    for k in range(n):
        d[k] = k
    t1 = now_ns()
    bad = 0
    for k in range(n):
        if d[k] != k:
            bad += 1
    t2 = now_ns()
    conn.send((t1 - t0, t2 - t1, bad))
    conn.close()


def _event_child(e1, e2, rounds):
    for _ in range(rounds):
        e1.wait()
        e1.clear()
        e2.set()


def _sem_child(s1, s2, rounds):
    for _ in range(rounds):
        s1.acquire()
        s2.release()


# ----------------------------------------------------------------------------
# Workloads. Each returns the figure in the unit of its table row.

WORKLOADS = []   # (name, unit, function), in WORKLOADS.md table order


def workload(name, unit):
    def register(fn):
        WORKLOADS.append((name, unit, fn))
        return fn
    return register


def _start_join(method, reps):
    ctx = mp.get_context(method)
    for _ in range(3):                       # untimed warm-ups
        p = ctx.Process(target=_noop)
        p.start()
        p.join()
        check(p.exitcode == 0, f"{method} warm-up child exit code {p.exitcode}")
    samples = []
    for _ in range(reps):
        p = ctx.Process(target=_noop)
        t0 = now_ns()
        p.start()
        p.join()
        t1 = now_ns()
        check(p.exitcode == 0, f"{method} child exit code {p.exitcode}")
        samples.append(t1 - t0)
    return median_ns(samples) / 1e3


@workload("process_start_join_fork", "us")
def process_start_join_fork():
    return _start_join("fork", pick(100, 30))


@workload("process_start_join_forkserver", "us")
def process_start_join_forkserver():
    return _start_join("forkserver", pick(50, 15))


@workload("process_start_join_spawn", "us")
def process_start_join_spawn():
    return _start_join("spawn", pick(20, 8))


def _pipe_rtt(echo, send, recv, message, stop):
    """Median round trip, in µs, of `message(i)` sent with `send` to a
    forked `echo` child over a duplex Pipe and read back with `recv`."""
    ctx = fork_ctx()
    n, warm = pick(20_000, 5_000), 200
    a, b = ctx.Pipe()
    p = ctx.Process(target=echo, args=(b,))
    start_all([p], [b])
    send, recv = getattr(a, send), getattr(a, recv)
    for i in range(warm):
        m = message(i)
        send(m)
        check(recv() == m, "warm-up echo differs")
    samples = [0] * n
    bad = 0
    for i in range(n):
        m = message(i)
        t0 = now_ns()
        send(m)
        r = recv()
        t1 = now_ns()
        samples[i] = t1 - t0
        if r != m:
            bad += 1
    send(stop)
    join_all([p], "echo")
    a.close()
    check(bad == 0, f"{bad} of {n} echoes differ from what was sent")
    return median_ns(samples) / 1e3


@workload("pipe_rtt_bytes8", "us")
def pipe_rtt_bytes8():
    msg = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    return _pipe_rtt(_echo_bytes, "send_bytes", "recv_bytes", lambda i: msg, b"")


@workload("pipe_rtt_obj_int", "us")
def pipe_rtt_obj_int():
    return _pipe_rtt(_echo_obj, "send", "recv", lambda i: i, None)


@workload("pipe_bandwidth_64MiB", "MB/s")
def pipe_bandwidth_64MiB():
    ctx = fork_ctx()
    size = 64 * 2**20
    reps, warm = pick(5, 3), 1
    data = bytes(size)
    a, b = ctx.Pipe()
    p = ctx.Process(target=_bytes_sink, args=(b, warm + reps))
    start_all([p], [b])
    check(recv_from(a, "sink", [p]) == "ready", "sink did not report ready")
    rates = []
    for i in range(warm + reps):
        t0 = now_ns()
        a.send_bytes(data)
        got = recv_from(a, "sink", [p])
        t1 = now_ns()
        check(got == size, f"child received {got} bytes, expected {size}")
        if i >= warm:
            check(t1 > t0, "non-positive transfer time")
            rates.append(size / ((t1 - t0) / 1e9) / 1e6)
    join_all([p], "sink")
    a.close()
    return statistics.median(rates)


def _queue_throughput(make_queue, nprod, ncons, total):
    check(nprod == ncons, "one sentinel per producer needs nprod == ncons")
    ctx = fork_ctx()
    q = make_queue(ctx)
    barrier = ctx.Barrier(nprod + ncons + 1)
    per = total // nprod
    check(per * nprod == total, "total must split evenly between producers")
    pipes = [ctx.Pipe(duplex=False) for _ in range(ncons)]
    procs = [ctx.Process(target=_producer, args=(q, k * per, (k + 1) * per, barrier))
             for k in range(nprod)]
    procs += [ctx.Process(target=_consumer, args=(q, barrier, w)) for _, w in pipes]
    start_all(procs, [w for _, w in pipes])
    barrier.wait(BARRIER_TIMEOUT)
    t0 = now_ns()
    results = [recv_from(r, "consumer", procs) for r, _ in pipes]
    join_all(procs, "queue")
    for r, _ in pipes:
        r.close()
    q.close()
    check(all(first == _WARM_ITEM for first, _, _, _, _ in results),
          "a consumer's warm-up item was not the warm-up marker")
    got = sum(c for _, c, _, _, _ in results)
    check(got == total, f"consumers received {got} items, expected {total}")
    got_sum = sum(s for _, _, s, _, _ in results)
    want_sum = total * (total - 1) // 2
    check(got_sum == want_sum, f"sum of received items {got_sum}, expected {want_sum}")
    # The clock starts at the first barrier exit, the parent's or a
    # consumer's (as on the Rust side), and stops at the last item.
    t_start = min([t0] + [t for _, _, _, t, _ in results])
    t_end = max(t for _, _, _, _, t in results)
    return rate(total, t_end - t_start, "queue throughput")


@workload("queue_throughput_1p1c", "msg/s")
def queue_throughput_1p1c():
    return _queue_throughput(lambda ctx: ctx.Queue(), 1, 1, pick(200_000, 50_000))


@workload("queue_throughput_2p2c", "msg/s")
def queue_throughput_2p2c():
    return _queue_throughput(lambda ctx: ctx.Queue(), 2, 2, pick(200_000, 50_000))


@workload("simplequeue_throughput_1p1c", "msg/s")
def simplequeue_throughput_1p1c():
    return _queue_throughput(lambda ctx: ctx.SimpleQueue(), 1, 1, pick(200_000, 50_000))


@workload("queue_pingpong_rtt", "us")
def queue_pingpong_rtt():
    ctx = fork_ctx()
    n, warm = pick(10_000, 2_000), 200
    q1, q2 = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_queue_echo, args=(q1, q2))
    start_all([p])
    for i in range(warm):
        q1.put(i)
        check(q2.get() == i, "warm-up echo differs")
    samples = [0] * n
    bad = 0
    for i in range(n):
        t0 = now_ns()
        q1.put(i)
        r = q2.get()
        t1 = now_ns()
        samples[i] = t1 - t0
        if r != i:
            bad += 1
    q1.put(None)
    join_all([p], "queue echo")
    for q in (q1, q2):
        q.close()
        q.join_thread()
    check(bad == 0, f"{bad} of {n} echoes differ from what was sent")
    return median_ns(samples) / 1e3


@workload("lock_uncontended", "ns/pair")
def lock_uncontended():
    ctx = fork_ctx()
    n = pick(1_000_000, 200_000)
    lock = ctx.Lock()
    for _ in range(1_000):                   # warm-up
        lock.acquire()
        lock.release()
    t0 = now_ns()
    for _ in range(n):
        lock.acquire()
        lock.release()
    t1 = now_ns()
    check(lock.acquire(False), "lock left held after the loop")
    lock.release()
    check(t1 > t0, "non-positive elapsed time")
    return (t1 - t0) / n


@workload("lock_contended_value_incr_2proc", "ops/s")
def lock_contended_value_incr_2proc():
    ctx = fork_ctx()
    nproc, n_each = 2, pick(200_000, 50_000)
    v = ctx.Value('i', 0)
    barrier = ctx.Barrier(nproc + 1)
    pipes = [ctx.Pipe(duplex=False) for _ in range(nproc)]
    procs = [ctx.Process(target=_incr, args=(v, n_each, barrier, w)) for _, w in pipes]
    start_all(procs, [w for _, w in pipes])
    barrier.wait(BARRIER_TIMEOUT)
    t0 = now_ns()
    ends = [recv_from(r, "incrementer", procs) for r, _ in pipes]
    join_all(procs, "incrementer")
    for r, _ in pipes:
        r.close()
    total = nproc * n_each
    check(v.value == total, f"final value {v.value}, expected {total}")
    t_start = min([t0] + [t for t, _ in ends])
    return rate(total, max(t for _, t in ends) - t_start, "contended increments")


@workload("array_child_sum_1M", "ms")
def array_child_sum_1M():
    return _array_child_sum()


# Python has no guard over the shared memory: `sum(arr[:])` is its way.
@workload("array_child_sum_1M_guard", "ms")
def array_child_sum_1M_guard():
    return _array_child_sum()


@workload("array_locked_update_256MiB", "us")
def array_locked_update_256MiB():
    ctx = fork_ctx()
    n = pick(100_000, 20_000)
    arr = ctx.Array('d', (256 << 20) // 8)
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_array_update, args=(arr, n, w))
    start_all([p], [w])
    seen, dt = recv_from(r, "updating child", [p])
    join_all([p], "updating child")
    r.close()
    check(seen == n and arr[7] == n, f"the child counted to {seen}, not {n}")
    return dt / n / 1e3


def _array_child_sum():
    ctx = fork_ctx()
    n = 1_000_000
    reps, warm = pick(5, 3), 1
    arr = ctx.Array('d', n)
    arr[:] = range(n)
    want = n * (n - 1) // 2
    samples = []
    for i in range(warm + reps):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_array_sum, args=(arr, w))
        start_all([p], [w])
        s, dt = recv_from(r, "summing child", [p])
        join_all([p], "summing child")
        r.close()
        check(s == want, f"child's sum {s}, expected {want}")
        if i >= warm:
            samples.append(dt)
    return median_ns(samples) / 1e6


def _warmed_pool(ctx):
    pool = ctx.Pool(2)
    out = pool.map(_sq, range(100), chunksize=1)   # warm-up: both workers busy
    check(out[-1] == 99 * 99, "pool warm-up returned a wrong square")
    return pool


def _close_pool(pool):
    pool.close()
    pool.join()


@workload("pool_map_default_chunksize", "tasks/s")
def pool_map_default_chunksize():
    ctx = fork_ctx()
    n = pick(1_000_000, 200_000)
    pool = _warmed_pool(ctx)
    t0 = now_ns()
    out = pool.map(_sq, range(n))
    t1 = now_ns()
    _close_pool(pool)
    check(len(out) == n, f"map returned {len(out)} results, expected {n}")
    check(out[-1] == (n - 1) ** 2, f"last square {out[-1]}, expected {(n - 1) ** 2}")
    return rate(n, t1 - t0, "pool.map")


@workload("pool_map_chunksize1", "tasks/s")
def pool_map_chunksize1():
    ctx = fork_ctx()
    n = pick(20_000, 5_000)
    pool = _warmed_pool(ctx)
    t0 = now_ns()
    out = pool.map(_sq, range(n), chunksize=1)
    t1 = now_ns()
    _close_pool(pool)
    check(len(out) == n, f"map returned {len(out)} results, expected {n}")
    check(out[-1] == (n - 1) ** 2, f"last square {out[-1]}, expected {(n - 1) ** 2}")
    return rate(n, t1 - t0, "pool.map chunksize=1")


@workload("pool_apply_async", "tasks/s")
def pool_apply_async():
    ctx = fork_ctx()
    n = pick(20_000, 5_000)
    pool = _warmed_pool(ctx)
    t0 = now_ns()
    handles = [pool.apply_async(_sq, (i,)) for i in range(n)]
    out = [h.get() for h in handles]
    t1 = now_ns()
    _close_pool(pool)
    bad = sum(1 for i, x in enumerate(out) if x != i * i)
    check(bad == 0, f"{bad} of {n} apply_async results are wrong")
    return rate(n, t1 - t0, "pool.apply_async")


@workload("ppe_map_default_chunksize", "tasks/s")
def ppe_map_default_chunksize():
    ctx = fork_ctx()
    n = pick(20_000, 5_000)
    ex = ProcessPoolExecutor(2, mp_context=ctx)
    try:
        warm = list(ex.map(_sq, range(100)))   # warm-up: starts the workers
        check(warm[-1] == 99 * 99, "executor warm-up returned a wrong square")
        t0 = now_ns()
        out = list(ex.map(_sq, range(n)))
        t1 = now_ns()
    finally:
        ex.shutdown(wait=True)
    check(len(out) == n, f"map returned {len(out)} results, expected {n}")
    check(out[-1] == (n - 1) ** 2, f"last square {out[-1]}, expected {(n - 1) ** 2}")
    return rate(n, t1 - t0, "ProcessPoolExecutor.map")


@workload("pool_startup_close_join", "ms")
def pool_startup_close_join():
    ctx = fork_ctx()
    reps, warm = pick(20, 5), 1
    samples = []
    for i in range(warm + reps):
        t0 = now_ns()
        pool = ctx.Pool(2)
        pool.close()
        pool.join()
        t1 = now_ns()
        left = mp.active_children()
        check(not left, f"pool workers still alive after join: {left}")
        if i >= warm:
            samples.append(t1 - t0)
    return median_ns(samples) / 1e6


@workload("manager_startup", "ms")
def manager_startup():
    ctx = fork_ctx()
    reps, warm = pick(10, 3), 1
    samples = []
    for i in range(warm + reps):
        t0 = now_ns()
        m = ctx.Manager()
        t1 = now_ns()
        try:
            d = m.dict()                      # usable? (untimed)
            d["k"] = 42
            check(d["k"] == 42, "manager dict round trip failed")
            del d
        finally:
            m.shutdown()
        left = mp.active_children()
        check(not left, f"manager process still alive after shutdown: {left}")
        if i >= warm:
            samples.append(t1 - t0)
    return median_ns(samples) / 1e6


def _manager_dict():
    """(set us/op, get us/op) measured in one forked child."""
    ctx = fork_ctx()
    n = pick(20_000, 5_000)
    m = ctx.Manager()
    try:
        d = m.dict()
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_dict_child, args=(d, n, w))
        start_all([p], [w])
        set_ns, get_ns, bad = recv_from(r, "dict child", [p])
        join_all([p], "dict child")
        r.close()
        check(bad == 0, f"{bad} of {n} gets returned a wrong value")
        content = d.copy()
        check(content == {k: k for k in range(n)},
              f"dict holds {len(content)} keys, not exactly d[k] = k for k < {n}")
        del d
    finally:
        m.shutdown()
    return set_ns / n / 1e3, get_ns / n / 1e3


@workload("manager_dict_set_from_child", "us/op")
def manager_dict_set_from_child():
    return _manager_dict()[0]


@workload("manager_dict_get_from_child", "us/op")
def manager_dict_get_from_child():
    return _manager_dict()[1]


@workload("event_pingpong_rtt", "us")
def event_pingpong_rtt():
    ctx = fork_ctx()
    n, warm = pick(10_000, 2_000), 100
    e1, e2 = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_event_child, args=(e1, e2, warm + n))
    start_all([p])
    samples = []
    for i in range(warm + n):
        t0 = now_ns()
        e1.set()
        e2.wait()
        e2.clear()
        t1 = now_ns()
        if i >= warm:
            samples.append(t1 - t0)
    join_all([p], "event child")
    check(not e1.is_set() and not e2.is_set(), "an event is left set after the last round")
    check(len(samples) == n, "wrong number of samples")
    return median_ns(samples) / 1e3


@workload("semaphore_pingpong_rtt", "us")
def semaphore_pingpong_rtt():
    ctx = fork_ctx()
    n, warm = pick(10_000, 2_000), 100
    s1, s2 = ctx.Semaphore(0), ctx.Semaphore(0)
    p = ctx.Process(target=_sem_child, args=(s1, s2, warm + n))
    start_all([p])
    samples = []
    for i in range(warm + n):
        t0 = now_ns()
        s1.release()
        s2.acquire()
        t1 = now_ns()
        if i >= warm:
            samples.append(t1 - t0)
    join_all([p], "semaphore child")
    check(s1.get_value() == 0 and s2.get_value() == 0,
          f"semaphores not back to 0: {s1.get_value()}, {s2.get_value()}")
    check(len(samples) == n, "wrong number of samples")
    return median_ns(samples) / 1e3


# ----------------------------------------------------------------------------
# Command line.

def fmt(v, sig=4):
    """At least `sig` significant digits, fixed-point, never an exponent."""
    v = float(v)
    if not math.isfinite(v) or v < 0:
        raise CheckFailed(f"bad figure {v!r}")
    if v == 0:
        return "0"
    decimals = max(0, sig - 1 - math.floor(math.log10(v)))
    return f"{v:.{decimals}f}"


def _stop_helpers():
    """Reap the forkserver and resource tracker if this run started them
    (private CPython 3.11 APIs, best effort)."""
    try:
        from multiprocessing import forkserver, resource_tracker
        forkserver._forkserver._stop()
        resource_tracker._resource_tracker._stop()
    except Exception:
        pass


def _on_alarm(signum, frame):
    raise CheckFailed(f"watchdog: workload did not finish within "
                      f"{WATCHDOG[QUICK]} s")


def usage(msg):
    print(f"workloads.py: {msg}\n"
          "usage: workloads.py --list | workloads.py <name> [--quick]",
          file=sys.stderr)
    return 2


def main(argv):
    global QUICK
    if argv == ["--list"]:
        for name, _, _ in WORKLOADS:
            print(name)
        return 0
    flags = [a for a in argv if a.startswith("-")]
    names = [a for a in argv if not a.startswith("-")]
    if any(f != "--quick" for f in flags) or len(names) != 1 or len(flags) > 1:
        return usage("bad arguments: " + " ".join(argv))
    QUICK = bool(flags)
    table = {name: (unit, fn) for name, unit, fn in WORKLOADS}
    name = names[0]
    if name not in table:
        return usage(f"unknown workload {name!r} (see --list)")
    unit, fn = table[name]

    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(WATCHDOG[QUICK])
    try:
        value = fn()
        left = mp.active_children()
        check(not left, f"children left running: {left}")
        line = f"{name}\t{fmt(value)}\t{unit}"
        signal.alarm(0)
    except BaseException as e:                 # noqa: BLE001 - report and bail out
        signal.alarm(0)
        print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        for p in mp.active_children():
            p.terminate()
        for p in mp.active_children():
            p.join(5)
        _stop_helpers()
        sys.stderr.flush()
        os._exit(1)   # skip multiprocessing's atexit joins, which could hang
    _stop_helpers()
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
