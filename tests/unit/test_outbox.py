"""The outbox over an in-memory store and notifier: no database, no sleeps (events and joins)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import psycopg
from loguru import logger

from listener.notices import Notification
from listener.queue.outbox import Outbox
from listener.redact import Redactor


@dataclass
class Endings:
    """The database as the durable point sees it: which attempts have ended."""

    ended: set[int] = field(default_factory=set)
    points: list[list[int]] = field(default_factory=list)
    fail_next: int = 0  # points that lose the connection before they answer
    unreachable: bool = False
    connects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def durable_point(self, build_ids: list[int]) -> set[int]:
        with self.lock:
            if self.fail_next:
                self.fail_next -= 1
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            self.points.append(list(build_ids))
            return {b for b in build_ids if b in self.ended}

    @contextmanager
    def session(self) -> Iterator["Endings"]:
        with self.lock:
            self.connects += 1
            if self.unreachable:
                raise psycopg.OperationalError("connection refused")
        yield self


@dataclass
class Phone:
    """The notifier the outbox wraps: records what it was given; can be held to look slow."""

    redactor: Redactor = field(default_factory=Redactor)
    got: list[str] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    hold: threading.Event | None = None
    delivers: bool = True
    entered: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def send(self, n: Notification) -> bool:
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(10)
        with self.arrived:
            self.got.append(n.title)
            self.threads.append(threading.current_thread().name)
            self.arrived.notify_all()
        return True

    def wait_for(self, count: int) -> list[str]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.got) >= count, 10), self.got
            return list(self.got)


def note(title: str, attempt: int | None = None) -> Notification:
    return Notification(title=title, message=title, after_attempt=attempt)


def outbox(endings: Endings, phone: Phone) -> Outbox:
    box = Outbox(phone, endings.session)
    box.start()
    return box


def test_an_ending_goes_out_once_a_durable_point_saw_it_and_in_order_with_the_rest() -> None:
    endings, phone = Endings(ended={7, 8}), Phone()
    box = outbox(endings, phone)
    box.send(note("building 7"))
    box.send(note("READY 7", 7))
    box.send(note("FAIL 8", 8))
    assert phone.wait_for(3) == ["building 7", "READY 7", "FAIL 8"]
    box.stop()
    assert box.join(5)
    assert all(point and set(point) <= {7, 8} for point in endings.points)
    assert "notifications" in set(phone.threads)  # never the caller's thread


def test_an_ending_the_point_does_not_see_is_dropped_and_said() -> None:
    endings, phone = Endings(ended={7}), Phone()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        box = outbox(endings, phone)
        box.send(note("READY 9", 9))  # its ending was lost with a server crash
        box.send(note("READY 7", 7))
        assert phone.wait_for(1) == ["READY 7"]
        box.stop()
        assert box.join(5)
    finally:
        logger.remove(sink)
    assert phone.got == ["READY 7"] and box.dropped == 1
    assert any("the ending of attempt 9 it announces is not in the database" in line for line in lines)


def test_a_slow_notifier_never_holds_the_caller() -> None:
    endings, phone = Endings(ended={1, 2, 3}), Phone(hold=threading.Event())
    box = outbox(endings, phone)
    box.send(note("READY 1", 1))
    assert phone.entered.wait(5)  # the outbox is stuck in ntfy ...
    for attempt in (2, 3):
        assert box.send(note(f"READY {attempt}", attempt))  # ... and the workers go on
    assert box.pending() == 2
    phone.hold.set()
    assert phone.wait_for(3) == ["READY 1", "READY 2", "READY 3"]
    box.stop()
    assert box.join(5)
    assert endings.points[-1] == [2, 3]  # one point for the two that waited together


def test_a_point_that_loses_its_connection_is_made_again_and_nothing_is_lost_or_sent_twice() -> None:
    endings, phone = Endings(ended={5}, fail_next=2), Phone()
    box = outbox(endings, phone)
    box.send(note("READY 5", 5))
    assert phone.wait_for(1) == ["READY 5"]
    box.stop()
    assert box.join(5)
    assert phone.got == ["READY 5"] and endings.connects == 3


def test_stop_sends_what_is_queued_first() -> None:
    endings, phone = Endings(ended=set(range(50))), Phone(hold=threading.Event())
    box = outbox(endings, phone)
    for attempt in range(50):
        box.send(note(f"READY {attempt}", attempt))
    box.stop()
    phone.hold.set()
    assert box.join(5)
    assert phone.got == [f"READY {attempt}" for attempt in range(50)]


def test_a_database_out_of_reach_at_the_stop_ends_the_outbox_and_says_what_was_not_sent() -> None:
    endings, phone = Endings(ended={4}, unreachable=True), Phone()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        box = outbox(endings, phone)
        box.send(note("READY 4", 4))
        box.stop()
        assert box.join(0.2)  # the time given ran out: it gives up and ends
    finally:
        logger.remove(sink)
    assert phone.got == []
    assert any("1 notification(s) not sent" in line and "READY 4" in line for line in lines)


def test_after_the_stop_a_notification_is_sent_by_the_callers_thread() -> None:
    endings, phone = Endings(), Phone()
    box = outbox(endings, phone)
    box.stop()
    assert box.join(5)
    box.send(note("late"))
    assert phone.got == ["late"] and phone.threads == [threading.current_thread().name]


def test_a_notifier_that_only_logs_is_called_at_once_and_needs_no_durable_point() -> None:
    endings, phone = Endings(ended=set()), Phone(delivers=False)  # no NTFY_URL: the notifier only logs
    box = outbox(endings, phone)
    box.send(note("READY 3", 3))
    assert phone.got == ["READY 3"] and phone.threads == [threading.current_thread().name]
    box.stop()
    assert box.join(5)
    assert endings.points == [] and endings.connects == 0 and not box.alive  # no thread, no connection
