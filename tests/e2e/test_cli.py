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
    builder_conn.execute(queries["claim_next_build"], {"worker": "host-a:1"})
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
