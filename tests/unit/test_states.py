"""The state machine in Python (listener.queue.states) and the two places that apply it: the live
ending (listener.queue.finish) and the dead-attempt rescue (listener.queue.rescue), over an
in-memory store: every status × every way an attempt can end."""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

from listener.config import Settings
from listener.queue.context import AttemptContext
from listener.queue.finish import run_attempt
from listener.queue.hooks import Hooks
from listener.queue.outcome import BuildSucceeded, LevelResult, LostClaim, Released, StepFailure
from listener.queue.rescue import Rescuer
from listener.queue.states import (IN_FLIGHT, AttemptKind, BuilderStatus, HandlerEnd, Move, Outcome, dead_ending,
                                   live_ending, status_of)
from tests.fakes.memory_store import MemoryStore, RecordingNotifier

S, K, E = BuilderStatus, AttemptKind, HandlerEnd
SETTINGS = Settings.from_env({})

# The live ending, written out: (kind, status, end) -> (new status, outcome, backoff, result row).
# Every combination not listed has no move (the attempt cannot own a row in that status).
LIVE = {
    (K.BUILD, S.QUEUED, E.RETURNED): (S.FAILED, Outcome.FAILED, False, True),  # never reached Step 3: built nothing
    (K.BUILD, S.QUEUED, E.FAILED): (S.FAILED, Outcome.FAILED, False, True),
    (K.BUILD, S.QUEUED, E.TRANSIENT): (S.NOT_STARTED, Outcome.RELEASED, True, False),
    (K.BUILD, S.QUEUED, E.STOPPED): (S.NOT_STARTED, Outcome.STOPPED, False, False),
    (K.BUILD, S.BUILDING, E.RETURNED): (S.AWAITING_APPROVAL, Outcome.SUCCEEDED, False, False),
    (K.BUILD, S.BUILDING, E.FAILED): (S.FAILED, Outcome.FAILED, False, True),
    (K.BUILD, S.BUILDING, E.TRANSIENT): (S.FAILED, Outcome.FAILED, False, True),  # after Step 3: for a person
    (K.BUILD, S.BUILDING, E.STOPPED): (S.FAILED, Outcome.FAILED, False, True),
    (K.DEPLOY, S.DEPLOYING, E.RETURNED): (S.DEPLOYED, Outcome.SUCCEEDED, False, False),
    (K.DEPLOY, S.DEPLOYING, E.FAILED): (S.FAILED, Outcome.FAILED, False, True),
    (K.DEPLOY, S.DEPLOYING, E.TRANSIENT): (S.FAILED, Outcome.FAILED, False, True),
    (K.DEPLOY, S.DEPLOYING, E.STOPPED): (S.FAILED, Outcome.FAILED, False, True),
}
DEAD = {
    S.QUEUED: (S.NOT_STARTED, Outcome.CRASHED, True, False),
    S.BUILDING: (S.FAILED, Outcome.CRASHED, False, True),
    S.DEPLOYING: (S.FAILED, Outcome.CRASHED, False, True),
}
EVERY = [(kind, status, end) for kind in AttemptKind for status in BuilderStatus for end in HandlerEnd]


@pytest.mark.parametrize("kind, status, end", EVERY)
def test_live_ending_table(kind: AttemptKind, status: BuilderStatus, end: HandlerEnd) -> None:
    move = live_ending(kind, status, end)
    expected = LIVE.get((kind, status, end))
    if expected is None:
        assert move is None
        return
    assert move is not None and move.expected is status
    assert (move.new_status, move.outcome, move.backoff, move.result) == expected
    assert move.idea_status == ("deployed" if move.new_status is S.DEPLOYED else None)


@pytest.mark.parametrize("status", list(BuilderStatus))
def test_dead_ending_table(status: BuilderStatus) -> None:
    move = dead_ending(status)
    if status not in DEAD:
        assert move is None and status not in IN_FLIGHT
        return
    assert move is not None and move.expected is status
    assert (move.new_status, move.outcome, move.backoff, move.result) == DEAD[status]


def test_every_move_is_one_the_database_lets_the_builder_make() -> None:
    """The moves of both tables are within migration 0010's agent_builder_builder_moves()."""
    builder_moves = {S.NOT_STARTED: {S.QUEUED, S.FAILED}, S.QUEUED: {S.BUILDING, S.NOT_STARTED, S.FAILED},
                     S.BUILDING: {S.AWAITING_APPROVAL, S.FAILED}, S.APPROVED: {S.DEPLOYING, S.FAILED},
                     S.DEPLOYING: {S.DEPLOYED, S.FAILED}}
    moves: list[Move | None] = [live_ending(*c) for c in EVERY] + [dead_ending(s) for s in BuilderStatus]
    for move in filter(None, moves):
        assert move.new_status in builder_moves[move.expected], move


def test_outcomes_are_one_vocabulary_stored_within_the_check_constraint() -> None:
    assert {o.stored for o in Outcome} == {"succeeded", "failed", "released", "crashed", "stopped"}
    assert Outcome.LOST.stored == "failed" and Outcome("lost") is Outcome.LOST


def test_status_of_names_an_unknown_status() -> None:
    assert status_of("queued") is S.QUEUED and status_of(None) is None
    with pytest.raises(ValueError, match="unknown builder_status 'Queued'"):
        status_of("Queued")


# -- the live ending, applied ---------------------------------------------------------------------------

def passes(ctx: AttemptContext) -> BuildSucceeded:
    return BuildSucceeded(results=[LevelResult(level=4, passed=True, log="level 4 ok")])


def fails_level_2(ctx: AttemptContext) -> None:
    raise StepFailure(level=2, step="level2", message="ModuleNotFoundError: requests", kind="level",
                      result=LevelResult(level=2, passed=False, log="the level's own log"))


def transient(ctx: AttemptContext) -> None:
    raise StepFailure(level=0, step="vault", message="Vault unreachable", transient=True)


def stops(ctx: AttemptContext) -> None:
    raise Released("the listener is stopping")


def crashes(ctx: AttemptContext) -> None:
    raise ZeroDivisionError("division by zero")


def loses(ctx: AttemptContext) -> None:
    raise LostClaim("rescued meanwhile")


HANDLERS: dict[str, tuple[Callable[[AttemptContext], Any], HandlerEnd | None]] = {
    "returns": (passes, E.RETURNED), "fails": (fails_level_2, E.FAILED), "crashes": (crashes, E.FAILED),
    "transient": (transient, E.TRANSIENT), "stops": (stops, E.STOPPED), "loses": (loses, None),
}
CLAIMABLE = [(K.BUILD, S.QUEUED), (K.BUILD, S.BUILDING), (K.DEPLOY, S.DEPLOYING)]


def attempt(store: MemoryStore, kind: AttemptKind, status: BuilderStatus, hooks: Hooks | None = None
            ) -> tuple[AttemptContext, RecordingNotifier]:
    claim = store.add(1, status, kind)
    assert claim is not None
    notifier = RecordingNotifier()
    ctx = AttemptContext(claim=claim, store=store, settings=SETTINGS, notifier=notifier,  # type: ignore[arg-type]
                         stop=threading.Event(), status=status, hooks=hooks or Hooks())
    return ctx, notifier


@pytest.mark.parametrize("kind, status", CLAIMABLE)
@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_run_attempt_applies_the_live_table(kind: AttemptKind, status: BuilderStatus, handler: str) -> None:
    store = MemoryStore(streak=2)
    ctx, notifier = attempt(store, kind, status)
    function, end = HANDLERS[handler]
    outcome = run_attempt(ctx, function)
    build = store.attempts[ctx.claim.build_id]
    if end is None:  # the handler lost its claim: nothing moves, the attempt is closed
        assert outcome is Outcome.LOST and store.status(1) is status and build.outcome == "failed"
        assert store.results == [] and notifier.sent == []
        return
    new_status, expected_outcome, backoff, result = LIVE[(kind, status, end)]
    assert outcome is expected_outcome and store.status(1) is new_status
    assert build.outcome == expected_outcome.stored and not build.alive
    assert (store.rows[1].retry_after_s is not None) is backoff  # streak 2: a real delay
    levels = [(r.level, r.passed) for r in store.results]
    if handler == "returns" and expected_outcome is Outcome.SUCCEEDED:
        assert levels == [(4, True)]  # the results the handler returned, written once by the ending
    elif result:
        assert [passed for _level, passed in levels].count(False) == 1  # exactly one failing row, never two
        assert levels[-1][1] is False and levels[:-1] == ([(4, True)] if handler == "returns" else [])
        if handler == "fails":
            assert store.results[0].log == "the level's own log"
    else:
        assert levels == []
    assert len(notifier.sent) == (1 if expected_outcome in (Outcome.SUCCEEDED, Outcome.FAILED) else 0)


@pytest.mark.parametrize("status", [s for s in BuilderStatus if s not in IN_FLIGHT])
@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_an_attempt_whose_row_is_not_in_flight_only_closes(status: BuilderStatus, handler: str) -> None:
    store = MemoryStore()
    ctx, notifier = attempt(store, K.BUILD, status)
    assert run_attempt(ctx, HANDLERS[handler][0]) is Outcome.LOST
    assert store.status(1) is status and store.attempts[ctx.claim.build_id].finished and store.results == []
    assert notifier.sent == []


def test_a_row_changed_behind_the_attempt_is_lost_not_overwritten() -> None:
    store = MemoryStore()
    ctx, notifier = attempt(store, K.BUILD, S.BUILDING)
    store.rows[1].builder_status = S.FAILED  # an admin's repair while it ran
    assert run_attempt(ctx, passes) is Outcome.LOST
    assert store.status(1) is S.FAILED and store.results == [] and notifier.sent == []


def test_success_asks_the_approval_hook_for_its_buttons() -> None:
    asked: list[tuple[int, int]] = []

    def actions(automation_id: int, build_id: int) -> tuple[dict[str, Any], ...]:
        asked.append((automation_id, build_id))
        return ({"action": "http", "label": "Approve", "url": "https://x/decide/t"},)

    store = MemoryStore()
    ctx, notifier = attempt(store, K.BUILD, S.BUILDING, Hooks(approval_actions=actions))
    assert run_attempt(ctx, passes) is Outcome.SUCCEEDED
    assert asked == [(1, ctx.claim.build_id)] and notifier.sent[0].actions[0]["label"] == "Approve"


# -- the dead-attempt rescue, applied -------------------------------------------------------------------------

@pytest.mark.parametrize("status", list(BuilderStatus))
@pytest.mark.parametrize("with_attempt", [True, False])
def test_rescue_applies_the_dead_table(status: BuilderStatus, with_attempt: bool) -> None:
    store = MemoryStore(streak=1)
    kind = K.DEPLOY if status is S.DEPLOYING else K.BUILD
    claim = store.add(1, status, kind if with_attempt else None, alive=False)
    removed: list[tuple[str, int]] = []
    notifier = RecordingNotifier()
    rescuer = Rescuer(None, None, SETTINGS, notifier, on_rescued=lambda i, b: removed.append((i, b)),  # type: ignore[arg-type]
                      store=store)  # type: ignore[arg-type]
    done = rescuer.sweep()
    expected = DEAD.get(status)
    if expected is None:  # not in flight: only a dead attempt is closed, the row stays
        assert store.status(1) is status and store.results == [] and notifier.sent == []
        assert [r.new_status for r in done] == ([None] if with_attempt else [])
    else:
        new_status, _outcome, backoff, result = expected
        assert store.status(1) is new_status and [r.new_status for r in done] == [new_status]
        assert (store.rows[1].retry_after_s is not None) is backoff
        assert [(r.level, r.passed) for r in store.results] == ([(0, False)] if result else [])
        assert len(notifier.sent) == (1 if result else 0)
    if with_attempt:
        assert claim is not None and store.attempts[claim.build_id].outcome == "crashed"
        assert removed == [(store.installation, claim.build_id)]
    else:
        assert removed == []


def test_rescue_leaves_a_live_attempt_alone() -> None:
    store = MemoryStore()
    store.add(1, S.BUILDING, K.BUILD, alive=True)
    assert Rescuer(None, None, SETTINGS, RecordingNotifier(), store=store).sweep() == []  # type: ignore[arg-type]
    assert store.status(1) is S.BUILDING


@pytest.mark.parametrize("ending", ["returns", "fails", "loses"])
def test_results_handed_in_are_written_once_by_the_ending(ending: str) -> None:
    store = MemoryStore()
    ctx, _notifier = attempt(store, K.BUILD, S.BUILDING)
    seen_while_running: list[int] = []

    def handler(ctx: AttemptContext) -> BuildSucceeded:
        ctx.record(LevelResult(level=1, passed=True, log="structure ok"))
        ctx.record(LevelResult(level=2, passed=True, log="ran"))
        seen_while_running.append(len(store.results))
        if ending == "fails":
            raise StepFailure(level=3, step="level3", message="no output", kind="level",
                              result=LevelResult(level=3, passed=False, log="level 3 log"))
        if ending == "loses":
            raise LostClaim("rescued meanwhile")
        return BuildSucceeded(results=[LevelResult(level=3, passed=True, log="l3"), LevelResult(level=4, passed=True, log="l4")])

    run_attempt(ctx, handler)
    assert seen_while_running == [0]  # nothing is written while the attempt runs
    written = [(r.level, r.passed) for r in store.results]
    expected = {"returns": [(1, True), (2, True), (3, True), (4, True)],
                "fails": [(1, True), (2, True), (3, False)],
                "loses": []}[ending]  # a lost attempt's results are discarded with it
    assert written == expected
