"""`agent-builder logs ID [--follow]` and `prune --older-than D`.

`logs` prints one automation's events in order: status changes, attempts claimed, the step each
attempt reaches, test results, overseer verdicts and outcomes. With --follow it keeps reading
(every FOLLOW_INTERVAL_S) and prints what is new, until the row rests: a status nothing changes
without an operator (failed, awaiting_approval, rejected, deployed; not_started while the idea is
not ready_to_build)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from listener.queue.db import Queries
from listener.queue.states import RESTING, BuilderStatus, status_of
from listener.queue.store import Store
from listener.redact import Redactor

FOLLOW_INTERVAL_S = 0.5
LOG_CHARS = 300
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class InvalidDuration(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '12h', '30d', '2w' → a timedelta (> 0)."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidDuration(f"{text!r} is not a duration: give a number and a unit s, m, h, d or w, e.g. 30d")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2).lower()]
    if seconds <= 0:
        raise InvalidDuration(f"{text!r}: the duration must be more than 0")
    return timedelta(seconds=seconds)


def prune(conn: psycopg.Connection[dict[str, Any]], queries: Queries, older_than: timedelta) -> dict[str, int]:
    cutoff = datetime.now(timezone.utc) - older_than
    return Store(conn, queries).prune_attempts(cutoff)


def is_resting(row: dict[str, Any]) -> bool:
    status = status_of(row["builder_status"])
    return status in RESTING or (status is BuilderStatus.NOT_STARTED and row["status"] != "ready_to_build")


@dataclass
class LogCursor:
    """What has been printed already, so that each read prints only what is new."""

    history: int = 0
    results: int = 0
    attempts: dict[int, dict[str, Any]] = field(default_factory=dict)

    def new_events(self, history: list[dict[str, Any]], attempts: list[dict[str, Any]],
                   results: list[dict[str, Any]], redactor: Redactor) -> list[tuple[datetime, int, str]]:
        events: list[tuple[datetime, int, str]] = []
        for h in history[self.history:]:
            actor = f" as {h['actor']}" if h["actor"] else ""
            events.append((h["changed_at"], 0, f"status {h['old_status'] or '(new)'} -> {h['new_status']} "
                                               f"by {h['db_user']}{actor}"))
        self.history = len(history)
        for b in attempts:
            seen = self.attempts.setdefault(b["build_id"], {})
            label = f"{b['kind']} {b['build_id']}"
            if not seen:
                events.append((b["claimed_at"], 1, f"{label} claimed by {b['worker']}"))
            if seen.get("step") != b["step"]:
                events.append((b["step_at"], 2, f"{label} step {b['step']}"))
            if b["overseer_verdict"] and not seen.get("verdict"):
                cost = f" (${float(b['overseer_cost_usd']):.4f})" if b["overseer_cost_usd"] is not None else ""
                events.append((b["overseer_called_at"] or b["step_at"], 3, f"{label} overseer {b['overseer_verdict']}"
                                                                           f"{cost}: {_flat(b['overseer_reason'])}"))
            if b["outcome"] and not seen.get("outcome"):
                error = f": {_flat(b['error'])}" if b["error"] else ""
                events.append((b["finished_at"], 5, f"{label} {b['outcome']}{error}"))
            seen.update(step=b["step"], verdict=b["overseer_verdict"], outcome=b["outcome"])
        for r in results[self.results:]:
            events.append((r["created_at"], 4, f"level {r['test_level']} {r['status'].upper()} "
                                               f"({r['duration_ms'] or 0} ms, build {r['build_id']}): "
                                               f"{_flat(r['execution_log'])[:LOG_CHARS]}"))
        self.results = len(results)
        events.sort(key=lambda event: (event[0], event[1]))
        return [(when, order, redactor.one_line(text, limit=LOG_CHARS + 200)) for when, order, text in events]


def _flat(text: str | None) -> str:
    return " ".join((text or "").split())


def read_once(conn: psycopg.Connection[dict[str, Any]], queries: Queries, automation_id: int, cursor: LogCursor,
              redactor: Redactor) -> tuple[dict[str, Any] | None, list[str]]:
    """The row (read first: whatever led to its status is then read too) and the new event lines."""
    store = Store(conn, queries)
    row = store.automation(automation_id)
    if row is None:
        return None, []
    events = cursor.new_events(*store.log_events(automation_id), redactor)
    return row, [f"{when.strftime('%Y-%m-%d %H:%M:%S')}  {text}" for when, _order, text in events]


def follow(conn: psycopg.Connection[dict[str, Any]], queries: Queries, automation_id: int, redactor: Redactor,
           *, keep_following: bool, stop: threading.Event, out: Any) -> bool:
    """Print the events (then, with keep_following, new ones until the row rests). False: no such row."""
    cursor = LogCursor()
    while True:
        row, lines = read_once(conn, queries, automation_id, cursor, redactor)
        if row is None:
            return False
        for line in lines:
            print(line, file=out, flush=True)
        if keep_following and is_resting(row):
            print(f"automation {automation_id} rests at builder_status {row['builder_status']}", file=out, flush=True)
            return True
        if not keep_following or stop.is_set():
            return True
        stop.wait(FOLLOW_INTERVAL_S)
