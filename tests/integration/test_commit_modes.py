"""Which of an attempt's commits wait for their WAL flush (the drain's cost, README "Performance").

A build claim (sql/claim.sql), the move to 'building' (sql/transition.sql) and a build's ending
(sql/finish_attempt.sql) relax synchronous_commit for their own transaction only; a deploy claim,
any other move and a deployment's ending stay durable; the outbox's durable point
(sql/durable_point.sql) waits for its flush even where the session's default does not. Observed
inside an explicit transaction: the setting the statement left for its commit, then the session's
own setting after it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from listener.queue.db import Queries, connect
from tests.helpers import claim_builds, force_status, insert_idea


def commit_mode_of(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> tuple[Any, str]:
    """Run one statement in a transaction: (its first row, synchronous_commit at its commit)."""
    with conn.transaction():
        row = conn.execute(query, params).fetchone()
        mode = conn.execute("SHOW synchronous_commit").fetchone()
    assert mode is not None
    return row, str(mode["synchronous_commit"])


def session_mode(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SHOW synchronous_commit").fetchone()
    assert row is not None
    return str(row["synchronous_commit"])


def claim_params(kind: str, automation_id: int | None = None) -> dict[str, Any]:
    return {"kind": kind, "automation_id": automation_id, "worker": "w1"}


def test_a_build_claim_commits_without_waiting_for_the_flush_and_only_itself(
        operator: psycopg.Connection[Any], db_url: str, queries: Queries) -> None:
    first, second = insert_idea(operator, priority=1), insert_idea(operator, priority=2)
    with connect(db_url, actor="builder:test") as conn:
        assert session_mode(conn) == "on"
        row, mode = commit_mode_of(conn, queries["claim"], claim_params("build"))
        assert row is not None and row["id"] == first and mode == "off"
        assert session_mode(conn) == "on"  # the next transaction is durable again
        row, mode = commit_mode_of(conn, queries["claim"], claim_params("build", second))  # build-once <id>
        assert row is not None and row["id"] == second and mode == "off"


def test_a_deploy_claim_stays_durable(operator: psycopg.Connection[Any], db_url: str, queries: Queries) -> None:
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, "approved")
    with connect(db_url, actor="builder:test") as conn:
        row, mode = commit_mode_of(conn, queries["claim"], claim_params("deploy"))
        assert row is not None and row["id"] == automation_id and row["builder_status"] == "deploying"
        assert mode == "on"


def test_only_the_move_to_building_is_relaxed(operator: psycopg.Connection[Any], db_url: str, queries: Queries) -> None:
    building, failing = insert_idea(operator, priority=1), insert_idea(operator, priority=2)
    with connect(db_url, actor="builder:test") as conn:
        claims = claim_builds(conn, queries, building, failing)

        def move(automation_id: int, new_status: str, step: str) -> tuple[Any, str]:
            return commit_mode_of(conn, queries["transition"], {
                "automation_id": automation_id, "build_id": claims[automation_id],
                "expected": "queued", "new_status": new_status, "step": step})

        row, mode = move(building, "building", "generate")
        assert row is not None and mode == "off"
        row, mode = move(failing, "failed", "prompt")
        assert row is not None and mode == "on"
        # A build's ending does not wait either (its notification waits in the outbox instead).
        row, mode = commit_mode_of(conn, queries["finish_attempt"], finish_params(building, claims[building], asynchronous=True))
        assert row is not None and row["finished"] == 1 and mode == "off"
        assert session_mode(conn) == "on"


def finish_params(automation_id: int, build_id: int, *, asynchronous: bool, expected: str = "building",
                  new_status: str = "awaiting_approval", idea_status: str | None = None) -> dict[str, Any]:
    return {"automation_id": automation_id, "build_id": build_id, "expected": expected, "new_status": new_status,
            "outcome": "succeeded", "error": None, "retry_after_s": None, "idea_status": idea_status,
            "asynchronous": asynchronous}


def test_a_deployments_ending_stays_durable(operator: psycopg.Connection[Any], db_url: str, queries: Queries) -> None:
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, "approved")
    with connect(db_url, actor="builder:test") as conn:
        claim = conn.execute(queries["claim"], claim_params("deploy")).fetchone()
        assert claim is not None
        row, mode = commit_mode_of(conn, queries["finish_attempt"], finish_params(
            automation_id, int(claim["build_id"]), asynchronous=False, expected="deploying", new_status="deployed",
            idea_status="deployed"))
        assert row is not None and row["finished"] == 1 and mode == "on"


def test_the_durable_point_names_the_ended_attempts_and_waits_for_its_flush(
        operator: psycopg.Connection[Any], db_url: str, queries: Queries) -> None:
    ended, running = insert_idea(operator, priority=1), insert_idea(operator, priority=2)
    with connect(db_url, actor="builder:test") as conn:
        builds = claim_builds(conn, queries, ended, running)
        conn.execute(queries["transition"], {"automation_id": ended, "build_id": builds[ended], "expected": "queued",
                                             "new_status": "building", "step": "generate"})
        conn.execute(queries["finish_attempt"], finish_params(ended, builds[ended], asynchronous=True))
        asked = [builds[ended], builds[running], 10 ** 9]  # ended, still running, no such attempt
        row, mode = commit_mode_of(conn, queries["durable_point"], {"build_ids": asked})
        assert row is not None and row["finished"] == [builds[ended]] and row["point"] is not None
        assert mode == "on"  # the session's default, which waits for the flush, is kept
        conn.execute("SET synchronous_commit = off")  # a session (or database) that does not wait by default
        row, mode = commit_mode_of(conn, queries["durable_point"], {"build_ids": asked})
        assert row is not None and row["finished"] == [builds[ended]] and mode == "local"
        assert session_mode(conn) == "off"
