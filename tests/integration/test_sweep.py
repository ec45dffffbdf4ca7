"""The sweep's questions to a real database, and the sweep loop through engine and database outages
(the engine is the in-memory fake of tests/unit/fake_docker.py)."""

from __future__ import annotations

import threading
import time

from listener.config import Settings
from listener.queue.db import Queries
from listener.sandbox.naming import LABEL_DEADLINE, labels
from listener.sandbox.sweep import DatabaseRecords, SweepLoop
from tests.helpers import insert_idea, installation
from tests.unit.fake_docker import FakeEngine


def attempt(conn, outcome: str | None, kind: str = "build", cleaned: bool = False) -> int:  # noqa: ANN001
    automation_id = insert_idea(conn, status="idea")
    row = conn.execute(
        "INSERT INTO agent_builds (automation_id, worker, kind, finished_at, outcome, cleaned_at)"
        " VALUES (%s, 'test', %s, CASE WHEN %s::text IS NULL THEN NULL ELSE now() END, %s,"
        "         CASE WHEN %s THEN now() END) RETURNING id",
        (automation_id, kind, outcome, outcome, cleaned)).fetchone()
    return int(row["id"])


def test_which_attempts_are_over_and_which_images_nobody_needs(builder_conn, queries: Queries) -> None:
    running = attempt(builder_conn, None)
    passed = attempt(builder_conn, "succeeded")
    rejected = attempt(builder_conn, "succeeded", cleaned=True)
    failed = attempt(builder_conn, "failed")
    crashed = attempt(builder_conn, "crashed")
    released = attempt(builder_conn, "released")
    deployed = attempt(builder_conn, "succeeded", kind="deploy")
    unknown = 999_999
    records = DatabaseRecords(builder_conn, queries)
    every = [running, passed, rejected, failed, crashed, released, deployed, unknown]
    assert records.over(every) == {passed, rejected, failed, crashed, released, deployed, unknown}
    assert records.unneeded_images(every) == {rejected, failed, crashed, released, deployed, unknown}
    assert records.over([]) == set()


def test_the_loop_survives_an_engine_outage_and_says_so_once(db_url, builder_conn, log_lines) -> None:
    engine = FakeEngine()
    identity = installation(db_url)
    over = attempt(builder_conn, "failed")
    leftover = engine.add_container("leftover", {**labels(identity, 1, over, "sandbox-run"),
                                                 LABEL_DEADLINE: str(int(time.time()) + 600)})
    settings = Settings.from_env({"DATABASE_URL": db_url, "RESCUE_INTERVAL_S": "0.05"})
    loop = SweepLoop(settings, db_url, Queries.load(), "test", threading.Event(), client_factory=lambda: engine)
    engine.down = True
    assert loop.once() is None and loop.once() is None
    assert sum("Docker engine is unreachable" in line for line in log_lines) == 1
    assert leftover.id in engine.containers_by_id
    engine.down = False
    report = loop.once()
    assert report is not None and [r.found.name for r in report.containers] == ["leftover"]
    assert engine.containers_by_id == {}
    assert any("answers again" in line for line in log_lines)
    if loop.conn is not None:
        loop.conn.close()


def test_the_loop_applies_deadlines_when_the_database_goes_away(db_url, builder_conn) -> None:
    engine = FakeEngine()
    identity = installation(db_url)
    running = attempt(builder_conn, None)
    late = engine.add_container("late", {**labels(identity, 1, running, "sandbox-run"), LABEL_DEADLINE: str(int(time.time()) - 1)})
    fresh = engine.add_container("fresh", {**labels(identity, 1, running, "sandbox-run"),
                                           LABEL_DEADLINE: str(int(time.time()) + 600)})
    settings = Settings.from_env({"DATABASE_URL": db_url})
    loop = SweepLoop(settings, db_url, Queries.load(), "test", threading.Event(), client_factory=lambda: engine)
    assert loop.once() is not None and loop.installation == identity  # learns its identity while the database is up
    engine.add_container("late-again", {**labels(identity, 1, running, "sandbox-run"), LABEL_DEADLINE: "1"})
    engine.add_container("unknown-attempt", {**labels(identity, 1, 999_999, "sandbox-run"),
                                             LABEL_DEADLINE: str(int(time.time()) + 600)})
    loop.dsn = "postgresql://nobody@127.0.0.1:1/gone"  # the database goes away: the loop reconnects and fails
    assert loop.conn is not None
    loop.conn.close()
    report = loop.once()
    assert report is not None and report.database is False
    # The deadlines still apply; without the database, an attempt's end cannot be known: kept for now.
    assert {c.name for c in engine.containers_by_id.values()} == {"fresh", "unknown-attempt"}
    assert late.id not in engine.containers_by_id and fresh.id in engine.containers_by_id


def test_the_loop_sweeps_images_at_start_and_then_at_most_every_30_s(db_url, builder_conn) -> None:
    from listener.sandbox import sweep

    engine = FakeEngine()
    identity = installation(db_url)
    failed = attempt(builder_conn, "failed")
    first = engine.add_image([f"agent-1-x:build-{failed}-{identity}"], labels(identity, 1, failed, "sandbox-image"))
    loop = SweepLoop(Settings.from_env({"DATABASE_URL": db_url}), db_url, Queries.load(), "test", threading.Event(),
                     client_factory=lambda: engine)
    assert len(loop.once().images) == 1 and first.id not in engine.images_by_id  # at start
    second = engine.add_image([f"agent-1-y:build-{failed}-{identity}"], labels(identity, 1, failed, "sandbox-image"))
    assert loop.once().images == [] and second.id in engine.images_by_id  # containers only, this soon
    loop.images_swept_at = time.monotonic() - sweep.IMAGE_SWEEP_EVERY_S
    assert len(loop.once().images) == 1 and second.id not in engine.images_by_id
    loop.conn.close()
