"""What a build step can end in. Failures are values that carry their level, message and result;
one place (listener.queue.finish, by the table of listener.queue.states) turns them into a status,
agent_test_results rows and a notification."""

from __future__ import annotations

from dataclasses import dataclass, field

from listener.queue.states import FailureKind


@dataclass
class StepFailure(Exception):
    """A build step failed.

    level: the test level it counts against (1-4), or 0 when it happened outside the four levels
           (generation, the overseer, an unexpected error).
    step: the pipeline step it happened in ('prompt', 'generate', 'preflight', 'overseer', ...).
    message: one line for a person, in the builder's own words: what happened, and what to do when
             that is known. It goes to agent_builds.error and the notification; it never quotes
             sandbox output.
    log: the longer log kept in agent_test_results.execution_log.
    transient: True for a blip before Step 3 (database, Vault) that deserves a retry: the claim is
               released with backoff instead of failing the row.
    kind: a FailureKind (or its value): 'error' for unexpected errors, 'overseer' for an overseer
          rejection, 'level' for a test level, 'invalid' for a row that cannot be built as it stands.
    detail: what the sandbox (or the model) said about it, e.g. the last line of the output: kept in
            the stored log only (redacted like all of it), never in the notification.
    result: the failing level's own agent_test_results row, when the step made one (a test level);
            None: the ending records a result of `level` from the message, detail and log. Either
            way the ending writes it, once, with the status move.
    """

    level: int
    step: str
    message: str
    log: str = ""
    transient: bool = False
    kind: FailureKind | str = FailureKind.ERROR  # a str is turned into the FailureKind it names
    detail: str = ""
    result: "LevelResult | None" = None

    def __post_init__(self) -> None:
        self.kind = FailureKind(self.kind)
        super().__init__(self.message)


class Released(Exception):
    """The attempt gives its row back before Step 3 without a failure (the listener is stopping)."""


class LostClaim(Exception):
    """The attempt no longer owns its row (rescued, or changed by hand): it must stop writing."""


@dataclass(frozen=True)
class LevelResult:
    """One test level that ran, passed or failed; becomes one agent_test_results row."""

    level: int
    passed: bool
    log: str
    duration_ms: int | None = 0


@dataclass
class BuildSucceeded:
    """All four levels passed: the row goes to awaiting_approval."""

    results: list[LevelResult] = field(default_factory=list)
