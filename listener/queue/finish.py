"""The one place that turns how an attempt ended into a status, agent_test_results rows and a
notification. Handlers only return or raise; they never pick a status themselves.

The notification carries the level and the builder's one-line reason (StepFailure.message,
redacted and clipped); what the sandbox or the model said (StepFailure.detail, .log) goes only to
the stored log, which the store redacts, and `agent-builder show` prints."""

from __future__ import annotations

import traceback
from enum import Enum
from typing import Any, Callable

import psycopg
from loguru import logger

from listener.clients import ntfy as notify
from listener.approval.links import approval_actions, review_link
from listener.queue.context import AttemptContext
from listener.queue.outcome import LevelResult, LostClaim, Released, StepFailure
from listener.redact import Redactor

MAX_LOG_CHARS = 20_000


class Ending(str, Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RELEASED = "released"
    STOPPED = "stopped"
    LOST = "lost"


def run_attempt(ctx: AttemptContext, handler: Callable[[AttemptContext], Any]) -> Ending:
    """Run a handler on a claimed attempt and record how it ended.

    A psycopg.OperationalError (the worker's connection is gone) propagates: nothing can be
    recorded on that connection and its advisory lock is gone with it, so the rescuer takes over.
    Every log line written while it runs, in any module, carries the automation and attempt ids.
    """
    with logger.contextualize(automation_id=ctx.automation.id, build_id=ctx.claim.build_id):
        return _run(ctx, handler)


def _run(ctx: AttemptContext, handler: Callable[[AttemptContext], Any]) -> Ending:
    try:
        handler(ctx)
        if ctx.claim.kind == "build" and ctx.settings.builder_signing_key:
            ctx.store.sign(ctx.claim, ctx.settings.builder_signing_key)  # BUILDER_SIGNING_KEY: only signed builds deploy
    except Released as stop:
        return _release(ctx, reason=str(stop), outcome="stopped")
    except LostClaim as lost:
        ctx.log.warning("attempt lost its claim, result discarded: {}", lost)
        ctx.store.close_lost(ctx.claim, str(lost))
        return Ending.LOST
    except psycopg.OperationalError:
        raise
    except StepFailure as failure:
        return _fail(ctx, failure)
    except Exception as exc:  # noqa: BLE001 - the playbook: any unhandled exception fails the build
        crash = StepFailure(
            level=0, step=ctx.step_name, message=f"{type(exc).__name__}: {exc}",
            log=traceback.format_exc()[-MAX_LOG_CHARS:], transient=isinstance(exc, psycopg.Error),
        )
        return _fail(ctx, crash)
    return _succeed(ctx)


def _succeed(ctx: AttemptContext) -> Ending:
    automation = ctx.automation
    if ctx.claim.kind == "deploy":
        done = ctx.store.finish(ctx.claim, expected="deploying", new_status="deployed", outcome="succeeded",
                                idea_status="deployed")
        message = notify.deployed(automation)
    else:
        done = ctx.store.finish(ctx.claim, expected="building", new_status="awaiting_approval", outcome="succeeded")
        message = notify.ready_for_approval(
            automation, actions=approval_actions(ctx.settings, automation.id, ctx.claim.build_id),
            click=review_link(ctx.settings, automation.id, ctx.claim.build_id))
    if not done.owned:
        ctx.log.warning("attempt lost its claim before it could record success")
        return Ending.LOST
    ctx.log.info("attempt succeeded: {}", "deployed" if ctx.claim.kind == "deploy" else "awaiting approval")
    ctx.notify(message)
    return Ending.SUCCEEDED


def _fail(ctx: AttemptContext, failure: StepFailure) -> Ending:
    if ctx.status == "queued" and failure.transient:
        return _release(ctx, reason=failure.message, outcome="released")
    result = None if failure.recorded else LevelResult(
        level=failure.level, passed=False,
        log=_result_log(failure.step or ctx.step_name, failure),
    )
    done = ctx.store.finish(ctx.claim, expected=ctx.status, new_status="failed", outcome="failed",
                            error=failure.message, result=result)
    if not done.owned:
        ctx.log.warning("attempt lost its claim before it could record its failure: {}", failure.message)
        return Ending.LOST
    ctx.log.error("attempt failed in step {} (level {}): {}", failure.step, failure.level, failure.message)
    ctx.notify(failure_notification(ctx.automation, failure, ctx.redactor))
    return Ending.FAILED


def _release(ctx: AttemptContext, *, reason: str, outcome: str) -> Ending:
    settings = ctx.settings
    delay = None
    if outcome == "released":
        delay = ctx.store.release_backoff(ctx.claim, settings.release_backoff_base_s, settings.release_backoff_max_s)
    done = ctx.store.finish(ctx.claim, expected="queued", new_status="not_started", outcome=outcome,
                            error=reason, retry_after_s=delay)
    if not done.owned:
        ctx.log.warning("attempt lost its claim before it could release it")
        return Ending.LOST
    ctx.log.warning("claim released ({}), retry {}: {}", outcome,
                    "at once" if not delay else f"in {delay:.0f} s", reason)
    return Ending.STOPPED if outcome == "stopped" else Ending.RELEASED


def failure_notification(automation: Any, failure: StepFailure, redactor: Redactor) -> notify.Notification:
    """The level and the builder's reason on one line. The overseer's reason is the model's text and
    an unexpected error's text can hold anything: redacted before it is clipped, so a cut never
    leaves half a secret."""
    reason = redactor.one_line(failure.message, notify.ERROR_CHARS)
    if failure.kind == "overseer":
        return notify.overseer_failed(automation, reason)
    if failure.kind == "level":
        return notify.level_failed(automation, failure.level, reason)
    return notify.unhandled_error(automation, reason)


def _result_log(step: str, failure: StepFailure) -> str:
    text = f"step: {step}\n{failure.message}"
    if failure.detail:
        text += "\n" + failure.detail
    if failure.log:
        text += "\n\n" + failure.log
    return text[:MAX_LOG_CHARS]
