"""The builder_status state machine, enforced by a trigger for every client, by the roles of the
session's login: operators (non-superuser members of agent_builder_operator) make the four moves,
the builder (a non-superuser member of agent_builder_builder) its own moves and never an
operator's, superusers (members of every role) both."""

from __future__ import annotations

import itertools

import psycopg
import pytest
from psycopg.rows import dict_row

from listener.queue.db import connect
from tests.helpers import builder_status, force_status, insert_idea


@pytest.fixture(scope="module")
def admin(module_db_url: str):
    """The test server's superuser: sets rows up (force_status uses the override)."""
    with psycopg.connect(module_db_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture(scope="module")
def operator(module_logins):
    """A plain SQL session of an operator's login, as psql or any DB client would have it."""
    login = module_logins.make("operator", label="op")
    with psycopg.connect(login.url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture(scope="module")
def builder_conn(module_logins):
    """The listener's kind of session: a builder login (not a superuser), with its actor name."""
    login = module_logins.make("builder", label="builder")
    with connect(login.url, actor="builder:test") as conn:
        yield conn


@pytest.fixture(scope="module")
def superuser_conn(module_db_url: str):
    with connect(module_db_url, actor="builder:superuser") as conn:
        yield conn

STATUSES = ["not_started", "queued", "building", "failed", "awaiting_approval",
            "approved", "deploying", "deployed", "rejected"]
OPERATOR_MOVES = {
    ("awaiting_approval", "approved"),
    ("awaiting_approval", "rejected"),
    ("failed", "not_started"),
    ("rejected", "not_started"),
}
BUILDER_MOVES = {
    ("not_started", "queued"), ("not_started", "failed"),  # a ready row of a near-miss type (0010)
    ("queued", "building"), ("queued", "not_started"), ("queued", "failed"),
    ("building", "awaiting_approval"), ("building", "failed"),
    ("approved", "deploying"), ("approved", "failed"),
    ("deploying", "deployed"), ("deploying", "failed"),
}
ALL_CHANGES = [(a, b) for a, b in itertools.product(STATUSES, STATUSES) if a != b]


@pytest.mark.parametrize(("old", "new"), ALL_CHANGES)
def test_operator_changes_from_a_plain_sql_session(admin, operator, old: str, new: str) -> None:
    automation_id = insert_idea(operator)
    force_status(admin, automation_id, old)
    if (old, new) in OPERATOR_MOVES:
        operator.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (new, automation_id))
        assert builder_status(operator, automation_id) == new
    else:
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            operator.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (new, automation_id))
        message = str(refused.value)
        assert f"cannot change from '{old}' to '{new}'" in message
        if old in ("awaiting_approval", "failed", "rejected"):
            assert f"From '{old}' an operator may set:" in message
        else:
            assert f"From '{old}' only the builder changes it" in message
        assert builder_status(operator, automation_id) == old


@pytest.mark.parametrize(("old", "new"), ALL_CHANGES)
def test_builder_changes(admin, operator, builder_conn, old: str, new: str) -> None:
    automation_id = insert_idea(operator)
    force_status(admin, automation_id, old)
    if (old, new) in BUILDER_MOVES:
        builder_conn.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (new, automation_id))
        assert builder_status(operator, automation_id) == new
    else:
        with pytest.raises(psycopg.errors.CheckViolation, match="cannot change from") as refused:
            builder_conn.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (new, automation_id))
        if (old, new) in OPERATOR_MOVES:  # no self-approval: the builder never approves, rejects or retries
            assert "is not a member of agent_builder_operator or agent_builder_admin" in str(refused.value)
            assert "the builder never approves, rejects or retries its own work" in str(refused.value)
        assert builder_status(operator, automation_id) == old


@pytest.mark.parametrize(("old", "new"), ALL_CHANGES)
def test_a_superuser_is_a_member_of_every_role(admin, superuser_conn, old: str, new: str) -> None:
    automation_id = insert_idea(admin)
    force_status(admin, automation_id, old)
    if (old, new) in BUILDER_MOVES | OPERATOR_MOVES:
        superuser_conn.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (new, automation_id))
        assert builder_status(admin, automation_id) == new
    else:
        with pytest.raises(psycopg.errors.CheckViolation, match="cannot change from"):
            superuser_conn.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (new, automation_id))


def test_refusal_message_names_the_allowed_moves_and_the_override(admin, operator) -> None:
    automation_id = insert_idea(operator)
    force_status(admin, automation_id, "awaiting_approval")
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        operator.execute("UPDATE automation_ideas SET builder_status = 'deployed' WHERE id = %s", (automation_id,))
    assert "From 'awaiting_approval' an operator may set: 'approved' or 'rejected'." in str(refused.value)
    assert "SET LOCAL agent_builder.override = 'on'" in refused.value.diag.message_hint


def test_unknown_and_null_values_are_refused_even_with_override(admin) -> None:
    automation_id = insert_idea(admin)
    for bad in ("done", None):
        with pytest.raises(psycopg.errors.CheckViolation, match="unknown builder_status"):
            with admin.transaction():
                admin.execute("SET LOCAL agent_builder.override = 'on'")
                admin.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (bad, automation_id))


def test_override_is_transaction_local_and_recorded(admin) -> None:
    automation_id = insert_idea(admin)
    force_status(admin, automation_id, "deployed")
    with pytest.raises(psycopg.errors.CheckViolation):
        admin.execute("UPDATE automation_ideas SET builder_status = 'building' WHERE id = %s", (automation_id,))
    row = admin.execute(
        "SELECT old_status, new_status, override FROM builder_status_history WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
        (automation_id,),
    ).fetchone()
    assert row == {"old_status": "not_started", "new_status": "deployed", "override": True}


def test_insert_must_start_not_started(operator) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="starts with builder_status 'not_started'"):
        operator.execute("INSERT INTO automation_ideas (name, type, status, builder_status) VALUES ('x', 'script', 'idea', 'deployed')")
    row = operator.execute(
        "INSERT INTO automation_ideas (name, type, status, builder_status) VALUES ('x', 'script', 'idea', NULL) RETURNING builder_status"
    ).fetchone()
    assert row == {"builder_status": "not_started"}


def test_operator_retry_clears_release_backoff(admin, operator) -> None:
    automation_id = insert_idea(operator)
    force_status(admin, automation_id, "failed")
    with admin.transaction():
        admin.execute("SET LOCAL agent_builder.override = 'on'")
        admin.execute("UPDATE automation_ideas SET builder_retry_at = now() + interval '1 day' WHERE id = %s", (automation_id,))
    operator.execute("UPDATE automation_ideas SET builder_status = 'not_started' WHERE id = %s", (automation_id,))
    row = operator.execute("SELECT builder_retry_at FROM automation_ideas WHERE id = %s", (automation_id,)).fetchone()
    assert row == {"builder_retry_at": None}


def test_history_records_every_change_with_the_database_user(admin, module_logins) -> None:
    login = module_logins.make("operator", label="histop")
    automation_id = insert_idea(admin)
    force_status(admin, automation_id, "awaiting_approval")
    with psycopg.connect(login.url, autocommit=True) as other:
        other.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
        # An unrelated update writes no history.
        other.execute("UPDATE automation_ideas SET priority = 7 WHERE id = %s", (automation_id,))
    rows = admin.execute(
        "SELECT old_status, new_status, db_user, override FROM builder_status_history"
        " WHERE automation_id = %s ORDER BY id", (automation_id,)
    ).fetchall()
    me = admin.execute("SELECT session_user AS u").fetchone()["u"]
    assert rows == [
        {"old_status": None, "new_status": "not_started", "db_user": me, "override": False},
        {"old_status": "not_started", "new_status": "awaiting_approval", "db_user": me, "override": True},
        {"old_status": "awaiting_approval", "new_status": "approved", "db_user": login.name, "override": False},
    ]


def test_history_records_the_builder_actor(admin, operator, builder_conn) -> None:
    automation_id = insert_idea(operator)
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'queued' WHERE id = %s", (automation_id,))
    row = admin.execute(
        "SELECT actor FROM builder_status_history WHERE automation_id = %s AND new_status = 'queued'", (automation_id,)
    ).fetchone()
    assert row == {"actor": "builder:test"}
