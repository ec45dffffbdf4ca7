"""The roles as people and the listener use them: the real psql binary as an operator, an admin
and a superuser; the operator commands through an operator session; the listener as a
non-superuser builder login, from an idea to a deployment approved by an operator."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.listeners import Listeners, base_env, query, run_cli, wait_until
from tests.fakes.ntfy_server import FakeNtfy
from tests.helpers import builder_status, force_status, insert_idea

needs_psql = pytest.mark.skipif(shutil.which("psql") is None, reason="psql (the PostgreSQL client) is not installed")


def psql(url: str, script: str) -> subprocess.CompletedProcess[str]:
    """The real psql, reading a script from stdin as a person's session would."""
    return subprocess.run(["psql", url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-f", "-"], input=script,
                          capture_output=True, text=True, timeout=60)


def last_change(db_url: str, automation_id: int) -> dict:
    return query(db_url, "SELECT old_status, new_status, db_user, actor, override FROM builder_status_history"
                         " WHERE automation_id = %s ORDER BY id DESC LIMIT 1", (automation_id,))[0]


@needs_psql
@pytest.mark.parametrize(("start", "decision"), [("awaiting_approval", "approved"), ("awaiting_approval", "rejected"),
                                                 ("failed", "not_started"), ("rejected", "not_started")])
def test_the_four_operator_moves_from_psql(db_url, operator, logins, start: str, decision: str) -> None:
    person = logins.make("operator", label="alice")
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, start)
    done = psql(person.url, f"UPDATE automation_ideas SET builder_status = '{decision}' WHERE id = {automation_id};")
    assert done.returncode == 0, done.stderr
    assert builder_status(operator, automation_id) == decision
    assert last_change(db_url, automation_id) == {"old_status": start, "new_status": decision, "db_user": person.name,
                                                  "actor": None, "override": False}


@needs_psql
def test_an_operator_adds_an_idea_and_marks_it_ready_from_psql(db_url, logins) -> None:
    person = logins.make("operator", label="alice")
    done = psql(person.url, "INSERT INTO automation_ideas (name, type, status, priority, task_description, acceptance_check)"
                            " VALUES ('Disk report', 'script', 'idea', 2, 'Write the disk usage to /tmp/disk.json',"
                            " '{\"checks\": [{\"kind\": \"file_exists\", \"path\": \"/tmp/disk.json\"}]}') RETURNING id;")
    assert done.returncode == 0, done.stderr
    automation_id = int(done.stdout.split()[0])
    done = psql(person.url, f"UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = {automation_id};")
    assert done.returncode == 0, done.stderr
    row = query(db_url, "SELECT status, builder_status FROM automation_ideas WHERE id = %s", (automation_id,))[0]
    assert row == {"status": "ready_to_build", "builder_status": "not_started"}
    assert last_change(db_url, automation_id)["db_user"] == person.name


@needs_psql
def test_an_operator_cannot_walk_a_row_with_psql_whatever_it_sets(db_url, operator, logins) -> None:
    person = logins.make("operator", label="mallory")
    automation_id = insert_idea(operator)
    done = psql(person.url, "SET agent_builder.actor = 'builder:x';"
                            f" UPDATE automation_ideas SET builder_status = 'queued' WHERE id = {automation_id};")
    assert done.returncode != 0
    assert "cannot change from 'not_started' to 'queued'" in done.stderr
    assert "only the builder changes it (members of agent_builder_builder" in done.stderr
    done = psql(person.url, f"BEGIN; SET LOCAL agent_builder.override = 'on';"
                            f" UPDATE automation_ideas SET builder_status = 'deployed' WHERE id = {automation_id}; COMMIT;")
    assert done.returncode != 0 and "the repair override is for admins only" in done.stderr
    assert builder_status(operator, automation_id) == "not_started"


@needs_psql
def test_the_admin_override_from_psql_is_recorded_as_such(db_url, operator, logins) -> None:
    repairer = logins.make("admin", label="root_cause")
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, "building")
    done = psql(repairer.url, "BEGIN;\nSET LOCAL agent_builder.override = 'on';\n"
                              f"UPDATE automation_ideas SET builder_status = 'failed' WHERE id = {automation_id};\nCOMMIT;\n")
    assert done.returncode == 0, done.stderr
    assert last_change(db_url, automation_id) == {"old_status": "building", "new_status": "failed", "db_user": repairer.name,
                                                  "actor": None, "override": True}


@needs_psql
def test_a_superuser_approves_with_one_line_of_psql(db_url, operator) -> None:
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, "awaiting_approval")
    done = psql(db_url, f"UPDATE automation_ideas SET builder_status = 'approved' WHERE id = {automation_id};")
    assert done.returncode == 0, done.stderr
    assert builder_status(operator, automation_id) == "approved"
    assert last_change(db_url, automation_id)["db_user"] == query(db_url, "SELECT session_user AS u")[0]["u"]


# -- the operator commands act through an operator session ---------------------------------------------

def test_operator_commands_need_an_operator_session(db_url, operator, logins) -> None:
    listener_login = logins.make("builder", label="listener")
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, "awaiting_approval")
    done = run_cli(base_env(listener_login.url), "approve", str(automation_id))
    assert done.returncode == 1
    assert f"DATABASE_URL connects as {listener_login.name}, which is not an operator" in done.stderr
    assert "Set OPERATOR_DATABASE_URL" in done.stderr
    assert builder_status(operator, automation_id) == "awaiting_approval"

    not_an_operator = logins.make(label="nobody")
    done = run_cli(base_env(listener_login.url, OPERATOR_DATABASE_URL=not_an_operator.url), "approve", str(automation_id))
    assert done.returncode == 1
    assert f"OPERATOR_DATABASE_URL connects as {not_an_operator.name}, which is not a member of agent_builder_operator" in done.stderr

    person = logins.make("operator", label="alice")
    for command, status in (("approve", "approved"),):
        done = run_cli(base_env(listener_login.url, OPERATOR_DATABASE_URL=person.url), command, str(automation_id))
        assert done.returncode == 0, done.stderr
        assert builder_status(operator, automation_id) == status
    change = last_change(db_url, automation_id)
    assert change["db_user"] == person.name and change["actor"].startswith("cli:")


def test_retry_as_a_superuser_is_still_only_an_operator_s_move(db_url, operator) -> None:
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, "building")
    done = run_cli(base_env(db_url), "retry", str(automation_id))
    assert done.returncode == 3
    assert "cannot change from 'building' to 'not_started': retry is an operator's move, allowed only from 'failed' or 'rejected'" \
        in done.stderr
    assert builder_status(operator, automation_id) == "building"


# -- check, migrate -----------------------------------------------------------------------------

def role_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.split()[1:2] == ["roles"])


def test_check_says_what_the_listener_s_login_is(db_url, logins) -> None:
    builder = logins.make("builder", label="listener")
    assert role_line(run_cli(base_env(builder.url), "check").stdout).startswith(
        f"ok   roles     the listener's login {builder.name} is a builder")
    line = role_line(run_cli(base_env(db_url), "check").stdout)
    assert line.startswith("WARN roles") and "is a superuser: it passes every role check" in line
    both = logins.make("builder", "operator", label="both")
    output = run_cli(base_env(both.url), "check").stdout
    assert role_line(output).startswith("WARN roles") and "is also a member of agent_builder_operator" in output
    assert f"REVOKE agent_builder_operator FROM {both.name};" in output
    nobody = logins.make(label="nobody")
    done = run_cli(base_env(nobody.url), "check")
    assert done.returncode == 1
    assert role_line(done.stdout).startswith("FAIL roles") and f"GRANT agent_builder_builder TO {nobody.name};" in done.stdout


def test_listen_refuses_a_login_that_is_not_a_builder(db_url, logins) -> None:
    nobody = logins.make(label="nobody")
    done = run_cli(base_env(nobody.url), "listen", timeout=60)
    assert done.returncode == 1
    assert "check roles FAILED" in done.stderr and f"GRANT agent_builder_builder TO {nobody.name};" in done.stderr


def test_migrate_prints_the_grants_that_finish_the_set_up(empty_db_url) -> None:
    done = run_cli(base_env(empty_db_url), "migrate")
    assert done.returncode == 0, done.stderr
    assert "applied: 0001_automation_ideas" in done.stdout and "0006_roles" in done.stdout
    for line in ("GRANT agent_builder_builder TO <listener login>;", "GRANT agent_builder_operator TO <operator login>;",
                 "GRANT agent_builder_admin TO <admin login>;"):
        assert line in done.stdout


# -- the whole loop with the listener as a builder login ------------------------------------------------

@needs_psql
def test_build_approve_deploy_with_the_listener_as_a_builder_login(db_url, operator, logins, tmp_path: Path) -> None:
    listener_login = logins.make("builder", label="listener")
    person = logins.make("operator", label="alice")
    with FakeNtfy() as ntfy:
        listeners = Listeners(listener_login.url, tmp_path, NTFY_URL=ntfy.url)
        try:
            listener = listeners.start()
            listener.wait_listening()
            done = psql(person.url, "INSERT INTO automation_ideas (name, type, status, task_description)"
                                    " VALUES ('Disk report', 'script', 'ready_to_build', 'spec') RETURNING id;")
            assert done.returncode == 0, done.stderr
            automation_id = int(done.stdout.split()[0])
            wait_until(lambda: builder_status(operator, automation_id) == "awaiting_approval", 15, "the build", listener)
            done = psql(person.url, f"UPDATE automation_ideas SET builder_status = 'approved' WHERE id = {automation_id};")
            assert done.returncode == 0, done.stderr
            wait_until(lambda: builder_status(operator, automation_id) == "deployed", 15, "the deployment", listener)
            assert listener.stop() == 0
        finally:
            listeners.close()
    assert f"check roles: the listener's login {listener_login.name} is a builder (not an operator" in listener.log()
    history = query(db_url, "SELECT new_status, db_user FROM builder_status_history WHERE automation_id = %s ORDER BY id",
                    (automation_id,))
    assert history == [
        {"new_status": "not_started", "db_user": person.name},
        {"new_status": "queued", "db_user": listener_login.name},
        {"new_status": "building", "db_user": listener_login.name},
        {"new_status": "awaiting_approval", "db_user": listener_login.name},
        {"new_status": "approved", "db_user": person.name},
        {"new_status": "deploying", "db_user": listener_login.name},
        {"new_status": "deployed", "db_user": listener_login.name},
    ]
    builds = query(db_url, "SELECT kind, built_by FROM agent_builds WHERE automation_id = %s ORDER BY id", (automation_id,))
    assert builds == [{"kind": "build", "built_by": listener_login.name}, {"kind": "deploy", "built_by": listener_login.name}]
