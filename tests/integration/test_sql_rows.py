"""Level 4 sql_rows against the real test PostgreSQL: a plain read-only SELECT under a role that can
only read; refused function calls never reach the server; the listener's own connections survive;
a run-time error is a SQLSTATE and our words, never the server's text (no file content anywhere)."""

from __future__ import annotations

import time
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from listener.queue.db import Queries, connect
from listener.sandbox import checks
from listener.queue.outcome import StepFailure
from listener.sandbox.checks import CheckResult, RunState, evaluate, validate_spec
from listener.sandbox.sqlrole import inspect_role
from tests.sandbox_db import dump_tables, login_role, role_of, server_secret_file, with_database


def _state(url: str | None) -> RunState:
    return RunState(container=None, recorder=None, run_token="unused", sandbox_database_url=url)


def _run(query: str, url: str, min_rows: int = 1) -> CheckResult:
    """The check as evaluate() runs it, without the validation of validate_spec (the evaluator
    checks the query again itself)."""
    [result] = evaluate([{"kind": "sql_rows", "query": query, "min_rows": min_rows}], _state(url))
    return result


@pytest.fixture
def probe_table(operator: psycopg.Connection[dict[str, Any]]) -> str:
    operator.execute("CREATE TABLE level4_probe (id serial PRIMARY KEY, note text NOT NULL, data jsonb)")
    operator.execute("""INSERT INTO level4_probe (note, data) VALUES ('disk report 50%', '[1, 2, 3]'), ('abc', '[]')""")
    return "level4_probe"


@pytest.fixture
def secret_file(db_url: str) -> Iterator[tuple[str, str]]:
    with psycopg.connect(db_url, autocommit=True) as admin, server_secret_file(admin) as secret:
        yield secret


@pytest.fixture
def reader(db_url: str, probe_table: str) -> Iterator[str]:
    with login_role(db_url, tables=(probe_table,)) as url:
        yield url


@pytest.fixture
def listener_connections(db_url: str) -> Iterator[list[psycopg.Connection[dict[str, Any]]]]:
    """Connections made the way the listener makes its own (listener.queue.db.connect)."""
    conns = [connect(db_url, actor=f"builder:test-{i}") for i in range(3)]
    try:
        yield conns
    finally:
        for conn in conns:
            conn.close()


def _pids(conns: list[psycopg.Connection[dict[str, Any]]]) -> list[int]:
    return [conn.info.backend_pid for conn in conns]


def _alive(operator: psycopg.Connection[dict[str, Any]], conns: list[psycopg.Connection[dict[str, Any]]]) -> None:
    pids = _pids(conns)
    seen = {row["pid"] for row in operator.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))}
    assert seen == set(pids)
    for conn in conns:
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def _dump(db_url: str) -> str:
    with psycopg.connect(db_url) as admin:
        return dump_tables(admin)


# -- plain SELECTs work ------------------------------------------------------------------------------

def test_a_plain_select_counts_real_rows_with_the_read_only_role(reader: str) -> None:
    result = _run("SELECT * FROM level4_probe WHERE note LIKE '%50%';", reader)
    assert result == CheckResult("sql_rows", True, "the query returned 1 row(s), at least 1 expected")
    result = _run("SELECT * FROM level4_probe", reader, min_rows=3)
    assert result == CheckResult("sql_rows", False, "the query returned 2 row(s), at least 3 expected")


def test_allowed_functions_and_constructs_run_on_the_server(reader: str) -> None:
    queries = [
        "SELECT count(*), max(id), coalesce(min(note), 'x') FROM level4_probe HAVING count(*) = 2",
        "SELECT 1 FROM level4_probe WHERE jsonb_array_length(data) = 3 AND lower(note) = 'disk report 50%'",
        "SELECT CAST(id AS numeric(10,2)), id::varchar(5) FROM level4_probe WHERE id IN (SELECT id FROM level4_probe) LIMIT 1",
        "WITH recent AS (SELECT * FROM level4_probe WHERE date_trunc('day', now()) <= now()) SELECT * FROM recent LIMIT 1",
        "SELECT count(*) FILTER (WHERE id > 0) OVER (PARTITION BY note) FROM level4_probe LIMIT 1",
        "SELECT * FROM (VALUES (1, 2)) AS v(a, b) WHERE EXISTS (SELECT 1 FROM level4_probe)",
        "SELECT E'it\\'s; -- not a comment', $q$ pg_sleep(5) $q$ /* pg_sleep(5) */",
    ]
    for query in queries:
        result = _run(query, reader)
        assert result.passed, (query, result.detail)


@pytest.mark.parametrize("query", [
    "SELECT E'\\'; SELECT pg_sleep(5) -- '",
    "SELECT 'it''s; pg_sleep(5)'",
    "SELECT $$ pg_sleep(5); $$",
    "SELECT $t$ $$ pg_sleep(5) $$ $t$",
    "SELECT 1 /* pg_sleep(5) /* nested */ pg_sleep(5) */",
    "SELECT U&'pg_sleep(5)'",
    "SELECT 1 AS \"pg_sleep(5)\"",
])
def test_the_server_reads_quotes_as_the_validator_does(query: str, reader: str) -> None:
    """What the validator takes for text is text to the server too: nothing sleeps."""
    started = time.monotonic()
    result = _run(query, reader)
    assert result.passed, result.detail
    assert time.monotonic() - started < 4


def test_the_transaction_is_read_only(reader: str, operator) -> None:  # noqa: ANN001
    """A view whose reading writes (nextval) fails: the check's transaction is READ ONLY."""
    operator.execute("CREATE SEQUENCE level4_seq")
    operator.execute("CREATE VIEW level4_counter AS SELECT nextval('level4_seq') AS n")
    operator.execute(sql.SQL("GRANT SELECT ON level4_counter TO {0}; GRANT USAGE ON SEQUENCE level4_seq TO {0}").format(
        sql.Identifier(role_of(reader))))
    result = _run("SELECT * FROM level4_counter", reader)
    assert result == CheckResult("sql_rows", False, "the query failed: SQLSTATE 25006 (read_only_sql_transaction)")
    assert operator.execute("SELECT last_value, is_called FROM level4_seq").fetchone()["is_called"] is False


def test_without_a_database_the_check_fails_saying_so() -> None:
    assert _run("SELECT 1", None) == CheckResult("sql_rows", False, "SANDBOX_DATABASE_URL is not set: the query cannot run")


# -- no power ----------------------------------------------------------------------------------------

def _hidden_reads(path: str) -> list[str]:
    quoted = path.replace("'", "''")
    return [
        f"SELECT pg_read_file('{quoted}')",
        f"SELECT cast(pg_read_file('{quoted}') as int)",
        f"SELECT \"pg_read_file\"('{quoted}')",
        f"SELECT pg_catalog.pg_read_file('{quoted}')",
        f"WITH f AS (SELECT pg_read_file('{quoted}') AS t) SELECT * FROM f",
        f"SELECT * FROM level4_probe WHERE note = (SELECT PG_READ_FILE('{quoted}'))",
        f"select 1 from level4_probe where id = any (select length(pg_read_file /* x */ ('{quoted}')))",
    ]


@pytest.mark.parametrize("query", _hidden_reads("/etc/hostname"))
def test_reading_a_server_file_is_refused_before_it_runs(query: str, reader: str) -> None:
    with pytest.raises(StepFailure) as caught:
        validate_spec({"checks": [{"kind": "sql_rows", "query": query}]})
    message = caught.value.message
    assert "pg_read_file()" in message
    assert "pg_* functions are never allowed" in message or "schema-qualified function calls are refused" in message
    result = _run(query, reader)
    assert not result.passed and result.detail.startswith("the query is refused: it calls ")


def test_no_file_content_anywhere_after_hidden_reads(reader: str, secret_file: tuple[str, str], db_url: str,
                                                     log_lines: list[str]) -> None:  # noqa: ANN001
    path, content = secret_file
    results = evaluate([{"kind": "sql_rows", "query": q, "min_rows": 1} for q in _hidden_reads(path)], _state(reader))
    assert [r.passed for r in results] == [False] * len(results)
    assert all(r.detail.startswith("the query is refused") for r in results)
    assert content not in "\n".join(r.detail for r in results)
    assert content not in "\n".join(log_lines)
    assert content not in _dump(db_url)


@pytest.mark.parametrize("query", [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(ARRAY[{pids}])",
    "SELECT count(*) FROM (SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_stat_activity) AS killed",
    "WITH k AS (SELECT PG_CANCEL_BACKEND(pid) FROM pg_stat_activity WHERE pid IN ({pids})) SELECT * FROM k",
    "SELECT 1 WHERE \"pg_terminate_backend\"({first})",
])
def test_signalling_the_listeners_backends_is_refused_and_they_stay_alive(query: str, reader: str, operator,  # noqa: ANN001
                                                                         listener_connections) -> None:  # noqa: ANN001
    pids = _pids(listener_connections)
    text = query.format(pids=", ".join(map(str, pids)), first=pids[0])
    result = _run(text, reader)
    assert not result.passed and result.detail.startswith("the query is refused: it calls ")
    _alive(operator, listener_connections)


# -- errors: SQLSTATE and our words ------------------------------------------------------------------

def test_a_run_time_error_is_the_sqlstate_and_our_message_never_the_servers_text(
        db_url: str, reader: str, secret_file: tuple[str, str], operator, log_lines: list[str]) -> None:  # noqa: ANN001
    """An error-based read through a view whose owner's function may read the file (the check's
    role may not): the cast fails with the file's content in the server's message, which never
    leaves the check."""
    path, content = secret_file
    operator.execute(sql.SQL("CREATE FUNCTION level4_owner_read() RETURNS text SECURITY DEFINER LANGUAGE sql"
                             " AS $$ SELECT pg_read_file({}) $$").format(sql.Literal(path)))
    operator.execute("CREATE VIEW level4_leak AS SELECT level4_owner_read() AS f")
    operator.execute(sql.SQL("GRANT SELECT ON level4_leak TO {}").format(sql.Identifier(role_of(reader))))
    with pytest.raises(psycopg.errors.InvalidTextRepresentation) as raw:  # what the server says, for the record
        with psycopg.connect(reader) as conn:
            conn.execute("SELECT CAST(f AS int) FROM level4_leak")
    assert content in str(raw.value)

    result = _run("SELECT CAST(f AS int) FROM level4_leak", reader)
    assert result == CheckResult("sql_rows", False, "the query failed: SQLSTATE 22P02 (invalid_text_representation)")
    missing = _run("SELECT * FROM no_such_table_xyz", reader)
    assert missing == CheckResult("sql_rows", False, "the query failed: SQLSTATE 42P01 (undefined_table)")
    zero = _run("SELECT 1 / (count(*) - 2) FROM level4_probe", reader)
    assert zero == CheckResult("sql_rows", False, "the query failed: SQLSTATE 22012 (division_by_zero)")
    assert content not in "\n".join(log_lines)
    assert content not in _dump(db_url)


def test_a_lock_wait_ends_at_the_checks_timeout(reader: str, operator, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(checks, "SQL_TIMEOUT", "300ms")
    with operator.transaction():
        operator.execute("LOCK TABLE level4_probe IN ACCESS EXCLUSIVE MODE")
        result = _run("SELECT * FROM level4_probe", reader)
    assert not result.passed
    assert result.detail in ("the query failed: SQLSTATE 55P03 (lock_not_available)",
                             "the query failed: SQLSTATE 57014 (query_canceled)")


def test_an_unreachable_database_is_our_message(reader: str) -> None:
    result = _run("SELECT 1", with_database(reader, "ab_no_such_database_xyz"))
    assert not result.passed
    assert result.detail.startswith("could not connect to SANDBOX_DATABASE_URL")
    assert "ab_no_such_database_xyz" not in result.detail


# -- the role ----------------------------------------------------------------------------------------

def test_a_superuser_url_is_not_used(db_url: str, probe_table: str) -> None:
    result = _run("SELECT * FROM level4_probe", db_url)
    assert not result.passed
    assert result.detail.startswith("the query was not run: SANDBOX_DATABASE_URL's role ")
    assert "is a superuser" in result.detail and "CREATE ROLE" in result.detail


def test_a_member_of_pg_signal_backend_is_not_used(db_url: str, probe_table: str) -> None:
    with login_role(db_url, tables=(probe_table,), member_of=("pg_signal_backend",)) as url:
        result = _run("SELECT * FROM level4_probe", url)
    assert not result.passed
    assert "is a member of pg_signal_backend" in result.detail


@pytest.mark.parametrize(("member_of", "attributes", "expected"), [
    ((), "NOSUPERUSER", None),
    (("pg_signal_backend",), "NOSUPERUSER", "is a member of pg_signal_backend"),
    (("pg_read_server_files",), "NOSUPERUSER", "is a member of pg_read_server_files"),
    (("pg_write_server_files",), "NOSUPERUSER", "is a member of pg_write_server_files"),
    (("pg_execute_server_program",), "NOSUPERUSER", "is a member of pg_execute_server_program"),
    ((), "NOSUPERUSER CREATEROLE", "has CREATEROLE"),
    ((), "SUPERUSER", "is a superuser"),
])
def test_inspect_role_names_every_power(db_url: str, member_of: tuple[str, ...], attributes: str,
                                        expected: str | None) -> None:
    with login_role(db_url, member_of=member_of, attributes=attributes) as url:
        with psycopg.connect(url, row_factory=dict_row) as conn:
            powers = inspect_role(conn, Queries.load(), None)
    if expected is None:
        assert powers.read_only and powers.refusals == ()
    else:
        assert not powers.read_only and any(expected in refusal for refusal in powers.refusals), powers


def test_a_member_of_the_listeners_login_is_refused(db_url: str) -> None:
    with login_role(db_url) as listener_url, login_role(db_url) as reader_url:
        listener = role_of(listener_url)
        with psycopg.connect(reader_url) as conn:
            assert inspect_role(conn, Queries.load(), listener).read_only
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(listener), sql.Identifier(role_of(reader_url))))
        with psycopg.connect(reader_url) as conn:
            powers = inspect_role(conn, Queries.load(), listener)
        assert "is a member of the listener's own login role" in powers.describe()
        with psycopg.connect(listener_url) as conn:
            assert not inspect_role(conn, Queries.load(), listener).read_only  # the listener's own login


def test_a_check_never_runs_as_the_listeners_own_login(db_url: str, probe_table: str) -> None:
    """SANDBOX_DATABASE_URL set to the listener's own (non-superuser) login: that role may signal the
    listener's backends, so the check refuses to run, even where no start-up check ran (build-once)."""
    from listener.config import Settings
    from listener.sandbox.engine import Limits, Sandbox

    with login_role(db_url, tables=(probe_table,)) as url:
        settings = Settings.from_env({"DATABASE_URL": url, "SANDBOX_DATABASE_URL": url})
        sandbox = Sandbox(client=None, settings=settings, limits=Limits(), installation="l4test", automation_id=1,
                          build_id=1, network="none")
        state = RunState(container=None, recorder=None, run_token="unused", sandbox_database_url=url, sandbox=sandbox)
        [result] = evaluate([{"kind": "sql_rows", "query": "SELECT * FROM level4_probe", "min_rows": 1}], state)
        assert not result.passed
        assert "is a member of the listener's own login role" in result.detail
        assert _run("SELECT * FROM level4_probe", url).passed  # the same role, the listener's login unknown
