"""The zero-configuration default: `listen` with no DATABASE_URL runs an embedded PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.e2e.listeners import ListenerProcess, base_env, run_cli, wait_until

pytestmark = pytest.mark.slow


def embedded_env(home: Path) -> dict[str, str]:
    env = base_env("unused", AGENT_BUILDER_HOME=str(home))
    del env["DATABASE_URL"]
    env.pop("TEST_DATABASE_URL", None)
    return env


def test_listen_without_database_url_runs_the_whole_loop_and_keeps_its_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    listener = ListenerProcess(embedded_env(home), tmp_path / "first.log")
    listener.wait_for_log("mark it ready:", timeout=60)
    listener.wait_listening()
    url = re.search(r'psql "([^"]+)"', listener.log()).group(1)
    assert url.startswith("postgresql://operator@")  # the URI printed for psql is an operator's
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        automation_id = conn.execute("INSERT INTO automation_ideas (name, type, status, task_description)"
                                     " VALUES ('Disk report', 'script', 'idea', 'spec') RETURNING id").fetchone()["id"]
        conn.execute("UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = %s", (automation_id,))
        wait_until(lambda: conn.execute("SELECT builder_status FROM automation_ideas WHERE id = %s",
                                        (automation_id,)).fetchone()["builder_status"] == "awaiting_approval",
                   15, "the build", listener)
        # The listener runs as a builder login of its own, not as the server's superuser.
        sessions = conn.execute("SELECT DISTINCT a.usename, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid"
                                " WHERE a.application_name LIKE 'agent-builder%%'").fetchall()
        assert sessions == [{"usename": "listener", "rolsuper": False}]
        history = conn.execute("SELECT new_status, db_user FROM builder_status_history WHERE automation_id = %s ORDER BY id",
                               (automation_id,)).fetchall()
        assert history == [{"new_status": "not_started", "db_user": "operator"}, {"new_status": "queued", "db_user": "listener"},
                           {"new_status": "building", "db_user": "listener"},
                           {"new_status": "awaiting_approval", "db_user": "listener"}]
        assert conn.execute("SELECT pg_has_role('listener', 'agent_builder_operator', 'MEMBER') AS o").fetchone() == {"o": False}
    assert listener.stop() == 0
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3).close()  # stopped with the listener

    again = ListenerProcess(embedded_env(home), tmp_path / "second.log")
    again.wait_listening(timeout=60)
    url = re.search(r'psql "([^"]+)"', again.log()).group(1)
    with psycopg.connect(url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT name, builder_status FROM automation_ideas WHERE id = %s", (automation_id,)).fetchone()
    assert row == {"name": "Disk report", "builder_status": "awaiting_approval"}
    status = run_cli(embedded_env(home), "status")  # another command shares the running embedded server
    assert status.returncode == 0 and "awaiting_approval" in status.stdout
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:  # still up for the listener
        second = conn.execute("INSERT INTO automation_ideas (name, type, status, task_description)"
                              " VALUES ('Cert check', 'script', 'ready_to_build', 'spec') RETURNING id").fetchone()["id"]
        wait_until(lambda: conn.execute("SELECT builder_status FROM automation_ideas WHERE id = %s",
                                        (second,)).fetchone()["builder_status"] == "awaiting_approval",
                   15, "the second build", again)
        approved = run_cli(embedded_env(home), "approve", str(second))  # through the embedded operator login
        assert approved.returncode == 0, approved.stderr
        wait_until(lambda: conn.execute("SELECT builder_status FROM automation_ideas WHERE id = %s",
                                        (second,)).fetchone()["builder_status"] == "deployed", 15, "the deployment", again)
        change = conn.execute("SELECT db_user, actor FROM builder_status_history WHERE automation_id = %s AND new_status = 'approved'",
                              (second,)).fetchone()
        assert change["db_user"] == "operator" and change["actor"].startswith("cli:")
    assert again.stop() == 0


def test_check_without_database_url_checks_the_embedded_database(tmp_path: Path) -> None:
    done = run_cli(embedded_env(tmp_path / "home"), "check", timeout=120)
    assert "ok   database  PostgreSQL 18" in done.stdout, done.stdout + done.stderr
    assert "ok   roles     the listener's login listener is a builder" in done.stdout, done.stdout


def psql(url: str, sql: str) -> str:
    """One statement through the real psql client (the one the hint names), its output unaligned."""
    import shutil
    import subprocess

    if shutil.which("psql") is None:
        pytest.skip("psql (the PostgreSQL client) is not installed")
    done = subprocess.run(["psql", url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_first_run_hint_works_when_followed_twice(tmp_path: Path) -> None:
    """Each part of the printed hint (the CLI command, the INSERT … RETURNING id and the UPDATE with
    that id) builds a new idea every time it is followed, not just the first time."""
    import shlex

    from tests.fakes.http_fake import closed_port_url

    home = tmp_path / "home"
    ollama = closed_port_url()
    missing_image = "agent-builder-missing-first-run:latest"
    env = {**embedded_env(home), "OLLAMA_URL": ollama, "CLAUDE_CMD": "no-such-claude -p", "SANDBOX_BASE_IMAGE": missing_image}
    listener = ListenerProcess(env, tmp_path / "hint.log")
    try:
        listener.wait_for_log("follow the build:", timeout=60)
        listener.wait_listening()
        log = listener.log()
        # what a first build still lacks, each with its fix
        assert "missing for a first build (3 of 3;" in log, log
        assert f"ollama: cannot connect to Ollama at {ollama}" in log and f"fix: start Ollama at OLLAMA_URL={ollama}" in log
        assert "claude: 'no-such-claude' (CLAUDE_CMD) is not on PATH" in log and "fix: install the claude CLI" in log
        assert (f"docker: the sandbox base image SANDBOX_BASE_IMAGE={missing_image} is not on the Docker engine" in log
                or "docker: the Docker engine is unreachable" in log), log
        assert f"fix: docker pull {missing_image}, or set SANDBOX_BASE_IMAGE" in log or "fix: start Docker" in log
        url = re.search(r'psql "([^"]+)"', log).group(1)
        command = shlex.split(re.search(r"add an idea: +(.+)", log).group(1))
        insert = re.search(r"or in SQL: +(.+;)", log).group(1)
        update = re.search(r"mark it ready: +(.+;)", log).group(1)
        assert command[:2] == ["agent-builder", "add"]
        # the listener's own login (a builder, not a superuser) keeps its registry row
        registered = wait_until(lambda: json.loads(run_cli(embedded_env(home), "listeners", "--json").stdout)["listeners"],
                                15, "the listener's registry row", listener)
        assert [r["pid"] for r in registered] == [listener.pid]
        assert run_cli(embedded_env(home), "healthcheck").returncode == 0
        ids: list[int] = []
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            for _ in range(2):
                added = run_cli(embedded_env(home), *command[1:])
                assert added.returncode == 0, added.stderr
                ids.append(int(added.stdout))
                new_id = int(psql(url, insert))  # the printed SQL, as a person pastes it into psql
                assert psql(url, update.replace("WHERE id = ID", f"WHERE id = {new_id}")) == ""
                assert conn.execute("SELECT status FROM automation_ideas WHERE id = %s", (new_id,)).fetchone() == {
                    "status": "ready_to_build"}
                ids.append(new_id)
            assert len(set(ids)) == 4
            wait_until(lambda: [r["builder_status"] for r in conn.execute(
                "SELECT builder_status FROM automation_ideas WHERE id = ANY(%s)", (ids,)).fetchall()]
                == ["awaiting_approval"] * 4, 30, "four builds", listener)
    finally:
        assert listener.stop() == 0
