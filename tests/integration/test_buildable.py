"""One definition of "buildable" (migration 0011): the claim, /metrics' queue depth, the ready
trigger's NOTIFY and `build-once <id>`'s reason agree on every row, because they all ask
agent_builder_buildable() / agent_builder_unbuildable_reason()."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg

from listener.queue.db import connect
from listener.queue.store import Store
from tests.helpers import force_status, insert_idea

TYPES = ("script", "claude_agent", "Script", "n8n_workflow", None)
STATUSES = ("ready_to_build", "idea", "deployed")
BUILDER_STATUSES = ("not_started", "queued", "failed", "awaiting_approval")


def test_claim_metrics_trigger_and_reason_share_one_definition(db_url: str, admin, builder_conn, queries) -> None:
    rows: dict[int, tuple[Any, ...]] = {}
    with connect(db_url, actor="test-listen") as listening:
        listening.execute("LISTEN agent_builder_ready")
        for type_, status, builder_status in itertools.product(TYPES, STATUSES, BUILDER_STATUSES):
            automation_id = insert_idea(admin, type=type_, status=status)
            if builder_status != "not_started":
                force_status(admin, automation_id, builder_status)
            rows[automation_id] = (type_, status, builder_status)
        admin.execute("SELECT pg_notify('agent_builder_ready', 'end')")
        notified = set()
        for note in listening.notifies(timeout=30.0):
            if note.payload == "end":
                break
            notified.add(int(note.payload))

    store = Store(builder_conn, queries, worker="w")
    buildable = {i for i, (t, s, b) in rows.items() if t in ("script", "claude_agent") and s == "ready_to_build"
                 and b == "not_started"}
    assert len(buildable) == 2  # the grid has both a buildable script and a buildable claude_agent
    assert int(store.metrics_totals()["queue_buildable"]) == len(buildable)
    # Rows inserted buildable were notified at once (those since moved on too); the others never were.
    assert notified == {i for i, (t, s, _b) in rows.items() if t in ("script", "claude_agent") and s == "ready_to_build"}
    reasons = {i: store.claim_refusal(i) for i in rows}
    for automation_id, (type_, status, builder_status) in rows.items():
        reason = reasons[automation_id]
        if automation_id in buildable:
            assert reason == "another builder holds it right now"  # SQL sees nothing wrong with the row itself
        elif builder_status != "not_started":
            assert reason == f"another builder has it or it was built already (builder_status is '{builder_status}')"
        elif status != "ready_to_build":
            assert reason == f"it is not ready (status is '{status}', not 'ready_to_build')"
        else:
            shown = "NULL" if type_ is None else f"'{type_}'"
            assert reason == f"its type {shown} is not one the builder builds (script, claude_agent)"
    for automation_id in rows:
        claim = store.claim_build(automation_id)
        assert (claim is not None) == (automation_id in buildable), rows[automation_id]
    assert store.claim_refusal(10**9) == f"there is no automation with id {10**9}"


def test_a_row_that_becomes_buildable_is_notified_once(db_url: str, admin, operator) -> None:
    automation_id = insert_idea(admin, status="idea")
    with connect(db_url, actor="test-listen") as listening:
        listening.execute("LISTEN agent_builder_ready")
        operator.execute("UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = %s", (automation_id,))
        operator.execute("UPDATE automation_ideas SET priority = 3, status = 'ready_to_build' WHERE id = %s", (automation_id,))
        operator.execute("UPDATE automation_ideas SET type = 'claude_agent' WHERE id = %s", (automation_id,))
        operator.execute("SELECT pg_notify('agent_builder_ready', 'end')")
        payloads = [n.payload for n in listening.notifies(timeout=5.0, stop_after=2)]
    # Buildable → buildable again (priority, status unchanged, another built type) notifies nothing new.
    assert payloads == [str(automation_id), "end"]


def test_the_reason_is_refused_for_an_unknown_status_clearly(builder_conn, queries) -> None:
    """A status the state machine does not know is a reason in SQL too, never a silent 'buildable'."""
    row = builder_conn.execute("SELECT agent_builder_unbuildable_reason('script', 'ready_to_build', 'Not_Started') AS r"
                               ).fetchone()
    assert row["r"] == "another builder has it or it was built already (builder_status is 'Not_Started')"


def test_buildable_needs_no_search_path(db_url: str, admin) -> None:
    """The index's expression is evaluated with search_path = pg_catalog, pg_temp (PostgreSQL 17+,
    e.g. by REINDEX and ANALYZE): the functions name their own schema."""
    admin.execute("REINDEX INDEX automation_ideas_buildable_idx")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET search_path = pg_catalog, pg_temp")
        schema = admin.execute("SELECT current_schema() AS s").fetchone()["s"]
        assert conn.execute(f"SELECT {schema}.agent_builder_buildable('script', 'ready_to_build', 'not_started')"
                            ).fetchone() == (True,)


def test_the_built_types_are_the_same_in_python_and_sql(builder_conn) -> None:
    from listener.queue.records import AUTOMATION_TYPES

    for type_ in (*AUTOMATION_TYPES, "Script", " script", "claude-agent", "n8n_workflow", "", None):
        row = builder_conn.execute("SELECT agent_builder_built_type(%s) AS built", (type_,)).fetchone()
        assert row["built"] is (type_ in AUTOMATION_TYPES), type_
