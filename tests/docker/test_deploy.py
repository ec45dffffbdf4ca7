"""Approval and production deployment: psql approves, a listener deploys the tested image."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from psycopg.types.json import Jsonb

from listener.extract import GeneratedFiles
from listener.pipeline import artifact_digest
from listener.sandbox.naming import build_tag, labels, production_tag, repository
from tests.e2e.listeners import Listeners, query, wait_until
from tests.helpers import installation, remove_installation_objects
from tests.fakes.ntfy_server import FakeNtfy

SERVICE = "import time\nprint('serving', flush=True)\nwhile True:\n    time.sleep(1)\n"
JOB = "print('job done')\n"
CRASHES = "raise SystemExit('cannot start: port in use')\n"
AGENT = "#!/usr/bin/env bash\nif [[ ${1:-} == --dry-run ]]; then echo dry; exit 0; fi\nclaude -p 'hello'\n"
SERVICE_CHECK = {"checks": [{"kind": "container_running", "after_s": 1}]}
JOB_CHECK = {"checks": [{"kind": "file_exists", "path": "/tmp/x", "min_bytes": 1}]}


@pytest.fixture
def ntfy() -> Iterator[FakeNtfy]:
    with FakeNtfy() as server:
        yield server


@pytest.fixture
def cleanup(docker_client, db_url) -> Iterator[list[int]]:
    """Automation ids a test made; afterwards everything of this test's installation is removed
    (only its own: other test runs may share the engine)."""
    automation_ids: list[int] = []
    yield automation_ids
    remove_installation_objects(docker_client, installation(db_url))


@pytest.fixture
def start(db_url: str, tmp_path: Path, ntfy):
    listeners = Listeners(db_url, tmp_path, NTFY_URL=ntfy.url, DEPLOY_HANDLER="listener.deploy:deploy",
                          PROD_NETWORK="none", PROD_VERIFY_S="1", PROD_AGENTS_DIR=str(tmp_path / "agents"),
                          SANDBOX_TIMEOUT_S="30", FAKE_HOLD_DIR=str(tmp_path))
    yield listeners.start
    listeners.close()


def make_tested_build(operator, docker_client, base_image: str, tmp_path: Path, cleanup: list[int], *, code: str,
                 check: dict[str, Any], name: str = "Disk report", automation_id: int | None = None,
                 type: str = "script") -> tuple[int, int, str | None]:
    """A row in awaiting_approval whose build passed: a real image, the files and their sha256."""
    if automation_id is None:
        automation_id = operator.execute(
            "INSERT INTO automation_ideas (name, type, status, task_description, acceptance_check)"
            " VALUES (%s, %s, 'ready_to_build', 'spec', %s) RETURNING id", (name, type, Jsonb(check))).fetchone()["id"]
        cleanup.append(automation_id)
    main = "agent.sh" if type == "claude_agent" else "script.py"
    files = GeneratedFiles(main_name=main, main=code, dockerfile=None)
    build_id = operator.execute(
        "INSERT INTO agent_builds (automation_id, kind, worker, step, finished_at, outcome, files, artifact_sha256, acceptance_check)"
        " VALUES (%s, 'build', 'test', 'level4', now(), 'succeeded', %s, %s, %s) RETURNING id",
        (automation_id, Jsonb(files.as_dict()), artifact_digest(files), Jsonb(check))).fetchone()["id"]
    image_id = None
    inst = installation(operator.info.dsn)
    if type == "script":
        context = tmp_path / f"build-{build_id}"
        context.mkdir()
        (context / "script.py").write_text(code)
        (context / "Dockerfile").write_text(f"FROM {base_image}\nCOPY script.py /app/script.py\nCMD [\"python3\", \"/app/script.py\"]\n")
        image, _ = docker_client.images.build(path=str(context), tag=build_tag(automation_id, name, build_id, inst),
                                              labels=labels(inst, automation_id, build_id, "sandbox-image"), rm=True)
        image_id = image.id
        operator.execute("UPDATE agent_builds SET image_id = %s WHERE id = %s", (image_id, build_id))
    for level in (1, 2, 3, 4):  # a deployment requires the four levels passed for this build
        operator.execute("INSERT INTO agent_test_results (automation_id, build_id, test_level, status, execution_log)"
                         " VALUES (%s, %s, %s, 'pass', 'ok')", (automation_id, build_id, level))
    with operator.transaction():
        operator.execute("SET LOCAL agent_builder.override = 'on'")
        operator.execute("UPDATE automation_ideas SET builder_status = 'awaiting_approval', builder_build_id = %s WHERE id = %s",
                         (build_id, automation_id))
    return automation_id, build_id, image_id


def psql(db_url: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", db_url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True)


def status(db_url: str, automation_id: int) -> str:
    return query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s", (automation_id,))[0]["builder_status"]


pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="psql (the PostgreSQL client) is not installed")


def test_approve_with_psql_deploys_the_tested_image(db_url, operator, docker_client, base_image, tmp_path, cleanup, start, ntfy) -> None:
    automation_id, _, image_id = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=SERVICE,
                                              check=SERVICE_CHECK)
    listener = start()
    listener.wait_listening()
    assert psql(db_url, f"UPDATE automation_ideas SET builder_status = 'approved' WHERE id = {automation_id}").returncode == 0
    wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 60, "the deployment", listener)
    assert status(db_url, automation_id) == "deployed"
    assert query(db_url, "SELECT status FROM automation_ideas WHERE id = %s", (automation_id,))[0]["status"] == "deployed"
    container = docker_client.containers.get(repository(automation_id, "Disk report"))
    assert container.status == "running" and container.image.id == image_id
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert docker_client.images.get(f"{repository(automation_id, 'Disk report')}:{production_tag(installation(db_url))}").id == image_id
    wait_until(lambda: any("DEPLOYED — Disk report" in m["message"] for m in ntfy.published), 10, "DEPLOYED", listener)
    assert listener.stop() == 0


def test_a_one_shot_job_is_run_once_and_verified(db_url, operator, docker_client, base_image, tmp_path, cleanup, start) -> None:
    automation_id, _, image_id = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=JOB, check=JOB_CHECK)
    listener = start()
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 60, "the deployment", listener)
    assert status(db_url, automation_id) == "deployed"
    container = docker_client.containers.get(repository(automation_id, "Disk report"))
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no" and container.attrs["State"]["ExitCode"] == 0
    assert listener.stop() == 0


def test_an_agent_is_installed_with_its_tested_hash(db_url, operator, docker_client, base_image, tmp_path, cleanup, start) -> None:
    automation_id, _, _ = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=AGENT, check=JOB_CHECK,
                                       type="claude_agent", name="Summariser")
    listener = start()
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 30, "the deployment", listener)
    assert status(db_url, automation_id) == "deployed"
    installed = tmp_path / "agents" / f"{repository(automation_id, 'Summariser')}.sh"
    assert installed.read_text() == AGENT and oct(installed.stat().st_mode & 0o777) == "0o755"
    assert listener.stop() == 0


def test_two_listeners_racing_on_one_approval_deploy_once(db_url, operator, docker_client, base_image, tmp_path, cleanup, start) -> None:
    automation_id, _, _ = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=SERVICE, check=SERVICE_CHECK)
    listeners = [start(), start()]
    for listener in listeners:
        listener.wait_listening()
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: status(db_url, automation_id) == "deployed", 60, "the deployment", listeners[0])
    deploys = query(db_url, "SELECT count(*) AS n FROM agent_builds WHERE automation_id = %s AND kind = 'deploy'", (automation_id,))
    assert deploys == [{"n": 1}]
    for listener in listeners:
        assert listener.stop() == 0


def test_a_failed_deployment_keeps_the_previous_version(db_url, operator, docker_client, base_image, tmp_path, cleanup, start, ntfy) -> None:
    automation_id, _, old_image = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=SERVICE,
                                               check=SERVICE_CHECK)
    listener = start()
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: status(db_url, automation_id) == "deployed", 60, "the first deployment", listener)

    with operator.transaction():  # a new version was built and tested; this one crashes in production
        operator.execute("SET LOCAL agent_builder.override = 'on'")
        operator.execute("UPDATE automation_ideas SET builder_status = 'not_started' WHERE id = %s", (automation_id,))
    make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=CRASHES, check=SERVICE_CHECK,
                 automation_id=automation_id)
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: status(db_url, automation_id) == "failed", 60, "the failed deployment", listener)
    result = query(db_url, "SELECT test_level, execution_log FROM agent_test_results WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
                   (automation_id,))[0]
    assert result["test_level"] == 0 and "previous version keeps running" in result["execution_log"]
    container = docker_client.containers.get(repository(automation_id, "Disk report"))
    assert container.status == "running" and container.image.id == old_image
    wait_until(lambda: any("ERROR — Disk report" in m["message"] for m in ntfy.published), 10, "the ERROR", listener)
    assert listener.stop() == 0


def test_sigkill_during_deploying_is_recovered(db_url, operator, docker_client, base_image, tmp_path, cleanup, start) -> None:
    automation_id, _, _ = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=SERVICE, check=SERVICE_CHECK)
    doomed = start(PROD_VERIFY_S="60")
    doomed.wait_listening()
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: query(db_url, "SELECT step FROM agent_builds WHERE automation_id = %s AND kind = 'deploy'",
                             (automation_id,)) == [{"step": "deploy"}], 30, "the deploy step", doomed)
    doomed.kill()
    survivor = start()
    wait_until(lambda: status(db_url, automation_id) == "failed", 20, "the rescue", survivor)
    log = query(db_url, "SELECT execution_log FROM agent_test_results WHERE automation_id = %s", (automation_id,))
    assert "died during step 'deploy'" in log[-1]["execution_log"]
    assert survivor.stop() == 0


def test_rejection_removes_the_sandbox_image(db_url, operator, docker_client, base_image, tmp_path, cleanup, start, ntfy) -> None:
    import docker.errors

    automation_id, _, image_id = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=JOB,
                                                   check=JOB_CHECK)
    listener = start()
    listener.wait_listening()
    assert psql(db_url, f"UPDATE automation_ideas SET builder_status = 'rejected' WHERE id = {automation_id}").returncode == 0
    wait_until(lambda: any("REJECTED — Disk report" in m["message"] for m in ntfy.published), 20, "REJECTED", listener)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)
    assert status(db_url, automation_id) == "rejected"
    assert listener.stop() == 0
