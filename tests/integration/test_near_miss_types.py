"""Ready rows whose type is almost one the builder builds: never claimed, so the rescuer fails them
with the reason and notifies once (a real PostgreSQL, a fake ntfy speaking its protocol)."""

from __future__ import annotations

from typing import Any

import pytest

from listener.clients import ntfy as notify
from listener.queue.store import Store
from listener.config import Settings
from listener.queue.db import connect
from listener.queue.rescue import Rescuer
from tests.fakes.ntfy_server import FakeNtfy
from tests.helpers import builder_status, insert_idea


@pytest.fixture
def sweep(db_url: str, queries, fake_ntfy: FakeNtfy):  # noqa: ANN001, ANN201
    settings = Settings.from_env({"DATABASE_URL": db_url, "NTFY_URL": fake_ntfy.url})

    def run() -> list[Any]:
        with connect(db_url, actor="builder-rescuer:test") as conn:
            return Rescuer(conn, queries, settings, notify.Notifier(fake_ntfy.url, "agent-builder")).sweep()

    return run


@pytest.mark.parametrize("near_miss", ["Script", "bash", " script", "claude-agent", "Claude_Agent", None])
def test_a_near_miss_type_is_failed_with_the_allowed_types_and_notified_once(
        operator, builder_conn, queries, sweep, fake_ntfy: FakeNtfy, near_miss: str | None) -> None:
    automation_id = insert_idea(operator, type=near_miss)
    assert Store(builder_conn, queries, "w").claim_build(automation_id) is None  # never claimed
    sweep()
    sweep()  # a second pass (or another listener) finds nothing more to tell
    assert builder_status(operator, automation_id) == "failed"
    [result] = operator.execute("SELECT test_level, status, execution_log FROM agent_test_results"
                                " WHERE automation_id = %s", (automation_id,)).fetchall()
    shown = "NULL" if near_miss is None else repr(near_miss)
    assert (result["test_level"], result["status"]) == (0, "fail")
    assert result["execution_log"].startswith(f"its type {shown} is not one the builder builds: the type must be "
                                              "exactly 'script' or 'claude_agent'")
    [message] = [m["message"] for m in fake_ntfy.published]
    assert message.startswith("[Agent Builder] ERROR — Disk usage report: its type") and "'claude_agent'" in message
    moves = operator.execute("SELECT old_status, new_status FROM builder_status_history WHERE automation_id = %s"
                             " AND old_status IS NOT NULL ORDER BY id", (automation_id,)).fetchall()
    assert [(m["old_status"], m["new_status"]) for m in moves] == [("not_started", "failed")]


@pytest.mark.parametrize(("kind", "status"), [("n8n_workflow", "ready_to_build"), ("Script", "idea"), ("script", "ready_to_build")])
def test_other_systems_types_unready_rows_and_our_own_are_left_alone(operator, sweep, fake_ntfy: FakeNtfy,
                                                                    kind: str, status: str) -> None:
    automation_id = insert_idea(operator, type=kind, status=status)
    sweep()
    assert builder_status(operator, automation_id) == "not_started"
    assert fake_ntfy.published == []


def test_the_failed_row_can_be_fixed_and_retried_by_the_operator(operator, builder_conn, queries, sweep) -> None:
    automation_id = insert_idea(operator, type="Script")
    sweep()
    operator.execute("UPDATE automation_ideas SET type = 'script', builder_status = 'not_started' WHERE id = %s",
                     (automation_id,))
    assert Store(builder_conn, queries, "w").claim_build(automation_id) is not None
