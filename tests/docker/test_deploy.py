"""Approval and production deployment: psql approves, a listener deploys the tested image."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from psycopg.types.json import Jsonb

from listener.build.extract import GeneratedFiles
from listener.build.pipeline import artifact_digest
from listener.sandbox.naming import LABEL_INSTALLATION, build_tag, installation_filter, labels, production_tag, repository
from tests.e2e.listeners import Listeners, query, wait_until
from tests.helpers import installation, remove_installation_objects
from tests.fakes.ntfy_server import FakeNtfy

# Production names are agent-{id}-{slug} and ids start at 1 in every test database: a name of its
# own keeps this run's production containers apart from other runs' on a shared engine.
NAME = f"Disk report {uuid.uuid4().hex[:8]}"
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
    listeners = Listeners(db_url, tmp_path, NTFY_URL=ntfy.url, DEPLOY_HANDLER="listener.deploy.production:deploy",
                          PROD_NETWORK="none", PROD_VERIFY_S="1", PROD_AGENTS_DIR=str(tmp_path / "agents"),
                          SANDBOX_TIMEOUT_S="30", FAKE_HOLD_DIR=str(tmp_path))
    yield listeners.start
    listeners.close()


def make_tested_build(operator, docker_client, base_image: str, tmp_path: Path, cleanup: list[int], *, code: str,
                 check: dict[str, Any], name: str = NAME, automation_id: int | None = None,
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
        # nocache: a listener's sweep may remove an earlier test image whose layer the cache would reuse
        image, _ = docker_client.images.build(path=str(context), tag=build_tag(automation_id, name, build_id, inst),
                                              labels=labels(inst, automation_id, build_id, "sandbox-image"), rm=True,
                                              nocache=True)
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
    container = docker_client.containers.get(repository(automation_id, NAME))
    assert container.status == "running" and container.image.id == image_id
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert docker_client.images.get(f"{repository(automation_id, NAME)}:{production_tag(installation(db_url))}").id == image_id
    wait_until(lambda: any(f"DEPLOYED — {NAME}" in m["message"] for m in ntfy.published), 10, "DEPLOYED", listener)
    assert listener.stop() == 0


def test_a_one_shot_job_is_run_once_and_verified(db_url, operator, docker_client, base_image, tmp_path, cleanup, start) -> None:
    automation_id, _, image_id = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=JOB, check=JOB_CHECK)
    listener = start()
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 60, "the deployment", listener)
    assert status(db_url, automation_id) == "deployed"
    container = docker_client.containers.get(repository(automation_id, NAME))
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
    container = docker_client.containers.get(repository(automation_id, NAME))
    assert container.status == "running" and container.image.id == old_image
    wait_until(lambda: any(f"ERROR — {NAME}" in m["message"] for m in ntfy.published), 10, "the ERROR", listener)
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
    wait_until(lambda: any(f"REJECTED — {NAME}" in m["message"] for m in ntfy.published), 20, "REJECTED", listener)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)
    assert status(db_url, automation_id) == "rejected"
    assert listener.stop() == 0


# -- verification, swap and production options ------------------------------------------------------

def crashing(delay: float) -> str:
    return f"import time\nprint('starting', flush=True)\ntime.sleep({delay})\nraise SystemExit('crash after {delay} s')\n"


class EventLog:
    """Docker events (of the given filters) recorded from now on by a thread, until close()."""

    def __init__(self, client: Any, filters: dict[str, Any]) -> None:
        import threading

        self.events: list[dict[str, Any]] = []
        self.stream = client.events(decode=True, filters={"type": "container", **filters})
        self.thread = threading.Thread(target=lambda: self.events.extend(self.stream), daemon=True)
        self.thread.start()

    def close(self) -> list[dict[str, Any]]:
        self.stream.close()
        self.thread.join(5)
        return self.events

    @staticmethod
    def of(events: list[dict[str, Any]], container_id: str, action: str) -> list[dict[str, Any]]:
        return [e for e in events if e["id"] == container_id and e["Action"] == action]


def last_result(db_url: str, automation_id: int) -> dict[str, Any]:
    return query(db_url, "SELECT test_level, execution_log FROM agent_test_results WHERE automation_id = %s"
                         " ORDER BY id DESC LIMIT 1", (automation_id,))[0]


def names_left(docker_client, automation_id: int) -> list[str]:
    final = repository(automation_id, NAME)
    return sorted(c.name for c in docker_client.containers.list(all=True, filters={"name": final})
                  if c.name in (f"{final}-next", f"{final}-prev"))


def deploy_first(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener) -> tuple[int, Any]:
    """A deployed service: the 'previous version' of the tests below."""
    automation_id, _, _ = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=SERVICE,
                                            check=SERVICE_CHECK)
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 60, "the first deployment", listener)
    assert status(db_url, automation_id) == "deployed"
    return automation_id, docker_client.containers.get(repository(automation_id, NAME))


def approve_next(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener, automation_id: int,
                 code: str) -> str:
    """Build and approve a new version of a deployed automation; returns its terminal status."""
    _, build_id, _ = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=code,
                                       check=SERVICE_CHECK, automation_id=automation_id)
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: query(db_url, "SELECT 1 FROM agent_builds WHERE automation_id = %s AND kind = 'deploy'"
                                     " AND finished_at IS NOT NULL AND id > %s", (automation_id, build_id)),
               60, "the deployment", listener)
    return status(db_url, automation_id)


def test_a_crash_looping_new_version_is_caught_every_time(db_url, operator, docker_client, base_image, tmp_path,
                                                          cleanup, start, ntfy) -> None:
    listener = start(PROD_VERIFY_S="2")
    automation_id, old = deploy_first(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener)
    first_start = old.attrs["State"]["StartedAt"]
    watched = EventLog(docker_client, {"container": old.id})
    try:
        for delay in (0.1, 0.2, 0.2, 0.2, 0.35, 0.5, 0.75, 1.0):
            began = time.monotonic()
            assert approve_next(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener, automation_id,
                                crashing(delay)) == "failed", f"a version crashing after {delay} s was deployed"
            result = last_result(db_url, automation_id)
            assert result["test_level"] == 0
            assert "exited with code 1" in result["execution_log"] or "restarted" in result["execution_log"]
            assert "crash loop" in result["execution_log"] or "restarted" in result["execution_log"]
            assert "the previous version keeps running" in result["execution_log"]
            assert "crash after" in result["execution_log"]  # the new version's last output
            assert time.monotonic() - began < 30
            old.reload()
            current = docker_client.containers.get(repository(automation_id, NAME))
            assert current.id == old.id and old.status == "running"
            assert old.attrs["State"]["StartedAt"] == first_start and old.attrs["RestartCount"] == 0
            assert names_left(docker_client, automation_id) == []
    finally:
        events = watched.close()
    assert [e["Action"] for e in events if e["Action"] in ("kill", "stop", "die", "restart", "rename", "pause")] == []
    errors = [m["message"] for m in ntfy.published if f"ERROR — {NAME}" in m["message"]]
    assert errors and all("keeps running" in m and "crash after" not in m for m in errors)  # the reason, not the output
    assert listener.stop() == 0


def test_an_upgrade_stops_the_old_version_only_once_the_new_one_is_verified_and_in_place(
        db_url, operator, docker_client, base_image, tmp_path, cleanup, start) -> None:
    listener = start(PROD_VERIFY_S="1.5", PROD_STOP_TIMEOUT_S="2")
    automation_id, old = deploy_first(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener)
    final = repository(automation_id, NAME)
    recorded = EventLog(docker_client, {"label": f"io.agent-builder.installation={installation(db_url)}"})
    try:
        new_code = SERVICE.replace("'serving'", "'serving v2'")
        _, build_id, new_image = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=new_code,
                                                   check=SERVICE_CHECK, automation_id=automation_id)
        operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
        wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 60, "the upgrade", listener)
    finally:
        events = recorded.close()
    assert status(db_url, automation_id) == "deployed"
    new = docker_client.containers.get(final)
    assert new.id != old.id and new.image.id == new_image and new.status == "running"
    assert docker_client.images.get(f"{final}:{production_tag(installation(db_url))}").id == new_image
    assert names_left(docker_client, automation_id) == []
    assert EventLog.of(events, old.id, "destroy")  # the previous version is gone

    def at(container_id: str, action: str, **attributes: str) -> int:
        found = [e for e in EventLog.of(events, container_id, action)
                 if all(e["Actor"]["Attributes"].get(k) == v for k, v in attributes.items())]
        assert len(found) == 1, (container_id[:12], action, attributes, found)
        return int(found[0]["timeNano"])

    new_started = at(new.id, "start")
    old_aside = at(old.id, "rename", name=f"{final}-prev", oldName=f"/{final}")
    new_placed = at(new.id, "rename", name=final, oldName=f"/{final}-next")
    old_died = at(old.id, "die")
    assert new_started + 1.5e9 <= old_aside < new_placed < old_died  # verified, then in place, then the old one stops
    assert EventLog.of(events, new.id, "die") == [] and new.attrs["RestartCount"] == 0
    name_gap_ms = (new_placed - old_aside) / 1e6
    assert name_gap_ms < 2000, f"the name was missing for {name_gap_ms:.0f} ms"
    print(f"swap: name missing {name_gap_ms:.1f} ms; new version served {(old_died - new_started) / 1e9:.2f} s "
          "beside the old one; no moment without a running version")
    assert listener.stop() == 0


@pytest.mark.parametrize("fault", ["rename-new", "tag", "stop-previous"])
def test_a_failed_swap_brings_the_previous_version_back(db_url, operator, docker_client, base_image, tmp_path,
                                                         cleanup, start, fault) -> None:
    first = start()
    automation_id, old = deploy_first(db_url, operator, docker_client, base_image, tmp_path, cleanup, first)
    old_image = old.image.id
    assert first.stop() == 0
    listener = start(DEPLOY_HANDLER="tests.docker.deploy_faults:deploy", DEPLOY_FAULT=fault, PROD_STOP_TIMEOUT_S="2")
    assert approve_next(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener, automation_id,
                        SERVICE.replace("'serving'", "'serving v2'")) == "failed"
    result = last_result(db_url, automation_id)
    assert result["test_level"] == 0 and "injected fault" in result["execution_log"]
    assert "the swap was undone and the previous version keeps running" in result["execution_log"]
    final = repository(automation_id, NAME)
    back = docker_client.containers.get(final)
    assert back.id == old.id and back.status == "running" and back.image.id == old_image
    if fault == "stop-previous":  # it had been stopped: it came back
        assert back.attrs["State"]["StartedAt"] != old.attrs["State"]["StartedAt"]
    else:  # never stopped at all
        assert back.attrs["State"]["StartedAt"] == old.attrs["State"]["StartedAt"]
    assert docker_client.images.get(f"{final}:{production_tag(installation(db_url))}").id == old_image
    assert names_left(docker_client, automation_id) == []
    assert len(docker_client.containers.list(all=True, filters=installation_filter(installation(db_url), role="production"))) == 1
    assert listener.stop() == 0


def test_an_interrupted_swap_is_repaired_by_the_next_deployment(db_url, operator, docker_client, base_image, tmp_path,
                                                               cleanup, start) -> None:
    listener = start()
    automation_id, old = deploy_first(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener)
    final = repository(automation_id, NAME)
    inst = installation(db_url)
    # What a listener killed between the two renames leaves: the previous version as -prev (stopped
    # here, the worst case), no container under the final name, and a candidate -next.
    old.rename(f"{final}-prev")
    old.stop(timeout=0)
    docker_client.containers.create(old.image.id, name=f"{final}-next", labels=labels(inst, automation_id, 999, "production"))
    assert approve_next(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener, automation_id,
                        crashing(0.2)) == "failed"
    restored = docker_client.containers.get(final)
    assert restored.id == old.id and restored.status == "running"
    assert "the previous version keeps running" in last_result(db_url, automation_id)["execution_log"]
    assert names_left(docker_client, automation_id) == []
    assert "restored the previous version" in listener.log()

    # What a listener killed after the new version took the name leaves: a -prev beside it.
    docker_client.containers.create(old.image.id, name=f"{final}-prev", labels=labels(inst, automation_id, 998, "production"))
    assert approve_next(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener, automation_id,
                        SERVICE.replace("'serving'", "'serving v2'")) == "deployed"
    assert docker_client.containers.get(final).id != old.id
    assert names_left(docker_client, automation_id) == []
    assert listener.stop() == 0


def test_a_swap_name_held_by_another_installation_is_refused(db_url, operator, docker_client, base_image, tmp_path,
                                                             cleanup, start) -> None:
    listener = start()
    automation_id, old = deploy_first(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener)
    final = repository(automation_id, NAME)
    foreign = docker_client.containers.create(old.image.id, name=f"{final}-prev",
                                              labels=labels("otherinstallation", automation_id, 1, "production"))
    try:
        assert approve_next(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener, automation_id,
                            SERVICE.replace("'serving'", "'serving v2'")) == "failed"
        assert "taken on this Docker engine by installation otherinstallation" in last_result(db_url, automation_id)["execution_log"]
        foreign.reload()  # untouched
        current = docker_client.containers.get(final)
        assert current.id == old.id and current.status == "running"
        assert current.attrs["State"]["StartedAt"] == old.attrs["State"]["StartedAt"]
    finally:
        foreign.remove(force=True)  # ours: this test made it
    assert listener.stop() == 0


@pytest.mark.parametrize("runtime_env, runtime", [({"PROD_RUNTIME": "runc"}, "runc"),
                                                  ({"SANDBOX_RUNTIME": "io.containerd.runc.v2"}, "io.containerd.runc.v2")])
def test_production_container_options(db_url, operator, docker_client, base_image, tmp_path, cleanup, start,
                                      runtime_env, runtime) -> None:
    automation_id, _, _ = make_tested_build(operator, docker_client, base_image, tmp_path, cleanup, code=JOB, check=JOB_CHECK)
    listener = start(PROD_LOG_MAX_SIZE="5m", PROD_LOG_MAX_FILES="2", SANDBOX_MEMORY="256m", SANDBOX_PIDS="64",
                     **runtime_env)
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 60, "the deployment", listener)
    assert status(db_url, automation_id) == "deployed"
    container = docker_client.containers.get(repository(automation_id, NAME))
    host = container.attrs["HostConfig"]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "5m", "max-file": "2"}}
    assert host["Memory"] == 256 * 2**20 and host["MemorySwap"] == host["Memory"]
    assert host["Runtime"] == runtime
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and host["Privileged"] is False
    assert "no-new-privileges:true" in host["SecurityOpt"] and host["PidsLimit"] == 64
    assert container.attrs["Config"]["User"] == "65534:65534"
    assert container.labels[LABEL_INSTALLATION] == installation(db_url)
    assert listener.stop() == 0


def test_an_unknown_runtime_fails_before_anything_changes(db_url, operator, docker_client, base_image, tmp_path,
                                                          cleanup, start) -> None:
    first = start()
    automation_id, old = deploy_first(db_url, operator, docker_client, base_image, tmp_path, cleanup, first)
    assert first.stop() == 0
    listener = start(PROD_RUNTIME="no-such-runtime")
    assert approve_next(db_url, operator, docker_client, base_image, tmp_path, cleanup, listener, automation_id,
                        SERVICE) == "failed"
    log = last_result(db_url, automation_id)["execution_log"]
    assert "PROD_RUNTIME=no-such-runtime is not a runtime of this Docker engine" in log
    current = docker_client.containers.get(repository(automation_id, NAME))
    assert current.id == old.id and current.attrs["State"]["StartedAt"] == old.attrs["State"]["StartedAt"]
    assert listener.stop() == 0
