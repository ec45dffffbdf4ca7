"""What a build or deploy handler gets: its claim, and the few ways it may touch the database."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from loguru import logger

from listener.config import Settings
from listener.notices import Notification, Notifier
from listener.queue.hooks import Hooks
from listener.queue.outcome import BuildSucceeded, LevelResult, Released
from listener.queue.records import Automation, Claim
from listener.queue.states import BuilderStatus
from listener.queue.store import Store
from listener.redact import Redactor


class Metrics(Protocol):
    """What an attempt reports to (listener.ops.metrics.Metrics)."""

    def observe(self, name: str, seconds: float, **labels: str) -> None: ...

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None: ...


@dataclass
class AttemptContext:
    """The handle a handler works through. Every write checks that the attempt still owns its row."""

    claim: Claim
    store: Store
    settings: Settings
    notifier: Notifier
    stop: threading.Event
    status: BuilderStatus = BuilderStatus.QUEUED
    step_name: str = "claimed"
    log: Any = field(default=None)
    metrics: Metrics | None = None
    hooks: Hooks = field(default_factory=Hooks)
    # The levels that passed so far: the attempt's ending records them (listener.queue.finish).
    results: list[LevelResult] = field(default_factory=list)
    _step_started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = logger.bind(automation_id=self.claim.automation.id, build_id=self.claim.build_id)

    @property
    def automation(self) -> Automation:
        return self.claim.automation

    @property
    def installation(self) -> str:
        """The installation identity: on every Docker object this attempt makes."""
        return self.store.installation

    @property
    def redactor(self) -> Redactor:
        """The secrets this listener knows (the store's: every text it stores passes through it)."""
        return self.store.redactor

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def step(self, name: str) -> None:
        """Record the step reached; `status` and the rescuer report it."""
        self.store.advance(self.claim, name)
        self._enter(name)

    def _enter(self, name: str) -> None:
        self.end_step()
        self.step_name = name
        self.log.info("step {}", name)

    def end_step(self) -> None:
        """Count the time spent in the current step (metrics)."""
        now = time.monotonic()
        if self.metrics is not None:
            self.metrics.observe("agent_builder_step_seconds", now - self._step_started, step=self.step_name)
        self._step_started = now

    def start_generation(self) -> None:
        """Playbook Step 3 begins: builder_status becomes 'building'. From here on a failure, or a
        death, leaves the row 'failed' for a person to look at instead of releasing it."""
        if self.stopping:
            raise Released("the listener is stopping")
        self.store.move(self.claim, BuilderStatus.QUEUED, BuilderStatus.BUILDING, step="generate")
        self.status = BuilderStatus.BUILDING
        self._enter("generate")

    def save(self, **fields: Any) -> None:
        self.store.save(self.claim, **fields)

    def record(self, result: LevelResult) -> None:
        """Hand in the result of a level that ran. It is written by the attempt's ending, with the
        status move and in its transaction, through the store's one writer of agent_test_results
        (a failing level goes with its StepFailure instead)."""
        self.log.info("level {} {}", result.level, "passed" if result.passed else "failed")
        self.results.append(result)

    def notify(self, notification: Notification) -> None:
        self.notifier.send(notification)


BuildHandler = Callable[[AttemptContext], BuildSucceeded]
DeployHandler = Callable[[AttemptContext], None]
