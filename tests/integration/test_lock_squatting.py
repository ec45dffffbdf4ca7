"""Advisory-lock squatting by a role that can merely connect: it neither kills a live build nor
wedges a dead one. Real PostgreSQL, a CONNECT-only login as the squatter, the listener's own code
(Store, Rescuer) on a non-superuser builder login."""

from __future__ import annotations

from typing import Any, Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from listener.queue.store import CLAIM_LOCK_TRIES, Store
from listener.config import Settings
from listener.queue.db import Queries, connect
from listener.clients.ntfy import Notifier
from listener.queue.rescue import Rescuer
from listener.queue.states import BuilderStatus as S, Move, Outcome
from tests.e2e.listeners import wait_until
from tests.helpers import builder_status, insert_idea
from tests.logins import Logins

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def squatter(logins: Logins) -> Iterator[Conn]:
    """A login with no role and no privilege: it can connect, and take advisory locks."""
    login = logins.make(label="squatter")
    with psycopg.connect(login.url, autocommit=True, row_factory=dict_row, application_name="squatter") as conn:
        yield conn


def squat(conn: Conn, build_ids: list[int], *, within_s: float = 5.0) -> None:
    """Take the attempts' lock keys; within_s: wait that long for a key to come free (a closed
    connection's backend lets its locks go a moment after the client has gone)."""
    for build_id in build_ids:
        got = wait_until(lambda: conn.execute("SELECT pg_try_advisory_lock(agent_builder_lock_key(%s)) AS got",
                                              (build_id,)).fetchone()["got"], within_s, f"the lock of attempt {build_id}")
        assert got is True


def next_build_ids(admin: Conn, count: int) -> list[int]:
    """The ids the next attempts will get (the sequence is read, and moved past one value, by the admin)."""
    current = admin.execute("SELECT nextval(pg_get_serial_sequence('agent_builds', 'id')) AS n").fetchone()["n"]
    return [current + i for i in range(1, count + 1)]


def holders(admin: Conn, build_id: int) -> list[dict[str, Any]]:
    return admin.execute("SELECT login, application, builder FROM agent_builder_lock_holders(%s)", (build_id,)).fetchall()


def rescuer(conn: Conn, queries: Queries) -> Rescuer:
    return Rescuer(conn, queries, Settings.from_env({}), Notifier(None, "t"))


def test_a_lock_miss_undoes_the_claim_statement(admin, builder_login, squatter, queries) -> None:
    automation_id = insert_idea(admin)
    [taken] = next_build_ids(admin, 1)
    squat(squatter, [taken])
    with connect(builder_login.url, actor="builder:test") as conn:
        with pytest.raises(psycopg.errors.LockNotAvailable) as refused:
            conn.execute(queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "w"})
    assert f"the advisory lock of attempt {taken} is held by another session" in str(refused.value)
    assert "application 'squatter'" in str(refused.value) and "so this claim was undone" in str(refused.value)
    assert builder_status(admin, automation_id) == "not_started"
    assert admin.execute("SELECT count(*) AS n FROM agent_builds").fetchone() == {"n": 0}


def test_squatting_the_next_attempt_ids_does_not_kill_a_live_build(admin, builder_login, squatter, queries, log_lines) -> None:
    automation_id = insert_idea(admin)
    squatted = next_build_ids(admin, 3)
    squat(squatter, squatted)
    with connect(builder_login.url, actor="builder:worker") as worker, connect(builder_login.url, actor="builder-rescuer") as rescue_conn:
        store = Store(worker, queries, "w")
        claim = store.claim_next_build()
        assert claim is not None and claim.automation.id == automation_id
        assert claim.build_id > max(squatted)  # each squatted id was undone and the next one tried
        store.move(claim, "queued", "building", step="generate")
        assert holders(admin, claim.build_id) == [{"login": builder_login.name, "application": "agent-builder", "builder": True}]
        assert sum("held by another session" in line for line in log_lines) == 1  # once per squatter, not per id

        squatter.execute("SELECT pg_advisory_unlock_all()")  # the squatter lets go: nothing changes
        assert rescuer(rescue_conn, queries).sweep() == []
        assert builder_status(admin, automation_id) == "building"
        store.finish(claim, Move(S.BUILDING, S.AWAITING_APPROVAL, Outcome.SUCCEEDED))
    assert builder_status(admin, automation_id) == "awaiting_approval"


def test_a_squatter_holding_a_long_run_of_ids_delays_claims_but_never_breaks_them(admin, builder_login, squatter, queries,
                                                                                   log_lines) -> None:
    automation_id = insert_idea(admin)
    squat(squatter, next_build_ids(admin, CLAIM_LOCK_TRIES + 2))
    with connect(builder_login.url, actor="builder:worker") as worker:
        store = Store(worker, queries, "w")
        assert store.claim_next_build() is None
        assert any(f"{CLAIM_LOCK_TRIES} claims in a row were undone" in line for line in log_lines)
        assert builder_status(admin, automation_id) == "not_started"
        assert admin.execute("SELECT count(*) AS n FROM agent_builds").fetchone() == {"n": 0}
        claim = store.claim_next_build()  # the sequence has moved past most of the run
        assert claim is not None and claim.automation.id == automation_id


@pytest.mark.parametrize(("died_in", "rescued_to"), [("queued", "not_started"), ("building", "failed")])
def test_squatting_a_dead_attempt_s_lock_does_not_wedge_it(admin, builder_login, squatter, queries, log_lines,
                                                           died_in: str, rescued_to: str) -> None:
    automation_id = insert_idea(admin, name="Nightly report")
    with connect(builder_login.url, actor="builder:doomed") as doomed:
        store = Store(doomed, queries, "doomed")
        claim = store.claim_next_build()
        assert claim is not None
        if died_in == "building":
            store.move(claim, "queued", "building", step="generate")
    # The worker's connection is gone, and with it its lock; a squatter takes the key.
    squat(squatter, [claim.build_id], within_s=10)
    assert holders(admin, claim.build_id)[0]["builder"] is False

    with connect(builder_login.url, actor="builder-rescuer") as rescue_conn:
        sweeper = rescuer(rescue_conn, queries)
        with psycopg.connect(admin.info.dsn) as busy:  # someone holds the row for a while: the rescue waits
            busy.execute("SELECT 1 FROM automation_ideas WHERE id = %s FOR UPDATE", (automation_id,))
            assert sweeper.sweep() == []
            assert sweeper.sweep() == []
        [rescued] = sweeper.sweep()
    assert (rescued.automation_id, rescued.build_id, rescued.new_status) == (automation_id, claim.build_id, rescued_to)
    assert builder_status(admin, automation_id) == rescued_to
    reports = [line for line in log_lines if f"the advisory lock of attempt {claim.build_id} is held by pid" in line]
    assert len(reports) == 1, reports  # reported once, not trusted
    assert "application 'squatter'" in reports[0] and "not by a builder session" in reports[0]
    outcome = admin.execute("SELECT outcome FROM agent_builds WHERE id = %s", (claim.build_id,)).fetchone()
    assert outcome == {"outcome": "crashed"}
    if rescued_to == "failed":
        result = admin.execute("SELECT test_level, status FROM agent_test_results WHERE build_id = %s", (claim.build_id,)).fetchall()
        assert result == [{"test_level": 0, "status": "fail"}]


def test_a_live_build_is_alive_whoever_asks(admin, builder_login, queries) -> None:
    """The rescuer of another listener (another builder login) sees the live lock and leaves it."""
    automation_id = insert_idea(admin)
    with connect(builder_login.url, actor="builder:worker") as worker, connect(admin.info.dsn, actor="builder-rescuer") as other:
        store = Store(worker, queries, "w")
        claim = store.claim_next_build()
        assert claim is not None
        assert rescuer(other, queries).sweep() == []
        assert builder_status(admin, automation_id) == "queued"
