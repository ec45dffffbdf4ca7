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


def idle(dispatcher: Dispatcher, free: list[Slot]) -> None:
    """Free every worker while nothing is ready (each free worker looks once), then count afresh."""
    for slot in free:
        dispatcher.free(slot)
        slot.store.calls.clear()  # type: ignore[union-attr]
    dispatcher.claims = 0


def jobs(slot: Slot) -> list[object]:
    found = []
    while not slot.inbox.empty():
        found.append(slot.inbox.get_nowait())
    return found


def test_one_notification_with_many_free_workers_runs_two_claims_and_wakes_one_worker() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, 64)
    idle(dispatcher, free)
    rows.ready.append(1)
    dispatcher.wake("build")
    assert dispatcher.handed == 1
    handed = {slot.index: jobs(slot) for slot in free}
    woken = [index for index, got in handed.items() if got]
    assert len(woken) == 1, "one claim, one worker"
    assert dispatcher.claims == 2  # the claim that found the row, the one that found nothing
    touched = [slot for slot in free if slot.store.calls]  # type: ignore[union-attr]
    assert len(touched) == 2
    assert dispatcher.free_count() == 63


def test_the_claim_runs_on_the_connection_of_the_worker_that_gets_it() -> None:
    """The attempt's advisory lock is taken by the claiming connection: it must be the runner's."""
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, 3)
    idle(dispatcher, free)
    rows.ready.extend([1, 2, 3])
    dispatcher.wake("build")
    for slot in free:
        (job,) = jobs(slot)
        assert isinstance(job, Claim) and job.worker == slot.store.name  # type: ignore[union-attr]


def test_keeps_claiming_while_workers_are_free_and_stops_when_none_is() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, 2)
    idle(dispatcher, free)
    rows.ready.extend([1, 2, 3, 4, 5])
    dispatcher.wake("build")
    assert dispatcher.handed == 2
    assert dispatcher.claims == 2, "no claim without a free worker to run it"
    assert rows.ready == [3, 4, 5]
    dispatcher.wake("build")  # nobody free: nothing claimed
    assert dispatcher.claims == 2
    jobs(free[0])
    dispatcher.free(free[0])  # a worker done with its build is a wake-up: it claims its next row itself
    assert isinstance(jobs(free[0])[0], Claim)
    assert rows.ready == [4, 5]


def test_the_most_recently_freed_worker_is_used_first() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, 3)
    idle(dispatcher, free)
    rows.ready.append(1)
    dispatcher.wake("build")
    assert [bool(jobs(slot)) for slot in free] == [False, False, True]


def test_a_connection_lost_during_a_claim_sends_that_worker_to_reconnect_and_the_next_one_claims() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    good, broken = slots(rows, 2)
    idle(dispatcher, [good, broken])  # broken is taken first
    broken.store.broken = True  # type: ignore[union-attr]
    rows.ready.append(1)
    dispatcher.wake("build")
    assert dispatcher.handed == 1
    (lost,) = jobs(broken)
    assert isinstance(lost, Lost) and isinstance(lost.error, psycopg.OperationalError)
    (claim,) = jobs(good)
    assert isinstance(claim, Claim) and claim.automation.id == 1


def test_approval_wake_ups_clean_rejections_then_deploy_then_build_and_stop_looking_once_answered() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)  # idle first without approvals looked for
    free = slots(rows, 4)
    idle(dispatcher, free)
    dispatcher.deploys = True
    rows.ready.append(1)
    rows.approved.append(2)
    rows.rejected.append(3)
    dispatcher.wake("approval")
    assert dispatcher.handed == 3
    handed = [job for slot in reversed(free) for job in jobs(slot)]
    assert isinstance(handed[0], Cleanup) and handed[0].automation.id == 3 and handed[0].image_id == "sha256:x"
    assert isinstance(handed[1], Claim) and handed[1].kind == "deploy" and handed[1].automation.id == 2
    assert isinstance(handed[2], Claim) and handed[2].kind == "build" and handed[2].automation.id == 1
    for slot in free:
        slot.store.calls.clear()  # type: ignore[union-attr]
        jobs(slot)
    rows.ready.append(4)
    dispatcher.wake("build")  # a build notification after the approvals were answered: builds only
    calls = [call for slot in free for call in slot.store.calls]  # type: ignore[union-attr]
    assert calls == ["build"]


def test_without_a_deploy_handler_approved_rows_are_not_claimed() -> None:
    rows = Rows(approved=[2], rejected=[3])
    dispatcher = Dispatcher(deploys=False)
    (slot,) = slots(rows, 1)
    idle(dispatcher, [slot])
    dispatcher.wake("approval")
    assert slot.store.calls == ["build"]  # type: ignore[union-attr]
    assert rows.approved == [2] and rows.rejected == [3]


def test_a_wake_up_claims_in_the_waking_thread_and_a_stop_tells_free_workers_to_return() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    slot, idle = slots(rows, 2)
    dispatcher.free(idle)
    dispatcher.free(slot)  # freeing is a wake-up: with nothing ready, the claim finds nothing
    assert dispatcher.claims == 2 and dispatcher.handed == 0
    rows.ready.append(7)
    dispatcher.wake("build")  # claims before it returns: no other thread has to be scheduled first
    (job,) = jobs(slot)
    assert isinstance(job, Claim) and job.automation.id == 7
    dispatcher.stop()
    assert jobs(idle) == [STOP], "the worker still free when it stopped is told to return"
    late = Slot(9, FakeStore("late", rows))
    dispatcher.free(late)  # a worker that finishes its build after the stop
    assert isinstance(late.inbox.get_nowait(), Stop)
    rows.ready.append(8)
    dispatcher.wake("build")
    assert rows.ready == [8], "no claim after the stop"


def test_a_wake_up_while_every_worker_is_busy_is_answered_when_one_is_free() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    (slot,) = slots(rows, 1)
    rows.ready.append(1)
    dispatcher.wake("build")  # nobody free: nothing claimed, the wake-up waits for a worker
    assert dispatcher.claims == 0
    dispatcher.free(slot)
    (job,) = jobs(slot)
    assert isinstance(job, Claim) and job.automation.id == 1


class GatedStore(FakeStore):
    """A store whose first claim waits at a gate: another thread's wake-up arrives meanwhile."""

    def __init__(self, name: str, rows: Rows) -> None:
        super().__init__(name, rows)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.inside = 0
        self.most_inside = 0

    def claim_next_build(self) -> Claim | None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            if not self.entered.is_set():
                self.entered.set()
                assert self.gate.wait(10)
            return super().claim_next_build()
        finally:
            self.inside -= 1


def test_one_thread_claims_at_a_time_and_takes_up_the_wake_ups_that_came_meanwhile() -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    plain = Slot(1, FakeStore("plain", rows))
    idle(dispatcher, [plain])
    gated = GatedStore("gated", rows)
    first = Slot(0, gated)
    claimer = threading.Thread(target=dispatcher.free, args=(first,))  # its claim waits at the gate
    claimer.start()
    assert gated.entered.wait(10)
    rows.ready.append(5)
    dispatcher.wake("build")  # another thread is claiming: this one returns at once, claiming nothing
    assert plain.store.calls == []  # type: ignore[union-attr]
    gated.gate.set()
    claimer.join(10)
    assert not claimer.is_alive()
    assert gated.most_inside == 1, "never two claims at once"
    handed = jobs(first) + jobs(plain)
    assert len(handed) == 1 and isinstance(handed[0], Claim) and handed[0].automation.id == 5
    assert plain.store.calls, "the claiming thread took up the wake-up that came meanwhile"  # type: ignore[union-attr]


def test_a_claim_error_that_is_not_the_connection_claims_nothing_and_keeps_the_worker() -> None:
    class Failing(FakeStore):
        def claim_next_build(self) -> Claim | None:
            raise psycopg.errors.UndefinedFunction("function agent_builder_claim_lock(bigint) does not exist")

    dispatcher = Dispatcher(deploys=False)
    slot = Slot(0, Failing("x", Rows()))
    dispatcher.free(slot)
    assert jobs(slot) == [] and dispatcher.free_count() == 1


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_claims_per_notification_do_not_grow_with_concurrency(concurrency: int) -> None:
    rows = Rows()
    dispatcher = Dispatcher(deploys=False)
    free = slots(rows, concurrency)
    idle(dispatcher, free)
    for automation_id in range(10):
        rows.ready.append(automation_id)
        dispatcher.wake("build")
        (busy,) = [slot for slot in free if not slot.inbox.empty()]
        jobs(busy)
        before = dispatcher.claims
        dispatcher.free(busy)  # its build done: it looks once for its next row
        assert dispatcher.claims == before + 1
    # per notification: the claim, and (when another worker is free) the one that finds nothing
    assert dispatcher.claims == 10 * ((1 if concurrency == 1 else 2) + 1)


def test_an_unexpected_error_in_a_claim_does_not_escape_into_the_waking_thread() -> None:
    class Buggy(FakeStore):
        def claim_next_build(self) -> Claim | None:
            raise KeyError("build_id")

    dispatcher = Dispatcher(deploys=False)
    slot = Slot(0, Buggy("x", Rows()))
    dispatcher.free(slot)
    dispatcher.wake("build")  # the listen loop's thread: must not die of it
    assert jobs(slot) == [] and dispatcher.free_count() == 1
