"""Database errors of the operator's commands, as one line with the fix (no tracebacks).

Every command that reads or writes the database goes through `database_problem`: an unreachable
server, a database without the builder's schema (or with an older one), and any other server
error each become one line naming the fix, and exit code EXIT_DATABASE."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

import psycopg

EXIT_DATABASE = 1


class Problem(Enum):
    UNREACHABLE = "unreachable"
    UNMIGRATED = "unmigrated"
    OTHER = "other"


@dataclass(frozen=True)
class DatabaseProblem:
    problem: Problem
    line: str


# What a missing schema (or a schema older than this builder) looks like to a query.
_SCHEMA_MISSING = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction,
                   psycopg.errors.UndefinedObject)


def where(database_url: str) -> str:
    """host:port/db of a URI, no user or password (for the message)."""
    try:
        parts = urlsplit(database_url)
    except ValueError:
        return "the database"
    if not parts.scheme:
        from psycopg.conninfo import conninfo_to_dict

        try:
            keywords = conninfo_to_dict(database_url)
        except psycopg.ProgrammingError:
            return "DATABASE_URL"
        host = keywords.get("host") or "local socket"
        port = f":{keywords['port']}" if keywords.get("port") else ""
        return f"{host}{port}/{keywords.get('dbname') or keywords.get('user') or ''}".rstrip("/")
    host = parts.hostname or "local socket"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or ''}"


def _first_line(exc: BaseException) -> str:
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    text = primary or str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def database_problem(exc: psycopg.Error, database_url: str) -> DatabaseProblem:
    if isinstance(exc, _SCHEMA_MISSING):
        return DatabaseProblem(Problem.UNMIGRATED, (
            f"agent-builder: the database {where(database_url)} has no agent-builder schema or an older one "
            f"({_first_line(exc)}); fix: run: agent-builder migrate"))
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseProblem(Problem.UNREACHABLE, (
            f"agent-builder: cannot reach the database {where(database_url)} ({_first_line(exc)}); "
            "fix: start PostgreSQL there, or set DATABASE_URL to a reachable libpq URI"))
    return DatabaseProblem(Problem.OTHER, (
        f"agent-builder: database error at {where(database_url)} ({_first_line(exc)}); "
        "fix: check DATABASE_URL and that its user may read the builder's tables, then run: agent-builder migrate"))
