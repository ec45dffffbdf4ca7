"""Playbook Step 8: deploy exactly what was tested and approved.

script: the image id that passed the four levels runs as container agent-{id}-{slug}, retagged
:production, confined like the sandbox but on PROD_NETWORK with the production AppRole directory,
with rotated logs, no swap beyond its memory limit and the configured runtime (PROD_RUNTIME).

The new version starts as `<name>-next` next to the running previous version and is watched for
the whole PROD_VERIFY_S: the Docker events stream (a die, oom, restart, pause or destroy event at
any moment fails it) and an inspect every POLL_S (running, RestartCount 0, StartedAt unchanged).
A job must exit 0 within SANDBOX_TIMEOUT_S instead. Only then the swap:

  1. rename the previous version `<name>` -> `<name>-prev` (it keeps running)
  2. rename the new version `<name>-next` -> `<name>`       (the name is missing only between 1 and 2)
  3. move the `:production` tag to the new image
  4. stop the previous version                             (the new one has served since it started)
  5. check the new version again (still running, never restarted)
  6. remove `<name>-prev`

A failure in 1-5 undoes what was done (the candidate removed, the previous version renamed back,
started again if it had been running, the tag put back) and fails the deployment. A listener that
dies mid-swap leaves a `-prev` whose meaning is unambiguous: with no `<name>` beside it, it is the
previous version and the next deployment restores it; with `<name>` beside it the swap had
finished and it is removed. A stale `-next` is always removed (the rescuer removes it too).
claude_agent: the tested agent.sh is installed into PROD_AGENTS_DIR (mode 0755), its hash verified.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig
from loguru import logger

from listener import signing
from listener.config import DEFAULT_APPROLE_DIR, Settings
from listener.queue.context import AttemptContext
from listener.build.extract import GeneratedFiles, artifact_digest
from listener.queue.outcome import StepFailure
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
    signature: str | None = None


def deploy(ctx: AttemptContext) -> None:
    """The default DEPLOY_HANDLER."""
    source = read_source(ctx)
    _verify_artifact(source, ctx.automation.type, ctx.settings.builder_signing_key)
    ctx.step("deploy")
    if ctx.automation.type == "claude_agent":
        path = install_agent(ctx.settings, ctx.automation.id, ctx.automation.name, source)
        ctx.save(artifact_sha256=source.artifact_sha256)
        ctx.log.info("agent installed at {}", path)
    else:
        container = run_production(ctx.settings, ctx.installation, ctx.automation.id, ctx.automation.name,
                                   ctx.claim.build_id, source, ctx.log)
        ctx.save(image_id=source.image_id, artifact_sha256=source.artifact_sha256)
        ctx.log.info("production container {} runs image {}", container, source.image_id)


def _fail(message: str, detail: str = "") -> NoReturn:
    raise StepFailure(level=0, step="deploy", message=f"deployment failed: {message}", detail=detail)


def read_source(ctx: AttemptContext) -> Source:
    """The build this deployment was claimed for (sql/deploy_source.sql), refused unless it belongs
    to this automation, was finished with success by a builder session, and passed levels 1-4."""
    row = ctx.store.deploy_source(ctx.claim.build_id)
    problem = source_problem(row, ctx.automation.id)
    if problem is not None:
        _fail(problem)
    assert row is not None
    return Source(build_id=row["build_id"], image_id=row["image_id"], artifact_sha256=row["artifact_sha256"],
                  files=row["files"] or {}, acceptance_check=row["acceptance_check"], signature=row["signature"])


def source_problem(row: dict[str, Any] | None, automation_id: int) -> str | None:
    """Why the build a deployment points at may not be deployed, or None when it may."""
    retry = "; retry it (builder_status = 'not_started') to build and test it again"
    if row is None or row["build_id"] is None:
        return "this deployment points at no build: there is no tested build to deploy" + retry
    build = row["build_id"]
    if not row["belongs"]:
        return f"build {build} belongs to automation {row['build_automation_id']}, not to automation {automation_id}" + retry
    if not row["finished"]:
        return (f"build {build} is not a finished, successful build (kind {row['kind']!r}, outcome {row['outcome']!r})" + retry)
    if not row["by_builder"]:
        made_by = (f"its session's login {row['built_by']!r} is not a member of agent_builder_builder" if row["built_by"]
                   else "it records no login (made before migration 0006 added roles)")
        return f"build {build} was not made by a builder session: {made_by}" + retry
    passed = list(row["levels_passed"] or [])
    if passed != [1, 2, 3, 4] or row["any_failed"]:
        missing = [level for level in (1, 2, 3, 4) if level not in passed]
        return (f"build {build} did not pass the four test levels (passing: {', '.join(map(str, passed)) or 'none'}"
                + (f"; missing: {', '.join(map(str, missing))}" if missing else "")
                + ("; a level failed" if row["any_failed"] else "") + ")" + retry)
    return None


def _verify_artifact(source: Source, automation_type: str | None, signing_key: str | None) -> None:
    """What is deployed is what was tested: the files match the recorded sha256 (always: a build
    without one is refused), a script has its image id, and with BUILDER_SIGNING_KEY the build's
    signature verifies."""
    build = source.build_id
    if not source.artifact_sha256:
        _fail(f"build {build} recorded no sha256 of its files: nothing is deployed unverified")
    main_name = "agent.sh" if automation_type == "claude_agent" else "script.py"
    if main_name not in source.files:
        _fail(f"the tested build {build} recorded no {main_name}")
    files = GeneratedFiles(main_name=main_name, main=source.files[main_name], dockerfile=source.files.get("Dockerfile"),
                           requirements=source.files.get("requirements.txt"))
    if artifact_digest(files) != source.artifact_sha256:
        _fail(f"the recorded files of build {build} do not match the sha256 that was tested")
    if automation_type != "claude_agent" and not source.image_id:
        _fail(f"build {build} recorded no image id: nothing is deployed unverified")
    if signing_key:
        if not source.signature:
            _fail(f"build {build} is not signed, and BUILDER_SIGNING_KEY is set: only builds signed with that key are "
                  "deployed. Retry it to build it again with the key")
        if not signing.verify(signing_key, build, source.image_id, source.artifact_sha256, source.signature):
            _fail(f"the signature of build {build} does not verify with BUILDER_SIGNING_KEY: its image id or sha256 "
                  "were changed after it was built, or it was signed with another key. Retry it to build it again")


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

POLL_S = 0.25  # inspect interval while a new service is watched (the events stream is the fast path)
WATCH_MARGIN_S = 60.0  # the daemon ends the events stream this long after PROD_VERIFY_S at the latest
FATAL_EVENTS = frozenset({"die", "oom", "restart", "pause", "destroy", "health_status: unhealthy"})


def run_mode(settings: Settings, acceptance_check: Any) -> str:
    """service (restart unless-stopped, verified running) or job (run once, verified exit 0)."""
    if settings.prod_run_mode != "auto":
        return settings.prod_run_mode
    checks = acceptance_check.get("checks", []) if isinstance(acceptance_check, dict) else []
    return "service" if any(isinstance(c, dict) and c.get("kind") == "container_running" for c in checks) else "job"


@dataclass(frozen=True)
class Names:
    """The three names of one automation's production container."""

    final: str

    @property
    def next(self) -> str:
        return f"{self.final}-next"

    @property
    def prev(self) -> str:
        return f"{self.final}-prev"


def production_options(settings: Settings, installation: str, automation_id: int, deploy_id: int, mode: str,
                       name: str) -> dict[str, Any]:
    """Everything that confines a production container (also what the tests inspect)."""
    limits = Limits.from_settings(settings)
    options: dict[str, Any] = {
        "name": name, "user": SANDBOX_USER, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"],
        "privileged": False, "mem_limit": limits.memory, "memswap_limit": limits.memory,
        "nano_cpus": int(limits.cpus * 1e9), "pids_limit": limits.pids,
        "labels": labels(installation, automation_id, deploy_id, "production"),
        "log_config": LogConfig(type="json-file", config={"max-size": settings.prod_log_max_size,
                                                          "max-file": str(settings.prod_log_max_files)}),
        "restart_policy": {"Name": "unless-stopped"} if mode == "service" else {"Name": "no"},
        "environment": {"VAULT_ADDR": settings.vault_addr} if settings.vault_addr else {},
    }
    if settings.prod_runtime:
        options["runtime"] = settings.prod_runtime
    if settings.prod_network == "none":
        options["network_mode"] = "none"
    else:
        options["network"] = settings.prod_network
    if settings.prod_vault_approle_dir.is_dir():
        options["volumes"] = {str(settings.prod_vault_approle_dir.resolve()): {"bind": DEFAULT_APPROLE_DIR, "mode": "ro"}}
    return options


def run_production(settings: Settings, installation: str, automation_id: int, name: str | None, deploy_id: int,
                   source: Source, log: Any = logger) -> str:
    if not source.image_id:
        _fail("the tested build recorded no image")
    try:
        client = docker.from_env(timeout=int(max(60, settings.sandbox_timeout_s + 30, settings.prod_stop_timeout_s + 30)))
        image = client.images.get(source.image_id)
        runtimes = client.info().get("Runtimes") or {}
    except docker.errors.ImageNotFound:
        _fail(f"the tested image {source.image_id} is no longer on the Docker engine; retry the build")
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        _fail(f"the Docker engine is unreachable: {exc}")
    if settings.prod_runtime and settings.prod_runtime not in runtimes:
        _fail(f"PROD_RUNTIME={settings.prod_runtime} is not a runtime of this Docker engine "
              f"(it has {', '.join(sorted(runtimes)) or 'none listed'}); the previous version keeps running")
    names = Names(repository(automation_id, name))
    mode = run_mode(settings, source.acceptance_check)
    try:
        current = _recover(client, names, installation, log)
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        _fail(f"could not repair what an interrupted deployment left ({names.next}, {names.prev}): {_explain(exc)}")
    try:
        if current is not None and current.attrs.get("Image") == image.id and (mode == "job" or current.status == "running"):
            image.tag(names.final, production_tag(installation))
            return names.final  # already deployed: deploying again changes nothing
        candidate = client.containers.create(image, **production_options(settings, installation, automation_id,
                                                                             deploy_id, mode, names.next))
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        _fail(f"the production container could not be created: {_explain(exc)}; {_previous_state(current)}")
    started = time.monotonic()
    problem = _watch_service(client, candidate, settings.prod_verify_s) if mode == "service" \
        else _run_job(candidate, settings.sandbox_timeout_s)
    if problem is not None:
        output, _ = read_logs(candidate, 4000)
        _remove(candidate, log)
        if settings.prod_network == "host" and mode == "service":
            problem += (" (PROD_NETWORK=host: a new version that binds a port the previous version holds cannot"
                        " start beside it)")
        _fail(f"{problem}; {_previous_state(current)}", detail=f"last output: {' '.join(output.split())[-500:]}")
    log.info("new version {} verified as a {} in {:.1f} s", candidate.short_id, mode, time.monotonic() - started)
    swap = Swap(client=client, names=names, candidate=candidate, current=current, image=image, mode=mode,
                installation=installation, stop_timeout_s=settings.prod_stop_timeout_s, log=log)
    problem = swap.run()
    if problem is not None:
        _fail(problem)
    return names.final


def _recover(client: Any, names: Names, installation: str, log: Any) -> Any:
    """Refuse names held by another installation; repair what an interrupted deployment left.
    Returns the previous version (the container now named `final`), or None."""
    current, candidate, prev = (_container(client, n) for n in (names.final, names.next, names.prev))
    for taken in (current, candidate, prev):
        if taken is not None and taken.labels.get(LABEL_INSTALLATION) != installation:
            owner = taken.labels.get(LABEL_INSTALLATION) or "nobody's (not made by agent-builder)"
            _fail(f"the container name {taken.name} is taken on this Docker engine by installation {owner}; "
                  "production names are agent-{id}-{slug}: rename this automation or remove that container")
    if candidate is not None:
        candidate.remove(force=True)
        log.warning("removed {}, the unverified candidate of an interrupted deployment", names.next)
    if prev is not None and current is None:
        prev.rename(names.final)
        if prev.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped" and prev.status != "running":
            prev.start()
        prev.reload()
        log.warning("restored the previous version {} from {} (left by an interrupted swap); it is {}",
                    names.final, names.prev, prev.status)
        return prev
    if prev is not None:
        prev.remove(force=True)
        log.warning("removed {}, the replaced version left by a swap that had finished", names.prev)
    return current


def _previous_state(current: Any) -> str:
    if current is None:
        return "nothing was deployed (there is no previous version)"
    try:
        current.reload()
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        return f"the previous version was left untouched (its state cannot be read: {_explain(exc)})"
    if current.status == "running":
        return "the previous version keeps running"
    return f"the previous version is left as it was ({current.status})"


def _run_job(candidate: Any, timeout_s: float) -> str | None:
    try:
        candidate.start()
        code = int(candidate.wait(timeout=timeout_s)["StatusCode"])
    except docker.errors.APIError as exc:
        return f"the job could not start: {exc.explanation or exc}"
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        return f"the job did not finish within {timeout_s:g} s"
    return None if code == 0 else f"the job exited with code {code}"


@dataclass
class EventWatch:
    """The Docker events of one container, pumped by a thread into a queue (None: the stream ended).
    Opened before the container starts, so nothing it does is missed; the daemon ends the stream
    at `until` even when it cannot be closed from here (ssh:// engines)."""

    stream: Any
    events: "queue.Queue[dict[str, Any] | None]"
    thread: threading.Thread

    @classmethod
    def open(cls, client: Any, container_id: str, since: float, until: float) -> "EventWatch":
        stream = client.events(decode=True, since=int(since), until=int(until) + 1,
                               filters={"type": "container", "container": container_id})
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()

        def pump() -> None:
            try:
                for event in stream:
                    events.put(event)
            except Exception:  # noqa: BLE001 - a closed or broken stream ends the watch; polling goes on
                pass
            finally:
                events.put(None)

        thread = threading.Thread(target=pump, name=f"deploy-events-{container_id[:12]}", daemon=True)
        thread.start()
        return cls(stream=stream, events=events, thread=thread)

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after `timeout` (or when the stream has ended)."""
        try:
            return self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self) -> None:
        try:
            self.stream.close()
        except (docker.errors.DockerException, OSError):
            pass
        self.thread.join(timeout=2)


def _watch_service(client: Any, candidate: Any, verify_s: float) -> str | None:
    """Start the candidate and watch it for verify_s: it must run the whole time, never restart."""
    created = _daemon_time(candidate.attrs.get("Created", ""))
    try:
        watch = EventWatch.open(client, candidate.id, since=created, until=created + verify_s + WATCH_MARGIN_S)
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        return f"cannot follow the new version's events: {exc}"
    try:
        try:
            candidate.start()
            candidate.reload()
        except docker.errors.APIError as exc:
            return f"the new version could not start: {exc.explanation or exc}"
        started = time.monotonic()
        first_start = candidate.attrs["State"]["StartedAt"]
        deadline = started + verify_s
        while (remaining := deadline - time.monotonic()) > 0:
            # An event, or POLL_S without one (also once the stream has ended): either way, inspect too.
            event = watch.next(min(remaining, POLL_S)) or {}
            action = event.get("Action") or event.get("status") or ""
            if action in FATAL_EVENTS:
                return _describe_event(candidate, action, event, time.monotonic() - started, verify_s)
            problem = _not_steady(candidate, first_start, time.monotonic() - started, verify_s)
            if problem is not None:
                return problem
        return _not_steady(candidate, first_start, verify_s, verify_s)
    finally:
        watch.close()


def _not_steady(container: Any, first_start: str, elapsed: float, verify_s: float) -> str | None:
    """None while the container runs as it started: running, RestartCount 0, StartedAt unchanged."""
    try:
        container.reload()
    except docker.errors.NotFound:
        return f"the new version was removed {elapsed:.1f} s after it started"
    state = container.attrs["State"]
    restarts = int(container.attrs.get("RestartCount") or 0)
    must = f"a service must keep running for PROD_VERIFY_S={verify_s:g} s without a restart"
    if restarts or state.get("StartedAt") != first_start:
        return (f"the new version crashed and was restarted ({restarts} restart(s), last exit code "
                f"{state.get('ExitCode')}) within {elapsed:.1f} s; {must}")
    if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
        oom = ", out of memory" if state.get("OOMKilled") else ""
        return (f"the new version stopped {elapsed:.1f} s after it started (status {state.get('Status')}, "
                f"exit code {state.get('ExitCode')}{oom}); {must}")
    return None


def _describe_event(container: Any, action: str, event: dict[str, Any], elapsed: float, verify_s: float) -> str:
    must = f"a service must keep running for PROD_VERIFY_S={verify_s:g} s without a restart"
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    if action == "die":
        code = attributes.get("exitCode", "?")
        loop = "" if container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no" else \
            " (its restart policy would restart it: a crash loop)"
        return f"the new version exited with code {code} {elapsed:.1f} s after it started{loop}; {must}"
    if action == "oom":
        return f"the new version ran out of memory {elapsed:.1f} s after it started; {must}"
    if action.startswith("health_status"):
        return f"the new version's HEALTHCHECK reported it unhealthy {elapsed:.1f} s after it started; {must}"
    return f"the new version got a {action!r} event {elapsed:.1f} s after it started; {must}"


@dataclass
class Swap:
    """Put a verified candidate in place of the previous version; undo everything if a step fails."""

    client: Any
    names: Names
    candidate: Any
    current: Any  # the previous version, or None
    image: Any
    mode: str
    installation: str
    stop_timeout_s: int
    log: Any
    done: list[str] = field(default_factory=list)

    def run(self) -> str | None:
        names = self.names
        was_running, old_image = False, None
        step = "read the previous version's state"
        try:
            if self.current is not None:
                try:
                    self.current.reload()  # its state now, not from before the verification window
                except docker.errors.NotFound:
                    self.log.warning("the previous version {} disappeared during the verification", names.final)
                    self.current = None
            current = self.current
            was_running = current is not None and current.status == "running"
            old_image = current.attrs.get("Image") if current is not None else None
            started = time.monotonic()
            if current is not None:
                step = f"rename the previous version to {names.prev}"
                current.rename(names.prev)
                self.done.append("moved")
            step = f"rename the new version to {names.final}"
            self.candidate.rename(names.final)
            self.done.append("placed")
            gap_ms = (time.monotonic() - started) * 1000
            step = f"tag the image {names.final}:{production_tag(self.installation)}"
            self.image.tag(names.final, production_tag(self.installation))
            self.done.append("tagged")
            if current is not None:
                step = "stop the previous version"
                self.done.append("stopping")
                current.stop(timeout=self.stop_timeout_s)
            if self.mode == "service":
                step = "check the new version after the swap"
                self.candidate.reload()
                state = self.candidate.attrs["State"]
                if not state.get("Running") or int(self.candidate.attrs.get("RestartCount") or 0):
                    raise SwapError(f"the new version is {state.get('Status')} "
                                    f"(restarts {self.candidate.attrs.get('RestartCount')})")
        except (docker.errors.APIError, requests.exceptions.RequestException, SwapError) as exc:
            return self.undo(step, exc, was_running, old_image)
        self.log.info("swapped {} in: name missing for {:.0f} ms, previous version stopped after {:.1f} s",
                      names.final, gap_ms, time.monotonic() - started)
        if current is not None:
            try:
                current.remove(force=True)
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                self.log.warning("could not remove {} ({}); the next deployment removes it", names.prev, exc)
        return None

    def undo(self, step: str, exc: Exception, was_running: bool, old_image: str | None) -> str:
        current, names = self.current, self.names
        reason = f"could not {step}: {_explain(exc)}"
        self.log.error("swap failed: {}; undoing {}", reason, ", ".join(self.done) or "nothing")
        trouble: list[str] = []
        try:
            self.candidate.remove(force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            trouble.append(f"the new version could not be removed ({_explain(err)})")
        if current is None:
            if "tagged" in self.done:
                _untag(self.client, f"{names.final}:{production_tag(self.installation)}")
            return f"{reason}; nothing was deployed (there is no previous version)"
        try:
            if "moved" in self.done:
                current.rename(names.final)
            if "tagged" in self.done and old_image:
                self.client.images.get(old_image).tag(names.final, production_tag(self.installation))
            current.reload()
            if was_running and current.status != "running":
                current.start()
                current.reload()
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            trouble.append(f"the previous version could not be put back ({_explain(err)})")
        if was_running and current.status == "running" and not trouble:
            self.log.warning("swap undone: {} is the previous version again, running", names.final)
            return f"{reason}; the swap was undone and the previous version keeps running"
        if not was_running and not trouble:
            return f"{reason}; the swap was undone and the previous version is left as it was ({current.status})"
        self.log.error("swap undo incomplete: {}", "; ".join(trouble))
        return (f"{reason}; undoing it failed too: {'; '.join(trouble) or 'the previous version is ' + current.status}. "
                f"The previous version is container {current.id[:12]}: put it back by hand "
                f"(docker rename {current.id[:12]} {names.final} && docker start {names.final})")


class SwapError(Exception):
    """A check inside the swap failed (not a Docker API error)."""


def _explain(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def _untag(client: Any, reference: str) -> None:
    try:
        client.api.remove_image(reference, noprune=True)
    except (docker.errors.APIError, requests.exceptions.RequestException):
        pass


def _remove(container: Any, log: Any) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        log.warning("could not remove the rejected candidate {}: {}; the next deployment removes it", container.name, exc)


def _daemon_time(text: str) -> float:
    """An RFC 3339 time of the engine (nanoseconds, Z) as a Unix time; now when it cannot be read."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text or "")
    if match is None:
        return time.time()
    zone = "+00:00" if match[3] == "Z" else match[3]
    return datetime.fromisoformat(match[1] + zone).timestamp() + float("0." + (match[2] or "0"))


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
