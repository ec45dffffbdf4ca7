"""The leader's election and the rescuer's scheduling over an in-memory lock: no database, no sleeps
(every wait is for a signal: a period done, a lock taken)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg

from listener.queue.leader import Duty, Leader


@dataclass
class LockTable:
    """The advisory lock as the database keeps it: held by one session, freed when it ends."""

    holder: "FakeSession | None" = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: int = 0


class FakeSession:
    def __init__(self, table: LockTable, name: str) -> None:
        self.table = table
        self.name = name
        self.conn: Any = self
        self.dead = threading.Event()

    def try_lead(self) -> bool:
        if self.dead.is_set():
            raise psycopg.OperationalError("terminating connection")
        with self.table.lock:
            if self.table.holder is None:
                self.table.holder = self
            return self.table.holder is self

    def __enter__(self) -> "FakeSession":
        with self.table.lock:
            self.table.sessions += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        with self.table.lock:  # the session ends: its lock goes with it
            if self.table.holder is self:
                self.table.holder = None


class Listener:
    """One listener's leader over the shared table; `kill()` ends its session as a SIGKILL would."""

    def __init__(self, table: LockTable, name: str, interval_s: float = 0.01) -> None:
        self.table = table
        self.name = name
        self.rescues: list[Any] = []
        self.session: FakeSession | None = None
        self.gone = False
        self.leader = Leader(self._session, [Duty("rescue", self._rescue)], interval_s)

    def kill(self) -> None:
        """Its connection ends and its host stays out of reach (a SIGKILL, a lost host)."""
        self.gone = True
        assert self.session is not None
        self.session.dead.set()

    def _session(self) -> FakeSession:
        if self.gone:
            raise psycopg.OperationalError("connection refused")
        self.session = FakeSession(self.table, self.name)
        return self.session

    def _rescue(self, conn: Any) -> None:
        if conn.dead.is_set():
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        self.rescues.append(conn)


def test_of_two_listeners_exactly_one_leads_and_only_it_rescues() -> None:
    table = LockTable()
    first, second = Listener(table, "a"), Listener(table, "b")
    first.leader.start()
    assert first.leader.wait_periods(3, 10)
    second.leader.start()
    try:
        assert first.leader.wait_periods(first.leader.periods + 3, 10)  # the second campaigned meanwhile
        assert table.sessions == 2
        assert first.leader.leading.is_set() and not second.leader.leading.is_set()
        assert second.rescues == [] and second.leader.periods == 0
    finally:
        for listener in (first, second):
            listener.leader.stop()
            assert listener.leader.join(10)
    assert table.holder is None, "a clean stop ends the session and frees the lock"


def test_when_the_leader_dies_another_listener_takes_over_and_rescues() -> None:
    table = LockTable()
    doomed, survivor = Listener(table, "doomed"), Listener(table, "survivor")
    doomed.leader.start()
    assert doomed.leader.wait_periods(1, 10)
    survivor.leader.start()
    try:
        doomed.kill()  # its next duty fails, the session ends and the lock with it
        assert survivor.leader.wait_periods(2, 10)
        assert survivor.leader.leading.is_set()
        assert table.holder is not None and table.holder.name == "survivor"
        assert survivor.rescues and all(conn.name == "survivor" for conn in survivor.rescues)
    finally:
        for listener in (doomed, survivor):
            listener.leader.stop()
            assert listener.leader.join(10)
    assert doomed.leader.reconnect.losses >= 1


def test_a_failing_duty_does_not_keep_the_others_from_running() -> None:
    ran: list[str] = []

    def boom(_conn: Any) -> None:
        ran.append("boom")
        raise RuntimeError("the Docker engine said no")

    leader = Leader(lambda: FakeSession(LockTable(), "x"), [Duty("sweep", boom), Duty("rescue", lambda _c: ran.append("rescue"))], 1.0)
    leader.run_duties(object())
    leader.run_duties(object())
    assert ran == ["boom", "rescue", "boom", "rescue"]
    assert leader.periods == 2


def test_a_lost_connection_in_a_duty_ends_the_session() -> None:
    def lost(_conn: Any) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    leader = Leader(lambda: FakeSession(LockTable(), "x"), [Duty("rescue", lost)], 1.0)
    try:
        leader.run_duties(object())
    except psycopg.OperationalError:
        pass
    else:
        raise AssertionError("the campaign must start again on a new session")
    assert leader.periods == 0


def test_a_stopped_leader_runs_no_duty() -> None:
    ran: list[str] = []
    leader = Leader(lambda: FakeSession(LockTable(), "x"), [Duty("rescue", lambda _c: ran.append("rescue"))], 1.0)
    leader.stop()
    leader.run_duties(object())
    assert ran == []
