"""Levels 2–4 in the real Docker sandbox, for both automation types, and hostile code contained.

Runs the listener's own attempt code (claim, AttemptContext, finish) on a real PostgreSQL, with
a real Docker engine; only Ollama (used when the checks are derived) is a fake HTTP server.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from psycopg.types.json import Jsonb

from listener.queue.store import Store
from listener.config import Settings
from listener.queue.context import AttemptContext
from listener.build.extract import GeneratedFiles
from listener.queue.finish import Ending, run_attempt
from listener.clients.ntfy import Notifier
from listener.sandbox.levels import imported_modules, run_sandbox_levels
from listener.sandbox.naming import installation_filter
from tests.fakes.http_fake import Reply
from tests.helpers import builder_status, insert_idea, installation

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "fakes" / "claude"
TEST_NETWORK = f"agent-builder-test-sandbox-{os.getpid()}"  # one per test process: parallel runs share the engine

WRITES_FILE = """import json, os, shutil
usage = shutil.disk_usage('/')
with open('/tmp/disk.json', 'w') as handle:
    json.dump({'total': usage.total}, handle)
print('wrote /tmp/disk.json')
"""
CALLS_HOME = """import json, os, urllib.request
url = os.environ['SANDBOX_HTTP_URL'] + '/report'
request = urllib.request.Request(url, data=json.dumps({'ok': True}).encode(), method='POST',
                                 headers={'Content-Type': 'application/json'})
print(urllib.request.urlopen(request, timeout=5).status)
"""
AGENT_OK = """#!/usr/bin/env bash
set -euo pipefail
if [[ "${1:-}" == "--dry-run" ]]; then
  echo "dry run: would ask claude to summarise the disk usage"
  exit 0
fi
df -h / | claude -p "Summarise the disk usage" --output-format text > /tmp/summary.txt
echo "wrote /tmp/summary.txt"
"""
AGENT_NEVER_CALLS = """#!/usr/bin/env bash
set -euo pipefail
echo "a summary written without asking anyone" > /tmp/summary.txt
"""
AGENT_WITH_A_KEY = """#!/usr/bin/env bash
set -euo pipefail
export ANTHROPIC_API_KEY="sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz01234567-AbCdEfAA"
claude -p "Summarise the disk usage" > /tmp/summary.txt
"""
REPLY = "The disk is 42 % full."
AGENT_CHECKS = {"checks": [
    {"kind": "claude_called", "min_calls": 1, "args_include": ["-p"], "reply": REPLY},
    {"kind": "file_exists", "path": "/tmp/summary.txt", "min_bytes": len(REPLY)},
]}


def script(text: str, dockerfile: str | None = None) -> GeneratedFiles:
    return GeneratedFiles(main_name="script.py", main=text, dockerfile=dockerfile)


def agent(text: str) -> GeneratedFiles:
    return GeneratedFiles(main_name="agent.sh", main=text, dockerfile=None)


def file_check(path: str) -> dict[str, Any]:
    return {"checks": [{"kind": "file_exists", "path": path, "min_bytes": 1}]}


@pytest.fixture(scope="session")
def agent_image(docker_client, base_image: str, tmp_path_factory) -> str:
    """An agent image: the base image with bash and a `claude` command (our fake)."""
    context = tmp_path_factory.mktemp("agent-image")
    (context / "claude").write_bytes(FAKE_CLAUDE.read_bytes())
    (context / "Dockerfile").write_text(f"FROM {base_image}\nCOPY claude /usr/local/bin/claude\n"
                                        "RUN chmod 0755 /usr/local/bin/claude\n")
    tag = "agent-builder-test-agent:latest"
    docker_client.images.build(path=str(context), tag=tag, rm=True, pull=False)
    return tag


@pytest.fixture(scope="session")
def sandbox_network(docker_client) -> str:
    yield TEST_NETWORK
    for network in docker_client.networks.list(names=[TEST_NETWORK]):
        network.remove()


@pytest.fixture
def no_leftovers(docker_client, db_url):
    """Every sandbox container a test starts is removed by the engine code itself (only this test's
    installation is looked at: other runs may share the engine)."""
    own = installation_filter(installation(db_url), role="sandbox-run")

    def sandbox_runs() -> set[str]:
        return {c.id for c in docker_client.containers.list(all=True, filters=own, ignore_removed=True)}

    before = sandbox_runs()
    yield
    left = sandbox_runs() - before
    assert not left, f"sandbox containers left behind: {left}"


@pytest.fixture
def levels(db_url, builder_conn, queries, base_image, agent_image, sandbox_network, fake_ollama, tmp_path,
           no_leftovers) -> Callable[..., tuple[Ending, list[dict[str, Any]]]]:
    approle = tmp_path / "approle"
    approle.mkdir()
    (approle / "role-id").write_text("sandbox-role")
    (approle / "secret-id").write_text("sandbox-secret")

    def run(files: GeneratedFiles, *, check: Any = None, type: str = "script", **env: str) -> tuple[Ending, list[dict[str, Any]]]:
        settings = Settings.from_env({
            "DATABASE_URL": db_url, "SANDBOX_BASE_IMAGE": base_image, "SANDBOX_AGENT_IMAGE": agent_image,
            "SANDBOX_NETWORK": sandbox_network, "SANDBOX_TIMEOUT_S": "30", "VAULT_APPROLE_DIR": str(approle),
            "OLLAMA_URL": fake_ollama.url, "SANDBOX_DATABASE_URL": db_url, "AGENT_BUILDER_HOME": str(tmp_path), **env,
        })
        automation_id = insert_idea(builder_conn, type=type)
        if check is not None:
            builder_conn.execute("UPDATE automation_ideas SET acceptance_check = %s WHERE id = %s", (Jsonb(check), automation_id))
        store = Store(builder_conn, queries, "docker-test")
        claim = store.claim_build(automation_id)
        ctx = AttemptContext(claim=claim, store=store, settings=settings, notifier=Notifier(None, "t"),
                             stop=threading.Event())

        def handler(context: AttemptContext) -> None:
            context.start_generation()
            run_sandbox_levels(context, files)

        ending = run_attempt(ctx, handler)
        rows = builder_conn.execute("SELECT test_level, status, execution_log FROM agent_test_results"
                                    " WHERE automation_id = %s ORDER BY id", (automation_id,)).fetchall()
        expected = "awaiting_approval" if ending is Ending.SUCCEEDED else "failed"
        assert builder_status(builder_conn, automation_id) == expected
        return ending, rows

    return run


def levels_of(rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(r["test_level"], r["status"]) for r in rows]


def test_imports_are_read_from_the_source() -> None:
    assert imported_modules("import os, json.decoder\nfrom urllib import request\nfrom . import x\nfrom __future__ import annotations\n") == ["json", "os", "urllib"]


# -- scripts -----------------------------------------------------------------------------------------

def test_script_passes_levels_2_to_4(levels, docker_client) -> None:
    ending, rows = levels(script(WRITES_FILE), check=file_check("/tmp/disk.json"))
    assert ending is Ending.SUCCEEDED, rows
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")]
    assert "imports resolve: json, os, shutil" in rows[0]["execution_log"]
    assert "wrote /tmp/disk.json" in rows[1]["execution_log"]
    assert "file_exists" in rows[2]["execution_log"]


def test_script_with_a_missing_module_fails_level_2(levels) -> None:
    ending, rows = levels(script("import definitely_not_installed_xyz\nprint('hi')\n"), check=file_check("/tmp/x"))
    assert levels_of(rows) == [(2, "fail")]
    assert "modules not found in the image: definitely_not_installed_xyz" in rows[0]["execution_log"]


def test_a_generated_dockerfile_that_does_not_build_fails_level_2(levels, base_image) -> None:
    dockerfile = f"FROM {base_image}\nRUN exit 7\nCOPY script.py /app/script.py\nCMD [\"python3\", \"/app/script.py\"]\n"
    ending, rows = levels(script(WRITES_FILE, dockerfile), check=file_check("/tmp/disk.json"))
    assert levels_of(rows) == [(2, "fail")]
    assert "does not build" in rows[0]["execution_log"]


def test_a_generated_dockerfile_that_builds_is_used(levels, base_image) -> None:
    dockerfile = (f"FROM {base_image}\nWORKDIR /srv\nCOPY script.py /srv/script.py\n"
                  "CMD [\"python3\", \"/srv/script.py\"]\n")
    ending, rows = levels(script(WRITES_FILE, dockerfile), check=file_check("/tmp/disk.json"))
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")]


def test_script_that_crashes_fails_level_3(levels) -> None:
    ending, rows = levels(script("raise SystemExit('cannot reach the NAS')\n"), check=file_check("/tmp/x"))
    assert levels_of(rows) == [(2, "pass"), (3, "fail")]
    assert "exit code 1" in rows[1]["execution_log"] and "cannot reach the NAS" in rows[1]["execution_log"]


def test_script_past_the_timeout_is_killed_and_fails_level_3(levels) -> None:
    ending, rows = levels(script("import time\ntime.sleep(120)\n"), check=file_check("/tmp/x"), SANDBOX_TIMEOUT_S="3")
    assert levels_of(rows) == [(2, "pass"), (3, "fail")]
    assert "killed after the 3 s timeout" in rows[1]["execution_log"]


def test_a_check_that_does_not_hold_fails_level_4(levels) -> None:
    ending, rows = levels(script(WRITES_FILE), check=file_check("/tmp/not-written.json"))
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "fail")]


def test_an_empty_check_fails_level_4_clearly(levels) -> None:
    ending, rows = levels(script(WRITES_FILE), check={"checks": []})
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "fail")]
    assert "acceptance" in rows[2]["execution_log"].lower()


def test_checks_are_derived_by_the_model_when_none_are_given(levels, fake_ollama) -> None:
    fake_ollama.script("POST", "/api/generate", Reply(200, {
        "model": "llama3.1:8b", "done": True, "done_reason": "stop", "prompt_eval_count": 10,
        "response": '{"checks": [{"kind": "file_exists", "path": "/tmp/disk.json", "min_bytes": 1}]}'}))
    ending, rows = levels(script(WRITES_FILE), check=None)
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")]
    assert "derived by the model" in rows[2]["execution_log"]
    assert "format" in fake_ollama.requests_to("POST", "/api/generate")[0].json


def test_http_request_check_sees_the_call_home(levels) -> None:
    ending, rows = levels(script(CALLS_HOME), check={"checks": [{"kind": "http_request", "method": "POST", "path": "/report"}]})
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")], rows[-1]["execution_log"]


def test_a_service_is_checked_while_it_runs(levels) -> None:
    service = "import time\nprint('serving', flush=True)\nwhile True:\n    time.sleep(1)\n"
    ending, rows = levels(script(service), check={"checks": [{"kind": "container_running", "after_s": 2}]})
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")]


# -- claude agents -----------------------------------------------------------------------------------

def test_agent_runs_for_real_against_the_recording_claude_stand_in(levels) -> None:
    ending, rows = levels(agent(AGENT_OK), type="claude_agent", check=AGENT_CHECKS, VAULT_ADDR="http://vault.invalid:8200")
    assert ending is Ending.SUCCEEDED, rows[-1]["execution_log"]
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")]
    assert "claude is the sandbox stand-in /opt/agent-builder/bin/claude" in rows[0]["execution_log"]
    smoke = rows[1]["execution_log"]
    assert "ran agent.sh --dry-run" in smoke and "ran agent.sh for real" in smoke and "wrote /tmp/summary.txt" in smoke
    log = rows[2]["execution_log"]
    assert "PASS check 1 claude_called: 1 call(s) of the claude stand-in with -p among its arguments (1 in all)" in log
    assert "argv ['-p', 'Summarise the disk usage', '--output-format', 'text']" in log
    assert "characters on stdin" in log and " 0 characters on stdin" not in log  # df's output was piped in
    names = log.split("environment variable names: ", 1)[1].splitlines()[0]
    assert {"VAULT_ADDR", "SANDBOX_HTTP_URL", "PATH", "HOME"} <= set(names.split(", "))
    assert "vault.invalid" not in log and "/work" not in names  # names only, never values
    assert "check 1 claude_called: did not hold: 0 call(s)" in log  # its negative control
    assert "check 2 file_exists: did not hold: /tmp/summary.txt: no such file" in log


def test_the_dry_run_is_an_extra_smoke_step_whose_calls_do_not_count(levels) -> None:
    only_dry = AGENT_OK.replace('df -h / | claude -p "Summarise the disk usage" --output-format text > /tmp/summary.txt',
                                "true").replace('echo "dry run: would ask claude to summarise the disk usage"',
                                                'claude -p "dry"')
    ending, rows = levels(agent(only_dry), type="claude_agent", check=AGENT_CHECKS)
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "fail")]
    assert "0 call(s) of the claude stand-in" in rows[2]["execution_log"]


def test_agent_that_never_calls_claude_fails_level_4(levels) -> None:
    ending, rows = levels(agent(AGENT_NEVER_CALLS), type="claude_agent", check=AGENT_CHECKS)
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "fail")]
    assert "FAIL check 1 claude_called: 0 call(s) of the claude stand-in with -p among its arguments (0 in all)" in rows[2]["execution_log"]
    assert rows[2]["execution_log"].startswith("Level 4 (assertion) failed: 1 of 2 check(s) did not hold, first "
                                               "claude_called\ncheck 1 claude_called: 0 call(s)")


def test_claude_called_without_a_network_fails_with_the_reason(levels) -> None:
    ending, rows = levels(agent(AGENT_OK), type="claude_agent", check=AGENT_CHECKS, SANDBOX_NETWORK="none")
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "fail")]
    assert "SANDBOX_NETWORK=none): the claude stand-in cannot record its calls" in rows[2]["execution_log"]
    assert "PASS check 2 file_exists" in rows[2]["execution_log"]  # the stand-in still answered


def test_the_stand_in_needs_no_claude_cli_in_the_agent_image(levels, base_image) -> None:
    ending, rows = levels(agent(AGENT_OK), type="claude_agent", check=AGENT_CHECKS, SANDBOX_AGENT_IMAGE=base_image)
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")], rows[-1]["execution_log"]


def test_agent_that_fails_its_dry_run_fails_level_3(levels) -> None:
    ending, rows = levels(agent("#!/usr/bin/env bash\necho 'no API key' >&2\nexit 2\n# --dry-run\n"),
                          type="claude_agent", check=AGENT_CHECKS)
    assert levels_of(rows) == [(2, "pass"), (3, "fail")]
    assert "agent.sh --dry-run: exit code 2" in rows[1]["execution_log"]


def test_agent_whose_check_does_not_hold_fails_level_4(levels) -> None:
    ending, rows = levels(agent(AGENT_OK), type="claude_agent", check=file_check("/tmp/other.txt"))
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "fail")]


def test_agent_with_a_hardcoded_key_is_caught_by_the_free_checks() -> None:
    """Before the overseer and before any sandbox: preflight's secret scan (Level 1)."""
    from listener.build.preflight import run_preflight

    problems = run_preflight(agent(AGENT_WITH_A_KEY), "claude_agent")
    assert [p.check for p in problems] == ["secrets"], problems
    assert "agent.sh line 3: hardcoded secret" in problems[0].message
    assert "AbCdEfGhIjKlMnOp" not in problems[0].message


# -- the negative control ------------------------------------------------------------------------------

DOES_NOTHING = "print('nothing to do')\n"


@pytest.mark.parametrize("path", ["/etc/passwd", "/app/script.py", "/work/script.py"])
def test_an_operator_check_on_a_path_that_exists_before_the_run_fails_the_negative_control(levels, path: str) -> None:
    ending, rows = levels(script(DOES_NOTHING), check=file_check(path))
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "fail")]
    log = rows[2]["execution_log"]
    assert log.splitlines()[0].startswith("Level 4 (assertion) failed: check 1 (file_exists): this check held before "
                                          "the automation ran")
    assert f"check 1 file_exists: held: {path} exists" in log  # before the run
    assert f"PASS check 1 file_exists: {path} exists" in log  # and after


def test_a_script_that_creates_its_file_passes_the_negative_control(levels) -> None:
    ending, rows = levels(script(WRITES_FILE), check=file_check("/tmp/disk.json"))
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")]
    log = rows[2]["execution_log"]
    assert "check 1 file_exists: did not hold: /tmp/disk.json: no such file in the sandbox container" in log
    assert "PASS check 1 file_exists: /tmp/disk.json exists" in log


def test_a_container_running_check_has_no_control_and_says_so(levels) -> None:
    service = "import time\nprint('serving', flush=True)\nwhile True:\n    time.sleep(1)\n"
    ending, rows = levels(script(service), check={"checks": [{"kind": "container_running", "after_s": 1}]})
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")]
    assert "check 1 container_running: skipped: a control is not meaningful here" in rows[2]["execution_log"]


def test_a_do_nothing_script_with_derived_checks_fails_the_negative_control(levels, fake_ollama, db_url) -> None:
    from tests.sandbox_db import login_role

    fake_ollama.script("POST", "/api/generate", Reply(200, {
        "model": "llama3.1:8b", "done": True, "done_reason": "stop", "prompt_eval_count": 10,
        "response": '{"checks": [{"kind": "sql_rows", "query": "SELECT 1 AS one", "min_rows": 1},'
                    ' {"kind": "file_exists", "path": "/app/script.py"}]}'}))
    with login_role(db_url) as reader:
        ending, rows = levels(script(DOES_NOTHING), check=None, SANDBOX_DATABASE_URL=reader)
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "fail")]
    log = rows[2]["execution_log"]
    assert "this check held before the automation ran" in log.splitlines()[0]
    assert "check 1 sql_rows: held: the query returned 1 row(s)" in log
    assert "check 2 (file_exists /app/script.py) is refused: /app/script.py is a file of the image itself" in log


def test_a_do_nothing_script_whose_derived_checks_are_all_rejected_fails_level_4(levels, fake_ollama) -> None:
    fake_ollama.script("POST", "/api/generate", Reply(200, {
        "model": "llama3.1:8b", "done": True, "done_reason": "stop", "prompt_eval_count": 10,
        "response": '{"checks": [{"kind": "file_exists", "path": "/app/script.py"}]}'}))
    ending, rows = levels(script(DOES_NOTHING), check=None)
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "fail")]
    assert "every check was rejected: check 1 (file_exists /app/script.py)" in rows[2]["execution_log"]


# -- hostile code is contained -------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "evidence"), [
    ("import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('/var/run/docker.sock')\nprint('ESCAPED')\n",
     "FileNotFoundError"),
    ("open('/etc/escaped-by-sandbox', 'w').write('x')\nprint('ESCAPED')\n", "Read-only file system"),
    ("import os\nos.setuid(0)\nprint('ESCAPED')\n", "PermissionError"),
])
def test_hostile_script_is_contained_and_reported(levels, code: str, evidence: str) -> None:
    ending, rows = levels(script(code), check=file_check("/tmp/x"))
    assert levels_of(rows) == [(2, "pass"), (3, "fail")]
    assert evidence in rows[1]["execution_log"] and "ESCAPED" not in rows[1]["execution_log"]
    assert not Path("/etc/escaped-by-sandbox").exists()


def test_no_network_means_no_connection(levels) -> None:
    ending, rows = levels(script(CALLS_HOME), check=file_check("/tmp/x"), SANDBOX_NETWORK="none")
    assert levels_of(rows) == [(2, "pass"), (3, "fail")]
    assert "URLError" in rows[1]["execution_log"] or "unreachable" in rows[1]["execution_log"].lower()


def test_fork_bomb_hits_the_pids_limit_and_is_killed(levels) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    ending, rows = levels(script(bomb), check=file_check("/tmp/x"), SANDBOX_TIMEOUT_S="5", SANDBOX_PIDS="64")
    assert levels_of(rows) == [(2, "pass"), (3, "fail")]
    assert "killed after the 5 s timeout" in rows[1]["execution_log"]


def test_a_100_mb_flood_of_output_is_cut(levels) -> None:
    flood = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\n"
    ending, rows = levels(script(flood), check=file_check("/tmp/x"), SANDBOX_LOG_BYTES="65536")
    assert rows[1]["test_level"] == 3 and rows[1]["status"] == "pass"
    assert len(rows[1]["execution_log"]) <= 21_000
    assert all(len(r["execution_log"]) <= 21_000 for r in rows)


def test_a_sandbox_container_is_created_confined(docker_client, base_image, tmp_path) -> None:
    """What the engine actually applied to a sandbox container, read back from Docker."""
    from listener.sandbox.engine import Sandbox

    approle = tmp_path / "approle"
    approle.mkdir()
    settings = Settings.from_env({"SANDBOX_NETWORK": "none", "VAULT_APPROLE_DIR": str(approle), "SANDBOX_TIMEOUT_S": "10"})
    sandbox = Sandbox.connect(settings, installation="0000test0000", automation_id=1, build_id=1)
    with sandbox.container(base_image, ["true"], {"VAULT_ADDR": "http://vault:8200"}) as container:
        container.reload()
        host = container.attrs["HostConfig"]
        assert container.attrs["Config"]["User"] == "65534:65534"
        assert host["CapDrop"] == ["ALL"] and host["Privileged"] is False
        assert host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["PidsLimit"] == 256 and host["Memory"] == 512 * 1024 * 1024 and host["NanoCpus"] == 10**9
        assert host["NetworkMode"] == "none"
        assert host["Binds"] == [f"{approle.resolve()}:/opt/appdata/docker/docker-compose/vault/approle:ro"]
        assert host["LogConfig"]["Config"]["max-size"] == str(1 << 20)
        assert "VAULT_ADDR=http://vault:8200" in container.attrs["Config"]["Env"]
        assert host["ReadonlyRootfs"] is True and host["AutoRemove"] is True
        assert container.attrs["Config"]["WorkingDir"] == "/work"
        assert container.attrs["Config"]["Labels"]["io.agent-builder.deadline"].isdigit()
        scratch = {m["Target"]: m["VolumeOptions"]["DriverConfig"]["Options"] for m in host["Mounts"]}
        assert scratch["/tmp"]["o"].startswith("size=256m,") and scratch["/work"]["type"] == "tmpfs"
        assert container.attrs["Config"]["Entrypoint"][:2] == ["/bin/sh", "-c"]
    assert docker_client.containers.list(all=True, filters={"id": container.id}) == []


# -- size limits and the working directory ---------------------------------------------------------------

FILLS = """import sys
target = sys.argv[1] if len(sys.argv) > 1 else {target!r}
written = 0
chunk = b'x' * (1 << 20)
try:
    with open(target, 'wb') as handle:
        for _ in range(1024):  # 1 GiB
            handle.write(chunk)
            handle.flush()
            written += len(chunk)
except OSError as exc:
    print('wrote', written, 'bytes before', type(exc).__name__, exc.strerror, flush=True)
    raise SystemExit(1)
print('wrote', written, 'bytes: no limit', flush=True)
"""


@pytest.mark.parametrize(("target", "limit"), [
    ("/tmp/fill", "SANDBOX_TMP_SIZE"),
    ("fill", "SANDBOX_TMP_SIZE"),  # the working directory, /work
    ("/var/tmp/fill", "read-only"),
    ("/fill", "read-only"),
])
def test_a_1_gib_write_is_stopped_at_the_limit(levels, target: str, limit: str) -> None:
    ending, rows = levels(script(FILLS.format(target=target)), check=file_check("/tmp/x"), SANDBOX_TMP_SIZE="16m")
    assert levels_of(rows) == [(2, "pass"), (3, "fail")]
    log = rows[1]["execution_log"]
    written = int(log.split("wrote ", 1)[1].split()[0])
    assert written <= 16 << 20, log
    assert limit in log.splitlines()[0], log  # the reason names the limit that stopped it
    if limit == "SANDBOX_TMP_SIZE":
        assert "No space left on device" in log and written >= 8 << 20
    else:
        assert "Read-only file system" in log and written == 0


def test_level_4_reads_files_in_tmp_and_the_working_directory_after_the_run(levels, base_image) -> None:
    code = ("open('/tmp/a.json', 'w').write('{}')\n"
            "open('b.txt', 'w').write('written in the working directory')\n"
            "import os\nprint(os.getcwd(), os.environ['HOME'])\n")
    dockerfile = (f"FROM {base_image}\nWORKDIR /app\nCOPY script.py .\n"
                  'CMD ["python3", "script.py"]\n')  # a relative CMD, as models write them
    ending, rows = levels(script(code, dockerfile), check={"checks": [
        {"kind": "file_exists", "path": "/tmp/a.json", "min_bytes": 2},
        {"kind": "file_exists", "path": "/work/b.txt", "min_bytes": 10}]})
    assert levels_of(rows) == [(2, "pass"), (3, "pass"), (4, "pass")], rows[-1]["execution_log"]
    assert "/work /work" in rows[1]["execution_log"]
