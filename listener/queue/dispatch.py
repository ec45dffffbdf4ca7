"""The dispatcher: one claimer at a time, free workers run.

A wake-up (a notification, the catch-up after a (re)connect, the recheck, the safety poll, a worker
that just became free) makes the dispatcher claim on behalf of the free workers, one claim per free
worker, for as long as claims find something: the claim runs on the free worker's own connection,
so the attempt's session advisory lock is taken by the connection that will run the attempt (the
invariant of listener.queue.store), and the worker is handed the claim. Nothing else is woken: one
notification costs one claim statement (plus the one that finds nothing), whatever the concurrency
and however many builds are in flight.

The claims run in the thread that brings the wake-up, one thread at a time: the listen loop's
thread for a notification (no hand-over to another thread before the claim: a thread that must be
scheduled first is what a loaded machine delays), a worker's own thread when it becomes free (it
claims its next job on its own connection and runs it, without waking anyone). A wake-up that
arrives while another thread claims is taken up by that thread before it stops claiming.

Approval wake-ups (anything but a plain build notification) also look for rejected builds to clean
up and approved rows to deploy, until one such look finds neither.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
from loguru import logger

from listener.queue.records import Automation, Claim
from listener.queue.services import one_line


class ClaimSource(Protocol):
    """What the dispatcher asks of a worker's store (listener.queue.store.Store)."""

    def claim_next_build(self) -> Claim | None: ...

    def claim_next_deploy(self, automation_id: int | None = None) -> Claim | None: ...

    def claim_rejected_cleanup(self) -> tuple[Automation, int, str | None] | None: ...


@dataclass(frozen=True)
class Cleanup:
    """A rejected automation whose tested build the worker cleans up (image) and notifies."""

    automation: Automation
    build_id: int
    image_id: str | None


@dataclass(frozen=True)
class Lost:
    """The worker's connection failed while the dispatcher claimed on it: reconnect."""

    error: psycopg.OperationalError


class Stop:
    """No more jobs: the worker returns."""


STOP = Stop()
Job = Claim | Cleanup | Lost | Stop


@dataclass(eq=False)
class Slot:
    """One worker as the dispatcher sees it: its store (None while it has no connection) and inbox."""

    index: int
    store: ClaimSource | None = None
    inbox: "queue.SimpleQueue[Job]" = field(default_factory=queue.SimpleQueue)


class Dispatcher:
    def __init__(self, *, deploys: bool, stopping: threading.Event | None = None) -> None:
        self.stopping = stopping if stopping is not None else threading.Event()
        self.deploys = deploys  # False: no deploy handler, approved rows wait for a listener that has one
        self._cond = threading.Condition()
        self._free: list[Slot] = []  # the most recently freed last: it is taken first (its connection is warm)
        self._wakes = 0
        self._seen = 0  # wake-ups already answered by a round
        self._approval_wakes = 0
        self._approvals_done = -1  # approval wake-ups already answered by finding nothing to deploy
        self._claiming = False  # a thread is running rounds
        self._reasons: set[str] = set()  # what woke it since the last round (for the debug log)
        self.rounds = 0
        self.claims = 0  # claim statements run (found something or not)
        self.handed = 0  # jobs handed to workers
        self._errors_reported: set[str] = set()

    # -- wake-ups ----------------------------------------------------------------------------
    def wake(self, reason: str = "") -> None:
        """Look for work now (the listen loop's callback): claims in this thread unless another
        thread is claiming, which then takes this wake-up up too."""
        with self._cond:
            self._wakes += 1
            self._reasons.add(reason or "wake")
            if reason != "build":  # an approval, the catch-up, the recheck, the safety poll: approved rows too
                self._approval_wakes += 1
        self._drive()

    def free(self, slot: Slot) -> None:
        """A worker is connected and idle: it waits for a job on its inbox. A free worker is a
        wake-up too (there may be more rows than there were workers): called from the worker's own
        thread, it claims its next job itself."""
        with self._cond:
            if self.stopping.is_set():
                slot.inbox.put(STOP)
                return
            self._free.append(slot)
            self._wakes += 1
            self._reasons.add("free worker")
        self._drive()

    def free_count(self) -> int:
        with self._cond:
            return len(self._free)

    def stop(self) -> None:
        """No more claims: every free worker is told to return, and so is each one freed later."""
        self.stopping.set()
        with self._cond:
            for slot in self._free:
                slot.inbox.put(STOP)
            self._free.clear()

    def _drive(self) -> None:
        with self._cond:
            if self._claiming:
                return  # the claiming thread sees this wake-up before it stops
            self._claiming = True
        try:
            while True:
                with self._cond:
                    if self.stopping.is_set() or not self._free or self._wakes == self._seen:
                        self._claiming = False
                        return
                    self._seen = self._wakes
                    approvals = self._approval_wakes
                    reasons, self._reasons = self._reasons, set()
                handed = self.round(approvals)
                self.rounds += 1
                logger.debug("dispatch round {} after {}: {} job(s) handed", self.rounds, ", ".join(sorted(reasons)), handed)
        except BaseException:
            with self._cond:
                self._claiming = False
            raise

    # -- claiming ----------------------------------------------------------------------------
    def round(self, approvals: int) -> int:
        """Claim for free workers until none is free or a claim finds nothing; jobs handed."""
        handed = 0
        while not self.stopping.is_set():
            slot = self._take()
            if slot is None:
                break
            job = self._claim_for(slot, approvals)
            if job is None:
                self._give_back(slot)
                break
            slot.inbox.put(job)
            if not isinstance(job, Lost):
                handed += 1
        self.handed += handed
        return handed

    def _take(self) -> Slot | None:
        with self._cond:
            return self._free.pop() if self._free else None

    def _give_back(self, slot: Slot) -> None:
        """Back to the free list without counting as a wake-up (it just found nothing)."""
        with self._cond:
            if self.stopping.is_set():
                slot.inbox.put(STOP)
            else:
                self._free.append(slot)

    def _claim_for(self, slot: Slot, approvals: int) -> Job | None:
        store = slot.store
        if store is None:
            return None
        try:
            if self.deploys and approvals != self._approvals_done:
                self.claims += 1
                rejected = store.claim_rejected_cleanup()
                if rejected is not None:
                    return Cleanup(*rejected)
                self.claims += 1
                claim = store.claim_next_deploy()
                if claim is not None:
                    return claim
                self._approvals_done = approvals
            self.claims += 1
            return store.claim_next_build()
        except psycopg.OperationalError as exc:
            logger.debug("worker {}: its connection failed during a claim: {}", slot.index, one_line(exc))
            return Lost(exc)
        except Exception as exc:  # not the connection: say it once per kind, claim again at the next wake-up
            text = one_line(exc)
            if text not in self._errors_reported:
                self._errors_reported.add(text)
                logger.error("a claim failed: {}", text)
            return None
