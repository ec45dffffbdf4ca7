"""An in-memory stand-in for listener.queue.store.Store: the rows, attempts and result rows of the
builder's tables as the store's methods see them, with the same ownership checks as the SQL
(a move applies only while the row is in the expected status and points at the attempt, and the
attempt is unfinished). For unit tests of the state machine, the ending and the rescuer: no
database, no network."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from listener.queue.outcome import LevelResult, LostClaim
from listener.queue.records import Automation, Claim
from listener.queue.states import AttemptKind, BuilderStatus, Move, Outcome
from listener.queue.store import DeadAttemptLock, Finished
from listener.redact import Redactor


@dataclass
class Row:
    id: int
    builder_status: BuilderStatus
    build_id: int | None = None
    status: str = "ready_to_build"
    type: str = "script"
    retry_after_s: float | None = None

    def automation(self) -> Automation:
        return Automation(id=self.id, name=f"idea {self.id}", type=self.type, status=self.status, priority=None,
                          task_description="spec", infrastructure_requirement=None,
                          builder_status=self.builder_status.value)


@dataclass
class Attempt:
    id: int
    automation_id: int
    kind: AttemptKind
    step: str = "claimed"
    outcome: str | None = None
    error: str | None = None
    alive: bool = True  # a builder session holds its advisory lock

    @property
    def finished(self) -> bool:
        return self.outcome is not None


@dataclass(frozen=True)
class Result:
    automation_id: int
    build_id: int | None
    level: int
    passed: bool
    log: str


@dataclass
class MemoryStore:
    rows: dict[int, Row] = field(default_factory=dict)
    attempts: dict[int, Attempt] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    streak: int = 0
    worker: str = "memory"
    redactor: Redactor = field(default_factory=Redactor)
    installation: str = "memory-installation"
    _next_build: int = 100

    # -- setting the scene ----------------------------------------------------------------------
    def add(self, automation_id: int, status: BuilderStatus, kind: AttemptKind | None = AttemptKind.BUILD,
            *, owns_row: bool = True, alive: bool = True) -> Claim | None:
        """A row in `status`, with a running attempt of `kind` (None: no attempt) that owns it."""
        row = self.rows[automation_id] = Row(automation_id, status)
        if kind is None:
            return None
        self._next_build += 1
        attempt = self.attempts[self._next_build] = Attempt(self._next_build, automation_id, kind, alive=alive)
        if owns_row:
            row.build_id = attempt.id
        return Claim(automation=row.automation(), build_id=attempt.id, kind=kind, worker=self.worker)

    def status(self, automation_id: int) -> BuilderStatus:
        return self.rows[automation_id].builder_status

    # -- what an attempt does -----------------------------------------------------------------------
    def _owned(self, automation_id: int, build_id: int, expected: BuilderStatus) -> bool:
        row, attempt = self.rows.get(automation_id), self.attempts.get(build_id)
        return (row is not None and attempt is not None and not attempt.finished and row.build_id == build_id
                and row.builder_status is BuilderStatus(expected))

    def advance(self, claim: Claim, step: str) -> None:
        attempt = self.attempts[claim.build_id]
        if attempt.finished:
            raise LostClaim(f"attempt {claim.build_id} was ended by someone else")
        attempt.step = step

    def move(self, claim: Claim, expected: str, new_status: str, step: str) -> None:
        if not self._owned(claim.automation.id, claim.build_id, BuilderStatus(expected)):
            raise LostClaim(f"automation {claim.automation.id} is no longer {expected!r}")
        self.rows[claim.automation.id].builder_status = BuilderStatus(new_status)
        self.attempts[claim.build_id].step = step

    def save(self, claim: Claim, **fields: Any) -> None:
        if self.attempts[claim.build_id].finished:
            raise LostClaim(f"attempt {claim.build_id} was ended by someone else")

    def sign(self, claim: Claim, key: str) -> None:
        pass

    def overseer_calls_today(self) -> int:
        return 0

    def record_result(self, claim: Claim, result: LevelResult) -> None:
        self.record_results(claim.automation.id, claim.build_id, (result,))

    def record_results(self, automation_id: int, build_id: int | None, results: Iterable[LevelResult]) -> None:
        self.results += [Result(automation_id, build_id, r.level, r.passed, r.log) for r in results]

    def finish(self, claim: Claim, move: Move, *, error: str | None = None, retry_after_s: float | None = None,
               results: Sequence[LevelResult] = ()) -> Finished:
        if not self._owned(claim.automation.id, claim.build_id, move.expected):
            return Finished(owned=False)
        row = self.rows[claim.automation.id]
        row.builder_status, row.retry_after_s = move.new_status, retry_after_s
        if move.idea_status:
            row.status = move.idea_status
        attempt = self.attempts[claim.build_id]
        attempt.outcome, attempt.error, attempt.alive = move.outcome.stored, error, False
        self.record_results(claim.automation.id, claim.build_id, results)
        return Finished(owned=True)

    def release_streak(self, automation_id: int) -> int:
        return self.streak

    def close_lost(self, claim: Claim, error: str) -> None:
        self.close_attempt(claim.build_id, Outcome.LOST, error)
        self.attempts[claim.build_id].alive = False

    def close_attempt(self, build_id: int, outcome: Outcome, error: str) -> bool:
        attempt = self.attempts.get(build_id)
        if attempt is None or attempt.finished:
            return False
        attempt.outcome, attempt.error = outcome.stored, error
        return True

    # -- what the rescuer does ------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def dead_attempts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for attempt in self.attempts.values():
            if attempt.finished or attempt.alive:
                continue
            row = self.rows.get(attempt.automation_id)
            found.append({"build_id": attempt.id, "automation_id": attempt.automation_id, "kind": attempt.kind.value,
                          "step": attempt.step, "worker": "w", "claimed_at": None,
                          "builder_status": row.builder_status.value if row else None,
                          "owns_row": bool(row and row.build_id == attempt.id), "squatters": None})
        for row in self.rows.values():
            running = any(a.automation_id == row.id and not a.finished for a in self.attempts.values())
            if row.builder_status in (BuilderStatus.QUEUED, BuilderStatus.BUILDING, BuilderStatus.DEPLOYING) and not running:
                found.append({"build_id": row.build_id, "automation_id": row.id, "kind": None, "step": None,
                              "worker": None, "claimed_at": None, "builder_status": row.builder_status.value,
                              "owns_row": False, "squatters": None})
        return found

    def lock_dead_attempt(self, build_id: int, automation_id: int) -> DeadAttemptLock:
        attempt = self.attempts.get(build_id)
        return DeadAttemptLock(got=attempt is not None and not attempt.finished, alive=bool(attempt and attempt.alive))

    def rescue_row(self, automation_id: int, build_id: int | None, move: Move,
                   retry_after_s: float | None) -> Automation | None:
        row = self.rows.get(automation_id)
        if row is None or row.builder_status is not move.expected or row.build_id != build_id:
            return None
        row.builder_status, row.retry_after_s = move.new_status, retry_after_s
        return row.automation()

    def fail_near_miss_types(self) -> list[Automation]:
        return []


@dataclass
class RecordingNotifier:
    redactor: Redactor = field(default_factory=Redactor)
    sent: list[Any] = field(default_factory=list)
    delivers: bool = True

    def send(self, n: Any) -> bool:
        self.sent.append(n)
        return True
