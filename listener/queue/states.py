"""The state machine of an automation, explicit in Python (the database enforces the same one:
migration 0003's trigger refuses every other move, for every client).

builder_status: not_started → queued → building → awaiting_approval → approved → deploying →
deployed, with failed and rejected on the side. The listener moves a row only through the two
tables below, side by side:

- `live_ending`: how an attempt whose worker is alive ended (its handler returned, failed, failed
  with a transient error, or gave its row back because the listener is stopping) → the move.
- `dead_ending`: what the rescuer does with a row whose attempt died (its advisory lock is gone).

Both return a `Move` (or None: nothing to move, only the attempt is closed). The store applies a
move atomically (sql/finish_attempt.sql, sql/rescue_row.sql): only while the row is still in the
expected status and owned by the attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BuilderStatus(str, Enum):
    """automation_ideas.builder_status."""

    NOT_STARTED = "not_started"
    QUEUED = "queued"
    BUILDING = "building"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    FAILED = "failed"
    REJECTED = "rejected"

    def __str__(self) -> str:
        return self.value


# Rows a builder owns right now (an attempt runs on them): what the rescuer looks at.
IN_FLIGHT = frozenset({BuilderStatus.QUEUED, BuilderStatus.BUILDING, BuilderStatus.DEPLOYING})
# Where a row rests until a person (or nobody) acts on it.
RESTING = frozenset({BuilderStatus.FAILED, BuilderStatus.AWAITING_APPROVAL, BuilderStatus.REJECTED,
                     BuilderStatus.DEPLOYED})
# The operator's moves (the trigger of migration 0003 allows exactly these to an operator).
OPERATOR_MOVES: dict[BuilderStatus, frozenset[BuilderStatus]] = {
    BuilderStatus.AWAITING_APPROVAL: frozenset({BuilderStatus.APPROVED, BuilderStatus.REJECTED}),
    BuilderStatus.FAILED: frozenset({BuilderStatus.NOT_STARTED}),
    BuilderStatus.REJECTED: frozenset({BuilderStatus.NOT_STARTED}),
}


class AttemptKind(str, Enum):
    """agent_builds.kind."""

    BUILD = "build"
    DEPLOY = "deploy"

    def __str__(self) -> str:
        return self.value

    @property
    def claimed_status(self) -> BuilderStatus:
        """The status a claim of this kind leaves its row in."""
        return BuilderStatus.DEPLOYING if self is AttemptKind.DEPLOY else BuilderStatus.QUEUED


class Outcome(str, Enum):
    """How an attempt ended: the one vocabulary of agent_builds.outcome, the attempts metric and
    `build-once`'s last line. LOST (the attempt no longer owned its row: rescued, or changed by hand)
    is stored as 'failed' on the attempt, since the row was decided by someone else."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RELEASED = "released"  # given back before Step 3 after a transient failure (retried with backoff)
    STOPPED = "stopped"  # given back before Step 3 because the listener is stopping
    CRASHED = "crashed"  # its worker died (the rescuer closed it)
    LOST = "lost"

    def __str__(self) -> str:
        return self.value

    @property
    def stored(self) -> str:
        """The value agent_builds.outcome holds for it (its CHECK constraint's vocabulary)."""
        return Outcome.FAILED.value if self is Outcome.LOST else self.value


class HandlerEnd(str, Enum):
    """What a handler did, as the live ending sees it."""

    RETURNED = "returned"
    FAILED = "failed"
    TRANSIENT = "transient"  # a failure worth a retry (a database or Vault blip)
    STOPPED = "stopped"  # the listener is stopping (Released)


class ResultStatus(str, Enum):
    """agent_test_results.status."""

    PASS = "pass"
    FAIL = "fail"


class FailureKind(str, Enum):
    """What a StepFailure is about: picks its notification."""

    ERROR = "error"  # an unexpected error
    OVERSEER = "overseer"  # the overseer rejected the build
    LEVEL = "level"  # a test level failed
    INVALID = "invalid"  # the row cannot be built as it stands


@dataclass(frozen=True)
class Move:
    """One change of a row's builder_status, with what comes with it."""

    expected: BuilderStatus
    new_status: BuilderStatus
    outcome: Outcome
    backoff: bool = False  # builder_retry_at is set by the release backoff
    idea_status: str | None = None  # a new automation_ideas.status ('deployed' after a deployment)
    result: bool = False  # a level 0 (or the failing level's) agent_test_results row comes with it


def live_ending(kind: AttemptKind, status: BuilderStatus, end: HandlerEnd) -> Move | None:
    """The move that ends a live attempt of `kind` whose row is in `status`; None when the attempt
    cannot own a row in that status (it lost its claim: only the attempt is closed)."""
    if status not in IN_FLIGHT or (kind is AttemptKind.DEPLOY) != (status is BuilderStatus.DEPLOYING):
        return None
    if end is HandlerEnd.RETURNED:
        if kind is AttemptKind.DEPLOY:
            return Move(status, BuilderStatus.DEPLOYED, Outcome.SUCCEEDED, idea_status="deployed")
        if status is BuilderStatus.BUILDING:
            return Move(status, BuilderStatus.AWAITING_APPROVAL, Outcome.SUCCEEDED)
        # A build handler that returns without reaching Step 3 built nothing: a failure, never approval.
        return Move(status, BuilderStatus.FAILED, Outcome.FAILED, result=True)
    if status is BuilderStatus.QUEUED and end is HandlerEnd.TRANSIENT:
        return Move(status, BuilderStatus.NOT_STARTED, Outcome.RELEASED, backoff=True)
    if status is BuilderStatus.QUEUED and end is HandlerEnd.STOPPED:
        return Move(status, BuilderStatus.NOT_STARTED, Outcome.STOPPED)
    # At or after Step 3 (building, deploying) every failure, transient or not, is for a person.
    return Move(status, BuilderStatus.FAILED, Outcome.FAILED, result=True)


def dead_ending(status: BuilderStatus) -> Move | None:
    """The move for a row whose attempt died (or that is in flight with no attempt at all): before
    Step 3 it is built again (with backoff when it keeps happening); at or after it, failed with a
    level 0 result naming the step. None: the row is not in flight, only the attempt is closed."""
    if status is BuilderStatus.QUEUED:
        return Move(status, BuilderStatus.NOT_STARTED, Outcome.CRASHED, backoff=True)
    if status in (BuilderStatus.BUILDING, BuilderStatus.DEPLOYING):
        return Move(status, BuilderStatus.FAILED, Outcome.CRASHED, result=True)
    return None


def backoff_seconds(streak: int, base_s: float, max_s: float) -> float:
    """Release backoff: the first release retries at once, then base, 2*base, 4*base … up to max."""
    if streak <= 0:
        return 0.0
    return float(min(max_s, base_s * 2.0 ** (streak - 1)))


def status_of(value: str | None) -> BuilderStatus | None:
    """A builder_status read from the database (None stays None); an unknown value is an error
    naming it, never a silent guess."""
    if value is None:
        return None
    try:
        return BuilderStatus(value)
    except ValueError:
        raise ValueError(f"agent-builder: unknown builder_status {value!r} (known: "
                         f"{', '.join(s.value for s in BuilderStatus)})") from None
