"""Database connections and the named-SQL loader (one query per file in sql/)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import psycopg
from psycopg.rows import dict_row

from listener.resources import sql_dir

# Keepalives so that a silently dead peer (host loss, a cut network) is noticed in seconds:
# client side through libpq, server side through the session's settings.
_CLIENT_KEEPALIVES = {
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
    """Open a connection whose builder_status changes are attributed to `actor`.

    The state machine trigger lets sessions whose actor starts with 'builder' make the builder's
    moves; every history row records the actor next to the database user.
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
        folder = directory or sql_dir()
        texts = {path.stem: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.sql"))}
        if not texts:
            raise FileNotFoundError(f"agent-builder: no .sql files in {folder}")
        return cls(texts)

    def __getitem__(self, name: str) -> str:
        try:
            return self.texts[name]
        except KeyError:
            raise KeyError(f"agent-builder: no query named {name!r} in sql/ (known: {', '.join(sorted(self.texts))})") from None
