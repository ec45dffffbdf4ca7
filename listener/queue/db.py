"""Database connections and the named-SQL loader (one query per file in sql/)."""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import psycopg
from psycopg.rows import dict_row

from listener.queue.resources import sql_dir

# Keepalives so that a silently dead peer (host loss, a cut network) is noticed in seconds:
# client side through libpq, server side through the session's settings.
_CLIENT_KEEPALIVES: dict[str, Any] = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
    "connect_timeout": "10",
}
_SERVER_KEEPALIVES = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"


def worker_name() -> str:
    """Who claims: host and process, so a claim can be traced to the listener that made it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def connect(dsn: str, *, actor: str, autocommit: bool = True, application: str = "agent-builder") -> psycopg.Connection[dict[str, Any]]:
    """Open a connection whose builder_status changes are recorded with the name `actor`.

    The actor is only a label in the history, next to the login that made the change: what a
    session may do is decided by the roles of its login (migration 0006), never by this setting.
    """
    options = f"{_SERVER_KEEPALIVES} -c agent_builder.actor={_guc_value(actor)}"
    return psycopg.connect(
        dsn,
        autocommit=autocommit,
        row_factory=dict_row,
        options=options,
        application_name=application[:63],
        **_CLIENT_KEEPALIVES,
    )


def _guc_value(value: str) -> str:
    # libpq's options are split on spaces; backslash-escape them so any worker name survives.
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


@dataclass(frozen=True)
class Queries:
    """The runtime queries, loaded by name from the .sql files of a directory."""

    texts: Mapping[str, str]

    @classmethod
    def load(cls, directory: Path | None = None) -> "Queries":
        """The queries of `directory`; those of the package's own sql/ are read once per process."""
        if directory is None:
            return _package_queries()
        return cls.read(directory)

    @classmethod
    def read(cls, folder: Path) -> "Queries":
        texts = {path.stem: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.sql"))}
        if not texts:
            raise FileNotFoundError(f"agent-builder: no .sql files in {folder}")
        return cls(texts)

    def __getitem__(self, name: str) -> str:
        try:
            return self.texts[name]
        except KeyError:
            raise KeyError(f"agent-builder: no query named {name!r} in sql/ (known: {', '.join(sorted(self.texts))})") from None


@dataclass(frozen=True)
class SessionRoles:
    """What the login of a session is (sql/session_roles.sql). Memberships are None while the
    group roles do not exist yet (migrations pending)."""

    login: str
    superuser: bool
    guarded: bool  # this database's guards decide by these roles (migration 0006 applied)
    builder: bool | None
    operator: bool | None
    admin: bool | None
    owns: tuple[str, ...]

    @classmethod
    def of(cls, conn: psycopg.Connection[Any], queries: "Queries") -> "SessionRoles":
        from listener.queue.store import Store  # the store runs the query (it imports this module)

        row = Store(conn, queries).session_roles()
        return cls(login=str(row["login"]), superuser=bool(row["superuser"]), guarded=bool(row["guarded"]), builder=row["builder"],
                   operator=row["operator"], admin=row["admin"], owns=tuple(row["owns"] or ()))

    @property
    def migrated(self) -> bool:
        return self.guarded and self.builder is not None and self.operator is not None and self.admin is not None

    @property
    def decides(self) -> bool:
        """May approve, reject and retry: an operator or admin member (superusers are both)."""
        return bool(self.operator or self.admin)


@functools.lru_cache(maxsize=1)
def _package_queries() -> Queries:
    return Queries.read(sql_dir())


class OperatorSessionError(RuntimeError):
    """No operator session can be had: the message says what to set."""


def operator_connect(operator_url: str | None, database_url: str, queries: "Queries", *, actor: str,
                     application: str) -> psycopg.Connection[dict[str, Any]]:
    """A connection that may approve, reject and retry: OPERATOR_DATABASE_URL when set, else
    DATABASE_URL when its login is an operator or admin (a person's own login, a superuser).

    The listener's own login is a builder and never approves: when it is what DATABASE_URL holds
    and OPERATOR_DATABASE_URL is not set, this says so and what to set.
    """
    conn = connect(operator_url or database_url, actor=actor, application=application)
    try:
        roles = SessionRoles.of(conn, queries)
    except BaseException:
        conn.close()
        raise
    if roles.decides:
        return conn
    conn.close()
    if not roles.migrated:
        raise OperatorSessionError("agent-builder: this database has no agent-builder roles yet (migration 0006_roles is "
                                   "pending); run: agent-builder migrate")
    if operator_url:
        raise OperatorSessionError(
            f"agent-builder: OPERATOR_DATABASE_URL connects as {roles.login}, which is not a member of "
            f"agent_builder_operator or agent_builder_admin, so it may not approve, reject or retry; "
            f"as a superuser run: GRANT agent_builder_operator TO {roles.login};")
    raise OperatorSessionError(
        f"agent-builder: approving, rejecting and retrying are an operator's moves, and DATABASE_URL connects as "
        f"{roles.login}, which is not an operator (the listener's own login never approves its builds). "
        "Set OPERATOR_DATABASE_URL to the connection string of an operator's login "
        "(e.g. postgresql://alice@db.lan/api_business, a member of agent_builder_operator), "
        "or run the command with DATABASE_URL set to one.")
