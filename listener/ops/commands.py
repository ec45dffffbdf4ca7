"""The operator's everyday commands: `add`, `list`, `retry ID…`/`--all-failed`, and `show --files`.

Input is validated completely before anything is written: a bad `add` writes nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import psycopg
from psycopg.types.json import Jsonb

from listener.queue.db import Queries
from listener.queue.store import Store
from listener.queue.outcome import StepFailure
from listener.queue.states import OPERATOR_MOVES, BuilderStatus
from listener.redact import Redactor
from listener.sandbox.checks import validate_spec

BUILT_TYPES = ("script", "claude_agent")
NAME_CHARS = 200


class InvalidIdea(ValueError):
    """An `add` that cannot be written as given; the message says what to change."""


@dataclass(frozen=True)
class NewIdea:
    name: str
    type: str
    task_description: str
    infrastructure_requirement: str | None
    priority: int | None
    acceptance_check: dict[str, Any] | None
    ready: bool

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "status": "ready_to_build" if self.ready else "idea",
            "priority": self.priority, "task_description": self.task_description,
            "infrastructure_requirement": self.infrastructure_requirement,
            "acceptance_check": Jsonb(self.acceptance_check) if self.acceptance_check is not None else None,
        }


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidIdea(f"{what} {path!r} cannot be read: {exc.strerror if isinstance(exc, OSError) else exc}") from exc


def check_from_flag(text: str) -> dict[str, Any]:
    """One `--check 'KIND key=value …'`: the words are split like a shell line; each value is read
    as JSON when it is JSON (numbers, lists like ["-p"]), a list when it is [a,b] (the quotes a
    shell took), and as text otherwise."""
    import shlex

    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InvalidIdea(f"--check {text!r}: cannot be split like a shell line ({exc})") from None
    if not words or "=" in words[0]:
        raise InvalidIdea(f"--check {text!r}: start with the kind, e.g. --check 'file_exists path=/tmp/report.json'")
    check: dict[str, Any] = {"kind": words[0]}
    for word in words[1:]:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise InvalidIdea(f"--check {text!r}: {word!r} is not key=value")
        try:
            check[key] = json.loads(value)
        except json.JSONDecodeError:
            if value.startswith("[") and value.endswith("]"):  # [-p,--model] once the shell took the quotes
                check[key] = [item.strip() for item in value[1:-1].split(",") if item.strip()]
            else:
                check[key] = value
    return check


def parse_idea(*, name: str, type_: str, spec: str | None, spec_file: str | None, infrastructure: str | None,
               priority: str | None, checks: str | None, check_file: str | None, ready: bool,
               check_flags: Sequence[str] = ()) -> NewIdea:
    name = name.strip()
    if not name:
        raise InvalidIdea("the name is empty: give one, e.g. agent-builder add 'Disk report' 'Write …'")
    if len(name) > NAME_CHARS:
        raise InvalidIdea(f"the name has {len(name)} characters; at most {NAME_CHARS}")
    if type_ not in BUILT_TYPES:
        raise InvalidIdea(f"--type {type_!r} is not one the builder builds: {', '.join(BUILT_TYPES)}")
    if spec is not None and spec_file is not None:
        raise InvalidIdea("give the spec either as an argument or with --spec-file, not both")
    text = _read_text(spec_file, "--spec-file") if spec_file is not None else spec
    if text is None or not text.strip():
        raise InvalidIdea("the spec (task_description) is empty: give it as an argument or with --spec-file FILE")
    number: int | None = None
    if priority is not None:
        try:
            number = int(priority)
        except ValueError:
            raise InvalidIdea(f"--priority {priority!r} is not a whole number") from None
    given = [flag for flag, value in (("--checks", checks), ("--check-file", check_file), ("--check", check_flags or None))
             if value is not None]
    if len(given) > 1:
        raise InvalidIdea(f"give the acceptance checks one way: {' or '.join(given)}, not both")
    source = given[0] if given else "--checks"
    raw = _read_text(check_file, "--check-file") if check_file is not None else checks
    acceptance: dict[str, Any] | None = None
    if check_flags:
        acceptance = {"checks": [check_from_flag(flag) for flag in check_flags]}
    elif raw is not None:
        try:
            acceptance = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidIdea(f"{source} is not JSON: {exc}") from None
        if isinstance(acceptance, list):
            acceptance = {"checks": acceptance}  # a bare list of checks is accepted as the "checks" list
    if acceptance is not None:
        try:
            validate_spec(acceptance)
        except StepFailure as exc:
            raise InvalidIdea(f"{source}: {exc.message}") from None
    infrastructure = infrastructure.strip() if infrastructure is not None else None
    return NewIdea(name=name, type=type_, task_description=text.strip(),
                   infrastructure_requirement=infrastructure or None, priority=number,
                   acceptance_check=acceptance, ready=ready)


def add_idea(conn: psycopg.Connection[dict[str, Any]], queries: Queries, idea: NewIdea) -> dict[str, Any]:
    return Store(conn, queries).add_idea(idea.params())


def list_ideas(conn: psycopg.Connection[dict[str, Any]], queries: Queries, status: str | None,
               redactor: Redactor) -> list[dict[str, Any]]:
    rows = Store(conn, queries).list_ideas(status)
    return redactor.redact_rows(rows)


def render_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no automations)"
    lines = [f"{'id':>6}  {'builder_status':<17} {'status':<15} {'priority':>8}  {'type':<12} name"]
    for r in rows:
        priority = "none" if r["priority"] is None else str(r["priority"])
        lines.append(f"{r['id']:>6}  {r['builder_status']:<17} {(r['status'] or '-'):<15} {priority:>8}  "
                     f"{(r['type'] or '-'):<12} {' '.join((r['name'] or '(no name)').split())}")
    return "\n".join(lines)


def failed_ids(conn: psycopg.Connection[dict[str, Any]], queries: Queries) -> list[int]:
    return Store(conn, queries).failed_ids()


def render_files(report: dict[str, Any]) -> str:
    """The files of the latest attempt that has any (already redacted and escaped), each under a header."""
    with_files = [b for b in report["attempts"] if b.get("files")]
    if not with_files:
        return "(no generated files yet)"
    latest = with_files[-1]
    parts = [f"files of {latest['kind']} {latest['build_id']}:"]
    for path in sorted(latest["files"]):
        content = latest["files"][path]
        parts.append(f"--- {path} ---")
        parts.append(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False))
    return "\n".join(parts)


# The operator's changes, exactly the UPDATE a person would type in SQL (sql/operator_set_status.sql),
# made through an operator session: by the CLI (approve/reject/retry) and the review page's buttons.
OPERATOR_STATUS = {"approve": BuilderStatus.APPROVED, "reject": BuilderStatus.REJECTED, "retry": BuilderStatus.NOT_STARTED}
# From where each command may move a row: the operator's moves of the state machine.
OPERATOR_FROM = {command: " or ".join(repr(old.value) for old, new in OPERATOR_MOVES.items() if target in new)
                 for command, target in OPERATOR_STATUS.items()}


@dataclass(frozen=True)
class OperatorChange:
    """What an operator's change did: `done`, or refused by the state machine (`refused`), by the
    roles (`forbidden`), or because there is no such automation (`missing`); `message` says which."""

    automation_id: int
    command: str
    done: bool
    message: str
    builder_status: str | None = None
    refused: bool = False
    forbidden: bool = False
    missing: bool = False


def operator_change(conn: psycopg.Connection[dict[str, Any]], queries: Queries, command: str, automation_id: int,
                    build_id: int | None = None) -> OperatorChange:
    """Approve, reject or retry one automation through `conn` (an operator session); with `build_id`,
    only while the row still points at that build."""
    new_status = OPERATOR_STATUS[command]
    store = Store(conn, queries)
    try:
        row = store.operator_set_status(automation_id, new_status, build_id)
    except psycopg.errors.CheckViolation as exc:
        return OperatorChange(automation_id, command, False, exc.diag.message_primary or str(exc), refused=True)
    except psycopg.errors.InsufficientPrivilege as exc:
        return OperatorChange(automation_id, command, False, exc.diag.message_primary or str(exc), forbidden=True)
    if row is not None:
        return OperatorChange(automation_id, command, True, f"automation {automation_id}: builder_status is now "
                              f"{row['builder_status']}", builder_status=row["builder_status"])
    current = store.automation(automation_id)
    if current is None:
        return OperatorChange(automation_id, command, False, f"agent-builder: there is no automation with id {automation_id}",
                              missing=True)
    if build_id is not None and current["builder_build_id"] != build_id:
        return OperatorChange(automation_id, command, False,
                              f"agent-builder: automation {automation_id} no longer points at build {build_id} (now "
                              f"{current['builder_build_id']}, builder_status {current['builder_status']!r}): nothing "
                              "was changed; look at the current build first", builder_status=current["builder_status"],
                              refused=True)
    return OperatorChange(automation_id, command, False,
                          f"agent-builder: builder_status of automation {automation_id} cannot change from "
                          f"{current['builder_status']!r} to {new_status.value!r}: {command} is an operator's move, "
                          f"allowed only from {OPERATOR_FROM[command]}", builder_status=current["builder_status"],
                          refused=True)
