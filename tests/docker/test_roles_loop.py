"""The whole loop under the roles: the listener as a non-superuser builder login with
BUILDER_SIGNING_KEY, the real pipeline (fake Ollama and claude, real Docker), an operator's
approval from psql, and the real deployment of exactly the signed, tested image; and a build
changed in the database after it was signed is refused at deployment."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from listener.sandbox.naming import installation_filter, repository
from listener.signing import verify
from tests.docker.test_end_to_end import pipeline_env
from tests.e2e.listeners import ListenerProcess, query, wait_until
from tests.fakes.ntfy_server import FakeNtfy
from tests.helpers import installation, remove_installation_objects

KEY = "builder-signing-key-for-the-roles-loop"
SCRIPT = """Here it is:

```python
import json
import shutil


def main() -> None:
    usage = shutil.disk_usage("/")
    with open("/tmp/disk.json", "w") as handle:
        json.dump({"total": usage.total, "free": usage.free}, handle)
    print("disk usage written")


if __name__ == "__main__":
    main()
```
"""
ACCEPTANCE = {"checks": [{"kind": "file_exists", "path": "/tmp/disk.json", "min_bytes": 5}]}

pytestmark = pytest.mark.skipif(shutil.which("psql") is None, reason="psql (the PostgreSQL client) is not installed")


def psql(url: str, statement: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", statement], capture_output=True, text=True,
                          timeout=60)


def status(db_url: str, automation_id: int) -> str:
    return query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s", (automation_id,))[0]["builder_status"]


@pytest.fixture
def loop(db_url, logins, docker_client, base_image, fake_ollama, tmp_path: Path) -> Iterator[tuple[ListenerProcess, str, object]]:
    """A running listener as a builder login, and an operator's login for psql."""
    fake_ollama.response_text = SCRIPT
    listener_login = logins.make("builder", label="listener")
    person = logins.make("operator", label="alice")
    with FakeNtfy() as ntfy:
        env = pipeline_env(listener_login.url, fake_ollama, ntfy.url, base_image, tmp_path)
        env.update({"BUILDER_SIGNING_KEY": KEY, "DEPLOY_HANDLER": "listener.deploy.production:deploy", "PROD_NETWORK": "none",
                    "PROD_VERIFY_S": "1", "PROD_AGENTS_DIR": str(tmp_path / "agents"), "SANDBOX_NETWORK": "none"})
        listener = ListenerProcess(env, tmp_path / "listener.log")
        try:
            listener.wait_listening()
            yield listener, person.url, listener_login
        finally:
            listener.stop()
            remove_installation_objects(docker_client, installation(db_url))


def build_one(db_url: str, operator_url: str, listener: ListenerProcess) -> int:
    done = psql(operator_url, "INSERT INTO automation_ideas (name, type, status, task_description, infrastructure_requirement,"
                              " acceptance_check) VALUES ('Disk report', 'script', 'ready_to_build', 'Write the disk usage of /"
                              f" as JSON to /tmp/disk.json', 'none', '{json.dumps(ACCEPTANCE)}') RETURNING id;")
    assert done.returncode == 0, done.stderr
    automation_id = int(done.stdout.split()[0])
    wait_until(lambda: status(db_url, automation_id) in ("awaiting_approval", "failed"), 180, "the build", listener)
    results = query(db_url, "SELECT test_level, status FROM agent_test_results WHERE automation_id = %s ORDER BY id", (automation_id,))
    assert results == [{"test_level": level, "status": "pass"} for level in (1, 2, 3, 4)], listener.log()[-3000:]
    return automation_id


def test_build_approve_deploy_under_the_roles(db_url, loop, docker_client) -> None:
    listener, operator_url, listener_login = loop
    automation_id = build_one(db_url, operator_url, listener)
    build = query(db_url, "SELECT id, image_id, artifact_sha256, signature, built_by FROM agent_builds WHERE automation_id = %s",
                  (automation_id,))[0]
    assert build["built_by"] == listener_login.name
    assert verify(KEY, build["id"], build["image_id"], build["artifact_sha256"], build["signature"])

    done = psql(operator_url, f"UPDATE automation_ideas SET builder_status = 'approved' WHERE id = {automation_id};")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 90, "the deployment", listener)
    assert status(db_url, automation_id) == "deployed", query(db_url, "SELECT execution_log FROM agent_test_results"
                                                                      " WHERE automation_id = %s ORDER BY id", (automation_id,))
    container = docker_client.containers.get(repository(automation_id, "Disk report"))
    assert container.image.id == build["image_id"] and container.attrs["State"]["ExitCode"] == 0
    history = query(db_url, "SELECT new_status, db_user FROM builder_status_history WHERE automation_id = %s ORDER BY id",
                    (automation_id,))
    decided = [row for row in history if row["new_status"] == "approved"]
    assert len(decided) == 1 and decided[0]["db_user"] != listener_login.name
    assert {row["db_user"] for row in history if row["new_status"] in ("queued", "building", "awaiting_approval",
                                                                       "deploying", "deployed")} == {listener_login.name}


def test_a_build_changed_after_it_was_signed_is_not_deployed(db_url, loop, docker_client, base_image) -> None:
    listener, operator_url, _ = loop
    automation_id = build_one(db_url, operator_url, listener)
    other_image = docker_client.images.get(base_image).id
    # A superuser passes every role check (it is a member of every role): only the key it does not
    # have can tell its change from the builder's work.
    with psycopg.connect(db_url, autocommit=True) as superuser:
        superuser.execute("UPDATE agent_builds SET image_id = %s WHERE automation_id = %s AND kind = 'build'",
                          (other_image, automation_id))
    done = psql(operator_url, f"UPDATE automation_ideas SET builder_status = 'approved' WHERE id = {automation_id};")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 60, "the deployment", listener)
    assert status(db_url, automation_id) == "failed"
    log = query(db_url, "SELECT execution_log FROM agent_test_results WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
                (automation_id,))[0]["execution_log"]
    assert "does not verify with BUILDER_SIGNING_KEY" in log
    # nothing of this installation runs in production (other runs on the same engine may use the same names)
    assert not docker_client.containers.list(all=True, filters=installation_filter(installation(db_url), automation=automation_id,
                                                                                   role="production"))
