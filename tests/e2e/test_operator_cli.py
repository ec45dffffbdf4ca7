"""Operator experience II (issue 15): errors as one line, --version, add, list, retry --all-failed,
show --files, listeners and healthcheck. Real subprocesses of the CLI, real PostgreSQL."""

from __future__ import annotations

import json
import socket
from importlib.metadata import version
from pathlib import Path

import pytest
from psycopg.types.json import Jsonb

from tests.e2e.listeners import Listeners, base_env, query, run_cli, statuses, wait_until
from tests.helpers import builder_status, force_status, insert_idea

DB_COMMANDS = [("status",), ("show", "1"), ("list",), ("logs", "1"), ("prune", "--older-than", "30d"), ("list", "--status", "failed"), ("listeners",),
               ("healthcheck",), ("retry", "--all-failed"), ("retry", "1"), ("approve", "1"),
               ("add", "Disk report", "Write the disk usage of / to /tmp/disk.json")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_line(done, *needles: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_version_is_the_package_metadata() -> None:
    done = run_cli(base_env("postgresql://unused@127.0.0.1:1/x"), "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"agent-builder {version('agent-builder')}"


@pytest.mark.parametrize("args", DB_COMMANDS, ids=lambda a: " ".join(a))
def test_an_unmigrated_database_is_one_line_with_the_fix(empty_db_url, args) -> None:
    assert_one_line(run_cli(base_env(empty_db_url), *args), "no agent-builder schema", "fix: run: agent-builder migrate")


@pytest.mark.parametrize("args", DB_COMMANDS, ids=lambda a: " ".join(a))
def test_an_unreachable_database_is_one_line_with_the_fix(args) -> None:
    url = f"postgresql://nobody:hunter2secret@127.0.0.1:{free_port()}/nothing"
    done = run_cli(base_env(url), *args)
    assert_one_line(done, "cannot reach the database 127.0.0.1:", "fix: start PostgreSQL there, or set DATABASE_URL")
    assert "hunter2secret" not in done.stderr


def test_migrate_and_build_once_name_the_unreachable_database(empty_db_url) -> None:
    url = f"postgresql://nobody:hunter2secret@127.0.0.1:{free_port()}/nothing"
    assert_one_line(run_cli(base_env(url), "migrate"), "cannot reach the database 127.0.0.1:")
    for env, needle in ((base_env(url), "cannot reach the database"),
                        (base_env(empty_db_url), "fix: run: agent-builder migrate")):
        done = run_cli(env, "build-once")
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert needle in done.stderr.strip().splitlines()[-1]
        assert "hunter2secret" not in done.stderr


def test_add_with_every_option_then_ready(db_url, tmp_path: Path) -> None:
    spec = tmp_path / "spec.txt"
    spec.write_text("Write the disk usage of / as JSON to /tmp/disk.json\n")
    checks = tmp_path / "checks.json"
    checks.write_text(json.dumps({"checks": [{"kind": "file_exists", "path": "/tmp/disk.json"}]}))
    done = run_cli(base_env(db_url), "add", "Disk report", "--spec-file", str(spec), "--type", "script",
                   "--infrastructure", "docker", "--priority", "2", "--check-file", str(checks), "--ready")
    assert done.returncode == 0, done.stderr
    new_id = int(done.stdout.strip())
    row = query(db_url, "SELECT * FROM automation_ideas WHERE id = %s", (new_id,))[0]
    assert (row["name"], row["type"], row["status"], row["priority"], row["infrastructure_requirement"]) == (
        "Disk report", "script", "ready_to_build", 2, "docker")
    assert row["task_description"] == "Write the disk usage of / as JSON to /tmp/disk.json"
    assert row["acceptance_check"] == {"checks": [{"kind": "file_exists", "path": "/tmp/disk.json"}]}
    assert row["builder_status"] == "not_started"

    plain = run_cli(base_env(db_url), "add", "Cert expiry", "Warn 14 days before a certificate expires",
                    "--checks", '[{"kind": "http_request", "path": "/hook"}]')
    assert plain.returncode == 0, plain.stderr
    second = query(db_url, "SELECT * FROM automation_ideas WHERE id = %s", (int(plain.stdout),))[0]
    assert (second["status"], second["priority"], second["infrastructure_requirement"]) == ("idea", None, None)
    assert second["acceptance_check"] == {"checks": [{"kind": "http_request", "path": "/hook"}]}


def test_add_with_checks_as_flags_of_every_kind(db_url) -> None:
    done = run_cli(base_env(db_url), "add", "Every kind", "spec", "--type", "claude_agent",
                   "--check", "file_exists path=/tmp/disk.json min_bytes=2",
                   "--check", "sql_rows query=\"SELECT 1 FROM reports WHERE created_at > now() - interval '5 minutes'\" min_rows=1",
                   "--check", "http_status url=http://automation:8080/health status=200",
                   "--check", "http_request method=POST path=/hook",
                   "--check", "container_running after_s=5",
                   "--check", 'claude_called min_calls=1 args_include=["-p"] reply="The disk is 42 % full."')
    assert done.returncode == 0, done.stderr
    row = query(db_url, "SELECT acceptance_check FROM automation_ideas WHERE id = %s", (int(done.stdout),))[0]
    assert row["acceptance_check"] == {"checks": [
        {"kind": "file_exists", "path": "/tmp/disk.json", "min_bytes": 2},
        {"kind": "sql_rows", "query": "SELECT 1 FROM reports WHERE created_at > now() - interval '5 minutes'", "min_rows": 1},
        {"kind": "http_status", "url": "http://automation:8080/health", "status": 200},
        {"kind": "http_request", "method": "POST", "path": "/hook"},
        {"kind": "container_running", "after_s": 5},
        {"kind": "claude_called", "min_calls": 1, "args_include": ["-p"], "reply": "The disk is 42 % full."},
    ]}


@pytest.mark.parametrize(("args", "message"), [
    (("X", "spec", "--check", "min_bytes=2"), "start with the kind"),
    (("X", "spec", "--check", "file_exists /tmp/x"), "'/tmp/x' is not key=value"),
    (("X", "spec", "--check", "file_exists path=relative"), "absolute \"path\""),
    (("X", "spec", "--check", "file_exists path=/tmp/x", "--checks", "[]"), "give the acceptance checks one way"),
    (("  ", "spec"), "the name is empty"),
    (("X", "spec", "--type", "cron"), "--type 'cron' is not one the builder builds"),
    (("X",), "the spec (task_description) is empty"),
    (("X", "spec", "--spec-file", "/etc/hostname"), "not both"),
    (("X", "--spec-file", "/nonexistent/spec.txt"), "--spec-file '/nonexistent/spec.txt' cannot be read"),
    (("X", "spec", "--priority", "high"), "--priority 'high' is not a whole number"),
    (("X", "spec", "--checks", "{not json"), "--checks is not JSON"),
    (("X", "spec", "--checks", '{"checks": [{"kind": "vibes"}]}'), "unknown kind 'vibes'"),
    (("X", "spec", "--checks", '{"checks": []}'), "empty \"checks\" list"),
    (("X", "spec", "--checks", '{"checks": [{"kind": "file_exists", "path": "relative"}]}'), "absolute \"path\""),
])
def test_add_refuses_bad_input_and_writes_nothing(db_url, args, message) -> None:
    done = run_cli(base_env(db_url), "add", *args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert message in done.stderr and done.stderr.startswith("agent-builder add: ")
    assert done.stdout == ""
    assert query(db_url, "SELECT count(*) AS n FROM automation_ideas")[0]["n"] == 0


def test_list_by_status_and_retry_all_failed(db_url, operator) -> None:
    ok = insert_idea(operator, name="Fine", priority=None)
    failed = [insert_idea(operator, name=f"Broken {n}", priority=n) for n in (1, 2)]
    for automation_id in failed:
        force_status(operator, automation_id, "failed")

    everything = run_cli(base_env(db_url), "list")
    assert everything.returncode == 0, everything.stderr
    assert "Fine" in everything.stdout and "Broken 2" in everything.stdout and " none " in everything.stdout
    only_failed = json.loads(run_cli(base_env(db_url), "list", "--status", "failed", "--json").stdout)
    assert [r["id"] for r in only_failed["automations"]] == failed
    ready = json.loads(run_cli(base_env(db_url), "list", "--status", "ready_to_build", "--json").stdout)
    assert [r["id"] for r in ready["automations"]] == [ok, *failed]

    done = run_cli(base_env(db_url), "retry", "--all-failed")
    assert done.returncode == 0, done.stderr
    assert [builder_status(operator, i) for i in failed] == ["not_started", "not_started"]
    assert run_cli(base_env(db_url), "list", "--status", "failed").stdout.strip() == "(no automations)"
    again = run_cli(base_env(db_url), "retry", "--all-failed")
    assert again.returncode == 0 and "no failed automations" in again.stdout


def test_retry_of_several_ids_changes_the_allowed_and_exits_3_for_the_rest(db_url, operator) -> None:
    first, second, busy = (insert_idea(operator) for _ in range(3))
    force_status(operator, first, "failed")
    force_status(operator, second, "rejected")
    force_status(operator, busy, "building")
    done = run_cli(base_env(db_url), "retry", str(first), str(busy), str(second))
    assert done.returncode == 3
    assert "cannot change from 'building'" in done.stderr
    assert [builder_status(operator, i) for i in (first, second, busy)] == ["not_started", "not_started", "building"]
    assert run_cli(base_env(db_url), "retry").returncode == 2


def test_show_prints_none_for_no_priority_and_the_files_escaped(db_url, operator) -> None:
    automation_id = insert_idea(operator, name="Files", priority=None)
    force_status(operator, automation_id, "awaiting_approval")
    files = {"main.py": "print('hi')\nprint('\x1b[2Jgone')\n", "requirements.txt": "requests==2.32.3\n"}
    operator.execute("INSERT INTO agent_builds (automation_id, worker, step, finished_at, outcome, files)"
                     " VALUES (%s, 'w', 'level4', now(), 'succeeded', %s)", (automation_id, Jsonb(files)))
    show = run_cli(base_env(db_url), "show", str(automation_id))
    assert show.returncode == 0, show.stderr
    assert "priority none" in show.stdout and "priority None" not in show.stdout
    assert f"files: main.py, requirements.txt (agent-builder show {automation_id} --files prints them)" in show.stdout
    shown = run_cli(base_env(db_url), "show", str(automation_id), "--files")
    assert shown.returncode == 0, shown.stderr
    assert "--- main.py ---\nprint('hi')\nprint('\\x1b[2Jgone')" in shown.stdout
    assert "\x1b" not in shown.stdout
    assert "--- requirements.txt ---\nrequests==2.32.3" in shown.stdout


def live(db_url: str) -> list[dict]:
    done = run_cli(base_env(db_url), "listeners", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["listeners"]


@pytest.mark.slow
def test_listeners_and_healthcheck_follow_the_sessions(db_url, tmp_path: Path) -> None:
    listeners = Listeners(db_url, tmp_path)
    try:
        assert run_cli(base_env(db_url), "healthcheck").returncode == 1
        assert run_cli(base_env(db_url), "listeners").stdout.strip() == "no live listener"
        assert "live listeners:\n  (none: nothing is built until `agent-builder listen` runs)" in run_cli(
            base_env(db_url), "status").stdout
        first = listeners.start(BUILDER_CONCURRENCY="2")
        second = listeners.start()
        both = wait_until(lambda: len(rows := live(db_url)) == 2 and rows, 20, "two live listeners", first)
        assert {r["pid"] for r in both} == {first.pid, second.pid}
        by_pid = {r["pid"]: r for r in both}
        assert by_pid[first.pid]["concurrency"] == 2 and by_pid[second.pid]["concurrency"] == 1
        assert all(r["host"] == socket.gethostname() and r["version"] == version("agent-builder")
                   and r["in_flight"] == 0 for r in both)
        table = run_cli(base_env(db_url), "listeners").stdout
        assert str(first.pid) in table and str(second.pid) in table
        # exactly one leads (the rescuer and the sweeps), and every view says which
        leaders = wait_until(lambda: [r["pid"] for r in live(db_url) if r["leads"]], 20, "a leader", first)
        assert len(leaders) == 1 and leaders[0] in (first.pid, second.pid)
        table = run_cli(base_env(db_url), "listeners").stdout
        rows = {int(line.split()[1]): line.split()[5] for line in table.splitlines()[1:]}
        assert rows == {pid: "leader" if pid == leaders[0] else "follower" for pid in (first.pid, second.pid)}, table
        healthy = run_cli(base_env(db_url), "healthcheck")
        assert healthy.returncode == 0 and "healthy" in healthy.stdout
        status = run_cli(base_env(db_url), "status").stdout
        for listener, concurrency in ((first, 2), (second, 1)):
            role = ", leader" if listener.pid == leaders[0] else ""
            assert (f"{socket.gethostname()} pid {listener.pid} (version {version('agent-builder')}{role}): "
                    f"concurrency {concurrency}, 0 in flight") in status, status
        assert {r["pid"] for r in json.loads(run_cli(base_env(db_url), "status", "--json").stdout)["listeners"]} == {
            first.pid, second.pid}

        first.kill()  # SIGKILL: no clean-up, no heartbeat timeout to wait for
        wait_until(lambda: [r["pid"] for r in live(db_url)] == [second.pid], 15, "the killed listener gone", second)
        wait_until(lambda: [r["leads"] for r in live(db_url)] == [True], 15, "the survivor leading", second)
        assert run_cli(base_env(db_url), "healthcheck").returncode == 0
        status = run_cli(base_env(db_url), "status").stdout
        assert f"pid {second.pid} " in status and f"pid {first.pid} " not in status, status

        assert second.stop() == 0
        wait_until(lambda: live(db_url) == [], 10, "no live listener")
        unhealthy = run_cli(base_env(db_url), "healthcheck")
        assert unhealthy.returncode == 1 and "no live listener on host" in unhealthy.stderr
        assert query(db_url, "SELECT count(*) AS n FROM agent_builder_listeners")[0]["n"] <= 1  # the killed row
    finally:
        listeners.close()


@pytest.mark.slow
def test_the_registry_counts_builds_in_flight(db_url, operator, tmp_path: Path) -> None:
    listeners = Listeners(db_url, tmp_path, BUILD_HANDLER="tests.fakes.handlers:hold", FAKE_HOLD_DIR=str(tmp_path))
    try:
        listener = listeners.start()
        automation_id = insert_idea(operator)
        wait_until(lambda: statuses(db_url)[automation_id] == "building", 15, "the build to start", listener)
        wait_until(lambda: [r["in_flight"] for r in live(db_url)] == [1], 15, "one build in flight", listener)
    finally:
        listeners.close()


@pytest.mark.slow
def test_add_ready_then_logs_follow_until_awaiting_approval(db_url, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.e2e.listeners import REPO

    added = run_cli(base_env(db_url), "add", "Disk report", "Write the disk usage of / to /tmp/disk.json", "--ready")
    assert added.returncode == 0, added.stderr
    automation_id = int(added.stdout)
    follower = subprocess.Popen([sys.executable, "-m", "listener", "logs", str(automation_id), "--follow"], cwd=REPO,
                                env=base_env(db_url), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    listeners = Listeners(db_url, tmp_path)
    try:
        assert follower.poll() is None  # not_started and ready: it waits for the builder
        listener = listeners.start()
        out, err = follower.communicate(timeout=30)
        assert follower.returncode == 0, err
        assert statuses(db_url)[automation_id] == "awaiting_approval"
        lines = out.splitlines()
        at = {needle: next(i for i, line in enumerate(lines) if needle in line) for needle in (
            "status (new) -> not_started", "status not_started -> queued", "claimed by", "step generate",
            "status queued -> building", "succeeded", "status building -> awaiting_approval")}
        # the claim and its move to queued are one transaction: either may print first
        assert at["status (new) -> not_started"] < min(at["claimed by"], at["status not_started -> queued"])
        assert max(at["claimed by"], at["status not_started -> queued"]) < at["status queued -> building"]
        assert at["step generate"] < at["status building -> awaiting_approval"], out
        assert at["succeeded"] < at["status building -> awaiting_approval"], out
        assert f"build {query(db_url, 'SELECT max(id) AS id FROM agent_builds')[0]['id']} succeeded" in out
        assert lines[-1] == f"automation {automation_id} rests at builder_status awaiting_approval"
        assert listener.stop() == 0
    finally:
        if follower.poll() is None:
            follower.kill()
        listeners.close()


def seed_attempt(operator, automation_id: int, *, days_ago: float, outcome: str | None, verdict: str | None = None,
                 result: str | None = None) -> int:
    finished = None if outcome is None else f"now() - interval '{days_ago} days'"
    row = operator.execute(
        "INSERT INTO agent_builds (automation_id, worker, step, claimed_at, step_at, finished_at, outcome,"
        " overseer_verdict, overseer_reason, error)"
        f" VALUES (%s, 'w:1', 'level2', now() - interval '{days_ago + 0.01} days', now() - interval '{days_ago} days',"
        f" {finished or 'NULL'}, %s, %s, %s, %s) RETURNING id",
        (automation_id, outcome, verdict, "looks fine" if verdict else None,
         "Level 2 failed: exit 1" if outcome == "failed" else None)).fetchone()
    build_id = int(row["id"])
    if result is not None:
        operator.execute("INSERT INTO agent_test_results (automation_id, build_id, test_level, status, execution_log,"
                         f" created_at) VALUES (%s, %s, 2, %s, 'ran \x1b[31m', now() - interval '{days_ago} days')",
                         (automation_id, build_id, result))
    return build_id


def test_logs_prints_steps_results_and_verdicts_escaped(db_url, operator) -> None:
    automation_id = insert_idea(operator)
    build = seed_attempt(operator, automation_id, days_ago=1, outcome="failed", verdict="PASS", result="fail")
    done = run_cli(base_env(db_url), "logs", str(automation_id))
    assert done.returncode == 0, done.stderr
    assert f"build {build} claimed by w:1" in done.stdout
    assert f"build {build} step level2" in done.stdout
    assert f"build {build} overseer PASS: looks fine" in done.stdout
    assert "level 2 FAIL (0 ms, build" in done.stdout and "ran \\x1b[31m" in done.stdout and "\x1b" not in done.stdout
    assert f"build {build} failed: Level 2 failed: exit 1" in done.stdout
    missing = run_cli(base_env(db_url), "logs", "424242", "--follow")
    assert missing.returncode == 3 and "no automation with id 424242" in missing.stderr


def test_prune_removes_old_finished_attempts_and_their_results_and_keeps_history(db_url, operator) -> None:
    a, b, c = (insert_idea(operator) for _ in range(3))
    for automation_id in (a, b, c):
        force_status(operator, automation_id, "failed")
    old_a = [seed_attempt(operator, a, days_ago=d, outcome="failed", result="fail") for d in (40, 35)]
    recent_a = seed_attempt(operator, a, days_ago=1, outcome="failed", result="fail")
    only_b = seed_attempt(operator, b, days_ago=50, outcome="failed", result="fail")  # the latest of b: kept
    running_c = seed_attempt(operator, c, days_ago=60, outcome=None)
    history = query(db_url, "SELECT count(*) AS n FROM builder_status_history")[0]["n"]

    assert run_cli(base_env(db_url), "prune", "--older-than", "soon").returncode == 1
    done = run_cli(base_env(db_url), "prune", "--older-than", "30d")
    assert done.returncode == 0, done.stderr
    assert "pruned 2 finished attempt(s) and 2 test result(s) older than 30d" in done.stdout
    assert {r["id"] for r in query(db_url, "SELECT id FROM agent_builds")} == {recent_a, only_b, running_c}
    assert {r["build_id"] for r in query(db_url, "SELECT build_id FROM agent_test_results")} == {recent_a, only_b}
    assert not set(old_a) & {r["id"] for r in query(db_url, "SELECT id FROM agent_builds")}
    assert query(db_url, "SELECT count(*) AS n FROM builder_status_history")[0]["n"] == history
    again = run_cli(base_env(db_url), "prune", "--older-than", "30d")
    assert "pruned 0 finished attempt(s) and 0 test result(s)" in again.stdout
