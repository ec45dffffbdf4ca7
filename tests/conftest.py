"""Shared fixtures: a real PostgreSQL for every test that asks for one."""

from __future__ import annotations

from typing import Any, Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from listener.db import Queries, connect
from tests.pg import TestServer, test_server



@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    with test_server() as server:
        server.create_template()
        yield server


@pytest.fixture
def db_url(pg_server: TestServer) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    url = pg_server.new_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(scope="module")
def module_db_url(pg_server: TestServer) -> Iterator[str]:
    """A migrated database shared by the tests of one module (each test makes its own rows)."""
    url = pg_server.new_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def empty_db_url(pg_server: TestServer) -> Iterator[str]:
    """A fresh database with no schema at all."""
    url = pg_server.new_database(migrated=False)
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def operator(db_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A plain SQL session, as an operator's DB client would have: no builder identity."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def builder_conn(db_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with connect(db_url, actor="builder:test") as conn:
        yield conn


@pytest.fixture(scope="session")
def queries() -> Queries:
    return Queries.load()
