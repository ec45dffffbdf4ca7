"""What `status` and `show` report: read from the database, rendered as text or JSON.

Every text read is passed through the Redactor before it is rendered: rows written by an older
builder (or by hand) may hold secret values or control characters that this one would not store."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from listener.queue.db import Queries
from listener.queue.store import Store
from listener.redact import Redactor

RESULT_LOG_CHARS = 400


def status_report(conn: psycopg.Connection[dict[str, Any]], queries: Queries, redactor: Redactor,
                  failures: int = 10) -> dict[str, Any]:
    from dataclasses import asdict

    from listener.queue.registry import live_listeners

    store = Store(conn, queries)
    report = {
        "counts": store.status_counts(),
        "listeners": [asdict(item) for item in live_listeners(conn, queries)],
        "in_flight": store.in_flight(),
        "recent_failures": store.recent_failures(failures),
    }
    return redactor.redact_record(report)


def show_report(conn: psycopg.Connection[dict[str, Any]], queries: Queries, automation_id: int,
                redactor: Redactor) -> dict[str, Any] | None:
    store = Store(conn, queries)
    row = store.automation(automation_id)
    if row is None:
        return None
    return redactor.redact_record({"automation": row, **store.show(automation_id)})


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=_plain, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def render_status(report: dict[str, Any]) -> str:
    lines = ["builder_status counts:"]
    counts = report["counts"]
    lines += [f"  {status:<18} {count}" for status, count in counts.items()] or ["  (no automations)"]
    lines.append("live listeners:")
    lines += [f"  {item['host']} pid {item['pid']} (version {item['version']}{', leader' if item.get('leads') else ''}): "
              f"concurrency {item['concurrency']}, {item['in_flight']} in flight, since {_when(item['started_at'])}"
              for item in report["listeners"]] or ["  (none: nothing is built until `agent-builder listen` runs)"]
    lines.append("in flight:")
    lines += [f"  build {b['build_id']} automation {b['automation_id']} {_name(b)}: {b['kind']} at step {b['step']} "
              f"for {age(b['step_age_s'])} (claimed {age(b['age_s'])} ago by {b['worker']})"
              for b in report["in_flight"]] or ["  (nothing running)"]
    lines.append("recent failures:")
    lines += [f"  {_when(f['finished_at'])} automation {f['automation_id']} {_name(f)}: {f['outcome']} in step "
              f"{f['step']}: {_one_line(f['error'])}" for f in report["recent_failures"]] or ["  (none)"]
    return "\n".join(lines)


def render_show(report: dict[str, Any]) -> str:
    a = report["automation"]
    lines = [f"automation {a['id']}: {_name(a)} ({a['type'] or 'no type'}), status {a['status']}, "
             f"builder_status {a['builder_status']}, priority {'none' if a['priority'] is None else a['priority']}"]
    lines.append("timeline:")
    lines += [f"  {_when(h['changed_at'])}  {h['old_status'] or '(new)':>17} -> {h['new_status']:<17} by {h['db_user']}"
              f"{' as ' + h['actor'] if h['actor'] else ''}{' (override)' if h['override'] else ''}"
              for h in report["history"]]
    lines.append("attempts:")
    for b in report["attempts"]:
        lines.append(f"  {b['kind']} {b['build_id']} by {b['worker']}: step {b['step']}, "
                     f"{b['outcome'] or 'running'}{': ' + _one_line(b['error']) if b['error'] else ''}")
        if b["overseer_verdict"]:
            lines.append(f"    overseer: {b['overseer_verdict']} — {_one_line(b['overseer_reason'])}")
            lines.append(f"    overseer usage: {overseer_usage(b)}")
        if b["image_id"] or b["artifact_sha256"]:
            lines.append(f"    artifact: image {b['image_id'] or '-'}, sha256 {b['artifact_sha256'] or '-'}")
        if b["files"]:
            lines.append(f"    files: {', '.join(sorted(b['files']))} (agent-builder show {a['id']} --files prints them)")
    lines.append("test results:")
    for r in report["results"]:
        lines.append(f"  level {r['test_level']} {r['status'].upper():<4} ({r['duration_ms'] or 0} ms, build {r['build_id']}): "
                     f"{_one_line(r['execution_log'])[:RESULT_LOG_CHARS]}")
        if r["test_level"] == 4:
            lines += [f"    {line}" for line in level_4_evaluations(r["execution_log"])]
    if not report["results"]:
        lines.append("  (none)")
    return "\n".join(lines)


LEVEL_4_SECTIONS = ("rejected derived checks", "before the run (negative control", "after the run:")


def level_4_evaluations(log: str | None) -> list[str]:
    """The Level 4 log's two evaluations of every check (before the run: the negative control; after
    it) and the rejected derived checks, one line each, in full."""
    kept, inside = [], False
    for line in (log or "").splitlines():
        if line.startswith(LEVEL_4_SECTIONS):
            inside = True
            kept.append(line.strip()[:RESULT_LOG_CHARS * 2])
        elif inside and line.startswith("  "):
            kept.append("  " + line.strip()[:RESULT_LOG_CHARS * 2])
        elif inside:
            inside = False
    return kept


def overseer_usage(b: dict[str, Any]) -> str:
    """Cost, tokens and model of an attempt's review: '$0.0016, 301 tokens in / 19 out, model claude-…'."""
    cost = f"${float(b['overseer_cost_usd']):.4f}" if b.get("overseer_cost_usd") is not None else "cost n/a"
    tokens_in, tokens_out = b.get("overseer_input_tokens"), b.get("overseer_output_tokens")
    tokens = (f"{tokens_in if tokens_in is not None else '?'} tokens in / {tokens_out if tokens_out is not None else '?'} out"
              if tokens_in is not None or tokens_out is not None else "tokens n/a")
    return f"{cost}, {tokens}, model {b.get('overseer_model') or 'n/a'}"


def _name(row: dict[str, Any]) -> str:
    name = (row.get("name") or "").strip()
    return f"'{name}'" if name else "(no name)"  # already escaped: repr() would double the backslashes


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def age(seconds: float | None) -> str:
    """A duration for people: seconds, minutes, hours, days ('?' when unknown)."""
    if seconds is None:
        return "?"
    value = float(seconds)
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 172800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"
