"""Listener benchmarks: trigger-to-claim latency, drain rate, recovery after SIGKILL.

Run on demand (not part of the tests):  python bench/listener_bench.py [latency|drain|recovery|all]
Uses TEST_DATABASE_URL when set, else an embedded PostgreSQL. Listeners are real subprocesses
(`python -m listener listen`) with an instant build handler, so the figures measure the
listener's own path: NOTIFY → wake → claim → status writes.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.listeners import ListenerProcess, base_env, query, wait_until  # noqa: E402
from tests.pg import TestServer, test_server  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def bench_latency(server: TestServer, work: Path, samples: int = 300) -> None:
    url = server.new_database()
    listener = ListenerProcess(base_env(url, LOG_LEVEL="WARNING"), work / "latency.log")
    try:
        time.sleep(1.0)
        latencies: list[float] = []
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            ids = [conn.execute("INSERT INTO automation_ideas (name, type, status, task_description)"
                                " VALUES ('bench', 'script', 'idea', 'x') RETURNING id").fetchone()["id"]
                   for _ in range(samples)]
            for automation_id in ids:
                time.sleep(0.01)  # the listener is idle again
                start = conn.execute("UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = %s"
                                     " RETURNING extract(epoch FROM clock_timestamp()) AS t", (automation_id,)).fetchone()["t"]
                claimed = wait_until(lambda: conn.execute(
                    "SELECT extract(epoch FROM claimed_at) AS t FROM agent_builds WHERE automation_id = %s",
                    (automation_id,)).fetchone(), 10, "the claim")
                latencies.append((float(claimed["t"]) - float(start)) * 1000)
        print(f"trigger-to-claim latency, idle listener, {samples} samples: "
              f"p50 {percentile(latencies, 50):.2f} ms, p90 {percentile(latencies, 90):.2f} ms, "
              f"p99 {percentile(latencies, 99):.2f} ms (mean {statistics.mean(latencies):.2f} ms)")
    finally:
        listener.stop()
        server.drop_database(url)


def bench_drain(server: TestServer, work: Path, listeners: int, rows: int = 5000) -> None:
    url = server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO automation_ideas (name, type, status, priority, task_description)"
                     " SELECT 'bench ' || g, 'script', 'ready_to_build', g %% 5, 'x' FROM generate_series(1, %s) g", (rows,))
        conn.execute("ANALYZE automation_ideas")
    procs = [ListenerProcess(base_env(url, LOG_LEVEL="WARNING"), work / f"drain-{listeners}-{i}.log") for i in range(listeners)]
    try:
        wait_until(lambda: query(url, "SELECT count(*) AS n FROM automation_ideas WHERE builder_status = 'awaiting_approval'")[0]["n"] == rows,
                   600, "the drain")
        stats = query(url, "SELECT count(*) AS attempts, count(DISTINCT automation_id) AS rows,"
                           " extract(epoch FROM max(finished_at) - min(claimed_at)) AS seconds FROM agent_builds")[0]
        duplicates = stats["attempts"] - stats["rows"]
        print(f"drain {rows} rows, {listeners} listener(s): {rows / float(stats['seconds']):.0f} builds/s "
              f"({float(stats['seconds']):.2f} s); attempts {stats['attempts']}, distinct rows {stats['rows']}, "
              f"duplicates {duplicates}")
    finally:
        for proc in procs:
            proc.stop()
        server.drop_database(url)


def bench_recovery(server: TestServer, work: Path, rounds: int = 5) -> None:
    url = server.new_database()
    times: list[float] = []
    try:
        for round_ in range(rounds):
            doomed = ListenerProcess(base_env(url, BUILD_HANDLER="tests.fakes.handlers:hold", FAKE_HOLD_PHASE="after",
                                              FAKE_HOLD_DIR=str(work), LOG_LEVEL="WARNING"), work / f"doomed-{round_}.log")
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                automation_id = conn.execute("INSERT INTO automation_ideas (name, type, status, task_description)"
                                             " VALUES ('bench', 'script', 'ready_to_build', 'x') RETURNING id").fetchone()["id"]
            wait_until(lambda: (work / f"{automation_id}.holding").exists(), 20, "the held build")
            survivor = ListenerProcess(base_env(url, LOG_LEVEL="WARNING", RESCUE_INTERVAL_S="2"), work / f"survivor-{round_}.log")
            time.sleep(1.5)  # the survivor is up and idle
            killed = time.time()
            doomed.kill()
            wait_until(lambda: query(url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                                     (automation_id,))[0]["builder_status"] == "failed", 30, "the rescue")
            times.append(time.time() - killed)
            survivor.stop()
        print(f"recovery after SIGKILL mid-build (default RESCUE_INTERVAL_S=2), {rounds} rounds: "
              f"median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    finally:
        server.drop_database(url)


def main(which: str) -> None:
    with test_server() as server, tempfile.TemporaryDirectory() as tmp:
        server.create_template()
        work = Path(tmp)
        if which in ("latency", "all"):
            bench_latency(server, work)
        if which in ("drain", "all"):
            bench_drain(server, work, 1)
            bench_drain(server, work, 4)
        if which in ("recovery", "all"):
            bench_recovery(server, work)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
