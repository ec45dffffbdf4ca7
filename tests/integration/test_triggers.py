"""NOTIFY triggers: exactly when a row becomes buildable or decided, never on unrelated updates."""

from __future__ import annotations

from typing import Any, Iterator

import psycopg
import pytest

from tests.helpers import force_status, insert_idea

CHANNELS = ("agent_builder_ready", "agent_builder_approval")


@pytest.fixture
def inbox(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for channel in CHANNELS:
            conn.execute(f"LISTEN {channel}")
        yield conn


def drain(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in conn.notifies(timeout=0.3)]


def test_insert_of_a_ready_row_notifies_with_just_the_id(operator, inbox) -> None:
    automation_id = insert_idea(operator, type="claude_agent")
    assert drain(inbox) == [("agent_builder_ready", str(automation_id))]


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "n8n_workflow"},
        {"type": None},
        {"status": "idea"},
    ],
)
def test_insert_of_an_unbuildable_row_is_silent(operator, inbox, fields: dict[str, Any]) -> None:
    insert_idea(operator, **fields)
    assert drain(inbox) == []


def test_becoming_ready_notifies_once(operator, inbox) -> None:
    automation_id = insert_idea(operator, status="idea")
    operator.execute("UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = %s", (automation_id,))
    assert drain(inbox) == [("agent_builder_ready", str(automation_id))]
    # Already ready: touching it again, or any other column, says nothing.
    operator.execute("UPDATE automation_ideas SET status = 'ready_to_build', priority = 2 WHERE id = %s", (automation_id,))
    operator.execute("UPDATE automation_ideas SET task_description = 'changed' WHERE id = %s", (automation_id,))
    assert drain(inbox) == []


def test_type_change_to_buildable_notifies(operator, inbox) -> None:
    automation_id = insert_idea(operator, type="n8n_workflow")
    operator.execute("UPDATE automation_ideas SET type = 'script' WHERE id = %s", (automation_id,))
    assert drain(inbox) == [("agent_builder_ready", str(automation_id))]


def test_retry_after_failure_notifies(operator, inbox) -> None:
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, "failed")
    drain(inbox)
    operator.execute("UPDATE automation_ideas SET builder_status = 'not_started' WHERE id = %s", (automation_id,))
    assert drain(inbox) == [("agent_builder_ready", str(automation_id))]


def test_notification_is_sent_on_commit_only(operator, inbox) -> None:
    with pytest.raises(RuntimeError):
        with operator.transaction():
            insert_idea(operator)
            raise RuntimeError("roll back")
    assert drain(inbox) == []


@pytest.mark.parametrize("decision", ["approved", "rejected"])
def test_decision_notifies_the_approval_channel(operator, inbox, decision: str) -> None:
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, "awaiting_approval")
    drain(inbox)
    operator.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (decision, automation_id))
    assert drain(inbox) == [("agent_builder_approval", str(automation_id))]
    operator.execute("UPDATE automation_ideas SET name = 'renamed' WHERE id = %s", (automation_id,))
    assert drain(inbox) == []


def test_builder_moves_do_not_notify(operator, builder_conn, inbox) -> None:
    automation_id = insert_idea(operator)
    drain(inbox)
    for status in ("queued", "building", "awaiting_approval"):
        builder_conn.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (status, automation_id))
    assert drain(inbox) == []
