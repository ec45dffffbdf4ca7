"""The LISTEN loop: one dedicated connection, wake-ups, the safety poll, liveness, reconnects.

A notification is only a hint that work may be there; the workers always re-read rows under a
lock when they claim. The loop wakes the dispatcher (listener.queue.dispatch) on every notification, on every (re)connect (the
catch-up), and every POLL_INTERVAL_S.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any, Callable

import psycopg
from loguru import logger

from listener.config import Settings
from listener.queue.db import connect
from listener.queue.store import Store
from listener.queue.services import Reconnect, ThreadService

READY_CHANNEL = "agent_builder_ready"
APPROVAL_CHANNEL = "agent_builder_approval"
CHANNELS = {READY_CHANNEL: "build", APPROVAL_CHANNEL: "approval"}

Wake = Callable[[str], None]
# A claim skips rows another session has locked (SKIP LOCKED). When the row a notification is about
# is locked at that moment (an operator's unrelated UPDATE in flight, say), the claim finds nothing
# and no new notification will come: so every notification also schedules one more look shortly after.
RECHECK_S = 1.0


class ListenLoop(ThreadService):
    name = "listen"

    def __init__(self, settings: Settings, dsn: str, worker: str, wake: Wake, stopping: threading.Event | None = None,
                 on_reconnect: Callable[[], None] | None = None, recheck_s: float = RECHECK_S) -> None:
        super().__init__(stopping)
        self.settings = settings
        self.dsn = dsn
        self.worker = worker
        self.wake = wake
        self.on_reconnect = on_reconnect
        self.recheck_s = recheck_s
        self.connected = threading.Event()
        self.reconnects = 0
        self.reconnect = Reconnect("the listening connection", self.stopping)
        self._stop_r, self._stop_w = socket.socketpair()  # stop() ends the wait on the socket through it
        self._stop_r.setblocking(False)
        self._stop_w.setblocking(False)

    def run(self) -> None:
        """Until stopped: connect, LISTEN, catch up, wait for notifications; on any connection
        failure, reconnect with exponential backoff and jitter (listener.queue.services.Reconnect)."""
        try:
            self.reconnect.run_forever(self._session)
        finally:
            self._stop_r.close()
            self._stop_w.close()

    def _session(self) -> None:
        with connect(self.dsn, actor=f"builder-listen:{self.worker}", application="agent-builder listen") as conn:
            for channel in CHANNELS:
                Store(conn).listen(channel)
            down_since = self.reconnect.connected()
            if down_since is not None:
                self.reconnects += 1
                logger.info("listening again after {:.1f} s without a connection", time.monotonic() - down_since)
                if self.on_reconnect is not None:
                    self.on_reconnect()
            else:
                logger.info("listening on {}", ", ".join(CHANNELS))
            self.connected.set()
            try:
                self.wake("catch-up")
                self._wait_loop(conn)
            finally:
                self.connected.clear()

    def _wait_readable(self, conn: psycopg.Connection[Any], timeout: float) -> None:
        stop = self._stop_r.fileno()
        readable, _, _ = select.select([conn.fileno(), stop], [], [], timeout)
        if stop in readable:
            try:
                self._stop_r.recv(64)
            except OSError:
                pass

    def _wake(self) -> None:
        """stop(): end the wait on the socket at once."""
        try:
            self._stop_w.send(b"x")
        except OSError:  # the pipe is full (already woken) or closed
            pass

    def _wait_loop(self, conn: psycopg.Connection[Any]) -> None:
        settings = self.settings
        now = time.monotonic()
        next_poll = now + settings.poll_interval_s
        next_check = now + settings.liveness_interval_s
        recheck_at: float | None = None
        while not self.stopping.is_set():
            # What arrived already (also while the last round trip ran) first; then wait on the
            # socket itself until something arrives, a timer is due or stop() writes to the pipe.
            # (psycopg's notifies(timeout=…) wakes every 0.1 s to look for Ctrl-C: ten wake-ups a
            # second of an idle listener for nothing.)
            for note in conn.notifies(timeout=0):
                kind = CHANNELS.get(note.channel)
                if kind is not None:
                    self.wake(kind)
                    if self.recheck_s > 0:
                        recheck_at = time.monotonic() + self.recheck_s
            deadline = min(next_poll, next_check, recheck_at or next_poll)
            timeout = max(0.0, deadline - time.monotonic())
            self._wait_readable(conn, timeout)
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
