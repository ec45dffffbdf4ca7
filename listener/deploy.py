"""Playbook Step 8: deploy exactly what was tested and approved.

script: the image id that passed the four levels runs as container agent-{id}-{slug}, retagged
:production, confined like the sandbox but on PROD_NETWORK with the production AppRole directory.
The new container is started and verified under a temporary name first; only then is the previous
version replaced, so a failed deployment leaves the old one running.
claude_agent: the tested agent.sh is installed into PROD_AGENTS_DIR (mode 0755), its hash verified.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import requests.exceptions

from listener.config import DEFAULT_APPROLE_DIR, Settings
from listener.context import AttemptContext
from listener.extract import GeneratedFiles
from listener.outcome import StepFailure
from listener.pipeline import artifact_digest
from listener.sandbox.engine import Limits, SANDBOX_USER, read_logs
from listener.sandbox.naming import LABEL_INSTALLATION, labels, production_tag, repository


@dataclass(frozen=True)
class Source:
    """The approved build: what was tested."""

    build_id: int
    image_id: str | None
    artifact_sha256: str | None
    files: dict[str, str]
    acceptance_check: Any


def deploy(ctx: AttemptContext) -> None:
    """The default DEPLOY_HANDLER."""
    row = ctx.store.conn.execute(ctx.store.queries["deploy_source"], {"deploy_id": ctx.claim.build_id}).fetchone()
    if row is None:
        _fail("there is no tested build to deploy (the approved row's build did not pass the four levels)")
    source = Source(build_id=row["build_id"], image_id=row["image_id"], artifact_sha256=row["artifact_sha256"],
                    files=row["files"] or {}, acceptance_check=row["acceptance_check"])
    _verify_artifact(source)
    ctx.step("deploy")
    if ctx.automation.type == "claude_agent":
        path = install_agent(ctx.settings, ctx.automation.id, ctx.automation.name, source)
        ctx.save(artifact_sha256=source.artifact_sha256)
        ctx.log.info("agent installed at {}", path)
    else:
        container = run_production(ctx.settings, ctx.installation, ctx.automation.id, ctx.automation.name,
                                   ctx.claim.build_id, source)
        ctx.save(image_id=source.image_id, artifact_sha256=source.artifact_sha256)
        ctx.log.info("production container {} runs image {}", container, source.image_id)


def _fail(message: str, detail: str = "") -> NoReturn:
    raise StepFailure(level=0, step="deploy", message=f"deployment failed: {message}", detail=detail)


def _verify_artifact(source: Source) -> None:
    main_name = "agent.sh" if "agent.sh" in source.files else "script.py"
    if main_name not in source.files:
        _fail("the tested build recorded no files")
    files = GeneratedFiles(main_name=main_name, main=source.files[main_name], dockerfile=source.files.get("Dockerfile"),
                           requirements=source.files.get("requirements.txt"))
    if source.artifact_sha256 and artifact_digest(files) != source.artifact_sha256:
        _fail("the recorded files do not match the sha256 that was tested")


# -- claude_agent ------------------------------------------------------------------------------------

def install_agent(settings: Settings, automation_id: int, name: str | None, source: Source) -> Path:
    content = source.files["agent.sh"].encode("utf-8")
    directory = settings.prod_agents_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{repository(automation_id, name)}.sh"
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".deploy-", delete=False) as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o755)
        os.replace(handle.name, target)
    except OSError as exc:
        _fail(f"cannot install the agent into PROD_AGENTS_DIR={directory}: {exc.strerror or exc}")
    installed = target.read_bytes()
    if hashlib.sha256(installed).digest() != hashlib.sha256(content).digest() or (target.stat().st_mode & 0o777) != 0o755:
        _fail(f"{target} does not hold the tested script after installing it")
    return target


# -- script ------------------------------------------------------------------------------------------

def run_mode(settings: Settings, acceptance_check: Any) -> str:
    """service (restart unless-stopped, verified running) or job (run once, verified exit 0)."""
    if settings.prod_run_mode != "auto":
        return settings.prod_run_mode
    checks = acceptance_check.get("checks", []) if isinstance(acceptance_check, dict) else []
    return "service" if any(isinstance(c, dict) and c.get("kind") == "container_running" for c in checks) else "job"


def run_production(settings: Settings, installation: str, automation_id: int, name: str | None, deploy_id: int,
                   source: Source) -> str:
    if not source.image_id:
        _fail("the tested build recorded no image")
    try:
        client = docker.from_env(timeout=int(max(60, settings.sandbox_timeout_s + 30)))
        image = client.images.get(source.image_id)
    except docker.errors.ImageNotFound:
        _fail(f"the tested image {source.image_id} is no longer on the Docker engine; retry the build")
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        _fail(f"the Docker engine is unreachable: {exc}")
    final_name = repository(automation_id, name)
    mode = run_mode(settings, source.acceptance_check)
    current = _container(client, final_name)
    for taken in (current, _container(client, f"{final_name}-next")):
        if taken is not None and taken.labels.get(LABEL_INSTALLATION) != installation:
            owner = taken.labels.get(LABEL_INSTALLATION) or "nobody's (not made by agent-builder)"
            _fail(f"the container name {taken.name} is taken on this Docker engine by installation {owner}; "
                  "production names are agent-{id}-{slug}: rename this automation or remove that container")
    if current is not None and current.image.id == image.id and (mode == "job" or current.status == "running"):
        image.tag(final_name, production_tag(installation))
        return final_name  # already deployed: deploying again changes nothing

    stale = _container(client, f"{final_name}-next")
    if stale is not None:
        stale.remove(force=True)
    limits = Limits.from_settings(settings)
    options: dict[str, Any] = {
        "name": f"{final_name}-next", "user": SANDBOX_USER, "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"], "mem_limit": limits.memory, "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids, "labels": labels(installation, automation_id, deploy_id, "production"), "detach": True,
        "restart_policy": {"Name": "unless-stopped"} if mode == "service" else {"Name": "no"},
        "environment": {"VAULT_ADDR": settings.vault_addr} if settings.vault_addr else {},
    }
    if settings.prod_network == "none":
        options["network_mode"] = "none"
    else:
        options["network"] = settings.prod_network
    if settings.prod_vault_approle_dir.is_dir():
        options["volumes"] = {str(settings.prod_vault_approle_dir.resolve()): {"bind": DEFAULT_APPROLE_DIR, "mode": "ro"}}
    try:
        candidate = client.containers.run(image.id, **options)
    except docker.errors.APIError as exc:
        _fail(f"the production container could not start: {exc.explanation or exc}")
    problem = _verify(candidate, mode, settings)
    if problem is not None:
        logs, _ = read_logs(candidate, 4000)
        candidate.remove(force=True)
        _fail(f"{problem}; the previous version keeps running", detail=f"last output: {' '.join(logs.split())[-500:]}")
    if current is not None:
        current.remove(force=True)
    candidate.rename(final_name)
    image.tag(final_name, production_tag(installation))
    return final_name


def _verify(container: Any, mode: str, settings: Settings) -> str | None:
    if mode == "service":
        time.sleep(settings.prod_verify_s)
        container.reload()
        if container.status != "running":
            return f"the new version stopped within {settings.prod_verify_s:g} s (status {container.status})"
        return None
    try:
        code = int(container.wait(timeout=settings.sandbox_timeout_s)["StatusCode"])
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        return f"the job did not finish within {settings.sandbox_timeout_s:g} s"
    return None if code == 0 else f"the job exited with code {code}"


def _container(client: Any, name: str) -> Any:
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def clean_rejected(settings: Settings, image_id: str | None) -> str:
    """After a rejection: remove the rejected build's sandbox image. Returns what was done."""
    if not image_id:
        return "no sandbox image to remove"
    try:
        client = docker.from_env(timeout=60)
        client.images.remove(image_id, force=True)
    except docker.errors.ImageNotFound:
        return "the sandbox image was already gone"
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return f"the sandbox image could not be removed ({exc}); old images are pruned with later builds"
    return f"sandbox image {image_id[:19]} removed"
