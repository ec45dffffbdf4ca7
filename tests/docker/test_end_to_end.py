"""End to end: an idea inserted and marked ready with psql goes through the listener (a real
subprocess with the default pipeline), the fakes (Ollama, `claude` on PATH, ntfy) and real Docker
to awaiting_approval with four passing levels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.listeners import ListenerProcess, base_env, query, wait_until
from tests.fakes.ntfy_server import FakeNtfy
from tests.helpers import installation, remove_installation_objects

FAKES = Path(__file__).resolve().parents[1] / "fakes"

MODEL_ANSWER = """Here is the automation you asked for:

```python
import json
import os
import shutil
import urllib.request


def main() -> None:
    usage = shutil.disk_usage("/")
    report = {"total": usage.total, "used": usage.used, "free": usage.free}
    with open("/tmp/disk.json", "w") as handle:
        json.dump(report, handle)
    url = os.environ["SANDBOX_HTTP_URL"] + "/disk"
    request = urllib.request.Request(url, data=json.dumps(report).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        print("reported disk usage:", answer.status)


if __name__ == "__main__":
    main()
```

It writes the report and posts it.
"""

ACCEPTANCE = {"checks": [
    {"kind": "file_exists", "path": "/tmp/disk.json", "min_bytes": 10},
    {"kind": "http_request", "method": "POST", "path": "/disk"},
]}


def pipeline_env(db_url: str, fake_ollama, ntfy_url: str, base_image: str, tmp_path: Path) -> dict[str, str]:
    """The real default pipeline, with `claude` on PATH being the fake."""
    env = base_env(
        db_url,
        BUILD_HANDLER="listener.build.pipeline:build",
        OLLAMA_URL=fake_ollama.url,
        NTFY_URL=ntfy_url,
        PATH=f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}",
        # the overseer's environment is reduced to PATH, HOME, ANTHROPIC_*/CLAUDE_*: the fake's settings
        # go through env(1) on the command line, its login is the API key
        CLAUDE_CMD=f"env FAKE_CLAUDE_MODE=json-pass FAKE_CLAUDE_LOG={tmp_path / 'claude.jsonl'} claude -p",
        ANTHROPIC_API_KEY="sk-ant-test-key",
        SANDBOX_BASE_IMAGE=base_image,
        SANDBOX_TIMEOUT_S="60",  # the default SANDBOX_NETWORK: this test database's own internal network
        VAULT_APPROLE_DIR=str(tmp_path / "approle"),
        AGENT_BUILDER_HOME=str(tmp_path / "home"),
    )
    return env


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql (the PostgreSQL client) is not installed")
def test_an_idea_marked_ready_with_psql_ends_awaiting_approval(db_url, docker_client, base_image, fake_ollama,
                                                               tmp_path: Path) -> None:
    fake_ollama.response_text = MODEL_ANSWER
    claude_log = tmp_path / "claude.jsonl"
    with FakeNtfy() as ntfy:
        env = pipeline_env(db_url, fake_ollama, ntfy.url, base_image, tmp_path)
        listener = ListenerProcess(env, tmp_path / "listener.log")
        try:
            listener.wait_listening()
            sql = ("INSERT INTO automation_ideas (name, type, status, priority, task_description, infrastructure_requirement, acceptance_check)"
                   " VALUES ('Disk report', 'script', 'idea', 1, 'Write the disk usage of / as JSON to /tmp/disk.json"
                   " and POST it to $SANDBOX_HTTP_URL/disk', 'none', '" + json.dumps(ACCEPTANCE) + "'::jsonb) RETURNING id;")
            inserted = subprocess.run(["psql", db_url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql],
                                      capture_output=True, text=True, check=True)
            automation_id = int(inserted.stdout.split()[0])
            subprocess.run(["psql", db_url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c",
                            f"UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = {automation_id}"],
                           capture_output=True, text=True, check=True)

            wait_until(lambda: query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                                     (automation_id,))[0]["builder_status"] in ("awaiting_approval", "failed"),
                       180, "the build", listener)
            results = query(db_url, "SELECT test_level, status, execution_log FROM agent_test_results"
                                    " WHERE automation_id = %s ORDER BY id", (automation_id,))
            assert [(r["test_level"], r["status"]) for r in results] == [(1, "pass"), (2, "pass"), (3, "pass"), (4, "pass")], results
            assert query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                         (automation_id,))[0]["builder_status"] == "awaiting_approval"
            calls = [json.loads(line) for line in claude_log.read_text().splitlines()]
            reviews = calls  # the fake logs reviews only: --version, --help and auth status are free
            assert len(reviews) == 1 and "shutil.disk_usage" in reviews[0]["stdin"]
            build = query(db_url, "SELECT image_id, overseer_verdict, overseer_cost_usd FROM agent_builds WHERE automation_id = %s",
                          (automation_id,))[0]
            assert build["overseer_verdict"] == "PASS" and build["image_id"].startswith("sha256:")
            assert docker_client.images.get(build["image_id"])
            wait_until(lambda: any("READY — Disk report" in m.get("message", "") for m in ntfy.published), 10,
                       "the READY notification", listener)
        finally:
            assert listener.stop() == 0
    remove_installation_objects(docker_client, installation(db_url))


def test_a_listener_killed_during_the_sandbox_run_leaves_no_container(db_url, operator, docker_client, base_image,
                                                                      fake_ollama, tmp_path: Path) -> None:
    from listener.sandbox.naming import installation_filter
    from tests.helpers import insert_idea

    fake_ollama.response_text = "=== FILE: script.py ===\nimport time\nprint('working', flush=True)\ntime.sleep(300)\n"

    def sandbox_runs(automation_id: int) -> list:
        return docker_client.containers.list(ignore_removed=True, filters=installation_filter(installation(db_url), automation=automation_id,
                                                                         role="sandbox-run"))

    with FakeNtfy() as ntfy:
        env = pipeline_env(db_url, fake_ollama, ntfy.url, base_image, tmp_path)
        doomed = ListenerProcess(env, tmp_path / "doomed.log")
        try:
            doomed.wait_listening()
            automation_id = insert_idea(operator, name="Slow job", status="idea")
            operator.execute("UPDATE automation_ideas SET acceptance_check = %s::jsonb, status = 'ready_to_build'"
                             " WHERE id = %s", (json.dumps({"checks": [{"kind": "file_exists", "path": "/tmp/x"}]}),
                                                automation_id))
            wait_until(lambda: query(db_url, "SELECT step FROM agent_builds WHERE automation_id = %s",
                                     (automation_id,)) == [{"step": "level3"}] and sandbox_runs(automation_id),
                       90, "the smoke run", doomed)
        finally:
            doomed.kill()

        survivor = ListenerProcess(env, tmp_path / "survivor.log")
        try:
            wait_until(lambda: query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                                     (automation_id,))[0]["builder_status"] == "failed", 20, "the rescue", survivor)
            wait_until(lambda: not sandbox_runs(automation_id), 20, "the leftover sandbox container to go", survivor)
        finally:
            assert survivor.stop() == 0
    remove_installation_objects(docker_client, installation(db_url))


def test_a_listener_killed_during_a_run_that_never_ends_leaves_no_container_with_no_listener_alive(
        db_url, operator, docker_client, base_image, fake_ollama, tmp_path: Path) -> None:
    from listener.sandbox.naming import installation_filter
    from tests.helpers import insert_idea

    timeout_s, hold_s = 8, 2
    fake_ollama.response_text = "=== FILE: script.py ===\nimport time\nprint('working', flush=True)\nwhile True:\n    time.sleep(1)\n"
    identity = installation(db_url)

    def ours(role: str, collection: str = "containers") -> list:
        listing = getattr(docker_client, collection).list
        selected = installation_filter(identity, role=role)
        if collection == "containers":
            return listing(all=True, filters=selected, ignore_removed=True)
        return listing(filters=selected)

    with FakeNtfy() as ntfy:
        env = pipeline_env(db_url, fake_ollama, ntfy.url, base_image, tmp_path)
        env.update(SANDBOX_TIMEOUT_S=str(timeout_s), SANDBOX_HOLD_S=str(hold_s))
        doomed = ListenerProcess(env, tmp_path / "doomed.log")
        try:
            doomed.wait_listening()
            automation_id = insert_idea(operator, name="Endless job", status="idea")
            operator.execute("UPDATE automation_ideas SET acceptance_check = %s::jsonb, status = 'ready_to_build'"
                             " WHERE id = %s", (json.dumps({"checks": [{"kind": "file_exists", "path": "/tmp/x"}]}),
                                                automation_id))
            running = wait_until(lambda: [c for c in ours("sandbox-run") if c.status == "running"
                                          and c.labels.get("io.agent-builder.automation-id") == str(automation_id)
                                          and "level3" == query(db_url, "SELECT step FROM agent_builds WHERE automation_id = %s",
                                                                (automation_id,))[0]["step"]],
                                 120, "the smoke run", doomed)
        finally:
            doomed.kill()
        killed_at = time.monotonic()
        assert doomed.proc.poll() is not None  # nobody is left to remove anything
        container = running[0]
        wait_until(lambda: not docker_client.api.containers(all=True, filters={"id": container.id}),
                   timeout_s + hold_s + 15, "the sandbox container to end by itself")
        assert time.monotonic() - killed_at < timeout_s + hold_s + 15
        # Its tmpfs volumes go with it (the engine removes them just after the container).
        wait_until(lambda: not ours("sandbox-scratch", "volumes"), 10, "the sandbox's tmpfs volumes to go")
    remove_installation_objects(docker_client, identity)


AGENT_ANSWER = """=== FILE: agent.sh ===
#!/usr/bin/env bash
set -euo pipefail
if [[ "${1:-}" == "--dry-run" ]]; then
  echo "dry run: would ask claude for a summary of the disk usage"
  exit 0
fi
df -h / | claude -p "Summarise this disk usage in one sentence" > /tmp/summary.txt
echo "wrote /tmp/summary.txt"
"""
AGENT_REPLY = "The root filesystem is 42 % full."
AGENT_ACCEPTANCE = {"checks": [
    {"kind": "claude_called", "min_calls": 1, "args_include": ["-p"], "reply": AGENT_REPLY},
    {"kind": "file_exists", "path": "/tmp/summary.txt", "min_bytes": len(AGENT_REPLY)},
]}


def test_a_claude_agent_passes_all_four_levels_against_the_stand_in(db_url, docker_client, base_image, fake_ollama,
                                                                   tmp_path: Path) -> None:
    """The whole pipeline in a listener process: Level 1, the one (fake) overseer review on the host,
    then the agent run for real in the sandbox, where `claude` is the builder's recording stand-in."""
    fake_ollama.response_text = AGENT_ANSWER
    claude_log = tmp_path / "claude.jsonl"
    with FakeNtfy() as ntfy:
        env = pipeline_env(db_url, fake_ollama, ntfy.url, base_image, tmp_path)
        env["SANDBOX_AGENT_IMAGE"] = base_image  # no claude CLI in it at all: the stand-in is the builder's
        listener = ListenerProcess(env, tmp_path / "listener.log")
        try:
            listener.wait_listening()
            automation_id = query(db_url, "INSERT INTO automation_ideas (name, type, status, priority, task_description,"
                                          " infrastructure_requirement, acceptance_check) VALUES ('Disk summary',"
                                          " 'claude_agent', 'ready_to_build', 1, 'Ask claude to summarise the disk usage"
                                          " of / and write the answer to /tmp/summary.txt', 'none', %s::jsonb) RETURNING id",
                                  (json.dumps(AGENT_ACCEPTANCE),))[0]["id"]
            wait_until(lambda: query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                                     (automation_id,))[0]["builder_status"] in ("awaiting_approval", "failed"),
                       180, "the build", listener)
            results = query(db_url, "SELECT test_level, status, execution_log FROM agent_test_results"
                                    " WHERE automation_id = %s ORDER BY id", (automation_id,))
            assert [(r["test_level"], r["status"]) for r in results] == [(1, "pass"), (2, "pass"), (3, "pass"), (4, "pass")], results
            level_4 = results[3]["execution_log"]
            assert "PASS check 1 claude_called: 1 call(s) of the claude stand-in with -p" in level_4
            assert "argv ['-p', 'Summarise this disk usage in one sentence']" in level_4
            assert "PASS check 2 file_exists: /tmp/summary.txt exists" in level_4
            reviews = [json.loads(line) for line in claude_log.read_text().splitlines()]
            assert len(reviews) == 1  # the host's claude reviewed once; the sandbox never reached it
        finally:
            assert listener.stop() == 0
    remove_installation_objects(docker_client, installation(db_url))
