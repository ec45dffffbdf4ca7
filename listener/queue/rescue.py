"""The rescuer: finds attempts whose worker died and applies the playbook to their rows.

An attempt is dead when no builder session holds its session advisory lock (listener.queue.store):
a lock held by anyone else (any login can take advisory locks) is reported once and not trusted,
so a squatter can neither keep a dead attempt's row wedged nor make a live one look dead. Died before
Step 3 (row still 'queued'): back to 'not_started', to be built again (with backoff when it keeps
happening). Died at or after Step 3 ('building', 'deploying'): 'failed', with a level 0 result
that names the step, and an ERROR notification. That rule is `dead_ending` of
listener.queue.states, next to the live ending; every query goes through listener.queue.store.

It also tells about ready rows whose type is almost one the builder builds (`Script`, `bash`,
`' script'`, `claude-agent`, NULL: sql/fail_near_miss_types.sql): the claim never takes them, so
without this they would wait silently forever. Each is set `failed` with a level 0 result naming
the allowed types, and notified once (the UPDATE moves it out of the query's reach).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import psycopg
from loguru import logger

from listener import notices as notify
from listener.config import Settings
from listener.queue.db import Queries
from listener.queue.outcome import LevelResult
from listener.queue.records import AUTOMATION_TYPES as BUILT_TYPES
from listener.queue.states import BuilderStatus, Outcome, backoff_seconds, dead_ending, status_of
from listener.queue.store import Store
from listener.redact import Redactor


def near_miss_message(automation_type: str | None) -> str:
    """The level 0 reason for a ready row of a type that is almost ours."""
    shown = "NULL" if automation_type is None else repr(automation_type)
    return (f"its type {shown} is not one the builder builds: the type must be exactly "
            f"{' or '.join(repr(t) for t in BUILT_TYPES)} (lower case, no spaces). Fix it, then retry with "
            "builder_status = 'not_started'.")


@dataclass(frozen=True)
class Rescued:
    automation_id: int
    build_id: int | None
    old_status: BuilderStatus | None
    new_status: BuilderStatus | None  # None: only the attempt was closed (the row had moved on)


class Rescuer:
    def __init__(self, conn: psycopg.Connection[dict[str, Any]], queries: Queries, settings: Settings,
                 notifier: notify.Notifier, on_rescued: Callable[[str, int], Any] | None = None,
                 redactor: Redactor | None = None, store: Store | None = None) -> None:
        self.redactor = redactor if redactor is not None else notifier.redactor  # its writes: redacted like the store's
        self.conn = conn
        self.queries = queries
        self.store = store if store is not None else Store(conn, queries, redactor=self.redactor)  # a fake in unit tests
        self.settings = settings
        self.notifier = notifier
        self.on_rescued = on_rescued  # e.g. remove the containers a dead attempt left behind
        self._squatters_reported: set[tuple[int, str]] = set()

    def sweep(self) -> list[Rescued]:
        """One pass: rescue every dead attempt and orphaned row found now."""
        done: list[Rescued] = []
        for candidate in self.store.dead_attempts():
            self._report_squatters(candidate)
            rescued = self.rescue(candidate, why="its worker is gone (connection closed: killed, crashed or unreachable)")
            if rescued is not None:
                done.append(rescued)
        self.fail_near_miss_types()
        return done

    def fail_near_miss_types(self) -> list[int]:
        """Ready rows of a type that is almost ours: failed with the reason, notified once each."""
        notifications = []
        with self.store.transaction():
            failed = self.store.fail_near_miss_types()
            for automation in failed:
                reason = near_miss_message(automation.type)
                self.store.record_results(automation.id, None, [LevelResult(level=0, passed=False, log=reason,
                                                                           duration_ms=None)])
                message = self.redactor.redact(reason)
                notifications.append(notify.unhandled_error(automation, message))
                logger.bind(automation_id=automation.id).error("automation {} is ready but not buildable: {}",
                                                               automation.id, message)
        for notification in notifications:
            self.notifier.send(notification)
        return [automation.id for automation in failed]

    def _report_squatters(self, candidate: dict[str, Any]) -> None:
        squatters = candidate.get("squatters")
        if not squatters or (candidate["build_id"], squatters) in self._squatters_reported:
            return
        self._squatters_reported.add((candidate["build_id"], squatters))
        logger.bind(automation_id=candidate["automation_id"], build_id=candidate["build_id"]).warning(
            "the advisory lock of attempt {} is held by {}, not by a builder session: not trusted, the attempt counts as "
            "dead. Find that session in pg_stat_activity and end it (pg_terminate_backend)", candidate["build_id"], squatters)

    def rescue(self, candidate: dict[str, Any], *, why: str, require_lock: bool = True) -> Rescued | None:
        """Apply the playbook to one attempt (or orphaned row) in one transaction.

        require_lock=False is for a listener abandoning its own attempts at shutdown: it holds
        their locks itself (so they look alive); ownership checks still keep it from touching a
        newer attempt.
        """
        build_id = candidate["build_id"]
        automation_id = int(candidate["automation_id"])
        status = status_of(candidate["builder_status"])
        step = candidate.get("step") or "unknown"
        log = logger.bind(automation_id=automation_id, build_id=build_id)
        notification = None
        with self.store.transaction():
            active = candidate.get("kind") is not None
            if active:
                locked = self.store.lock_dead_attempt(build_id, automation_id)
                if not locked.got or (require_lock and locked.alive):
                    return None  # finished meanwhile, busy, another rescuer has it, or alive after all
            new_status = None
            move = dead_ending(status) if status is not None else None
            if move is not None and (candidate.get("owns_row") or not active):
                delay = None
                if move.backoff:
                    delay = backoff_seconds(self.store.release_streak(automation_id), self.settings.release_backoff_base_s,
                                            self.settings.release_backoff_max_s)
                rescued = self.store.rescue_row(automation_id, build_id, move, delay)
                new_status = None if rescued is None else move.new_status  # None: moved on meanwhile
                if rescued is not None and move.result:
                    reason = self._message(candidate, why, active)
                    self.store.record_results(automation_id, build_id if active else None,
                                              [LevelResult(level=0, passed=False, log=reason, duration_ms=None)])
                    notification = notify.unhandled_error(rescued, self.redactor.redact(reason))
            if active:
                closed = self.store.close_attempt(build_id, Outcome.CRASHED, f"died during step {step}: {why}")
                if not closed and new_status is None:
                    return None
        if new_status is BuilderStatus.NOT_STARTED:
            log.warning("rescued: attempt died before Step 3 (step {}); the row will be built again", step)
        elif new_status is BuilderStatus.FAILED:
            log.error("rescued: attempt died in step {}; row set failed", step)
        else:
            log.info("closed an attempt whose worker is gone (step {})", step)
        if notification is not None:
            self.notifier.send(notification)
        if active and self.on_rescued is not None:
            self.on_rescued(self.store.installation, int(build_id))
        return Rescued(automation_id, build_id, status, new_status)

    @staticmethod
    def _message(candidate: dict[str, Any], why: str, active: bool) -> str:
        if not active:
            return (f"agent-builder found this row '{candidate['builder_status']}' with no build attempt running "
                    "(a change by hand, or a builder that stopped without recording its end); set to failed. "
                    "Review it, then retry with builder_status = 'not_started'.")
        return (f"The build died during step '{candidate.get('step')}': {why}. Worker {candidate.get('worker')}, "
                f"claimed at {candidate.get('claimed_at')}. Nothing after that step was recorded. "
                "Review it, then retry with builder_status = 'not_started'.")
