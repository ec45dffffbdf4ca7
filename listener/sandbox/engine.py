"""The Docker engine side of the sandbox: build an image, run one confined container.

Generated code is untrusted. Every run gets: a non-root user, no capabilities, no-new-privileges,
memory/CPU/pids limits, a hard timeout after which the container is killed, the sandbox network
(never the host's), no Docker socket, only the sandbox AppRole directory mounted read-only, and a
capped log. Containers are removed by whoever created them (`Sandbox.run` as a context manager).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig
from loguru import logger

from listener.config import DEFAULT_APPROLE_DIR, Settings
from listener.sandbox.naming import LABEL_ROLE, installation_filter, labels
from listener.sandbox.wheels import PythonTarget

SANDBOX_USER = "65534:65534"  # nobody:nogroup


class EngineError(Exception):
    """The Docker engine could not do what was asked (unreachable, build error, run error)."""


@dataclass(frozen=True)
class Limits:
    memory: str = "512m"
    cpus: float = 1.0
    pids: int = 256
    log_bytes: int = 1 << 20
    timeout_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(memory=settings.sandbox_memory, cpus=settings.sandbox_cpus, pids=settings.sandbox_pids,
                   log_bytes=settings.sandbox_log_bytes, timeout_s=settings.sandbox_timeout_s)


@dataclass
class RunResult:
    exit_code: int | None  # None: killed at the timeout (or still running in service mode)
    timed_out: bool
    logs: str
    logs_truncated: bool
    duration_s: float
    oom_killed: bool = False
    limit_s: float = 0.0

    def describe(self) -> str:
        if self.timed_out:
            return f"killed after the {self.limit_s:g} s timeout (SANDBOX_TIMEOUT_S)"
        if self.oom_killed:
            return f"killed: out of memory (exit {self.exit_code})"
        return f"exit code {self.exit_code} after {self.duration_s:.1f} s"


@dataclass
class BuiltImage:
    tag: str
    image_id: str
    log: str


@dataclass
class Sandbox:
    client: Any  # docker.DockerClient
    settings: Settings
    limits: Limits
    installation: str
    automation_id: int
    build_id: int
    network: str | None = None  # resolved by ensure_network()
    created: list[Any] = field(default_factory=list)
    python_targets: dict[str, PythonTarget] = field(default_factory=dict)  # base image id -> its Python

    @classmethod
    def connect(cls, settings: Settings, installation: str, automation_id: int, build_id: int) -> "Sandbox":
        try:
            client = docker.from_env(timeout=int(max(60, settings.sandbox_timeout_s + 30)))
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(f"the Docker engine is unreachable (DOCKER_HOST or /var/run/docker.sock): {exc}") from None
        return cls(client=client, settings=settings, limits=Limits.from_settings(settings),
                   installation=installation, automation_id=automation_id, build_id=build_id)

    # -- network -----------------------------------------------------------------------------
    def ensure_network(self) -> str:
        """The sandbox network: 'none', or a user-defined bridge created when missing."""
        name = self.settings.sandbox_network
        if name == "host":  # config refuses it too; never let a sandbox share the host's network
            raise EngineError("SANDBOX_NETWORK=host is refused")
        if name != "none":
            try:
                self.client.networks.get(name)
            except docker.errors.NotFound:
                logger.info("creating Docker network {}", name)
                self.client.networks.create(name, driver="bridge", labels={"io.agent-builder.role": "sandbox-network"})
        self.network = name
        return name

    # -- images --------------------------------------------------------------------------------
    def build(self, context: Path, tag: str) -> BuiltImage:
        """The image of a build context (its Dockerfile interpreted, never given to `docker build`),
        assembled as confined as a run: listener/sandbox/image.py."""
        from listener.sandbox.image import ImageBuilder

        return ImageBuilder.for_sandbox(self).build(context, tag)

    def remove_image(self, reference: str) -> None:
        try:
            self.client.images.remove(reference, force=True, noprune=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            logger.warning("could not remove image {}: {}", reference, exc)

    def prune_images(self, keep: int) -> list[str]:
        """Keep only the `keep` newest sandbox images of this automation."""
        images = self.client.images.list(filters=installation_filter(self.installation, automation=self.automation_id))
        images.sort(key=lambda image: image.attrs.get("Created", ""), reverse=True)
        removed = []
        for image in images[keep:]:
            self.remove_image(image.id)
            removed.append(image.id)
        return removed

    # -- containers ------------------------------------------------------------------------------
    def container_options(self, environment: dict[str, str]) -> dict[str, Any]:
        """Everything that confines a sandbox run (also what the tests inspect)."""
        options: dict[str, Any] = {
            "user": SANDBOX_USER,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "mem_limit": self.limits.memory,
            "memswap_limit": self.limits.memory,
            "nano_cpus": int(self.limits.cpus * 1e9),
            "pids_limit": self.limits.pids,
            "privileged": False,
            "environment": environment,
            "labels": labels(self.installation, self.automation_id, self.build_id, "sandbox-run"),
            "log_config": LogConfig(type="json-file", config={"max-size": str(self.limits.log_bytes), "max-file": "1"}),
            "detach": True,
            "stdin_open": False,
        }
        network = self.network or self.ensure_network()
        if network == "none":
            options["network_mode"] = "none"
        else:
            options["network"] = network
        approle = self.settings.vault_approle_dir
        if approle.is_dir():
            options["volumes"] = {str(approle.resolve()): {"bind": DEFAULT_APPROLE_DIR, "mode": "ro"}}
        if self.settings.sandbox_runtime:
            options["runtime"] = self.settings.sandbox_runtime
        return options

    @contextmanager
    def container(self, image: str, command: list[str] | None, environment: dict[str, str],
                  entrypoint: list[str] | None = None) -> Iterator[Any]:
        """A created (not started) confined container, removed on exit whatever happens."""
        options = self.container_options(environment)
        if entrypoint is not None:
            options["entrypoint"] = entrypoint
        try:
            container = self.client.containers.create(image, command=command, **options)
        except docker.errors.ImageNotFound:
            raise EngineError(f"image {image} is not available to the Docker engine") from None
        except docker.errors.APIError as exc:
            raise EngineError(f"the Docker engine refused to create the container: {exc.explanation or exc}") from None
        try:
            yield container
        finally:
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                logger.warning("could not remove sandbox container {}: {}", container.short_id, exc)

    def run_to_end(self, container: Any, timeout_s: float | None = None) -> RunResult:
        """Start the container and wait for it to exit; kill it at the timeout."""
        limit = self.limits.timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        self._start(container)
        timed_out = False
        exit_code: int | None = None
        try:
            exit_code = int(container.wait(timeout=limit)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            self._kill(container)
        duration = time.monotonic() - started
        logs, truncated = read_logs(container, self.limits.log_bytes)
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        return RunResult(exit_code=exit_code, timed_out=timed_out, logs=logs, logs_truncated=truncated,
                         duration_s=duration, oom_killed=oom, limit_s=limit)

    def run_for(self, container: Any, seconds: float) -> RunResult:
        """Service mode: start it, let it run `seconds`; it keeps running if it does (the caller
        checks and the context manager removes it)."""
        started = time.monotonic()
        self._start(container)
        exit_code: int | None = None
        try:
            exit_code = int(container.wait(timeout=seconds)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            pass  # still running: what a service should be
        logs, truncated = read_logs(container, self.limits.log_bytes)
        return RunResult(exit_code=exit_code, timed_out=False, logs=logs, logs_truncated=truncated,
                         duration_s=time.monotonic() - started)

    @staticmethod
    def _start(container: Any) -> None:
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise EngineError(f"the container could not start: {exc.explanation or exc}") from None

    @staticmethod
    def _kill(container: Any) -> None:
        try:
            container.kill()
        except docker.errors.APIError:
            pass
        try:
            container.wait(timeout=30)
        except (requests.exceptions.RequestException, docker.errors.APIError):
            pass


def read_logs(container: Any, cap: int) -> tuple[str, bool]:
    """stdout+stderr of a container, at most `cap` bytes (a flood is cut, never held in memory)."""
    data = bytearray()
    truncated = False
    try:
        for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=False):
            room = cap - len(data)
            if len(chunk) > room:
                data.extend(chunk[:room])
                truncated = True
                break
            data.extend(chunk)
    except docker.errors.APIError as exc:
        return f"(logs unavailable: {exc})", False
    text = data.decode("utf-8", errors="replace")
    if truncated:
        text += f"\n… (log cut at {cap} bytes)"
    return text, truncated


def remove_attempt_containers(installation: str, build_id: int) -> int:
    """After an attempt died: remove the containers it left (its sandbox runs and image-build steps,
    and an unverified production candidate `…-next`). Best effort: without an engine there is nothing to remove."""
    try:
        client = docker.from_env(timeout=30)
        containers = client.containers.list(all=True, filters=installation_filter(installation, build=int(build_id)))
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return 0
    removed = 0
    for container in containers:
        role = container.labels.get(LABEL_ROLE)
        if role in ("sandbox-run", "sandbox-build") or (role == "production" and container.name.endswith("-next")):
            try:
                container.remove(force=True)
                removed += 1
            except docker.errors.APIError as exc:
                logger.warning("could not remove container {} of a dead attempt: {}", container.name, exc)
    return removed
