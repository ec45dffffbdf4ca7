"""Shared fixtures: a real PostgreSQL for every test that asks for one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest
from loguru import logger
from psycopg.rows import dict_row

from listener.queue.db import Queries, connect
from tests.fakes.ntfy_server import FakeNtfy
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.vault_server import TEST_ROLE_ID, TEST_SECRET_ID, FakeVault
from tests.logins import Login, Logins
from tests.pg import TestServer, test_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    with test_server() as server:
        server.create_template()
        try:
            yield server
        finally:
            server.drop_template()


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
def logins(db_url: str) -> Iterator[Logins]:
    """Non-superuser LOGIN roles for this test's database (unique names, dropped afterwards)."""
    made = Logins(db_url)
    yield made
    made.drop()


@pytest.fixture
def admin(db_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """The test server's superuser (a member of every role)."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def builder_login(logins: Logins) -> Login:
    """A non-superuser LOGIN that is a member of agent_builder_builder: the listener's own login."""
    return logins.make("builder", label="listener")


@pytest.fixture(scope="module")
def module_logins(module_db_url: str) -> Iterator[Logins]:
    made = Logins(module_db_url)
    yield made
    made.drop()


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


# -- fake services (real HTTP servers / a real executable speaking the real protocols) --------

FAKE_CLAUDE = ROOT / "tests" / "fakes" / "claude"
ROLE_ID = TEST_ROLE_ID
SECRET_ID = TEST_SECRET_ID


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def fake_ntfy() -> Iterator[FakeNtfy]:
    with FakeNtfy() as server:
        yield server


@pytest.fixture
def fake_vault() -> Iterator[FakeVault]:
    secrets = {"secret/agent-builder": {"ntfy_token": "tk_fromvault123", "other": "x"}}
    with FakeVault(ROLE_ID, SECRET_ID, secrets) as server:
        yield server


@pytest.fixture
def approle_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "approle"
    directory.mkdir()
    (directory / "role-id").write_text(ROLE_ID + "\n")
    (directory / "secret-id").write_text(SECRET_ID + "\n")
    return directory


@pytest.fixture
def claude_log(tmp_path: Path) -> Path:
    return tmp_path / "claude-calls.jsonl"


@pytest.fixture
def claude_cmd(claude_log: Path) -> Callable[..., tuple[str, ...]]:
    """claude_cmd("fail", FAKE_CLAUDE_EXIT="3") -> a CLAUDE_CMD-like tuple running the fake through env(1)."""

    def make(mode: str, **env: str) -> tuple[str, ...]:
        settings = {"FAKE_CLAUDE_MODE": mode, "FAKE_CLAUDE_LOG": str(claude_log), **env}
        return ("env", *(f"{k}={v}" for k, v in settings.items()), str(FAKE_CLAUDE), "-p")

    return make


@pytest.fixture
def claude_calls(claude_log: Path) -> Callable[[], list[dict[str, object]]]:
    def read() -> list[dict[str, object]]:
        if not claude_log.exists():
            return []
        return [json.loads(line) for line in claude_log.read_text().splitlines() if line.strip()]

    return read


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every loguru line emitted during the test (message and extra), as text."""
    lines: list[str] = []
    sink_id = logger.add(lambda message: lines.append(str(message)), format="{level} {message}", level="DEBUG")
    yield lines
    logger.remove(sink_id)
