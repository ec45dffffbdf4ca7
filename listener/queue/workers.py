"""Worker threads: each has its own database connection, waits for a job from the dispatcher
(listener.queue.dispatch), runs it, and is free again. The dispatcher claims on a free worker's
connection, so every running attempt keeps its own connection and session advisory lock; builds
never block the listening connection or each other."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from loguru import logger

from listener import notices as notify
from listener.config import Settings
from listener.notices import Notifier
from listener.queue.context import AttemptContext, Metrics
from listener.queue.db import Queries, connect
from listener.queue.dispatch import Cleanup, Dispatcher, Job, Lost, Slot, Stop
from listener.queue.finish import run_attempt
from listener.queue.hooks import Handlers
from listener.queue.records import Claim
from listener.queue.services import Reconnect
from listener.queue.states import AttemptKind
from listener.queue.store import Store
from listener.redact import Redactor

__all__ = ["Handlers", "WorkerPool", "InFlight"]


@dataclass(frozen=True)
class InFlight:
    claim: Claim
    context: AttemptContext


class WorkerPool:
    """BUILDER_CONCURRENCY workers fed by one dispatcher. `stopping` (stop claiming) is also what
    a running attempt sees as the listener stopping."""

    name = "workers"

    def __init__(self, settings: Settings, dsn: str, queries: Queries, worker: str, handlers: Handlers,
                 notifier: Notifier, stopping: threading.Event, metrics: Metrics,
                 redactor: Redactor | None = None) -> None:
        self.settings = settings
        self.redactor = redactor if redactor is not None else notifier.redactor
        self.dsn = dsn
        self.queries = queries
        self.worker = worker
        self.handlers = handlers
        self.notifier = notifier
        self.stopping = stopping
        self.metrics = metrics
        self.dispatcher = Dispatcher(deploys=handlers.deploy is not None, stopping=stopping)
        self.threads: list[threading.Thread] = []
        self.in_flight: dict[int, InFlight] = {}
        self._lock = threading.Lock()

    def wake(self, reason: str = "") -> None:
        self.dispatcher.wake(reason)

    # -- the service shape -------------------------------------------------------------------
    def start(self) -> None:
        for index in range(self.settings.builder_concurrency):
            thread = threading.Thread(target=self._run, name=f"worker-{index}", args=(Slot(index),), daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """No new claims; running attempts go on (they see `stopping`) and their workers return."""
        self.dispatcher.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker returned (or the timeout passed); True when all did."""
        return self.join_until(None if timeout is None else time.monotonic() + timeout)

    def join_until(self, deadline: float | None) -> bool:
        for thread in [*self.threads]:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self.threads)

    def snapshot(self) -> list[InFlight]:
        with self._lock:
            return list(self.in_flight.values())

    # -- one worker --------------------------------------------------------------------------
    def _run(self, slot: Slot) -> None:
        reconnect = Reconnect(f"worker {slot.index}", self.stopping)
        reconnect.run_forever(lambda: self._session(slot, reconnect))

    def _session(self, slot: Slot, reconnect: Reconnect) -> None:
        with connect(self.dsn, actor=f"builder:{self.worker}/{slot.index}",
                     application=f"agent-builder worker {slot.index}") as conn:
            reconnect.connected()
            store = Store(conn, self.queries, self.worker, self.redactor)
            slot.store = store
            try:
                while True:
                    self.dispatcher.free(slot)
                    job = slot.inbox.get()
                    if isinstance(job, Stop):
                        return
                    if isinstance(job, Lost):
                        raise job.error  # connected, then lost: the reconnect helper starts afresh
                    self._run_job(slot.index, store, job)
            finally:
                slot.store = None

    def _run_job(self, index: int, store: Store, job: Job) -> None:
        if isinstance(job, Cleanup):
            # the stage that made something to clean registered it (listener.queue.hooks); else nothing to do
            done = self.handlers.hooks.rejected(job.automation, job.build_id, job.image_id)
            logger.bind(automation_id=job.automation.id, build_id=job.build_id).info("rejected: {}", done)
            self.notifier.send(notify.rejected(job.automation, done))
        elif isinstance(job, Claim):
            self._run_one(index, store, job)

    def _handler_for(self, claim: Claim) -> Callable[[AttemptContext], Any]:
        if claim.kind is AttemptKind.DEPLOY and self.handlers.deploy is not None:  # deploy claims need a deploy handler
            return self.handlers.deploy
        return self.handlers.build

    def _run_one(self, index: int, store: Store, claim: Claim) -> None:
        context = AttemptContext(claim=claim, store=store, settings=self.settings, notifier=self.notifier,
                                 stop=self.stopping, status=claim.kind.claimed_status,
                                 metrics=self.metrics, hooks=self.handlers.hooks)
        context.log.info("claimed {} of {!r} (worker {})", claim.kind, claim.automation.label, index)
        with self._lock:
            self.in_flight[claim.build_id] = InFlight(claim, context)
        try:
            ending = run_attempt(context, self._handler_for(claim))
            context.end_step()
            self.metrics.inc("agent_builder_attempts_total", kind=claim.kind.value, outcome=ending.value)
        finally:
            with self._lock:
                self.in_flight.pop(claim.build_id, None)
