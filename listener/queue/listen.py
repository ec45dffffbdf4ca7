"""The LISTEN loop: one dedicated connection, wake-ups, the safety poll, liveness, reconnects.

A notification is only a hint that work may be there; the workers always re-read rows under a
lock when they claim. The loop wakes them on every notification, on every (re)connect (the
catch-up), and every POLL_INTERVAL_S.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import psycopg
from loguru import logger
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from listener.config import Settings
from listener.queue.db import connect
from listener.queue.store import Store

READY_CHANNEL = "agent_builder_ready"
APPROVAL_CHANNEL = "agent_builder_approval"
CHANNELS = {READY_CHANNEL: "build", APPROVAL_CHANNEL: "approval"}

Wake = Callable[[str], None]
# A claim skips rows another session has locked (SKIP LOCKED). When the row a notification is about
# is locked at that moment (an operator's unrelated UPDATE in flight, say), the claim finds nothing
# and no new notification will come: so every notification also schedules one more look shortly after.
RECHECK_S = 1.0


class ListenLoop:
    def __init__(self, settings: Settings, dsn: str, worker: str, wake: Wake, stop: threading.Event,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.dsn = dsn
        self.worker = worker
        self.wake = wake
        self.stop = stop
        self.on_reconnect = on_reconnect
        self.connected = threading.Event()
        self.reconnects = 0
        self._down_since: float | None = None

    def run(self) -> None:
        """Until stopped: connect, LISTEN, catch up, wait for notifications; on any connection
        failure, reconnect with exponential backoff and jitter."""
        retrying = Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_exponential_jitter(initial=0.2, max=15, jitter=0.5),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            stop=lambda _state: self.stop.is_set(),
            reraise=False,
        )
        while not self.stop.is_set():
            try:
                retrying(self._session)
            except Exception as exc:  # noqa: BLE001 - tenacity gives up only when stopping
                if not self.stop.is_set():
                    logger.exception("listen loop failed unexpectedly: {}", exc)
                    self.stop.wait(1.0)

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _before_sleep(self, state: RetryCallState) -> None:
        if state.attempt_number == 1 or state.attempt_number % 10 == 0:
            exc = state.outcome.exception() if state.outcome else None
            logger.warning("database unreachable, retrying (attempt {}): {}", state.attempt_number, _one_line(exc))

    def _session(self) -> None:
        with connect(self.dsn, actor=f"builder-listen:{self.worker}", application="agent-builder listen") as conn:
            for channel in CHANNELS:
                Store(conn).listen(channel)
            if self._down_since is not None:
                self.reconnects += 1
                logger.info("listening again after {:.1f} s without a connection", time.monotonic() - self._down_since)
                if self.on_reconnect is not None:
                    self.on_reconnect()
            else:
                logger.info("listening on {}", ", ".join(CHANNELS))
            self._down_since = None
            self.connected.set()
            try:
                self.wake("catch-up")
                self._wait_loop(conn)
            except psycopg.OperationalError as exc:
                if self.stop.is_set():
                    return  # the connection went down with the rest of the shutdown
                # Connected, then lost: return so that the next outage starts its backoff afresh.
                self._down_since = time.monotonic()
                logger.warning("listening connection lost: {}", _one_line(exc))
            finally:
                self.connected.clear()

    def _wait_loop(self, conn: psycopg.Connection[Any]) -> None:
        settings = self.settings
        now = time.monotonic()
        next_poll = now + settings.poll_interval_s
        next_check = now + settings.liveness_interval_s
        recheck_at: float | None = None
        while not self.stop.is_set():
            deadline = min(next_poll, next_check, recheck_at or next_poll, time.monotonic() + 1.0)
            for note in conn.notifies(timeout=max(0.0, deadline - time.monotonic())):
                kind = CHANNELS.get(note.channel)
                if kind is not None:
                    self.wake(kind)
                    recheck_at = time.monotonic() + RECHECK_S
            now = time.monotonic()
            if recheck_at is not None and now >= recheck_at:
                self.wake("recheck")
                recheck_at = None
            if now >= next_check:
                # A silently dead connection (no RST: a cut network, a frozen proxy) delivers no
                # notifications and raises nothing; a round trip proves it is alive.
                Store(conn).ping()
                next_check = now + settings.liveness_interval_s
            if now >= next_poll:
                self.wake("poll")
                next_poll = now + settings.poll_interval_s


def _one_line(exc: BaseException | None) -> str:
    return " ".join(str(exc).split()) if exc is not None else "unknown error"
