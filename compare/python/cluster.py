"""The Python side of `cargo xtask compare --cluster`: Celery and RQ on the
same redis-server as our cluster tier (compare/src/cluster.rs is ours).

The xtask installs celery, rq and redis from PyPI into a venv, starts the
server and the workers (`celery worker --concurrency 2`, prefork, with this
module as the app; two `rq worker`), and runs one workload per process:

    cluster.py --list                 # the workload names
    cluster.py <name> [--quick]       # one workload: name<TAB>value<TAB>unit

The server's URLs come from the environment: MP_COMPARE_REDIS (redis-py's
PING), MP_COMPARE_CELERY (broker and result backend), MP_COMPARE_RQ.
Workloads:

- redis_ping_rtt: median PING round trip through redis-py (us).
- celery_apply_rtt: median `noop.delay(i).get()` of a warm worker (us).
- rq_apply_rtt: median `enqueue(noop, i)` + `job.latest_result(timeout)`
  (a blocking read of the job's result stream) (us).
- celery_tasks: `noop.delay(i)` for each of n tasks, then the results
  through a ResultSet (tasks/s, from the first delay to the last result).
- rq_tasks: `enqueue(noop, i)` for each of n tasks, then until every job is
  finished (the finished-job registry's count, polled every 5 ms with a
  deadline), then each job's result is checked (untimed) (tasks/s).
"""

import math
import os
import statistics
import sys
import time

NAMES = [
    "redis_ping_rtt",
    "celery_apply_rtt",
    "rq_apply_rtt",
    "celery_tasks",
    "rq_tasks",
]

PINGS = (5000, 1000)
PING_WARM = 200
# Celery's and RQ's round trips are milliseconds: fewer timed calls.
APPLIES = (200, 50)
APPLY_WARM = 20
CELERY_TASKS = (20000, 5000)
# RQ's default worker forks a work horse per job, and takes about 0.2 s a
# job here: fewer jobs, so that a run stays within a minute.
RQ_APPLIES = (50, 20)
RQ_APPLY_WARM = 5
RQ_TASKS = (500, 200)
TIMEOUT = 60


def noop(x):
    """The task: returns its argument."""
    return x


def _celery_app():
    from celery import Celery

    url = os.environ.get("MP_COMPARE_CELERY", "redis://127.0.0.1:6379/1")
    app = Celery("cluster", broker=url, backend=url)
    app.conf.broker_connection_retry_on_startup = True
    app.conf.worker_hijack_root_logger = False
    return app


# `celery -A cluster worker` imports this module and finds `app`; a client
# imports it too (the app is cheap to make and connects lazily).
try:
    app = _celery_app()
    celery_noop = app.task(name="cluster.noop")(noop)
except ImportError:  # plain python3 without the venv: --list still works
    app = None
    celery_noop = None


def _pick(quick, pair):
    return pair[1] if quick else pair[0]


def _median_us(warm, n, f):
    for i in range(warm):
        f(i)
    times = []
    for i in range(warm, warm + n):
        t0 = time.perf_counter()
        f(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def redis_ping_rtt(quick):
    import redis

    r = redis.Redis.from_url(os.environ["MP_COMPARE_REDIS"])

    def ping(_):
        if r.ping() is not True:
            raise RuntimeError("PING did not answer PONG")

    return _median_us(PING_WARM, _pick(quick, PINGS), ping)


def _celery_warm():
    # The first task also waits for the workers to be up.
    r = celery_noop.delay(-1).get(timeout=TIMEOUT)
    if r != -1:
        raise RuntimeError(f"the warm-up task answered {r!r}")


def celery_apply_rtt(quick):
    _celery_warm()

    def call(i):
        r = celery_noop.delay(i).get(timeout=TIMEOUT)
        if r != i:
            raise RuntimeError(f"noop({i}) answered {r!r}")

    return _median_us(APPLY_WARM, _pick(quick, APPLIES), call)


def celery_tasks(quick):
    from celery.result import ResultSet

    _celery_warm()
    n = _pick(quick, CELERY_TASKS)
    t0 = time.perf_counter()
    results = [celery_noop.delay(i) for i in range(n)]
    out = ResultSet(results).get(timeout=TIMEOUT * 5)
    took = time.perf_counter() - t0
    if out != list(range(n)):
        raise RuntimeError(f"{len(out)} results for {n} tasks, or a wrong one")
    return n / took


def _rq_queue():
    import redis
    from rq import Queue

    return Queue("compare", connection=redis.Redis.from_url(os.environ["MP_COMPARE_RQ"]))


def _rq_enqueue(q, i):
    # By name, as the workers import it (this file runs as __main__ here);
    # results kept for an hour, so that none leaves the finished-job
    # registry during a run (rq_tasks counts it).
    return q.enqueue("cluster.noop", i, result_ttl=3600)


def _rq_result(job):
    res = job.latest_result(timeout=TIMEOUT)
    if res is None:
        raise RuntimeError(f"no result for job {job.id} within {TIMEOUT} s")
    return res.return_value


def rq_apply_rtt(quick):
    q = _rq_queue()

    def call(i):
        r = _rq_result(_rq_enqueue(q, i))
        if r != i:
            raise RuntimeError(f"noop({i}) answered {r!r}")

    return _median_us(RQ_APPLY_WARM, _pick(quick, RQ_APPLIES), call)


def rq_tasks(quick):
    from rq.job import Job

    q = _rq_queue()
    if _rq_result(_rq_enqueue(q, -1)) != -1:
        raise RuntimeError("the warm-up job answered wrong")
    registry = q.finished_job_registry
    before = registry.count
    n = _pick(quick, RQ_TASKS)
    t0 = time.perf_counter()
    jobs = [_rq_enqueue(q, i) for i in range(n)]
    deadline = t0 + TIMEOUT * 5
    # Polling the server's registry with a deadline: RQ has no wait-for-many.
    while registry.count - before < n:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{registry.count - before} of {n} jobs finished within {TIMEOUT * 5} s")
        time.sleep(0.005)
    took = time.perf_counter() - t0
    fetched = Job.fetch_many([j.id for j in jobs], connection=q.connection)
    out = [j.return_value() for j in fetched]
    if out != list(range(n)):
        raise RuntimeError(f"{len(out)} results for {n} jobs, or a wrong one")
    return n / took


def main(argv):
    if argv == ["--list"]:
        print("\n".join(NAMES))
        return 0
    quick = "--quick" in argv
    names = [a for a in argv if a != "--quick"]
    if len(names) != 1 or names[0] not in NAMES:
        print("usage: cluster.py --list | cluster.py <name> [--quick]", file=sys.stderr)
        return 2
    name = names[0]
    value = globals()[name](quick)
    # A plain decimal with at least 4 significant digits, never an exponent.
    decimals = min(max(3 - math.floor(math.log10(value)), 0), 12) if value > 0 else 0
    print(f"{name}\t{value:.{decimals}f}\t{'us' if name.endswith('_rtt') else 'tasks/s'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
