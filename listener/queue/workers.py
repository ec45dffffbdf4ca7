"""Worker threads: each has its own database connection, claims while there is work, runs the
handler, and sleeps until the listen loop wakes it. Builds never block the listening connection."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import psycopg
from loguru import logger
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, wait_exponential_jitter

from listener import notices as notify
from listener.config import Settings
from listener.notices import Notifier
from listener.queue.context import AttemptContext, Metrics
from listener.queue.db import Queries, connect
from listener.queue.finish import run_attempt
from listener.queue.hooks import Handlers
from listener.queue.records import Claim
from listener.queue.states import AttemptKind
from listener.queue.store import Store
from listener.redact import Redactor

__all__ = ["Handlers", "WakeSignal", "WorkerPool", "InFlight"]


class WakeSignal:
    """A wake-up counter: a worker remembers the count it saw and sleeps until it moves on,
    so a wake-up that arrives while it is busy is never lost."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0
        self._approvals = 0

    def wake(self, reason: str = "") -> None:
        with self._cond:
            self._count += 1
            if reason != "build":  # an approval, the catch-up, the safety poll: look for approved rows too
                self._approvals += 1
            self._cond.notify_all()

    def approvals(self) -> int:
        with self._cond:
            return self._approvals

    def seen(self) -> int:
        with self._cond:
            return self._count

    def wait_past(self, seen: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._count != seen, timeout=timeout)


@dataclass(frozen=True)
class InFlight:
    claim: Claim
    context: AttemptContext


class WorkerPool:
    def __init__(self, settings: Settings, dsn: str, queries: Queries, worker: str, handlers: Handlers,
                 notifier: Notifier, stop_claiming: threading.Event, wake: WakeSignal, metrics: Metrics,
                 redactor: Redactor | None = None) -> None:
        self.settings = settings
        self.redactor = redactor if redactor is not None else notifier.redactor
        self.dsn = dsn
        self.queries = queries
        self.worker = worker
        self.handlers = handlers
        self.notifier = notifier
        self.stop_claiming = stop_claiming
        self.wake = wake
        self.threads: list[threading.Thread] = []
        self.in_flight: dict[int, InFlight] = {}
        self._lock = threading.Lock()
        self.metrics = metrics

    def start(self) -> None:
        for index in range(self.settings.builder_concurrency):
            thread = threading.Thread(target=self._run, name=f"worker-{index}", args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self, deadline: float) -> bool:
        """Wait until every worker has returned or the deadline passes; True when all returned."""
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self.threads)

    def snapshot(self) -> list[InFlight]:
        with self._lock:
            return list(self.in_flight.values())

    def _run(self, index: int) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_exponential_jitter(initial=0.2, max=15, jitter=0.5),
            sleep=self.stop_claiming.wait,
            stop=lambda _state: self.stop_claiming.is_set(),
            before_sleep=lambda state: self._log_retry(index, state),
            reraise=False,
        )
        while not self.stop_claiming.is_set():
            try:
                retrying(self._session, index)
            except RetryError:
                return

    @staticmethod
    def _log_retry(index: int, state: RetryCallState) -> None:
        if state.attempt_number in (1, 10, 100):  # once per outage, then rarely
            exc = state.outcome.exception() if state.outcome else None
            logger.warning("worker {} cannot reach the database (attempt {}): {}", index, state.attempt_number,
                           " ".join(str(exc).split()))

    def _session(self, index: int) -> None:
        with connect(self.dsn, actor=f"builder:{self.worker}/{index}", application=f"agent-builder worker {index}") as conn:
            try:
                self._claim_loop(index, Store(conn, self.queries, self.worker, self.redactor))
            except psycopg.OperationalError as exc:
                # Connected, then lost (mid-build too: the attempt's lock went with the connection,
                # so the rescuer takes over). Return so the next outage starts its backoff afresh.
                logger.warning("worker {} lost its database connection: {}", index, " ".join(str(exc).split()))

    def _claim_loop(self, index: int, store: Store) -> None:
        approvals_done = -1  # approval wake-ups already answered by finding no approved row
        while not self.stop_claiming.is_set():
            seen = self.wake.seen()
            claim = None
            if self.handlers.deploy is not None and self.wake.approvals() != approvals_done:
                approvals = self.wake.approvals()
                self._clean_rejections(store)
                claim = store.claim_next_deploy()
                if claim is None:
                    approvals_done = approvals
            if claim is None:
                claim = store.claim_next_build()
            if claim is None:
                self.wake.wait_past(seen, timeout=self.settings.poll_interval_s)
                continue
            self._run_one(index, store, claim)

    def _handler_for(self, claim: Claim) -> Callable[[AttemptContext], Any]:
        if claim.kind is AttemptKind.DEPLOY and self.handlers.deploy is not None:  # deploy claims need a deploy handler
            return self.handlers.deploy
        return self.handlers.build

    def _clean_rejections(self, store: Store) -> None:
        while (rejected := store.claim_rejected_cleanup()) is not None:
            automation, build_id, image_id = rejected
            done = self.handlers.hooks.rejected(automation, build_id, image_id)
            logger.bind(automation_id=automation.id, build_id=build_id).info("rejected: {}", done)
            self.notifier.send(notify.rejected(automation, done))

    def _run_one(self, index: int, store: Store, claim: Claim) -> None:
        context = AttemptContext(claim=claim, store=store, settings=self.settings, notifier=self.notifier,
                                 stop=self.stop_claiming, status=claim.kind.claimed_status,
                                 metrics=self.metrics, hooks=self.handlers.hooks)
        context.log.info("claimed {} of {!r} (worker {})", claim.kind, claim.automation.label, index)
        with self._lock:
            self.in_flight[claim.build_id] = InFlight(claim, context)
        try:
            ending = run_attempt(context, self._handler_for(claim))
            context.end_step()
            self.metrics.inc("agent_builder_attempts_total", kind=claim.kind, outcome=ending.value)
        finally:
            with self._lock:
                self.in_flight.pop(claim.build_id, None)

