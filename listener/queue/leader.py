"""The elected leader: one listener of a database runs the rescuer and the sweeps.

Every listener campaigns on a dedicated session: it tries a session advisory lock on a fixed key
(sql/leader_try_lock.sql) every RESCUE_INTERVAL_S. The one that holds it leads: at every period it
runs its duties (the dead-attempt rescue over pg_locks, the Docker sandbox and image sweep), the
others only try the lock. The lock dies with the leader's session (a SIGKILL, a lost host: TCP
keepalives), so another listener takes over at its next try, within RESCUE_INTERVAL_S, and runs
its duties at once. The queue imports no stage: the duties are handed in by the wiring
(listener.service).
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import psycopg
from loguru import logger

from listener.queue.db import Queries, connect
from listener.queue.services import Reconnect, ThreadService, one_line
from listener.queue.store import LEADER_APPLICATION, LEADER_LOCK_CLASS as LEADER_CLASS
from listener.queue.store import LEADER_LOCK_ID as LEADER_ID
from listener.queue.store import Store

__all__ = ["LEADER_CLASS", "LEADER_ID", "DatabaseLeaderSession", "Duty", "Leader", "LeaderSession"]


@dataclass(frozen=True)
class Duty:
    """Something only the leader does, every period, on the leader's connection."""

    name: str
    run: Callable[[Any], object]  # given the leader session's connection


class LeaderSession(Protocol):
    """A session that can hold the leader's lock; its connection is handed to the duties."""

    conn: Any

    def try_lead(self) -> bool: ...


class DatabaseLeaderSession:
    def __init__(self, dsn: str, queries: Queries, worker: str) -> None:
        self.queries = queries
        # The worker's name in the session's application name: `listeners` tells the leader by it
        # (sql/registry_live.sql: the session holding the leader's lock, and whose listener it is).
        self.conn: psycopg.Connection[dict[str, Any]] = connect(dsn, actor=f"builder-leader:{worker}",
                                                                application=f"{LEADER_APPLICATION} {worker}")

    def try_lead(self) -> bool:
        return Store(self.conn, self.queries).try_lead()

    def __enter__(self) -> "DatabaseLeaderSession":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.conn.close()


SessionFactory = Callable[[], AbstractContextManager[LeaderSession]]


class Leader(ThreadService):
    name = "leader"

    def __init__(self, session_factory: SessionFactory, duties: list[Duty], interval_s: float,
                 stopping: threading.Event | None = None) -> None:
        super().__init__(stopping)
        self.session_factory = session_factory
        self.duties = duties
        self.interval_s = interval_s
        self.leading = threading.Event()
        self.periods = 0  # periods in which this listener ran its duties
        self.reconnect = Reconnect("the leader session", self.stopping)
        self._failing: set[str] = set()  # duties whose last run failed (said once per failure run)
        self._period_done = threading.Condition()

    @classmethod
    def over_database(cls, dsn: str, queries: Queries, worker: str, duties: list[Duty], interval_s: float,
                      stopping: threading.Event | None = None) -> "Leader":
        return cls(lambda: DatabaseLeaderSession(dsn, queries, worker), duties, interval_s, stopping)

    def run(self) -> None:
        self.reconnect.run_forever(self._session, self.interval_s)

    def _session(self) -> None:
        with self.session_factory() as session:
            self.reconnect.connected()
            try:
                self._campaign(session)
            finally:
                if self.leading.is_set():
                    self.leading.clear()
                    logger.info("no longer the leader (its session ended)")

    def _campaign(self, session: LeaderSession) -> None:
        said_following = False
        while not self.stopping.is_set():
            if not self.leading.is_set():
                if session.try_lead():
                    self.leading.set()
                    logger.info("leading: this listener runs the rescuer and the sweeps ({})",
                                ", ".join(duty.name for duty in self.duties))
                elif not said_following:
                    said_following = True
                    logger.info("following: another listener leads (runs the rescuer and the sweeps); "
                                "trying to take over every {:g} s", self.interval_s)
            if self.leading.is_set():
                self.run_duties(session.conn)
            self.stopping.wait(self.interval_s)

    def run_duties(self, conn: Any) -> None:
        """One period: every duty, each on its own; one failing does not keep the others from running.
        A lost connection ends the session (the lock went with it) and the campaign starts again."""
        for duty in self.duties:
            if self.stopping.is_set():
                return
            try:
                duty.run(conn)
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # noqa: BLE001 - a duty's fault is said once per failure run
                if duty.name not in self._failing:
                    logger.opt(exception=exc).error("leader duty {} failed: {}", duty.name, one_line(exc))
                self._failing.add(duty.name)
            else:
                if duty.name in self._failing:
                    logger.info("leader duty {} runs again", duty.name)
                self._failing.discard(duty.name)
        with self._period_done:
            self.periods += 1
            self._period_done.notify_all()

    def wait_periods(self, count: int, timeout: float) -> bool:
        """Wait until this listener has led `count` periods (tests, benches)."""
        with self._period_done:
            return self._period_done.wait_for(lambda: self.periods >= count, timeout)
