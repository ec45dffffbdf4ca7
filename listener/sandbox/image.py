"""Sandbox images, built as confined as sandbox runs: never with `docker build`.

The Dockerfile (the model's, or the one the builder writes) is interpreted
(listener/sandbox/dockerfile.py) and the image is assembled from containers the builder controls:
the allowed base image, the context's files put in with `put_archive` (a tar made here: root-owned,
0644, or 0755 for executables), the dependencies unpacked from wheels into /app/deps
(listener/sandbox/wheels.py), and every RUN step in a container with no network, no capabilities,
no-new-privileges, the sandbox's memory, CPU and pids limits and runtime, committed afterwards. The
whole build has one deadline (SANDBOX_BUILD_TIMEOUT_S); whatever happens, its step containers are
removed, and on failure its images too. Every container and image carries the build's labels.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import docker.errors
import requests.exceptions
from docker.types import LogConfig
from loguru import logger

from listener.sandbox.dockerfile import (FINAL_USER, REQUIREMENTS_FILE, CopyStep, DockerfileError, ImageConfig,
                                         Plan, RunStep, parse, plan)
from listener.sandbox.engine import BuiltImage, EngineError, Sandbox, read_logs
from listener.sandbox.naming import LABEL_DEADLINE, labels
from listener.sandbox.wheels import (PROBE, DependencyError, DependencyTimeout, Index, PythonTarget, Requirement,
                                     download, parse_requirements, unpack)

APP_DIR = "/app"
DEPS_DIR = "/app/deps"
BUILD_ROLE = "sandbox-build"
WHEELS_DIR = "wheels"
DEPS_TAR = "deps.tar"
STEP_OUTPUT_CHARS = 2000
NO_NETWORK_HINT = ("RUN steps have no network: declare Python packages in requirements.txt (installed from wheels); "
                   "system packages (apt) cannot be installed")


class BuildFailure(EngineError):
    """The image does not build. The message is the builder's sentence; `detail` is what the model
    or the build's own output said about it, `log` what ran before it stopped (both stored only)."""

    def __init__(self, message: str, log: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.log, self.detail = log, detail


class BuildTimeout(BuildFailure):
    pass


STEP_SLACK_S = 30


@dataclass
class Deadline:
    limit_s: float
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.limit_s - (time.monotonic() - self.started)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class BuildLog:
    lines: list[str] = field(default_factory=list)

    def add(self, line: str, output: str = "") -> None:
        self.lines.append(line)
        if output.strip():
            self.lines.extend(f"  | {text}" for text in output[-STEP_OUTPUT_CHARS:].rstrip().splitlines())

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class _Leftovers:
    """Every container and image this build made, removed when it ends."""

    client: Any
    containers: list[Any] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def remove(self, images: bool) -> None:
        for container in reversed(self.containers):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                logger.warning("could not remove build container {}: {}", container.short_id, exc)
        for image in reversed(self.images if images else []):
            try:
                self.client.images.remove(image, force=True, noprune=False)
            except docker.errors.ImageNotFound:
                pass
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                logger.warning("could not remove build image {}: {}", image[:19], exc)


@dataclass
class ImageBuilder:
    sandbox: Sandbox
    deadline: Deadline
    log: BuildLog = field(default_factory=BuildLog)
    with_deps: bool = False

    @classmethod
    def for_sandbox(cls, sandbox: Sandbox) -> "ImageBuilder":
        return cls(sandbox=sandbox, deadline=Deadline(sandbox.settings.sandbox_build_timeout_s))

    @property
    def client(self) -> Any:
        return self.sandbox.client

    def labels(self, role: str = BUILD_ROLE) -> dict[str, str]:
        s = self.sandbox
        return labels(s.installation, s.automation_id, s.build_id, role)

    # -- the whole build -----------------------------------------------------------------------------
    def build(self, context: Path, tag: str) -> BuiltImage:
        leftovers = _Leftovers(self.client)
        built = None
        try:
            built = self._build(context, tag, leftovers)
            return built
        except BuildFailure as failure:
            failure.log = self.log.text()
            raise
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            explanation = getattr(exc, "explanation", None) or exc
            raise BuildFailure(f"the Docker engine failed during the image build: {explanation}", self.log.text()) from None
        finally:
            leftovers.remove(images=built is None)
            logger.info("image build {} in {:.1f} s ({} container(s), {} image(s) made)",
                        "done" if built else "failed", self.deadline.elapsed(), len(leftovers.containers),
                        len(leftovers.images))

    def _build(self, context: Path, tag: str, leftovers: _Leftovers) -> BuiltImage:
        files = context_files(context)
        the_plan, base = self._plan(context, files)
        pending: list[Path | bytes] = []
        requirements = self._requirements(context, the_plan)
        if requirements:
            pending.append(self._dependencies(requirements, base, context))
            the_plan.config.env = _with_deps_path(the_plan.config.env)
            self.with_deps = True
        image_id = base.id
        for step in the_plan.steps:
            self._check_time(f"before the step at Dockerfile line {step.line}")
            if isinstance(step, CopyStep):
                pending.append(copy_archive(step, context, files))
                self.log.add(f"line {step.line}: {step.summary}: {len(step.files)} file(s)")
            elif isinstance(step, RunStep):
                image_id = self._run_step(image_id, step, pending, leftovers)
                pending = []
        return self._final(image_id, pending, the_plan.config, tag, leftovers)

    def _plan(self, context: Path, files: dict[str, int]) -> tuple[Plan, Any]:
        settings = self.sandbox.settings
        allowed = list(dict.fromkeys([settings.sandbox_base_image, settings.sandbox_agent_image,
                                      *settings.sandbox_base_images]))
        try:
            dockerfile = parse((context / "Dockerfile").read_text(encoding="utf-8"), allowed)
            base = self._base_image(dockerfile.base)
            the_plan = plan(dockerfile, base.attrs.get("Config") or {}, files)
        except DockerfileError as exc:
            raise BuildFailure(f"the Dockerfile is refused: {exc}", detail=exc.detail) from None
        self.log.add(f"base image {dockerfile.base} ({base.id[:19]})")
        for note in the_plan.notes:
            self.log.add(note)
        return the_plan, base

    def _base_image(self, reference: str) -> Any:
        try:
            return self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            settings = self.sandbox.settings
            variable = ("SANDBOX_BASE_IMAGE" if reference == settings.sandbox_base_image else
                        "SANDBOX_AGENT_IMAGE" if reference == settings.sandbox_agent_image else "SANDBOX_BASE_IMAGES")
            raise BuildFailure(f"base image {reference} ({variable}) is not available to the Docker engine (builds never "
                               f"pull): docker pull {reference}") from None

    def _check_time(self, where: str) -> None:
        if self.deadline.remaining() <= 0:
            raise self._timeout(where)

    def _timeout(self, where: str) -> BuildTimeout:
        limit = self.deadline.limit_s
        self.log.add(f"cancelled {where}: past SANDBOX_BUILD_TIMEOUT_S={limit:g} s")
        return BuildTimeout(f"the image build was cancelled {where}: it passed SANDBOX_BUILD_TIMEOUT_S={limit:g} s")

    # -- dependencies ---------------------------------------------------------------------------------
    def _requirements(self, context: Path, the_plan: Plan) -> list[Requirement]:
        path = context / REQUIREMENTS_FILE
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        try:
            return parse_requirements([*lines, *the_plan.requirements])
        except DependencyError as exc:
            raise BuildFailure(f"the requirements are refused: {exc}", detail=exc.detail) from None

    def _dependencies(self, requirements: list[Requirement], base: Any, context: Path) -> Path:
        settings = self.sandbox.settings
        started = time.monotonic()
        target = self._python_target(base.id)
        index = Index(url=settings.sandbox_pip_index_url, find_links=settings.sandbox_pip_find_links)
        archive = context / DEPS_TAR
        try:
            wheels = download(requirements, context / WHEELS_DIR, target, index, self.deadline.remaining())
            with tarfile.open(archive, "w") as out:
                unpacked = unpack(wheels, out, DEPS_DIR.lstrip("/"))
        except DependencyTimeout:
            raise self._timeout("while resolving the wheels") from None
        except DependencyError as exc:
            raise BuildFailure(f"the dependencies cannot be installed: {exc}", detail=exc.detail) from None
        self.log.add(f"dependencies {', '.join(map(str, requirements))}: {len(wheels)} wheel(s) for "
                     f"{target.describe()} ({', '.join(unpacked.wheels)}), {unpacked.files} files, "
                     f"{unpacked.size} bytes unpacked into {DEPS_DIR} in {time.monotonic() - started:.1f} s")
        return archive

    def _python_target(self, image_id: str) -> PythonTarget:
        """The base image's Python (version, machine, C library), read once per image id."""
        cached = self.sandbox.python_targets.get(image_id)
        if cached is not None:
            return cached
        container = self._create(image_id, entrypoint=["python3", "-c", PROBE], user=FINAL_USER)
        try:
            exit_code, output, _ = self._run(container, "while reading the image's Python version")
        finally:
            _remove(container)
        if exit_code != 0:
            raise BuildFailure(f"the base image has no working python3 to choose wheels for (exit code {exit_code})",
                               detail=_last_line(output))
        try:
            target = PythonTarget.from_probe(output)
        except DependencyError as exc:
            raise BuildFailure(str(exc), detail=exc.detail) from None
        self.sandbox.python_targets[image_id] = target
        return target

    # -- containers -----------------------------------------------------------------------------------
    def _create(self, image: str, *, entrypoint: list[str], user: str, command: list[str] | None = None,
                environment: list[str] | None = None, working_dir: str | None = None) -> Any:
        """A container confined like a sandbox run (no network at all), not started."""
        limits = self.sandbox.limits
        options: dict[str, Any] = {
            "user": user, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"], "privileged": False,
            "mem_limit": limits.memory, "memswap_limit": limits.memory, "nano_cpus": int(limits.cpus * 1e9),
            "pids_limit": limits.pids, "network_mode": "none",
            # the build's deadline on the container itself: every listener's sweep removes it once
            # passed, even while the attempt still looks alive (STEP_SLACK_S for the kill and commit)
            "labels": {**self.labels(), LABEL_DEADLINE: str(int(time.time() + self.deadline.remaining() + STEP_SLACK_S))},
            "log_config": LogConfig(type="json-file", config={"max-size": str(limits.log_bytes), "max-file": "1"}),
        }
        if self.sandbox.settings.sandbox_runtime:
            options["runtime"] = self.sandbox.settings.sandbox_runtime
        if environment is not None:
            options["environment"] = environment
        if working_dir:
            options["working_dir"] = working_dir
        try:
            return self.client.containers.create(image, command=command, entrypoint=entrypoint, **options)
        except docker.errors.APIError as exc:
            raise BuildFailure(f"the Docker engine refused a build container: {exc.explanation or exc}") from None

    def _run(self, container: Any, where: str) -> tuple[int, str, bool]:
        """Start it, wait at most the build's remaining time; (exit code, output, out of memory)."""
        self._check_time(where)
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise BuildFailure(f"the image does not build: a container could not start {where}",
                               detail=str(exc.explanation or exc)) from None
        try:
            exit_code = int(container.wait(timeout=max(self.deadline.remaining(), 0.1))["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            _remove(container)
            raise self._timeout(where) from None
        container.reload()
        output, _ = read_logs(container, self.sandbox.limits.log_bytes)
        return exit_code, output, bool(container.attrs.get("State", {}).get("OOMKilled"))

    def _run_step(self, image_id: str, step: RunStep, pending: list[Path | bytes], leftovers: _Leftovers) -> str:
        environment = dict(item.split("=", 1) for item in step.environment)
        if self.with_deps:
            environment = _with_deps_path(environment)
        container = self._create(image_id, entrypoint=list(step.argv), user="0:0",
                                 environment=[f"{k}={v}" for k, v in environment.items()], working_dir=step.workdir)
        leftovers.containers.append(container)
        _put(container, pending)
        started = time.monotonic()
        where = f"during the RUN at Dockerfile line {step.line}"
        exit_code, output, oom = self._run(container, where)
        duration = time.monotonic() - started
        self.log.add(f"line {step.line}: {step.summary}: exit code {exit_code} in {duration:.1f} s"
                     f"{' (out of memory)' if oom else ''}", output)
        logger.info("image build step at line {}: exit code {} in {:.1f} s", step.line, exit_code, duration)
        if oom:
            raise BuildFailure(f"the image does not build: the RUN at Dockerfile line {step.line} ran out of memory "
                               f"(SANDBOX_MEMORY={self.sandbox.limits.memory})")
        if exit_code != 0:
            raise BuildFailure(f"the image does not build: the RUN at Dockerfile line {step.line} exited with code "
                               f"{exit_code} ({NO_NETWORK_HINT})", detail=_last_line(output))
        image = container.commit(conf=self._conf(None, role=BUILD_ROLE, final=False))
        committed: str = image.id
        leftovers.images.append(committed)
        _remove(container)
        return committed

    def _final(self, image_id: str, pending: list[Path | bytes], config: ImageConfig, tag: str,
               leftovers: _Leftovers) -> BuiltImage:
        """The last layer (files after the last RUN) and the final configuration, from a container
        that is created and never started."""
        self._check_time("before the final commit")
        if not config.cmd and not config.entrypoint:
            raise BuildFailure("the image does not build: it has no CMD or ENTRYPOINT, so nothing would run")
        container = self._create(image_id, entrypoint=config.entrypoint or [], command=config.cmd,
                                 environment=config.env_list(), working_dir=config.workdir or None, user=FINAL_USER)
        leftovers.containers.append(container)
        if config.workdir == APP_DIR:
            pending = [*pending, _app_directory()]
        _put(container, pending)
        repository, _, version = tag.rpartition(":")
        image = container.commit(repository=repository, tag=version, conf=self._conf(config, role="sandbox-image", final=True))
        leftovers.images.append(image.id)
        self.log.add(f"image {tag} ({image.id[:19]}) committed, runs as {FINAL_USER}; build took "
                     f"{self.deadline.elapsed():.1f} s of SANDBOX_BUILD_TIMEOUT_S={self.deadline.limit_s:g}")
        return BuiltImage(tag=tag, image_id=image.id, log=self.log.text())

    def _conf(self, config: ImageConfig | None, *, role: str, final: bool) -> dict[str, Any]:
        """The committed image's configuration. An intermediate image keeps an empty ENTRYPOINT so
        that the step's command never leaks into it (the next container sets its own)."""
        if config is None:
            return {"Labels": self.labels(role), "Entrypoint": [], "Cmd": None}
        return {"Labels": {**config.labels, **self.labels(role)}, "Env": config.env_list(), "Cmd": config.cmd,
                "Entrypoint": config.entrypoint or [], "WorkingDir": config.workdir, "ExposedPorts": config.exposed,
                "User": FINAL_USER if final else ""}


# -- archives -------------------------------------------------------------------------------------------

def context_files(context: Path) -> dict[str, int]:
    """The build context's regular files (path -> mode), without the builder's own wheels/deps."""
    found: dict[str, int] = {}
    for path in sorted(context.rglob("*")):
        relative = path.relative_to(context).as_posix()
        if relative.split("/")[0] in (WHEELS_DIR, DEPS_TAR):
            continue
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            found[relative] = info.st_mode
    return found


def copy_archive(step: CopyStep, context: Path, files: dict[str, int]) -> bytes:
    """One COPY/ADD as a tar for put_archive at /: files owned by root, 0644 or 0755."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as out:
        for source, target, mode in step.files:
            data = (context / source).read_bytes()
            entry = tarfile.TarInfo(target.lstrip("/"))
            entry.size = len(data)
            entry.mode = mode if mode is not None else (0o755 if files[source] & 0o111 else 0o644)
            entry.uid = entry.gid = 0
            entry.uname = entry.gname = "root"
            entry.mtime = int(time.time())
            out.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def _app_directory() -> bytes:
    """/app itself: root's, writable by the sandbox user like /tmp (sticky), so the automation may
    create files in its working directory but never change or remove the files of its image."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as out:
        entry = tarfile.TarInfo(APP_DIR.lstrip("/"))
        entry.type = tarfile.DIRTYPE
        entry.mode = 0o1777
        entry.mtime = int(time.time())
        out.addfile(entry)
    return buffer.getvalue()


def _put(container: Any, archives: Iterable[Path | bytes]) -> None:
    for archive in archives:
        if isinstance(archive, Path):
            with archive.open("rb") as data:
                ok = container.put_archive("/", data)
        else:
            ok = container.put_archive("/", archive)
        if not ok:
            raise BuildFailure("the Docker engine did not accept the build's files")


def _with_deps_path(env: dict[str, str]) -> dict[str, str]:
    """The environment with /app/deps first on PYTHONPATH."""
    current = env.get("PYTHONPATH", "")
    if DEPS_DIR in current.split(os.pathsep):
        return env
    return {**env, "PYTHONPATH": DEPS_DIR + (f"{os.pathsep}{current}" if current else "")}


def _remove(container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
