"""Sweeps: remove what this installation's sandboxes left behind, whoever made it and whatever
happened to them (a listener killed, an engine outage, a crash between two steps).

The leading listener (listener.queue.leader) sweeps when it takes the lead and then every
RESCUE_INTERVAL_S (a duty next to the rescuer; SweepLoop.run is kept for its tests): containers
every time, images and volumes at start and then at most every IMAGE_SWEEP_EVERY_S (they are not
urgent, and listing them costs the engine more); build-once sweeps everything once. Only Docker objects labelled with this installation are ever listed, so a sweep never
touches another installation's objects on a shared engine. What goes:

- sandbox containers (roles sandbox-run, sandbox-build) whose deadline label has passed, or whose
  attempt is over (finished, or unknown to the database: sql/attempts_over.sql);
- production candidates (`…-next`) of attempts that are over (the deployment died before it either
  put them in place or removed them);
- sandbox images nobody needs (sql/sandbox_images_unneeded.sql): those of attempts that failed or
  died, rejected ones, unknown ones; and the intermediate layers of image builds (role
  sandbox-build) whose attempt is over. Images are untagged by their build tag, never forced: an
  image that is also tagged for production, or that a container uses, stays;
- the tmpfs volumes of sandbox containers that are gone (dangling, with this installation's label).

Without a database (it is down), only the deadlines are applied. An unreachable engine is a
warning, and the next period tries again.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import docker
import docker.errors
import psycopg
import requests.exceptions
from loguru import logger

from listener.queue.store import installation_of
from listener.config import Settings
from listener.queue.db import Queries, connect
from listener.queue.store import Store
from listener.sandbox.engine import remove_container, network_warning
from listener.sandbox.naming import LABEL_AUTOMATION, LABEL_BUILD, LABEL_DEADLINE, LABEL_ROLE, installation_filter

SANDBOX_ROLES = ("sandbox-run", "sandbox-build")
IMAGE_SWEEP_EVERY_S = 30.0  # images and volumes are not urgent: the loop lists them at start, then at most this often
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


class AttemptRecords(Protocol):
    """What a sweep asks the database (one round trip each, for all the ids it found)."""

    def over(self, build_ids: list[int]) -> set[int]: ...

    def unneeded_images(self, build_ids: list[int]) -> set[int]: ...


@dataclass(frozen=True)
class DatabaseRecords:
    conn: psycopg.Connection[dict[str, Any]]
    queries: Queries

    def over(self, build_ids: list[int]) -> set[int]:
        return self._select("attempts_over", build_ids)

    def unneeded_images(self, build_ids: list[int]) -> set[int]:
        return self._select("sandbox_images_unneeded", build_ids)

    def _select(self, name: str, build_ids: list[int]) -> set[int]:
        if not build_ids:
            return set()
        store = Store(self.conn, self.queries)
        return store.attempts_over(build_ids) if name == "attempts_over" else store.images_unneeded(build_ids)


@dataclass(frozen=True)
class Found:
    """One container or image as a sweep sees it (from its labels)."""

    ref: Any  # the docker SDK object
    id: str
    name: str
    role: str | None
    automation_id: str | None
    build_id: int | None
    deadline: int | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, ref: Any, name: str, tags: Iterable[str] = ()) -> "Found":
        labels = dict(getattr(ref, "labels", None) or {})
        return cls(ref=ref, id=str(ref.id), name=name, role=labels.get(LABEL_ROLE),
                   automation_id=labels.get(LABEL_AUTOMATION), build_id=_int(labels.get(LABEL_BUILD)),
                   deadline=_int(labels.get(LABEL_DEADLINE)), tags=tuple(tags))


@dataclass(frozen=True)
class Removal:
    found: Found
    reason: str


@dataclass
class SweepReport:
    containers: list[Removal] = field(default_factory=list)
    images: list[Removal] = field(default_factory=list)
    volumes: int = 0
    database: bool = True  # False: the database was unreachable, only deadlines were applied


def select_containers(containers: list[Found], now: float, over: set[int] | None) -> list[Removal]:
    """The containers to remove. `over`: attempts that are over (None: the database is unreachable)."""
    chosen = []
    for found in containers:
        attempt_over = over is not None and found.build_id is not None and found.build_id in over
        if found.role in SANDBOX_ROLES:
            if found.deadline is not None and found.deadline < now:
                chosen.append(Removal(found, f"its deadline passed {now - found.deadline:.0f} s ago"))
            elif attempt_over:
                chosen.append(Removal(found, "its attempt is over"))
        elif found.role == "production" and found.name.endswith("-next") and attempt_over:
            chosen.append(Removal(found, "an unverified production candidate of an attempt that is over"))
    return chosen


def select_images(images: list[Found], unneeded: set[int], over: set[int] | None = None) -> list[Removal]:
    """Sandbox images nobody needs (`unneeded`), and the intermediate layers of image builds
    (role sandbox-build) whose attempt is over (`over`): a finished build never needs them again."""
    chosen = []
    for found in images:
        if found.role == "sandbox-image" and found.build_id in unneeded:
            chosen.append(Removal(found, "no attempt needs it (failed, died, rejected or unknown)"))
        elif found.role == "sandbox-build" and over is not None and found.build_id in over:
            chosen.append(Removal(found, "an intermediate layer of an image build that is over"))
    return chosen


@dataclass
class Sweeper:
    installation: str
    client: Any  # docker.DockerClient
    records: AttemptRecords | None  # None: no database now (deadlines only)
    clock: Callable[[], float] = time.time

    def sweep(self, *, images: bool = True) -> SweepReport:
        """One pass (`images=False`: containers only). Raises the engine's errors (the caller logs
        them and tries again later)."""
        report = SweepReport()
        selected = installation_filter(self.installation)
        containers = [Found.of(c, c.name) for c in self.client.containers.list(all=True, filters=selected,
                                                                                       ignore_removed=True)]
        over = self._ask(report, lambda records: records.over([c.build_id for c in containers if c.build_id is not None]))
        for removal in select_containers(containers, self.clock(), over):
            if remove_container(removal.found.ref, "leftover container"):
                report.containers.append(removal)
                self._log(removal).info("sweep removed container {} ({}): {}", removal.found.name,
                                        removal.found.role, removal.reason)
        if not images:
            return report
        if report.database and self.records is not None:
            found = [Found.of(i, (i.tags or [i.short_id])[0], i.tags)
                     for i in self.client.images.list(filters=installation_filter(self.installation))]
            unneeded = self._ask(report, lambda records: records.unneeded_images(
                [i.build_id for i in found if i.role == "sandbox-image" and i.build_id is not None]))
            layers_over = self._ask(report, lambda records: records.over(
                [i.build_id for i in found if i.role == "sandbox-build" and i.build_id is not None]))
            for removal in select_images(found, unneeded or set(), layers_over):
                if self._remove_image(removal.found):
                    report.images.append(removal)
                    self._log(removal).info("sweep removed sandbox image {}: {}", removal.found.name, removal.reason)
        report.volumes = self._remove_dangling_volumes()
        return report

    def _ask(self, report: SweepReport, question: Callable[[AttemptRecords], set[int]]) -> set[int] | None:
        if self.records is None or not report.database:
            report.database = False
            return None
        try:
            return question(self.records)
        except psycopg.Error as exc:
            report.database = False
            logger.warning("sweep: the database did not answer ({}); only deadlines are applied this time",
                           " ".join(str(exc).split()))
            return None

    def _remove_image(self, found: Found) -> bool:
        """Untag its sandbox build tags (never forced): the image goes with its last tag, unless a
        container uses it or it carries another tag (production)."""
        ours = [tag for tag in found.tags if re.search(rf":build-{found.build_id}-{self.installation}$", tag)]
        references = ours if found.tags else [found.id]
        removed = False
        for reference in references:
            try:
                self.client.images.remove(reference, force=False, noprune=False)
                removed = True
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:  # 409: in use by a container
                logger.debug("sweep kept image {}: {}", reference, exc.explanation or exc)
        return removed

    def _remove_dangling_volumes(self) -> int:
        removed = 0
        filters = {**installation_filter(self.installation), "dangling": True}
        for volume in self.client.volumes.list(filters=filters):
            try:
                volume.remove()
                removed += 1
            except docker.errors.APIError as exc:  # in use again, or already gone
                logger.debug("sweep kept volume {}: {}", volume.name, exc)
        return removed

    @staticmethod
    def _log(removal: Removal) -> Any:
        return logger.bind(automation_id=removal.found.automation_id, build_id=removal.found.build_id)


def docker_client() -> Any:
    return docker.from_env(timeout=30)


class SweepLoop:
    """Sweeps at start and every RESCUE_INTERVAL_S on its own database connection; the engine and
    the database may each be down, the loop goes on and says so once per outage."""

    def __init__(self, settings: Settings, dsn: str, queries: Queries, worker: str, stop: threading.Event,
                 client_factory: Callable[[], Any] = docker_client) -> None:
        self.settings = settings
        self.dsn = dsn
        self.queries = queries
        self.worker = worker
        self.stop = stop
        self.client_factory = client_factory
        self.installation: str | None = None
        self.conn: psycopg.Connection[dict[str, Any]] | None = None
        self.client: Any = None
        self.engine_down = False
        self.checked_network = False
        self.images_swept_at: float | None = None  # monotonic time of the last full sweep

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.once()
                self.stop.wait(self.settings.rescue_interval_s)
        finally:
            if self.conn is not None:
                self.conn.close()

    def once(self) -> SweepReport | None:
        """One sweep; None when it could not run (no installation identity yet, or no engine)."""
        records = self._records()
        if self.installation is None:
            return None
        try:
            if self.client is None:
                self.client = self.client_factory()
            if not self.checked_network:
                warning = network_warning(self.client, self.settings, self.installation)
                if warning:
                    logger.warning("{}", warning)
                self.checked_network = True
            due = self.images_swept_at is None or time.monotonic() - self.images_swept_at >= IMAGE_SWEEP_EVERY_S
            report = Sweeper(self.installation, self.client, records).sweep(images=due)
            if due:
                self.images_swept_at = time.monotonic()
        except ENGINE_ERRORS as exc:
            if not self.engine_down:
                logger.warning("sweep: the Docker engine is unreachable ({}); trying again every {:g} s",
                               " ".join(str(exc).split())[:300], self.settings.rescue_interval_s)
            self.engine_down = True
            return None
        if self.engine_down:
            logger.info("sweep: the Docker engine answers again")
            self.engine_down = False
        if not report.database and self.conn is not None:
            self.conn.close()
            self.conn = None
        return report

    def _records(self) -> DatabaseRecords | None:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = connect(self.dsn, actor=f"builder-sweeper:{self.worker}", application="agent-builder sweeper")
            if self.installation is None:
                self.installation = installation_of(self.conn, self.queries)
            return DatabaseRecords(self.conn, self.queries)
        except psycopg.Error as exc:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            if self.installation is None:
                logger.warning("sweep: the database is unreachable, so this installation is not known yet: {}",
                               " ".join(str(exc).split()))
            return None


def sweep_once(settings: Settings, conn: psycopg.Connection[dict[str, Any]], queries: Queries,
               client_factory: Callable[[], Any] = docker_client) -> SweepReport | None:
    """build-once's single sweep, on its own connection; an unreachable engine is only a warning."""
    installation = installation_of(conn, queries)
    try:
        client = client_factory()
        warning = network_warning(client, settings, installation)
        if warning:
            logger.warning("{}", warning)
        return Sweeper(installation, client, DatabaseRecords(conn, queries)).sweep()
    except ENGINE_ERRORS as exc:
        logger.warning("sweep: the Docker engine is unreachable ({}); the next listener sweeps", " ".join(str(exc).split())[:300])
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
