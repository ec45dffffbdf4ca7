"""The rescuer: finds attempts whose worker died and applies the playbook to their rows.

An attempt is dead when no builder session holds its session advisory lock (listener.queue.claims):
a lock held by anyone else (any login can take advisory locks) is reported once and not trusted,
so a squatter can neither keep a dead attempt's row wedged nor make a live one look dead. Died before
Step 3 (row still 'queued'): back to 'not_started', to be built again (with backoff when it keeps
happening). Died at or after Step 3 ('building', 'deploying'): 'failed', with a level 0 result
that names the step, and an ERROR notification.

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

from listener.clients import ntfy as notify
from listener.queue.claims import backoff_seconds, installation_of
from listener.config import Settings
from listener.queue.db import Queries
from listener.queue.records import Automation
from listener.redact import Redactor


BUILT_TYPES = ("script", "claude_agent")


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
    old_status: str
    new_status: str | None  # None: only the attempt was closed (the row had moved on)


class Rescuer:
    def __init__(self, conn: psycopg.Connection[dict[str, Any]], queries: Queries, settings: Settings,
                 notifier: notify.Notifier, on_rescued: Callable[[str, int], Any] | None = None,
                 redactor: Redactor | None = None) -> None:
        self.redactor = redactor if redactor is not None else notifier.redactor  # its writes: redacted like the store's
        self.conn = conn
        self.queries = queries
        self.settings = settings
        self.notifier = notifier
        self.on_rescued = on_rescued  # e.g. remove the containers a dead attempt left behind
        self._squatters_reported: set[tuple[int, str]] = set()

    def sweep(self) -> list[Rescued]:
        """One pass: rescue every dead attempt and orphaned row found now."""
        done: list[Rescued] = []
        for candidate in self.conn.execute(self.queries["find_dead_attempts"], {}).fetchall():
            self._report_squatters(candidate)
            rescued = self.rescue(candidate, why="its worker is gone (connection closed: killed, crashed or unreachable)")
            if rescued is not None:
                done.append(rescued)
        self.fail_near_miss_types()
        return done

    def fail_near_miss_types(self) -> list[int]:
        """Ready rows of a type that is almost ours: failed with the reason, notified once each."""
        notifications = []
        with self.conn.transaction():
            rows = self.conn.execute(self.queries["fail_near_miss_types"], {}).fetchall()
            for row in rows:
                automation = Automation.from_row(row)
                message = self.redactor.redact(near_miss_message(automation.type))
                self.conn.execute(self.queries["insert_test_result"], {
                    "automation_id": automation.id, "build_id": None, "test_level": 0, "status": "fail",
                    "execution_log": message, "duration_ms": None,
                })
                notifications.append(notify.unhandled_error(automation, message))
                logger.bind(automation_id=automation.id).error("automation {} is ready but not buildable: {}",
                                                               automation.id, message)
        for notification in notifications:
            self.notifier.send(notification)
        return [int(row["id"]) for row in rows]

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
        status = candidate["builder_status"]
        step = candidate.get("step") or "unknown"
        log = logger.bind(automation_id=automation_id, build_id=build_id)
        notification = None
        with self.conn.transaction():
            active = candidate.get("kind") is not None
            if active:
                locked = self.conn.execute(self.queries["lock_dead_attempt"],
                                           {"build_id": build_id, "automation_id": automation_id}).fetchone()
                if locked is None or not locked["got"] or (require_lock and locked["alive"]):
                    return None  # finished meanwhile, busy, another rescuer has it, or alive after all
            new_status = None
            if status in ("queued", "building", "deploying") and (candidate.get("owns_row") or not active):
                new_status = "not_started" if status == "queued" else "failed"
                delay = None
                if new_status == "not_started":
                    streak = self.conn.execute(self.queries["release_streak"], {"automation_id": automation_id}).fetchone()
                    delay = backoff_seconds(int(streak["streak"]) if streak else 0, self.settings.release_backoff_base_s,
                                            self.settings.release_backoff_max_s)
                row = self.conn.execute(self.queries["rescue_row"], {
                    "automation_id": automation_id, "build_id": build_id, "expected": status,
                    "new_status": new_status, "retry_after_s": delay,
                }).fetchone()
                if row is None:
                    new_status = None  # moved on meanwhile
                elif new_status == "failed":
                    message = self.redactor.redact(self._message(candidate, why, active))
                    self.conn.execute(self.queries["insert_test_result"], {
                        "automation_id": automation_id, "build_id": build_id if active else None, "test_level": 0,
                        "status": "fail", "execution_log": message, "duration_ms": None,
                    })
                    notification = notify.unhandled_error(Automation.from_row(row), message)
            if active:
                closed = self.conn.execute(self.queries["close_lost_attempt"], {
                    "build_id": build_id, "outcome": "crashed", "error": self.redactor.redact(f"died during step {step}: {why}"),
                }).fetchone()
                if closed is None and new_status is None:
                    return None
        if new_status == "not_started":
            log.warning("rescued: attempt died before Step 3 (step {}); the row will be built again", step)
        elif new_status == "failed":
            log.error("rescued: attempt died in step {}; row set failed", step)
        else:
            log.info("closed an attempt whose worker is gone (step {})", step)
        if notification is not None:
            self.notifier.send(notification)
        if active and self.on_rescued is not None:
            self.on_rescued(installation_of(self.conn, self.queries), int(build_id))
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
