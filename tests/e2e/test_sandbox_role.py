"""`agent-builder check` and `listen` refuse a SANDBOX_DATABASE_URL whose role has power (a superuser,
a member of pg_signal_backend) and accept a role that can only read. Real subprocesses, real roles
in the test database's cluster (unique names, dropped afterwards)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import pytest

from listener.config import Settings
from listener.ops.check import check_sandbox_database
from listener.service import startup_checks
from tests.e2e.listeners import ListenerProcess, base_env, run_cli
from tests.e2e.test_check import lines
from tests.sandbox_db import login_role, role_of, with_database


@pytest.fixture
def reader(db_url: str) -> Iterator[str]:
    with login_role(db_url) as url:
        yield url


@pytest.fixture
def signaller(db_url: str) -> Iterator[str]:
    with login_role(db_url, member_of=("pg_signal_backend",)) as url:
        yield url


def _settings(db_url: str, sandbox_url: str | None) -> Settings:
    env = {"DATABASE_URL": db_url}
    if sandbox_url is not None:
        env["SANDBOX_DATABASE_URL"] = sandbox_url
    return Settings.from_env(env)


def test_the_check_accepts_a_read_only_role_and_an_unset_url(db_url: str, reader: str) -> None:
    check = check_sandbox_database(_settings(db_url, reader))
    assert check.ok and check.detail == f"SANDBOX_DATABASE_URL's role {role_of(reader)} can only read"
    unset = check_sandbox_database(_settings(db_url, None))
    assert unset.ok and "not set" in unset.detail


def test_the_check_refuses_a_superuser_as_required(db_url: str) -> None:
    check = check_sandbox_database(_settings(db_url, db_url))
    assert not check.ok and check.required
    assert "is a superuser" in check.detail
    assert "CREATE ROLE agent_builder_reader LOGIN" in check.fix and "GRANT SELECT ON ALL TABLES" in check.fix


def test_the_check_refuses_a_member_of_pg_signal_backend(db_url: str, signaller: str) -> None:
    check = check_sandbox_database(_settings(db_url, signaller))
    assert not check.ok and check.required
    assert "is a member of pg_signal_backend (it may terminate other sessions)" in check.detail


def test_the_check_refuses_the_listeners_own_login(db_url: str, reader: str) -> None:
    """The listener as `reader` and the sandbox as `reader`: the sandbox could signal the listener."""
    check = check_sandbox_database(_settings(reader, reader))
    assert not check.ok and check.required
    assert "is a member of the listener's own login role" in check.detail


def test_an_unreachable_sandbox_database_only_warns(db_url: str, reader: str) -> None:
    check = check_sandbox_database(_settings(db_url, with_database(reader, "ab_no_such_database_xyz")))
    assert not check.ok and not check.required
    assert check.detail.startswith("could not connect to SANDBOX_DATABASE_URL")
    assert "ab_no_such_database_xyz" not in check.detail


def test_startup_checks_refuse_and_accept(db_url: str, reader: str, signaller: str) -> None:
    assert startup_checks(_settings(db_url, reader))
    assert not startup_checks(_settings(db_url, db_url))
    assert not startup_checks(_settings(db_url, signaller))


@pytest.mark.parametrize("which", ["superuser", "signaller"])
def test_the_check_command_reports_a_powerful_role(db_url: str, signaller: str, which: str) -> None:
    url = db_url if which == "superuser" else signaller
    done = run_cli(base_env(db_url, SANDBOX_DATABASE_URL=url, DOCKER_HOST="tcp://127.0.0.1:1"), "check")
    assert done.returncode == 1
    line = lines(done.stdout)["sandbox-db"]
    assert line.startswith("FAIL")
    assert ("is a superuser" if which == "superuser" else "is a member of pg_signal_backend") in line
    assert "fix: give SANDBOX_DATABASE_URL a role that can only read" in done.stdout


def test_the_check_command_accepts_a_read_only_role(db_url: str, reader: str) -> None:
    done = run_cli(base_env(db_url, SANDBOX_DATABASE_URL=reader, DOCKER_HOST="tcp://127.0.0.1:1"), "check")
    line = lines(done.stdout)["sandbox-db"]
    assert line.startswith("ok") and f"role {role_of(reader)} can only read" in line, done.stdout


@pytest.mark.parametrize("which", ["superuser", "signaller"])
def test_listen_refuses_to_start_with_a_powerful_role(db_url: str, signaller: str, which: str) -> None:
    url = db_url if which == "superuser" else signaller
    done = run_cli(base_env(db_url, SANDBOX_DATABASE_URL=url, DOCKER_HOST="tcp://127.0.0.1:1"), "listen", timeout=60)
    assert done.returncode == 1
    assert "check sandbox-db FAILED" in done.stderr
    assert "listening on" not in done.stderr


def test_listen_starts_with_a_read_only_role(db_url: str, reader: str, tmp_path: Path) -> None:
    listener = ListenerProcess(base_env(db_url, SANDBOX_DATABASE_URL=reader, DOCKER_HOST="tcp://127.0.0.1:1"),
                               tmp_path / "listener.log")
    try:
        listener.wait_listening(timeout=30)
        assert f"check sandbox-db: SANDBOX_DATABASE_URL's role {role_of(reader)} can only read" in listener.log()
    finally:
        listener.signal(signal.SIGTERM)
        assert listener.stop() == 0
