"""The sandbox database side of Level 4 tests: LOGIN roles made in the test database's cluster with
unique names and dropped afterwards (DROP OWNED in the database first, so the grants go with
them), a file with unique content on the database server's machine, and a dump of every table."""

from __future__ import annotations

import secrets
import uuid
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql


def url_as(url: str, role: str, password: str) -> str:
    """The same server and database as `url`, logged in as `role`."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"))


def role_of(url: str) -> str:
    """The login of a URL made by url_as."""
    return unquote(urlsplit(url).username or "")


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


@contextmanager
def login_role(db_url: str, *, tables: tuple[str, ...] = (), member_of: tuple[str, ...] = (),
               attributes: str = "NOSUPERUSER NOCREATEDB NOCREATEROLE") -> Iterator[str]:
    """A role that may log in to db_url's database and SELECT from `tables` (the recipe of the
    README); `member_of` roles granted to it. Yields its URL."""
    role = f"ab_test_reader_{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(16)
    database = urlsplit(db_url).path.lstrip("/")
    ident = sql.Identifier(role)
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + attributes).format(ident, sql.Literal(password)))
        try:
            admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), ident))
            admin.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
            for table in tables:
                admin.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(table), ident))
            for group in member_of:
                admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), ident))
            yield url_as(db_url, role, password)
        finally:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            admin.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(sql.Identifier(database), ident))
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))


@contextmanager
def server_secret_file(admin: psycopg.Connection[Any]) -> Iterator[tuple[str, str]]:
    """(path, content): a file on the database server's machine with unique content, written and
    removed by the server itself (so this works on any TEST_DATABASE_URL). `admin`: a superuser
    connection in autocommit."""
    content = f"AB-SECRET-{uuid.uuid4().hex}"
    directory = admin.execute("SHOW data_directory").fetchone()[0]
    path = f"{directory}/ab_level4_{uuid.uuid4().hex[:12]}.txt"
    admin.execute(sql.SQL("COPY (SELECT {}) TO {}").format(sql.Literal(content), sql.Literal(path)))
    try:
        assert admin.execute("SELECT pg_read_file(%s)", (path,)).fetchone()[0].strip() == content
        yield path, content
    finally:
        admin.execute(sql.SQL("COPY (SELECT 1) TO PROGRAM {}").format(sql.Literal(f"rm -f '{path}'")))


def dump_tables(admin: psycopg.Connection[Any]) -> str:
    """Every row of every table of the database (all schemas but the catalogs), as text."""
    tables = admin.execute(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'").fetchall()
    assert tables
    rows: list[str] = []
    for schema, table in tables:
        query = sql.SQL("SELECT t::text FROM {}.{} AS t").format(sql.Identifier(schema), sql.Identifier(table))
        rows += [row[0] for row in admin.execute(query)]
    return "\n".join(rows)
