"""The dispatcher over an in-memory queue: no database, no sleeps."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psycopg
import pytest

from listener.queue.dispatch import STOP, Cleanup, Dispatcher, Lost, Slot, Stop
from listener.queue.records import Automation, Claim


def automation(automation_id: int, builder_status: str = "not_started") -> Automation:
    return Automation(automation_id, f"idea {automation_id}", "script", "ready_to_build", None, "x", None, builder_status)


@dataclass
class Rows:
    """The table as the claims see it: ready rows, approved rows, rejected builds to clean."""

    ready: list[int] = field(default_factory=list)
    approved: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_build: int = 100

    def take(self, pool: list[int]) -> int | None:
        with self.lock:
            return pool.pop(0) if pool else None


@dataclass
class FakeStore:
    """One worker's store: every claim says which store (connection) ran it."""

    name: str
    rows: Rows
    calls: list[str] = field(default_factory=list)
    broken: bool = False

    def _claim(self, pool: list[int], kind: str, call: str) -> Claim | None:
        self.calls.append(call)
        if self.broken:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        automation_id = self.rows.take(pool)
        if automation_id is None:
            return None
        self.rows.next_build += 1
        return Claim(automation(automation_id), self.rows.next_build, kind, self.name)

    def claim_next_build(self) -> Claim | None:
        return self._claim(self.rows.ready, "build", "build")

    def claim_next_deploy(self, automation_id: int | None = None) -> Claim | None:
        return self._claim(self.rows.approved, "deploy", "deploy")

    def claim_rejected_cleanup(self) -> tuple[Automation, int, str | None] | None:
        self.calls.append("rejected")
        if self.broken:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        automation_id = self.rows.take(self.rows.rejected)
        return None if automation_id is None else (automation(automation_id, "rejected"), automation_id * 10, "sha256:x")


def slots(rows: Rows, count: int) -> list[Slot]:
    return [Slot(index, FakeStore(f"store-{index}", rows)) for index in range(count)]


def jobs(slot: Slot) -> list[object]:
    found = []
    while not slot.inbox.empty():
        found.append(slot.inbox.get_nowait())
    return found


def test_one_notification_with_many_free_workers_runs_two_claims_and_wakes_one_worker() -> None:
    rows = Rows(ready=[1])
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, 64)
    for slot in free:
        dispatcher.free(slot)
    assert dispatcher.round(approvals=0) == 1
    handed = {slot.index: jobs(slot) for slot in free}
    woken = [index for index, got in handed.items() if got]
    assert len(woken) == 1, "one claim, one worker"
    assert dispatcher.claims == 2  # the claim that found the row, the one that found nothing
    touched = [slot for slot in free if slot.store.calls]  # type: ignore[union-attr]
    assert len(touched) == 2
    assert dispatcher.free_count() == 63


def test_the_claim_runs_on_the_connection_of_the_worker_that_gets_it() -> None:
    """The attempt's advisory lock is taken by the claiming connection: it must be the runner's."""
    rows = Rows(ready=[1, 2, 3])
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, 3)
    for slot in free:
        dispatcher.free(slot)
    dispatcher.round(approvals=0)
    for slot in free:
        (job,) = jobs(slot)
        assert isinstance(job, Claim) and job.worker == slot.store.name  # type: ignore[union-attr]


def test_keeps_claiming_while_workers_are_free_and_stops_when_none_is() -> None:
    rows = Rows(ready=[1, 2, 3, 4, 5])
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, 2)
    for slot in free:
        dispatcher.free(slot)
    assert dispatcher.round(approvals=0) == 2
    assert dispatcher.claims == 2, "no claim without a free worker to run it"
    assert rows.ready == [3, 4, 5]
    assert dispatcher.round(approvals=0) == 0  # nobody free: nothing claimed
    dispatcher.free(free[0])  # a worker done with its build is a wake-up: the next row is claimed
    assert dispatcher.round(approvals=0) == 1
    assert rows.ready == [4, 5]


def test_the_most_recently_freed_worker_is_used_first() -> None:
    rows = Rows(ready=[1])
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, 3)
    for slot in free:
        dispatcher.free(slot)
    dispatcher.round(approvals=0)
    assert [bool(jobs(slot)) for slot in free] == [False, False, True]


def test_a_connection_lost_during_a_claim_sends_that_worker_to_reconnect_and_the_next_one_claims() -> None:
    rows = Rows(ready=[1])
    dispatcher = Dispatcher(deploys=False)
    good, broken = slots(rows, 2)
    broken.store.broken = True  # type: ignore[union-attr]
    dispatcher.free(good)
    dispatcher.free(broken)  # taken first
    assert dispatcher.round(approvals=0) == 1
    (lost,) = jobs(broken)
    assert isinstance(lost, Lost) and isinstance(lost.error, psycopg.OperationalError)
    (claim,) = jobs(good)
    assert isinstance(claim, Claim) and claim.automation.id == 1


def test_approval_wake_ups_clean_rejections_then_deploy_then_build_and_stop_looking_once_answered() -> None:
    rows = Rows(ready=[1], approved=[2], rejected=[3])
    dispatcher = Dispatcher(deploys=True)
    free = slots(rows, 4)
    for slot in free:
        dispatcher.free(slot)
    assert dispatcher.round(approvals=1) == 3
    handed = [job for slot in reversed(free) for job in jobs(slot)]
    assert isinstance(handed[0], Cleanup) and handed[0].automation.id == 3 and handed[0].image_id == "sha256:x"
    assert isinstance(handed[1], Claim) and handed[1].kind == "deploy" and handed[1].automation.id == 2
    assert isinstance(handed[2], Claim) and handed[2].kind == "build" and handed[2].automation.id == 1
    for slot in free:
        slot.store.calls.clear()  # type: ignore[union-attr]
        jobs(slot)
    rows.ready.append(4)
    dispatcher.round(approvals=1)  # the same approval count: answered, builds only
    calls = [call for slot in free for call in slot.store.calls]  # type: ignore[union-attr]
    assert calls == ["build"]


def test_without_a_deploy_handler_approved_rows_are_not_claimed() -> None:
    rows = Rows(approved=[2], rejected=[3])
    dispatcher = Dispatcher(deploys=False)
    (slot,) = slots(rows, 1)
    dispatcher.free(slot)
    assert dispatcher.round(approvals=5) == 0
    assert slot.store.calls == ["build"]  # type: ignore[union-attr]
    assert rows.approved == [2] and rows.rejected == [3]


def test_the_thread_claims_on_a_wake_up_and_stops_free_workers_when_stopped() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    slot, idle = slots(rows, 2)
    dispatcher.start()
    try:
        dispatcher.free(idle)
        dispatcher.free(slot)  # freeing is a wake-up: with nothing ready, each claim finds nothing
        rows.ready.append(7)
        dispatcher.wake("build")
        job = slot.inbox.get(timeout=10) if not idle.inbox.qsize() else idle.inbox.get(timeout=10)
        assert isinstance(job, Claim) and job.automation.id == 7
    finally:
        dispatcher.stop()
        assert dispatcher.join(10)
    leftovers = [job for s in (slot, idle) for job in jobs(s)]
    assert leftovers == [STOP], "the worker still free when it stopped is told to return"
    late = Slot(9, FakeStore("late", rows))
    dispatcher.free(late)  # a worker that finishes its build after the stop
    assert isinstance(late.inbox.get_nowait(), Stop)


def test_a_wake_up_while_every_worker_is_busy_is_not_lost() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    (slot,) = slots(rows, 1)
    dispatcher.start()
    try:
        rows.ready.append(1)
        dispatcher.wake("build")  # nobody free yet: the wake-up waits for a worker
        dispatcher.free(slot)
        job = slot.inbox.get(timeout=10)
        assert isinstance(job, Claim) and job.automation.id == 1
    finally:
        dispatcher.stop()
        assert dispatcher.join(10)


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_claims_per_notification_do_not_grow_with_concurrency(concurrency: int) -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, concurrency)
    for slot in free:
        dispatcher.free(slot)
    dispatcher.round(approvals=0)  # the catch-up: one claim that finds nothing
    before = dispatcher.claims
    for automation_id in range(10):
        rows.ready.append(automation_id)
        dispatcher.round(approvals=0)
        for slot in free:
            if jobs(slot):
                dispatcher.free(slot)  # its build done
    # per notification: the claim, and (when another worker is free) the one that finds nothing
    assert dispatcher.claims - before == (10 if concurrency == 1 else 20)
