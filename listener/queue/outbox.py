"""The outbox: a listener's notifications leave from a thread of their own, never from a worker's,
and none announces an attempt's ending before that ending is on disk.

A build's ending commits without waiting for its WAL flush (sql/finish_attempt.sql). The
notification that announces it names the attempt (`Notification.after_attempt`) and waits here
for a durable point (sql/durable_point.sql): one statement per batch, on the outbox's own
connection, that commits durably and says which of the batch's attempts it saw ended. WAL is
flushed in order, so an ending the point saw is on disk once the point returns. A notification
whose attempt the point finds unfinished (its ending was lost with a server crash) is dropped with a
log line: the rescuer ends that attempt and says so itself. Everything else goes out in the order
it was handed in, through the notifier the outbox wraps (ntfy, its retries included), so a slow or
unreachable ntfy never holds a worker and its claim. A notifier that only logs (no NTFY_URL) is
called at once by the caller's thread, and the outbox starts no thread and opens no connection:
nothing leaves, nothing can block.

`stop()` lets the outbox send what is queued; `join(timeout)` waits for that and, when the time
runs out (the database cannot be reached to confirm the endings), logs what was not sent and ends.
A notification handed in after the outbox stopped is sent at once by the caller's thread.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol

import psycopg
from loguru import logger

from listener.notices import Notification, Notifier
from listener.queue.db import Queries, connect
from listener.queue.services import Reconnect, ThreadService
from listener.queue.store import Store
from listener.redact import Redactor

BATCH_MAX = 200  # notifications confirmed by one durable point


class PointSource(Protocol):
    """What the outbox asks of its store (listener.queue.store.Store)."""

    def durable_point(self, build_ids: list[int]) -> set[int]: ...


OpenStore = Callable[[], AbstractContextManager[PointSource]]


class Outbox(ThreadService):
    """A Notifier (the protocol of listener.notices) that queues, confirms and sends."""

    name = "notifications"

    def __init__(self, notifier: Notifier, open_store: OpenStore, *, batch_max: int = BATCH_MAX) -> None:
        super().__init__()
        self.notifier = notifier
        self.redactor: Redactor = notifier.redactor
        self.open_store = open_store
        self.batch_max = batch_max
        self._cond = threading.Condition()
        self._queue: deque[Notification] = deque()
        self._abandon = threading.Event()  # join's time ran out: end even with notifications queued
        self.sent = 0
        self.dropped = 0
        self.points = 0

    @classmethod
    def over_database(cls, notifier: Notifier, dsn: str, queries: Queries, worker: str) -> "Outbox":
        def open_store() -> AbstractContextManager[Store]:
            return _StoreSession(dsn, queries, worker, notifier.redactor)

        return cls(notifier, open_store)

    # -- the Notifier protocol -----------------------------------------------------------------
    @property
    def delivers(self) -> bool:
        return self.notifier.delivers

    def send(self, n: Notification) -> bool:
        """Queue the notification and return at once (True: it goes out unless its attempt's ending
        turns out lost)."""
        if not self.notifier.delivers:  # it only logs: nothing to confirm, nothing that could block
            return self.notifier.send(n)
        with self._cond:
            if not self.stopping.is_set():
                self._queue.append(n)
                self._cond.notify()
                return True
        logger.debug("the outbox has stopped: sending {!r} from this thread", n.title)
        return self.notifier.send(n)

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- the service ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.notifier.delivers:  # else send() calls the notifier itself: no thread, no connection
            super().start()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        if super().join(timeout):
            return True
        self._abandon.set()  # the database did not confirm in time: give up what is queued
        self._wake()
        return super().join(5.0)

    def run(self) -> None:
        reconnect = Reconnect("notifications", self._abandon)
        reconnect.run_forever(lambda: self._session(reconnect))
        unsent = self._take_all()
        if unsent:
            logger.warning("{} notification(s) not sent: the database could not be reached to confirm the endings they "
                           "announce (the rows say how their builds ended): {}", len(unsent),
                           "; ".join(self.redactor.one_line(n.title, 80) for n in unsent[:5]))

    def _session(self, reconnect: Reconnect) -> None:
        with self.open_store() as store:
            reconnect.connected()
            while (batch := self._next_batch()) is not None:
                self._deliver(store, batch)
        if self.stopping.is_set():
            self._abandon.set()  # everything was sent: the reconnect loop ends too

    def _next_batch(self) -> list[Notification] | None:
        """The oldest queued notifications (left queued until they are confirmed); None once
        stopped with nothing queued, or abandoned."""
        with self._cond:
            while not self._queue and not self.stopping.is_set() and not self._abandon.is_set():
                self._cond.wait()
            if self._abandon.is_set() or not self._queue:
                return None
            return [self._queue[i] for i in range(min(len(self._queue), self.batch_max))]

    def _deliver(self, store: PointSource, batch: list[Notification]) -> None:
        gated = sorted({n.after_attempt for n in batch if n.after_attempt is not None})
        ended: set[int] = set()
        if gated:
            ended = store.durable_point(gated)  # a lost connection: the batch stays queued for the next session
            self.points += 1
        with self._cond:
            for _ in batch:
                self._queue.popleft()
        for n in batch:
            if n.after_attempt is not None and n.after_attempt not in ended:
                self.dropped += 1
                logger.bind(build_id=n.after_attempt).warning(
                    "notification not sent: the ending of attempt {} it announces is not in the database (lost with a "
                    "server crash); the rescuer ends that attempt: {}", n.after_attempt, self.redactor.one_line(n.title, 120))
                continue
            self.notifier.send(n)
            self.sent += 1

    def _take_all(self) -> list[Notification]:
        with self._cond:
            taken = list(self._queue)
            self._queue.clear()
            return taken


class _StoreSession:
    """A connection of the outbox's own and its store, closed on exit."""

    def __init__(self, dsn: str, queries: Queries, worker: str, redactor: Redactor) -> None:
        self.dsn, self.queries, self.worker, self.redactor = dsn, queries, worker, redactor
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> Store:
        self._conn = connect(self.dsn, actor=f"builder:{self.worker}/outbox", application="agent-builder notifications")
        return Store(self._conn, self.queries, self.worker, self.redactor)

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
