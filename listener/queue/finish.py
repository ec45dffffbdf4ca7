"""The one place that turns how a live attempt ended into a status, agent_test_results rows and a
notification, by the table of listener.queue.states (live_ending; the rescuer's dead_ending is
next to it). Handlers only return (their level results) or raise (a StepFailure carrying its
result); they never pick a status or write a result row of their own ending themselves.

The notification carries the level and the builder's one-line reason (StepFailure.message,
redacted and clipped); what the sandbox or the model said (StepFailure.detail, .log) goes only to
the stored log, which the store redacts, and `agent-builder show` prints."""

from __future__ import annotations

import traceback
from dataclasses import replace
from typing import Any, Callable

import psycopg
from loguru import logger

from listener import notices as notify
from listener.queue.context import AttemptContext
from listener.queue.records import Automation
from listener.queue.outcome import BuildSucceeded, LevelResult, LostClaim, Released, StepFailure
from listener.queue.states import (AttemptKind, BuilderStatus, FailureKind, HandlerEnd, Move, Outcome, backoff_seconds,
                                   live_ending)
from listener.redact import Redactor

MAX_LOG_CHARS = 20_000

# How an attempt ended: the one vocabulary (listener.queue.states.Outcome), under its old name here.
Ending = Outcome


def run_attempt(ctx: AttemptContext, handler: Callable[[AttemptContext], Any]) -> Outcome:
    """Run a handler on a claimed attempt and record how it ended.

    A psycopg.OperationalError (the worker's connection is gone) propagates: nothing can be
    recorded on that connection and its advisory lock is gone with it, so the rescuer takes over.
    Every log line written while it runs, in any module, carries the automation and attempt ids.
    """
    with logger.contextualize(automation_id=ctx.automation.id, build_id=ctx.claim.build_id):
        return _run(ctx, handler)


def _run(ctx: AttemptContext, handler: Callable[[AttemptContext], Any]) -> Outcome:
    try:
        returned = handler(ctx)
        if ctx.claim.kind == AttemptKind.BUILD and ctx.settings.builder_signing_key:
            ctx.store.sign(ctx.claim, ctx.settings.builder_signing_key)  # BUILDER_SIGNING_KEY: only signed builds deploy
    except Released as stop:
        return end_attempt(ctx, HandlerEnd.STOPPED, reason=str(stop))
    except LostClaim as lost:
        ctx.log.warning("attempt lost its claim, result discarded: {}", lost)
        ctx.store.close_lost(ctx.claim, str(lost))
        return Outcome.LOST
    except psycopg.OperationalError:
        raise
    except StepFailure as failure:
        return end_attempt(ctx, HandlerEnd.TRANSIENT if failure.transient else HandlerEnd.FAILED, failure=failure)
    except Exception as exc:  # noqa: BLE001 - the playbook: any unhandled exception fails the build
        unexpected = StepFailure(
            level=0, step=ctx.step_name, message=f"{type(exc).__name__}: {exc}",
            log=traceback.format_exc()[-MAX_LOG_CHARS:], transient=isinstance(exc, psycopg.Error),
        )
        return end_attempt(ctx, HandlerEnd.TRANSIENT if unexpected.transient else HandlerEnd.FAILED, failure=unexpected)
    results = list(returned.results) if isinstance(returned, BuildSucceeded) else []
    return end_attempt(ctx, HandlerEnd.RETURNED, results=results)  # with those handed in on the way (ctx.results)


def end_attempt(ctx: AttemptContext, end: HandlerEnd, *, failure: StepFailure | None = None, reason: str = "",
                results: list[LevelResult] | None = None) -> Outcome:
    """The live ending: the move of listener.queue.states.live_ending, applied by the store with
    every agent_test_results row it brings (the handler's returned results, or the failure's), the
    log line and the notification."""
    kind, status = AttemptKind(ctx.claim.kind), BuilderStatus(ctx.status)
    move = live_ending(kind, status, end)
    if move is None:
        ctx.log.warning("attempt cannot end from builder_status {!r}; closing it", status.value)
        ctx.store.close_lost(ctx.claim, f"ended ({end.value}) while its row was {status.value!r}")
        return Outcome.LOST
    if move.outcome is Outcome.FAILED and failure is None:
        failure = StepFailure(level=0, step=ctx.step_name, message=(
            f"the listener stopped this {kind.value} during step {ctx.step_name} ({reason})" if end is HandlerEnd.STOPPED
            else f"the {kind.value} handler returned before the build reached Step 3 (generation): nothing was built"))
    handed_in = [*ctx.results, *(results or [])]
    if failure is not None and move.outcome is Outcome.FAILED:
        return _fail(ctx, move, failure, handed_in)
    if move.outcome is Outcome.SUCCEEDED:
        return _succeed(ctx, move, handed_in)
    return _release(ctx, move, handed_in, reason=failure.message if failure is not None else reason)


def _succeed(ctx: AttemptContext, move: Move, results: list[LevelResult]) -> Outcome:
    automation = ctx.automation
    done = ctx.store.finish(ctx.claim, move, results=results)
    if not done.owned:
        ctx.log.warning("attempt lost its claim before it could record success")
        return Outcome.LOST
    if ctx.claim.kind == AttemptKind.DEPLOY:
        message = notify.deployed(automation)
    else:
        message = notify.ready_for_approval(automation, actions=ctx.hooks.approval_actions(automation.id, ctx.claim.build_id),
                                            click=ctx.hooks.review_link(automation.id, ctx.claim.build_id))
    ctx.log.info("attempt succeeded: {}", "deployed" if ctx.claim.kind == AttemptKind.DEPLOY else "awaiting approval")
    ctx.notify(replace(message, after_attempt=ctx.claim.build_id))  # sent once the ending is on disk (queue.outbox)
    return Outcome.SUCCEEDED


def _fail(ctx: AttemptContext, move: Move, failure: StepFailure, passed: list[LevelResult]) -> Outcome:
    result = failure.result if failure.result is not None else LevelResult(
        level=failure.level, passed=False, log=_result_log(failure.step or ctx.step_name, failure))
    done = ctx.store.finish(ctx.claim, move, error=failure.message, results=[*passed, result])
    if not done.owned:
        ctx.log.warning("attempt lost its claim before it could record its failure: {}", failure.message)
        return Outcome.LOST
    ctx.log.error("attempt failed in step {} (level {}): {}", failure.step, failure.level, failure.message)
    ctx.notify(replace(failure_notification(ctx.automation, failure, ctx.redactor), after_attempt=ctx.claim.build_id))
    return Outcome.FAILED


def _release(ctx: AttemptContext, move: Move, results: list[LevelResult], *, reason: str) -> Outcome:
    settings = ctx.settings
    delay = None
    if move.backoff:
        delay = backoff_seconds(ctx.store.release_streak(ctx.automation.id), settings.release_backoff_base_s,
                                settings.release_backoff_max_s)
    done = ctx.store.finish(ctx.claim, move, error=reason, retry_after_s=delay, results=results)
    if not done.owned:
        ctx.log.warning("attempt lost its claim before it could release it")
        return Outcome.LOST
    ctx.log.warning("claim released ({}), retry {}: {}", move.outcome.value,
                    "at once" if not delay else f"in {delay:.0f} s", reason)
    return move.outcome


def failure_notification(automation: Automation, failure: StepFailure, redactor: Redactor) -> notify.Notification:
    """The level and the builder's reason on one line. The overseer's reason is the model's text and
    an unexpected error's text can hold anything: redacted before it is clipped, so a cut never
    leaves half a secret."""
    reason = redactor.one_line(failure.message, notify.ERROR_CHARS)
    if failure.kind is FailureKind.OVERSEER:
        return notify.overseer_failed(automation, reason)
    if failure.kind is FailureKind.LEVEL:
        return notify.level_failed(automation, failure.level, reason)
    return notify.unhandled_error(automation, reason)


def _result_log(step: str, failure: StepFailure) -> str:
    text = f"step: {step}\n{failure.message}"
    if failure.detail:
        text += "\n" + failure.detail
    if failure.log:
        text += "\n\n" + failure.log
    return text[:MAX_LOG_CHARS]
