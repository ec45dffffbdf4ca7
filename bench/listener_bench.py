"""Listener benchmarks, side by side in one run: ready-to-claim latency, drain, idle CPU, recovery.

Run on demand (not part of the tests), from the repository (the `bench` extra installs PgQueuer):

    pip install -e '.[test,bench]'
    python bench/listener_bench.py [latency|drain|idle|recovery|all] [--samples 200] [--rows 5000]
                                   [--concurrency 1,16,64] [--in-flight 0,50] [--idle-s 10]

Uses TEST_DATABASE_URL when set, else an embedded PostgreSQL. Three systems, each in its own process:

- floor: a bare psycopg loop, one connection LISTENing and one claiming with the listener's own claim
  (sql/claim_next_build.sql, SKIP LOCKED) and finishing each claim at once: what a queue costs at least;
- PgQueuer (batch size 1), a job table of its own, an entrypoint that returns at once;
- ours: `python -m listener listen` at BUILDER_CONCURRENCY 1, 16 and 64, with a build handler that
  passes at once, except for rows named `hold…`, which wait on a slow fake model (a streamed answer:
  a wake-up every 50 ms) until the listener stops.

Ready-to-claim latency: from the statement that makes a row ready (its NOTIFY is sent at commit) to
the claim statement's start (agent_builds.claimed_at), on the database's clock; for PgQueuer from the
enqueue call to its entrypoint. The floor and ours run at the same time, each on its own database,
and are sampled in turns (so the rest of the machine weighs on both alike): every "ours" point has
its own floor figures. "50 in flight": 50 `hold` builds running in the listener measured when its
concurrency leaves room (64: 50 threads waiting on the slow model, 14 free); otherwise, and for the
floor, 50 attempts claimed and held by one session of the bench (the database carries the same
50 locked, unfinished attempts).
Drain: --rows ready rows, one or four listeners (BUILDER_CONCURRENCY 1, and --drain-concurrency) against
one or four PgQueuer workers (batch size 1; PgQueuer runs the jobs it picks concurrently), and the
floor and PgQueuer again with as many sessions as four listeners at --drain-concurrency claim with;
rows per second between the first claim and the last finish (PgQueuer: between its first and last
job). Idle CPU: a leader's and a follower's own CPU time (utime + stime) over --idle-s seconds with
nothing to do, as a share of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from listener.queue.context import AttemptContext  # noqa: E402
from listener.queue.outcome import BuildSucceeded  # noqa: E402
from tests.e2e.listeners import ListenerProcess, base_env, query, wait_until  # noqa: E402
from tests.pg import TestServer, test_server  # noqa: E402

HOLD_PREFIX = "hold"
MODEL_TICK_S = 0.05  # the slow fake model streams a token every 50 ms


def slow_model_build(ctx: AttemptContext) -> BuildSucceeded:
    """The bench's build handler: passes at once, except `hold…` rows, which wait on a slow model."""
    ctx.start_generation()
    if (ctx.automation.name or "").startswith(HOLD_PREFIX):
        while not ctx.stopping:
            time.sleep(MODEL_TICK_S)  # one streamed token
    return BuildSucceeded()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@dataclass
class Row:
    what: str
    concurrency: str
    in_flight: int
    p50: float
    p99: float
    samples: int


# -- processes under test ---------------------------------------------------------------------

def start_listener(url: str, work: Path, name: str, concurrency: int, **env: str) -> ListenerProcess:
    workers = "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'agent-builder worker %%'"
    before = query(url, workers)[0]["n"]
    settings = {"LOG_LEVEL": "WARNING", "BUILDER_CONCURRENCY": str(concurrency),
                "BUILD_HANDLER": "bench.listener_bench:slow_model_build", "RESCUE_INTERVAL_S": "2",
                "LIVENESS_INTERVAL_S": "10", **env}
    proc = ListenerProcess(base_env(url, **settings), work / f"{name}.log")
    # ready: every worker's connection is open (the listening connection opens before them)
    wait_until(lambda: query(url, workers)[0]["n"] >= before + concurrency, 30, f"{name} to start", proc)
    return proc


def start_script(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen[bytes] | ListenerProcess) -> None:
    if isinstance(proc, ListenerProcess):
        proc.stop(timeout=30)
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def floor_main(url: str, ready_file: str) -> None:
    """The floor: LISTEN on one connection, claim (SKIP LOCKED) and finish on another, nothing else."""
    from listener.queue.store import Store
    from listener.queue.db import Queries
    from listener.queue.states import BuilderStatus, Move, Outcome

    queries = Queries.load()
    done = Move(BuilderStatus.BUILDING, BuilderStatus.AWAITING_APPROVAL, Outcome.SUCCEEDED)
    stop = False

    def on_term(_signum: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    with psycopg.connect(url, autocommit=True) as listen, \
            psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        listen.execute("LISTEN agent_builder_ready")
        store = Store(conn, queries, "floor")
        Path(ready_file).write_text("ready")
        while not stop:
            while (claim := store.claim_next_build()) is not None:
                store.move(claim, "queued", "building", "generate")
                store.finish(claim, done)
            for _note in listen.notifies(timeout=0.5, stop_after=1):
                pass


async def _pgq_worker(url: str, out: str, batch_size: int, drain: bool) -> None:
    from datetime import timedelta

    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(url)  # PgQueuer's own recommended driver
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    sink = open(out, "a", buffering=1)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, qm.shutdown.set)

    @qm.entrypoint("bench")
    async def bench(job: Any) -> None:
        sink.write(f"{job.id} {time.time()}\n")

    @qm.entrypoint("hold")
    async def hold(job: Any) -> None:
        sink.write(f"hold {job.id}\n")
        await qm.shutdown.wait()

    sink.write("ready\n")
    mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
    await qm.run(batch_size=batch_size, mode=mode, dequeue_timeout=timedelta(seconds=5))
    await conn.close()


async def _pgq_install(url: str) -> None:
    from pgqueuer import PsycopgDriver, Queries

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await Queries(PsycopgDriver(conn)).install()


async def _pgq_enqueue(url: str, entrypoint: str, count: int) -> list[int]:
    from pgqueuer import PsycopgDriver, Queries

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        ids = await Queries(PsycopgDriver(conn)).enqueue([entrypoint] * count, [None] * count, [0] * count)
        return [int(i) for i in ids]


# -- latency ----------------------------------------------------------------------------------

def ready_rows(url: str, count: int, name: str, status: str = "idea") -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("INSERT INTO automation_ideas (name, type, status, task_description)"
                            " SELECT %s || g, 'script', %s, 'x' FROM generate_series(1, %s) g RETURNING id",
                            (name, status, count)).fetchall()
    return [int(r[0]) for r in rows]


def hold_builds(url: str, count: int) -> None:
    """`count` builds in flight in the listener running on this database (its slow model)."""
    if count == 0:
        return
    ready_rows(url, count, HOLD_PREFIX, status="ready_to_build")
    wait_until(lambda: query(url, "SELECT count(*) AS n FROM automation_ideas WHERE name LIKE 'hold%%'"
                                  " AND builder_status = 'building'")[0]["n"] == count, 60, f"{count} builds in flight")


def hold_on_one_session(url: str, count: int) -> psycopg.Connection[Any] | None:
    """`count` attempts in flight, claimed and held (locks and all) by one session of the bench:
    the database carries what `count` running builds make it carry, without their processes."""
    if count == 0:
        return None
    from listener.queue.store import Store
    from listener.queue.db import Queries

    ready_rows(url, count, HOLD_PREFIX, status="ready_to_build")
    conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
    store = Store(conn, Queries.load(), "bench-holder")
    for _ in range(count):
        claim = store.claim_next_build()
        assert claim is not None
        store.move(claim, "queued", "building", "generate")
    return conn


def sample_once(conn: psycopg.Connection[Any], automation_id: int) -> float:
    """Make one row ready; the time from its UPDATE to the claim statement, in ms (database clock)."""
    start = conn.execute("UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = %s"
                         " RETURNING extract(epoch FROM clock_timestamp()) AS t", (automation_id,)).fetchone()
    deadline = time.monotonic() + 30
    while True:
        row = conn.execute("SELECT extract(epoch FROM claimed_at) AS t FROM agent_builds WHERE automation_id = %s",
                           (automation_id,)).fetchone()
        if row is not None:
            return (float(row["t"]) - float(start["t"])) * 1000
        if time.monotonic() > deadline:
            raise AssertionError(f"automation {automation_id} was not claimed within 30 s")
        time.sleep(0.002)


def sample_pair(floor_url: str, url: str, samples: int) -> tuple[list[float], list[float]]:
    """Samples of the floor and of ours taken in turns (the order swapped every time), so that
    whatever else the machine does weighs on both alike."""
    floor_ids, ids = ready_rows(floor_url, samples, "sample"), ready_rows(url, samples, "sample")
    floor_ms: list[float] = []
    ours_ms: list[float] = []
    with psycopg.connect(floor_url, autocommit=True, row_factory=dict_row) as floor_conn, \
            psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        for i, (floor_id, automation_id) in enumerate(zip(floor_ids, ids, strict=True)):
            order = [(floor_conn, floor_id, floor_ms), (conn, automation_id, ours_ms)]
            for target, row_id, into in (order if i % 2 == 0 else order[::-1]):
                time.sleep(0.01)  # the system is idle again (between samples, not in a measurement)
                into.append(sample_once(target, row_id))
    return floor_ms, ours_ms


def measure(rows: list[Row], what: str, concurrency: str, in_flight: int, latencies: list[float]) -> None:
    row = Row(what, concurrency, in_flight, percentile(latencies, 50), percentile(latencies, 99), len(latencies))
    rows.append(row)
    print(f"  {what:10} c={concurrency:>3} in flight {in_flight:>2}: p50 {row.p50:6.2f} ms  p99 {row.p99:6.2f} ms"
          f"  ({row.samples} samples)", flush=True)


def bench_latency(server: TestServer, work: Path, samples: int, concurrencies: list[int], in_flights: list[int]) -> list[Row]:
    rows: list[Row] = []
    for in_flight in in_flights:
        floor_url = server.new_database()
        floor_holder = hold_on_one_session(floor_url, in_flight)
        ready = work / f"floor-{in_flight}.ready"
        floor = start_script(["_floor", floor_url, str(ready)], work / f"floor-{in_flight}.log")
        try:
            wait_until(ready.exists, 30, "the floor to start")
            for concurrency in concurrencies:
                url = server.new_database()
                holder = None
                listener = None
                try:
                    inside = concurrency > in_flight  # room for the builds in flight in the listener itself
                    if not inside:
                        holder = hold_on_one_session(url, in_flight)
                    listener = start_listener(url, work, f"ours-{concurrency}-{in_flight}", concurrency)
                    if inside:
                        hold_builds(url, in_flight)
                    floor_ms, ours_ms = sample_pair(floor_url, url, samples)
                    measure(rows, "floor", str(concurrency), in_flight, floor_ms)
                    measure(rows, "ours", str(concurrency), in_flight, ours_ms)
                finally:
                    if listener is not None:
                        stop_process(listener)
                    if holder is not None:
                        holder.close()
                    server.drop_database(url)
        finally:
            stop_process(floor)
            if floor_holder is not None:
                floor_holder.close()
            server.drop_database(floor_url)
        rows.extend(bench_pgqueuer_latency(server, work, samples, in_flight))
    return rows


def bench_pgqueuer_latency(server: TestServer, work: Path, samples: int, in_flight: int) -> list[Row]:
    url = server.new_database()
    out = work / f"pgq-latency-{in_flight}.txt"
    rows: list[Row] = []
    try:
        asyncio.run(_pgq_install(url))
        proc = start_script(["_pgqueuer", url, str(out), "1", "continuous"], work / f"pgq-latency-{in_flight}.log")
        try:
            wait_until(lambda: out.exists() and "ready" in out.read_text(), 30, "PgQueuer to start")
            if in_flight:
                asyncio.run(_pgq_enqueue(url, "hold", in_flight))
                wait_until(lambda: out.read_text().count("hold ") == in_flight, 60, "PgQueuer's jobs in flight")
            latencies = asyncio.run(_pgq_samples(url, out, samples))
        finally:
            stop_process(proc)
        measure(rows, "PgQueuer", "-", in_flight, latencies)
    finally:
        server.drop_database(url)
    return rows


async def _pgq_samples(url: str, out: Path, samples: int) -> list[float]:
    from pgqueuer import PsycopgDriver, Queries

    latencies = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        for _ in range(samples):
            await asyncio.sleep(0.01)
            start = time.time()
            (job_id,) = await queries.enqueue("bench", None)
            deadline = time.monotonic() + 30
            while True:
                picked = _picked(out, int(job_id))
                if picked is not None:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"PgQueuer job {job_id} was not picked within 30 s")
                await asyncio.sleep(0.002)
            latencies.append((picked - start) * 1000)
    return latencies


def _picked(out: Path, job_id: int) -> float | None:
    for line in reversed(out.read_text().splitlines()[-20:]):
        parts = line.split()
        if len(parts) == 2 and parts[0] == str(job_id):
            return float(parts[1])
    return None


# -- drain ------------------------------------------------------------------------------------

def bench_drain(server: TestServer, work: Path, listeners: int, rows: int, concurrency: int = 1) -> float:
    url = server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO automation_ideas (name, type, status, priority, task_description)"
                     " SELECT 'bench ' || g, 'script', 'ready_to_build', g %% 5, 'x' FROM generate_series(1, %s) g", (rows,))
        conn.execute("ANALYZE automation_ideas")
    procs = [ListenerProcess(base_env(url, LOG_LEVEL="WARNING", BUILD_HANDLER="bench.listener_bench:slow_model_build",
                                      RESCUE_INTERVAL_S="2", BUILDER_CONCURRENCY=str(concurrency)),
                             work / f"drain-{listeners}-{i}.log") for i in range(listeners)]
    try:
        wait_until(lambda: query(url, "SELECT count(*) AS n FROM automation_ideas WHERE builder_status = 'awaiting_approval'")[0]["n"] == rows,
                   600, "the drain")
        stats = query(url, "SELECT count(*) AS attempts, count(DISTINCT automation_id) AS rows,"
                           " extract(epoch FROM max(finished_at) - min(claimed_at)) AS seconds FROM agent_builds")[0]
        rate = rows / float(stats["seconds"])
        print(f"  ours       drain {rows} rows, {listeners} listener(s), concurrency {concurrency}: {rate:6.0f} builds/s ({float(stats['seconds']):.2f} s);"
              f" duplicates {stats['attempts'] - stats['rows']}", flush=True)
        return rate
    finally:
        for proc in procs:
            proc.stop(timeout=30)
        server.drop_database(url)


def bench_floor_drain(server: TestServer, work: Path, loops: int, rows: int) -> float:
    """The floor's loop (claim, building, finish: the same three statements as a build) draining
    the same rows: what the database makes those statements cost, with no listener around them."""
    url = server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO automation_ideas (name, type, status, priority, task_description)"
                     " SELECT 'bench ' || g, 'script', 'ready_to_build', g %% 5, 'x' FROM generate_series(1, %s) g", (rows,))
        conn.execute("ANALYZE automation_ideas")
    procs = [start_script(["_floor", url, str(work / f"floor-drain-{loops}-{i}.ready")], work / f"floor-drain-{loops}-{i}.log")
             for i in range(loops)]
    try:
        wait_until(lambda: query(url, "SELECT count(*) AS n FROM automation_ideas WHERE builder_status = 'awaiting_approval'")[0]["n"] == rows,
                   600, "the floor's drain")
        stats = query(url, "SELECT extract(epoch FROM max(finished_at) - min(claimed_at)) AS seconds FROM agent_builds")[0]
        rate = rows / float(stats["seconds"])
        print(f"  floor      drain {rows} rows, {loops} loop(s): {rate:6.0f} builds/s", flush=True)
        return rate
    finally:
        for proc in procs:
            stop_process(proc)
        server.drop_database(url)


def bench_pgqueuer_drain(server: TestServer, work: Path, workers: int, rows: int) -> float:
    url = server.new_database()
    try:
        asyncio.run(_pgq_install(url))
        asyncio.run(_pgq_enqueue(url, "bench", rows))
        outs = [work / f"pgq-drain-{workers}-{i}.txt" for i in range(workers)]
        procs = [start_script(["_pgqueuer", url, str(out), "1", "drain"], work / f"pgq-drain-{workers}-{i}.log")
                 for i, out in enumerate(outs)]
        try:
            for proc in procs:
                proc.wait(600)
        finally:
            for proc in procs:
                stop_process(proc)
        times = [float(line.split()[1]) for out in outs for line in out.read_text().splitlines()
                 if len(line.split()) == 2 and line.split()[0].isdigit()]
        if len(times) != rows:
            raise AssertionError(f"PgQueuer ran {len(times)} jobs of {rows}")
        rate = rows / (max(times) - min(times))
        print(f"  PgQueuer   drain {rows} jobs, {workers} worker(s), batch size 1: {rate:6.0f} jobs/s", flush=True)
        return rate
    finally:
        server.drop_database(url)


# -- idle CPU ---------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_idle(server: TestServer, work: Path, seconds: float, concurrency: int = 16) -> dict[str, float]:
    """Two idle listeners of one database at the default intervals (RESCUE_INTERVAL_S 2,
    LIVENESS_INTERVAL_S 10): the leader (its rescuer and sweeps run every RESCUE_INTERVAL_S) and
    a follower, measured over the same seconds."""
    url = server.new_database()
    leader = start_listener(url, work, "idle-leader", concurrency)
    follower = None
    try:
        wait_until(lambda: query(url, "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name"
                                      " LIKE 'agent-builder leader %%'")[0]["n"] == 1, 30, "the leader session", leader)
        follower = start_listener(url, work, "idle-follower", concurrency, LOG_LEVEL="INFO")  # says when it follows
        follower.wait_for_log("following: another listener leads", 30)
        procs = {"leader": leader, "follower": follower}
        before, started = {name: cpu_seconds(p.pid) for name, p in procs.items()}, time.monotonic()
        time.sleep(seconds)  # measuring a duration: nothing to wait for but time
        elapsed = time.monotonic() - started
        shares = {}
        for name, proc in procs.items():
            used = cpu_seconds(proc.pid) - before[name]
            shares[name] = 100 * used / elapsed
            print(f"  ours       idle CPU of the {name}, concurrency {concurrency}: {used:.2f} s CPU in {elapsed:.1f} s"
                  f" = {shares[name]:.2f} % of a core", flush=True)
        return shares
    finally:
        for proc in (follower, leader):
            if proc is not None:
                proc.stop(timeout=30)
        server.drop_database(url)


# -- recovery ---------------------------------------------------------------------------------

def bench_recovery(server: TestServer, work: Path, rounds: int = 5) -> None:
    url = server.new_database()
    times: list[float] = []
    try:
        for round_ in range(rounds):
            doomed = ListenerProcess(base_env(url, BUILD_HANDLER="tests.fakes.handlers:hold", FAKE_HOLD_PHASE="after",
                                              FAKE_HOLD_DIR=str(work), LOG_LEVEL="INFO", RESCUE_INTERVAL_S="2"),
                                     work / f"doomed-{round_}.log")
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                automation_id = conn.execute("INSERT INTO automation_ideas (name, type, status, task_description)"
                                             " VALUES ('bench', 'script', 'ready_to_build', 'x') RETURNING id").fetchone()["id"]
            wait_until(lambda: (work / f"{automation_id}.holding").exists(), 20, "the held build")
            survivor = ListenerProcess(base_env(url, LOG_LEVEL="INFO", RESCUE_INTERVAL_S="2"), work / f"survivor-{round_}.log")
            survivor.wait_for_log("following: another listener leads")  # up, and not the leader
            killed = time.time()
            doomed.kill()
            wait_until(lambda: query(url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                                     (automation_id,))[0]["builder_status"] == "failed", 30, "the rescue")
            times.append(time.time() - killed)
            survivor.stop()
        print(f"  recovery after SIGKILL of the leader mid-build (RESCUE_INTERVAL_S=2), {rounds} rounds: "
              f"median {statistics.median(times):.2f} s, max {max(times):.2f} s", flush=True)
    finally:
        server.drop_database(url)


# -- the table --------------------------------------------------------------------------------

def print_table(rows: list[Row], drains: dict[str, float], idle: dict[str, float] | None) -> None:
    print("\n| system | concurrency | in flight | p50 ms | p99 ms | p50 / floor | p99 / floor |")
    # each "ours" row is measured in turns with the "floor" row just above it
    print("| --- | --- | --- | --- | --- | --- | --- |")
    floors = {(r.in_flight, r.concurrency): r for r in rows if r.what == "floor"}
    for r in rows:
        base = floors.get((r.in_flight, r.concurrency))
        ratio = (f"{r.p50 / base.p50:.2f}× | {r.p99 / base.p99:.2f}×" if base and r.what != "floor" else "- | -")
        print(f"| {r.what} | {r.concurrency} | {r.in_flight} | {r.p50:.2f} | {r.p99:.2f} | {ratio} |")
    if drains:
        print("\n| drain | rows/s |")
        print("| --- | --- |")
        for name, rate in drains.items():
            print(f"| {name} | {rate:.0f} |")
        for name, rate in drains.items():
            if name.startswith(("ours", "floor")):
                # against PgQueuer with as many workers as listeners (loops), and, for ours, with as
                # many workers as ours has claiming sessions (listeners x concurrency) when measured
                parts = name.split(", ")
                n = int(parts[1].split()[0])
                sessions = n * int(parts[2].split()[1]) if len(parts) > 2 else n
                for workers in dict.fromkeys((n, sessions)):
                    theirs = drains.get(f"PgQueuer batch 1, {workers} worker(s)")
                    if theirs:
                        print(f"{name}: {rate / theirs:.2f}× PgQueuer's with {workers} worker(s)")
    if idle is not None:
        print("\nidle CPU (concurrency 16): " + ", ".join(f"{name} {share:.2f} % of a core" for name, share in idle.items()))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_floor":
        floor_main(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_pgqueuer":
        asyncio.run(_pgq_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "drain"))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="?", default="all", choices=["latency", "drain", "idle", "recovery", "all"])
    parser.add_argument("--samples", type=int, default=200, help="latency samples per point")
    parser.add_argument("--rows", type=int, default=5000, help="rows per drain")
    parser.add_argument("--concurrency", default="1,16,64", help="BUILDER_CONCURRENCY values (comma separated)")
    parser.add_argument("--in-flight", default="0,50", help="builds in flight during the latency samples")
    parser.add_argument("--drain-concurrency", type=int, default=4,
                        help="BUILDER_CONCURRENCY of the drain's listeners, besides 1 (PgQueuer runs its jobs concurrently)")
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds of idle CPU measurement")
    args = parser.parse_args()
    rows: list[Row] = []
    drains: dict[str, float] = {}
    idle = None
    with test_server() as server, tempfile.TemporaryDirectory() as tmp:
        server.create_template()
        work = Path(tmp)
        if args.which in ("latency", "all"):
            print("ready-to-claim latency", flush=True)
            rows = bench_latency(server, work, args.samples, [int(c) for c in args.concurrency.split(",")],
                                 [int(n) for n in args.in_flight.split(",")])
        if args.which in ("drain", "all"):
            print("drain", flush=True)
            for n in (1, 4):
                for concurrency in sorted({1, args.drain_concurrency}):
                    drains[f"ours, {n} listener(s), concurrency {concurrency}"] = bench_drain(server, work, n, args.rows, concurrency)
                drains[f"floor, {n} loop(s)"] = bench_floor_drain(server, work, n, args.rows)
                drains[f"PgQueuer batch 1, {n} worker(s)"] = bench_pgqueuer_drain(server, work, n, args.rows)
            # as many claiming sessions as the most concurrent of ours (4 listeners x --drain-concurrency)
            sessions = 4 * args.drain_concurrency
            if sessions > 4:
                drains[f"floor, {sessions} loop(s)"] = bench_floor_drain(server, work, sessions, args.rows)
                drains[f"PgQueuer batch 1, {sessions} worker(s)"] = bench_pgqueuer_drain(server, work, sessions, args.rows)
        if args.which in ("idle", "all"):
            print("idle", flush=True)
            idle = bench_idle(server, work, args.idle_s)
        if args.which in ("recovery", "all"):
            print("recovery", flush=True)
            bench_recovery(server, work)
    print_table(rows, drains, idle)


if __name__ == "__main__":
    main()
