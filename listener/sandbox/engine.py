"""The Docker engine side of the sandbox: build an image, run one confined container.

Generated code is untrusted. Every run gets: a non-root user, no capabilities, no-new-privileges,
memory/CPU/pids limits, a read-only root filesystem with /tmp and the working directory /work on
size-limited tmpfs (SANDBOX_TMP_SIZE), the sandbox network (an internal bridge: no route off the
host; never the host's network), no Docker socket, only the sandbox AppRole directory mounted
read-only, a capped log, and a deadline it enforces itself: the keeper (listener/sandbox/keeper.py)
is PID 1, kills the automation at the timeout and ends the auto-removed container after a hold, so
no listener is needed for the container to go. The deadline is also a label
(io.agent-builder.deadline) that every listener's sweep (listener/sandbox/sweep.py) acts on.
Containers are removed by whoever created them (`Sandbox.container` as a context manager).
"""

from __future__ import annotations

import io
import math
import posixpath
import secrets
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import docker
import docker.errors
import requests.exceptions
from docker.types import DriverConfig, LogConfig, Mount
from loguru import logger

from listener.config import DEFAULT_APPROLE_DIR, Settings
from listener.sandbox.keeper import (KEEPER_DIR, KEEPER_TMPFS_SIZE, NONCE_VARIABLE, SANDBOX_WORKDIR, STATUS_PATH,
                                     KeeperStatus, keeper_command, parse_status)
from listener.sandbox.naming import LABEL_DEADLINE, LABEL_INSTALLATION, LABEL_ROLE, installation_filter, labels
from listener.sandbox.wheels import PythonTarget

SANDBOX_USER = "65534:65534"  # nobody:nogroup
SCRATCH_DIRS = ("/tmp", SANDBOX_WORKDIR)  # tmpfs, SANDBOX_TMP_SIZE each; everything else is read-only
START_SLACK_S = 15.0  # allowed between creating a container and its keeper's start (in the deadline label)
KEEPER_SLACK_S = 10.0  # how long after the keeper's deadline the builder still waits for its record
POLL_FIRST_S, POLL_MAX_S = 0.01, 0.2  # intervals between two looks at the keeper's status
NETWORK_ROLE = "sandbox-network"


class EngineError(Exception):
    """The Docker engine could not do what was asked (unreachable, build error, run error)."""


@dataclass(frozen=True)
class Limits:
    memory: str = "512m"
    cpus: float = 1.0
    pids: int = 256
    log_bytes: int = 1 << 20
    timeout_s: float = 300.0
    tmp_size: str = "256m"
    hold_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(memory=settings.sandbox_memory, cpus=settings.sandbox_cpus, pids=settings.sandbox_pids,
                   log_bytes=settings.sandbox_log_bytes, timeout_s=settings.sandbox_timeout_s,
                   tmp_size=settings.sandbox_tmp_size, hold_s=settings.sandbox_hold_s)


@dataclass
class RunResult:
    exit_code: int | None  # None: killed at the timeout (or still running in service mode)
    timed_out: bool
    logs: str
    logs_truncated: bool
    duration_s: float
    oom_killed: bool = False
    limit_s: float = 0.0
    vanished: bool = False  # the container ended before its keeper recorded the automation's end

    def describe(self) -> str:
        if self.timed_out:
            return f"killed after the {self.limit_s:g} s timeout (SANDBOX_TIMEOUT_S)"
        if self.vanished:
            return ("the sandbox container ended before its keeper recorded the automation's end "
                    "(out of memory, ended by the automation itself, or removed from outside)")
        if self.oom_killed:
            return f"killed: out of memory (exit {self.exit_code})"
        return f"exit code {self.exit_code} after {self.duration_s:.1f} s"


class KeptContainer:
    """A sandbox container seen through its keeper. The container itself stays up until its
    deadline (so its tmpfs can still be read), so `status` and `attrs["State"]` describe the
    automation: "running" until the keeper recorded its end, then "exited" with its exit code.
    Everything else is the docker SDK container's."""

    def __init__(self, container: Any, nonce: str, limit_s: float, deadline: int) -> None:
        self._container = container
        self.nonce = nonce
        self.limit_s = limit_s
        self.deadline = deadline  # unix time by which the container is gone
        self.ended: KeeperStatus | None = None
        self.vanished = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    @property
    def container(self) -> Any:
        return self._container

    def read_status(self) -> KeeperStatus | None:
        """One look at the keeper's record (a file on its tmpfs, read with get_archive)."""
        if self.ended is not None:
            return self.ended
        try:
            stream, _stat = self._container.get_archive(STATUS_PATH)
            data = b"".join(stream)
        except docker.errors.NotFound as exc:
            if "no such container" in str(exc).lower():
                self.vanished = True
            return None
        except docker.errors.APIError:
            return None  # stopping, being removed: the next look tells
        except requests.exceptions.RequestException as exc:
            raise EngineError(f"the Docker engine stopped answering during the run: {exc}") from None
        status = parse_status(_first_file(data), self.nonce)
        if status is not None:
            self.ended = status
        return status

    def reload(self) -> None:
        try:
            self._container.reload()
        except docker.errors.NotFound:
            self.vanished = True
            raise
        self.read_status()

    @property
    def status(self) -> str:
        if self.ended is not None or self.vanished:
            return "exited"
        return str(self._container.status)

    @property
    def attrs(self) -> dict[str, Any]:
        attrs = dict(self._container.attrs)
        state = dict(attrs.get("State") or {})
        if self.ended is not None:
            code = self.ended.exit_code if self.ended.exit_code is not None else 137
            state.update(Status="exited", Running=False, ExitCode=code, OOMKilled=self.ended.oom_kills > 0)
        attrs["State"] = state
        return attrs


def automation_argv(image_config: dict[str, Any], command: list[str] | None,
                    entrypoint: list[str] | None) -> list[str]:
    """What Docker itself would run: the entrypoint and command given, else the image's (an
    entrypoint given replaces the image's CMD too, as `docker run --entrypoint` does)."""
    if entrypoint is not None:
        argv = list(entrypoint) + list(command or [])
    else:
        argv = list(image_config.get("Entrypoint") or [])
        argv += list(command) if command is not None else list(image_config.get("Cmd") or [])
    if not argv:
        raise EngineError("the image has no command to run (no ENTRYPOINT or CMD)")
    return argv


def network_name(settings: Settings, installation: str) -> str:
    """SANDBOX_NETWORK with {installation} filled in (the default is one network per installation)."""
    return settings.sandbox_network.replace("{installation}", installation)


def _made_by_us(network: Any, installation: str) -> bool:
    """Ours: this installation's sandbox network. One without an installation label (an older
    agent-builder, or another installation's) is never ours to remove."""
    network_labels = network.attrs.get("Labels") or {}
    return network_labels.get(LABEL_ROLE) == NETWORK_ROLE and network_labels.get(LABEL_INSTALLATION) == installation


def network_warning(client: Any, settings: Settings, installation: str) -> str | None:
    """At start: a warning when SANDBOX_NETWORK names an existing network that is not internal and
    that the builder did not make (it is used as it is: sandboxes on it reach beyond this host)."""
    name = network_name(settings, installation)
    if name in ("none", "host"):
        return None
    try:
        network = client.networks.get(name)
    except docker.errors.NotFound:
        return None
    if network.attrs.get("Internal") or _made_by_us(network, installation):
        return None
    return (f"SANDBOX_NETWORK={name} is not an internal network: sandboxes on it can reach other machines; "
            f"use the default (one internal network per installation) or `docker network create --internal {name}`")


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
        """The sandbox network: 'none', or an internal bridge (no route off the host), created when
        missing. A non-internal network the builder made (an older version) is recreated internal; a
        non-internal network the user named is used as it is (`network_warning` says so at start)."""
        name = network_name(self.settings, self.installation)
        if name == "host":  # config refuses it too; never let a sandbox share the host's network
            raise EngineError("SANDBOX_NETWORK=host is refused")
        if name != "none":
            try:
                self._ensure_internal(name)
            except docker.errors.APIError as exc:
                raise EngineError(f"the sandbox network {name} could not be set up: {exc.explanation or exc}") from None
            except requests.exceptions.RequestException as exc:
                raise EngineError(f"the Docker engine did not answer while setting up network {name}: {exc}") from None
        self.network = name
        return name

    def _ensure_internal(self, name: str) -> None:
        try:
            network = self.client.networks.get(name)
        except docker.errors.NotFound:
            network = None
        if network is not None and not network.attrs.get("Internal"):
            if not _made_by_us(network, self.installation):
                return  # the user's choice; warned about at start
            logger.warning("sandbox network {} is not internal (made by an older agent-builder): recreating it internal", name)
            try:
                network.remove()
            except docker.errors.APIError as exc:
                raise EngineError(f"the sandbox network {name} is not internal and cannot be recreated while containers "
                                  f"use it ({exc.explanation or exc}); stop them, or remove it: docker network rm {name}") from None
            network = None
        if network is None:
            logger.info("creating internal Docker network {}", name)
            try:
                self.client.networks.create(name, driver="bridge", internal=True, check_duplicate=True,
                                            labels={LABEL_INSTALLATION: self.installation, LABEL_ROLE: NETWORK_ROLE})
            except docker.errors.APIError as exc:
                if exc.response is None or exc.response.status_code != 409:
                    raise
                self.client.networks.get(name)  # another listener made it meanwhile

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
    def container_options(self, environment: dict[str, str], *, argv: list[str], source_dir: str, limit_s: float,
                          nonce: str, now: float) -> dict[str, Any]:
        """Everything that confines a sandbox run (also what the tests inspect). `argv` runs under
        the keeper, killed `limit_s` after its start; the container is gone by the deadline label."""
        deadline = math.ceil(now + START_SLACK_S + limit_s + self.limits.hold_s)
        entrypoint, command = keeper_command(argv, limit_s=limit_s, hold_s=self.limits.hold_s,
                                             workdir=SANDBOX_WORKDIR, source_dir=source_dir)
        run_labels = labels(self.installation, self.automation_id, self.build_id, "sandbox-run")
        options: dict[str, Any] = {
            "entrypoint": entrypoint,
            "command": command,
            "user": SANDBOX_USER,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "mem_limit": self.limits.memory,
            "memswap_limit": self.limits.memory,
            "nano_cpus": int(self.limits.cpus * 1e9),
            "pids_limit": self.limits.pids,
            "privileged": False,
            "read_only": True,
            "working_dir": SANDBOX_WORKDIR,
            "mounts": [self._scratch(path, self.limits.tmp_size) for path in SCRATCH_DIRS]
                      + [self._scratch(KEEPER_DIR, KEEPER_TMPFS_SIZE)],
            "environment": {"HOME": SANDBOX_WORKDIR, **environment, NONCE_VARIABLE: nonce},
            "labels": {**run_labels, LABEL_DEADLINE: str(deadline)},
            "log_config": LogConfig(type="json-file", config={"max-size": str(self.limits.log_bytes), "max-file": "1"}),
            "auto_remove": True,  # gone as soon as the keeper ends it, whoever is (not) watching
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

    def _scratch(self, path: str, size: str) -> Mount:
        """A tmpfs of `size` at `path`, as an anonymous volume of the local driver: unlike a plain
        tmpfs mount, its files can be read back with get_archive while the container runs (Level
        4), and it goes with the container."""
        options = f"size={size},mode=1777,nosuid,nodev"
        return Mount(path, None, type="volume", driver_config=DriverConfig("local", {"type": "tmpfs", "device": "tmpfs", "o": options}),
                     labels=labels(self.installation, self.automation_id, self.build_id, "sandbox-scratch"))

    @contextmanager
    def container(self, image: str, command: list[str] | None, environment: dict[str, str],
                  entrypoint: list[str] | None = None, *, limit_s: float | None = None) -> Iterator[KeptContainer]:
        """A created (not started) confined container, removed on exit whatever happens. Its
        keeper kills the automation `limit_s` (default SANDBOX_TIMEOUT_S) after the start."""
        config = self._image_config(image)
        argv = automation_argv(config, command, entrypoint)
        source_dir = posixpath.normpath(config.get("WorkingDir") or "/")
        for scratch in (*SCRATCH_DIRS, KEEPER_DIR):
            if source_dir == scratch or source_dir.startswith(scratch + "/"):
                raise EngineError(f"the image's WORKDIR {source_dir} is under {scratch}, which the sandbox mounts as an "
                                  "empty tmpfs: its files would be hidden (use WORKDIR /app)")
        limit = self.limits.timeout_s if limit_s is None else limit_s
        nonce = secrets.token_hex(16)
        options = self.container_options(environment, argv=argv, source_dir=source_dir, limit_s=limit, nonce=nonce,
                                         now=time.time())
        try:
            created = self.client.containers.create(image, **options)
        except docker.errors.ImageNotFound:
            raise EngineError(f"image {image} is not available to the Docker engine") from None
        except docker.errors.APIError as exc:
            raise EngineError(f"the Docker engine refused to create the container: {exc.explanation or exc}") from None
        except requests.exceptions.RequestException as exc:
            raise EngineError(f"the Docker engine did not answer while creating the container: {exc}") from None
        kept = KeptContainer(created, nonce, limit, int(options["labels"][LABEL_DEADLINE]))
        try:
            yield kept
        finally:
            remove_container(created, "sandbox container")

    def _image_config(self, image: str) -> dict[str, Any]:
        try:
            return dict(self.client.images.get(image).attrs.get("Config") or {})
        except docker.errors.ImageNotFound:
            raise EngineError(f"image {image} is not available to the Docker engine") from None
        except docker.errors.APIError as exc:
            raise EngineError(f"the Docker engine could not inspect image {image}: {exc.explanation or exc}") from None
        except requests.exceptions.RequestException as exc:
            raise EngineError(f"the Docker engine did not answer while inspecting image {image}: {exc}") from None

    def run_to_end(self, container: KeptContainer, timeout_s: float | None = None) -> RunResult:
        """Start the container and wait for its keeper to record the automation's end. A timeout
        shorter than the keeper's is the builder's own: then the builder kills the container."""
        limit = container.limit_s if timeout_s is None else min(timeout_s, container.limit_s)
        started = time.monotonic()
        self._start(container)
        grace = KEEPER_SLACK_S if limit >= container.limit_s else 0.0
        status = self._wait_for_end(container, limit + grace)
        duration = time.monotonic() - started
        logs, truncated = read_logs(container, self.limits.log_bytes)
        timed_out = (status is None and not container.vanished) or bool(status and status.timed_out)
        if status is None and not container.vanished:
            self._kill(container)  # the keeper did not end it in time (or the builder's limit is shorter)
        return RunResult(exit_code=status.exit_code if status else None, timed_out=timed_out, logs=logs,
                         logs_truncated=truncated, duration_s=duration, limit_s=limit, vanished=container.vanished,
                         oom_killed=bool(status and status.oom_kills and status.exit_code != 0))

    def run_for(self, container: KeptContainer, seconds: float) -> RunResult:
        """Service mode: start it, let it run `seconds`; it keeps running if it does (the caller
        checks and the context manager removes it; its keeper ends it at its own deadline)."""
        started = time.monotonic()
        self._start(container)
        status = self._wait_for_end(container, seconds)
        logs, truncated = read_logs(container, self.limits.log_bytes)
        return RunResult(exit_code=status.exit_code if status else None, timed_out=bool(status and status.timed_out),
                         logs=logs, logs_truncated=truncated, duration_s=time.monotonic() - started,
                         limit_s=container.limit_s, vanished=container.vanished,
                         oom_killed=bool(status and status.oom_kills and status.exit_code != 0))

    @staticmethod
    def _wait_for_end(container: KeptContainer, seconds: float) -> KeeperStatus | None:
        """Poll the keeper's record (bounded by `seconds`); None if it has none by then or the
        container is gone. A keeper that could not start is an EngineError with its reason."""
        end = time.monotonic() + seconds
        interval = POLL_FIRST_S
        while True:
            status = container.read_status()
            if status is not None and status.error:
                raise EngineError(f"the sandbox keeper could not start: {status.error}")
            if status is not None or container.vanished:
                return status
            left = end - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(interval, left))
            interval = min(interval * 2, POLL_MAX_S)

    @staticmethod
    def _start(container: Any) -> None:
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise EngineError(f"the container could not start: {exc.explanation or exc}") from None
        except requests.exceptions.RequestException as exc:
            raise EngineError(f"the Docker engine stopped answering at the start of the run: {exc}") from None

    @staticmethod
    def _kill(container: Any) -> None:
        """Kill the keeper from outside (allowed: the engine is not in its namespace); the
        container then ends and removes itself."""
        try:
            container.kill()
        except docker.errors.APIError:
            pass
        except requests.exceptions.RequestException as exc:
            logger.warning("could not kill sandbox container {}: {}", container.short_id, exc)


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


def _first_file(data: bytes) -> str:
    """The text of the first file in a tar archive ('' when there is none)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            member = archive.next()
            handle = archive.extractfile(member) if member is not None else None
            return handle.read(4096).decode("utf-8", errors="replace") if handle is not None else ""
    except tarfile.TarError:
        return ""


def remove_container(container: Any, what: str) -> bool:
    """Remove a container and its anonymous volumes; gone already (auto-remove) is fine."""
    try:
        container.remove(force=True, v=True)
        return True
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.response is not None and exc.response.status_code == 409:  # auto-remove already at it
            try:
                container.wait(condition="removed", timeout=30)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                pass
            return False
        logger.warning("could not remove {} {}: {}", what, container.short_id, exc)
    except requests.exceptions.RequestException as exc:
        logger.warning("could not remove {} {}: the Docker engine did not answer ({})", what, container.short_id, exc)
    return False


def remove_attempt_containers(installation: str, build_id: int) -> int:
    """After an attempt died: remove the containers it left (its sandbox runs and image-build steps,
    and an unverified production candidate `…-next`). Best effort: without an engine there is nothing to
    remove now, and the next sweep (listener/sandbox/sweep.py) removes them once it is back."""
    try:
        client = docker.from_env(timeout=30)
        containers = client.containers.list(all=True, filters=installation_filter(installation, build=int(build_id)),
                                            ignore_removed=True)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return 0
    removed = 0
    for container in containers:
        role = container.labels.get(LABEL_ROLE)
        if role in ("sandbox-run", "sandbox-build") or (role == "production" and (container.name or "").endswith("-next")):
            if remove_container(container, "container of a dead attempt"):
                removed += 1
    return removed
