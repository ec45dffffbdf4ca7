"""The role behind SANDBOX_DATABASE_URL: it may read, nothing more.

`check`, `listen` (at start) and every `sql_rows` check (before its query) look at the role's
powers; a role with any of them is refused with the recipe of a read-only role. Errors of the
server are reported as SQLSTATE and our own words (`sql_failure`), never the server's text: that
text is chosen by whatever the query touched (an error-based read puts a file into it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors

from listener.queue.db import Queries

READ_ONLY_ROLE_RECIPE = """\
CREATE ROLE agent_builder_reader LOGIN PASSWORD '<a long random password>'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
GRANT CONNECT ON DATABASE <database> TO agent_builder_reader;
GRANT USAGE ON SCHEMA <schema> TO agent_builder_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA <schema> TO agent_builder_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE <owner of the tables> IN SCHEMA <schema> GRANT SELECT ON TABLES TO agent_builder_reader;
ALTER ROLE agent_builder_reader SET default_transaction_read_only = on;"""

FIX = ("give SANDBOX_DATABASE_URL a role that can only read (no superuser, no CREATEROLE, no member of "
       "pg_signal_backend, pg_read_server_files, pg_write_server_files, pg_execute_server_program or of the "
       "listener's login): CREATE ROLE agent_builder_reader LOGIN PASSWORD '…' NOSUPERUSER NOCREATEROLE; "
       "GRANT CONNECT ON DATABASE … ; GRANT USAGE ON SCHEMA … ; GRANT SELECT ON ALL TABLES IN SCHEMA … "
       "TO agent_builder_reader (README, Security model)")

_POWERS = (
    ("superuser", "is a superuser"),
    ("createrole", "has CREATEROLE (it may grant itself any of these roles)"),
    ("signal_backend", "is a member of pg_signal_backend (it may terminate other sessions)"),
    ("read_server_files", "is a member of pg_read_server_files"),
    ("write_server_files", "is a member of pg_write_server_files"),
    ("execute_server_program", "is a member of pg_execute_server_program"),
    ("listener_member", "is a member of the listener's own login role (it may terminate the listener's sessions)"),
)


@dataclass(frozen=True)
class RolePowers:
    role: str
    refusals: tuple[str, ...]  # what the role may do that a Level 4 check must not

    @property
    def read_only(self) -> bool:
        return not self.refusals

    def describe(self) -> str:
        if self.read_only:
            return f"role {self.role} can only read"
        return f"role {self.role} " + "; ".join(self.refusals)


def inspect_role(conn: psycopg.Connection[Any], queries: Queries, listener_role: str | None) -> RolePowers:
    """The powers of the connection's role (its login and its current role). Raises psycopg.Error."""
    cursor = conn.execute(queries["sandbox_role_powers"], {"listener_role": listener_role})
    row = cursor.fetchone()
    names = [column.name for column in cursor.description or []]
    values: dict[str, Any] = row if isinstance(row, dict) else dict(zip(names, row or (), strict=False))
    refusals = tuple(text for key, text in _POWERS if values.get(key))
    return RolePowers(role=str(values.get("role") or "?"), refusals=refusals)


def login_of(conn: psycopg.Connection[Any], queries: Queries) -> str:
    cursor = conn.execute(queries["session_user"])
    row = cursor.fetchone()
    return str(row[0] if not isinstance(row, dict) else row["role"]) if row is not None else ""


def condition_name(sqlstate: str) -> str | None:
    """PostgreSQL's name of a standard SQLSTATE ('22P02' -> 'invalid_text_representation'), None
    for a code that is not a standard one (a code chosen by a function is data, not a condition)."""
    try:
        cls = psycopg.errors.lookup(sqlstate)
    except KeyError:
        return None
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls.__name__.rstrip("_")).lower()


def sql_failure(exc: psycopg.Error, what: str = "the query failed") -> str:
    """Our fixed message for a server or connection error: the SQLSTATE and its standard name."""
    code = getattr(exc, "sqlstate", None)
    if not code:
        return f"{what} ({type(exc).__name__}, no SQLSTATE)"
    name = condition_name(code)
    return f"{what}: SQLSTATE {code} ({name})" if name else f"{what}: a non-standard SQLSTATE"
