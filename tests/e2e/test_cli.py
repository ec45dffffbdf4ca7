"""The operator's commands: approve, reject, retry, status, show (real subprocesses, real database)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.listeners import base_env, query, run_cli
from tests.helpers import builder_status, force_status, insert_idea


@pytest.mark.parametrize(("command", "start", "end"), [
    ("approve", "awaiting_approval", "approved"),
    ("reject", "awaiting_approval", "rejected"),
    ("retry", "failed", "not_started"),
    ("retry", "rejected", "not_started"),
])
def test_operator_commands_make_the_allowed_change(db_url, operator, command, start, end) -> None:
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, start)
    done = run_cli(base_env(db_url), command, str(automation_id))
    assert done.returncode == 0, done.stderr
    assert builder_status(operator, automation_id) == end
    history = query(db_url, "SELECT actor FROM builder_status_history WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
                    (automation_id,))
    assert history[0]["actor"].startswith("cli:")


@pytest.mark.parametrize(("command", "start"), [("approve", "building"), ("reject", "deployed"), ("retry", "queued")])
def test_operator_commands_refuse_with_the_state_machine_message(db_url, operator, command, start) -> None:
    automation_id = insert_idea(operator)
    force_status(operator, automation_id, start)
    done = run_cli(base_env(db_url), command, str(automation_id))
    assert done.returncode == 3
    assert f"cannot change from '{start}'" in done.stderr
    assert builder_status(operator, automation_id) == start


def test_unknown_id_exits_3(db_url) -> None:
    for command in ("approve", "show"):
        done = run_cli(base_env(db_url), command, "424242")
        assert done.returncode == 3 and "no automation with id 424242" in done.stderr


def test_status_and_show_on_a_populated_database(db_url, operator, builder_conn, queries) -> None:
    built = insert_idea(operator, name="Disk report")
    builder_conn.execute(queries["claim"], {"kind": "build", "automation_id": None, "worker": "host-a:1"})
    failed = insert_idea(operator, name="Cert expiry")
    force_status(operator, failed, "failed")
    operator.execute("INSERT INTO agent_builds (automation_id, worker, step, finished_at, outcome, error)"
                     " VALUES (%s, 'host-b:2', 'overseer', now(), 'failed', 'Overseer rejected: hardcoded password')", (failed,))
    operator.execute("INSERT INTO agent_test_results (automation_id, test_level, status, execution_log)"
                     " VALUES (%s, 0, 'fail', 'Overseer rejected: hardcoded password')", (failed,))

    status = run_cli(base_env(db_url), "status")
    assert status.returncode == 0, status.stderr
    assert "queued" in status.stdout and "failed" in status.stdout
    assert f"automation {built} 'Disk report': build at step claimed" in status.stdout
    assert "Cert expiry" in status.stdout and "hardcoded password" in status.stdout

    as_json = json.loads(run_cli(base_env(db_url), "status", "--json").stdout)
    assert as_json["counts"] == {"failed": 1, "queued": 1}
    assert [b["automation_id"] for b in as_json["in_flight"]] == [built]

    show = run_cli(base_env(db_url), "show", str(failed))
    assert show.returncode == 0
    assert "not_started -> failed" in show.stdout and "level 0 FAIL" in show.stdout
    shown = json.loads(run_cli(base_env(db_url), "show", str(failed), "--json").stdout)
    assert shown["automation"]["name"] == "Cert expiry"
    assert [r["test_level"] for r in shown["results"]] == [0]
    assert shown["history"][-1]["new_status"] == "failed"


def test_show_and_status_redact_and_escape_what_older_rows_hold(db_url, operator, approle_dir) -> None:
    """Rows written before redaction (or by hand) may hold a secret-id and terminal escapes: the
    commands print neither."""
    from tests.conftest import ROLE_ID, SECRET_ID

    automation_id = insert_idea(operator, name=f"Old \x1b[2J{ROLE_ID}")
    force_status(operator, automation_id, "failed")
    operator.execute("INSERT INTO agent_builds (automation_id, worker, step, finished_at, outcome, error, overseer_verdict,"
                     " overseer_reason) VALUES (%s, 'w', 'level3', now(), 'failed', %s, 'FAIL', %s)",
                     (automation_id, f"Level 3 failed: {SECRET_ID}", f"it prints {SECRET_ID}\u202e"))
    operator.execute("INSERT INTO agent_test_results (automation_id, test_level, status, execution_log)"
                     " VALUES (%s, 3, 'fail', %s)", (automation_id, f"\x1b[31mred\x1b[0m {SECRET_ID} {ROLE_ID}"))
    env = base_env(db_url, VAULT_APPROLE_DIR=str(approle_dir))
    outputs = [run_cli(env, *args) for args in (("status",), ("status", "--json"), ("show", str(automation_id)),
                                                ("show", str(automation_id), "--json"))]
    for done in outputs:
        assert done.returncode == 0, done.stderr
        assert SECRET_ID not in done.stdout and ROLE_ID not in done.stdout, done.stdout
        assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
        assert "[redacted]" in done.stdout
    show = outputs[2].stdout
    assert "level 3 FAIL" in show and "\\x1b[31mred\\x1b[0m [redacted] [redacted]" in show
    assert "Old \\x1b[2J[redacted]" in show and "it prints [redacted]\\u202e" in show
    assert json.loads(outputs[3].stdout)["results"][0]["execution_log"] == "\\x1b[31mred\\x1b[0m [redacted] [redacted]"
