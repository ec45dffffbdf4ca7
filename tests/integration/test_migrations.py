"""Migrations against a real PostgreSQL: up, down, up again; idempotence; a production-like table."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from listener.migrate import migrate, pending_migrations
from tests.helpers import insert_idea

ALL = ("0001_automation_ideas", "0002_builder_tables", "0003_state_machine", "0004_approval_links", "0005_rejection_cleanup",
       "0007_overseer_usage", "0009_listener_registry")


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def columns(url: str, table: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def test_up_down_up(empty_db_url: str) -> None:
    report = migrate(empty_db_url)
    assert report.applied == ALL
    assert {"automation_ideas", "agent_builds", "agent_test_results", "builder_status_history"} <= tables(empty_db_url)

    for expected_left in (ALL[:n] for n in range(len(ALL) - 1, -1, -1)):
        report = migrate(empty_db_url, rollback=True)
        assert report.current == expected_left
    assert tables(empty_db_url) <= {"agent_builder_migrations", "_yoyo_log", "_yoyo_version", "yoyo_lock", "_yoyo_migration"}
    assert migrate(empty_db_url, rollback=True).rolled_back == ()

    assert migrate(empty_db_url).applied == ALL
    assert pending_migrations(empty_db_url) == ()


def test_rerun_is_idempotent(empty_db_url: str) -> None:
    migrate(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True, row_factory=dict_row) as conn:
        automation_id = insert_idea(conn)
    again = migrate(empty_db_url)
    assert again.applied == ()
    assert again.current == ALL
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM automation_ideas WHERE id = %s", (automation_id,)).fetchone() == (1,)


PRODUCTION_TABLE = """
CREATE TABLE automation_ideas (
    id serial PRIMARY KEY,
    name varchar(200) NOT NULL,
    type varchar(40) NOT NULL,
    status varchar(40) NOT NULL DEFAULT 'idea',
    priority smallint,
    task_description text,
    infrastructure_requirement text,
    owner text,
    estimated_savings numeric(10,2),
    tags text[],
    created_at timestamp DEFAULT now()
);
INSERT INTO automation_ideas (name, type, status, priority, task_description, owner, estimated_savings, tags)
SELECT 'idea ' || g, CASE WHEN g % 3 = 0 THEN 'script' WHEN g % 3 = 1 THEN 'claude_agent' ELSE 'n8n_workflow' END,
       CASE WHEN g % 5 = 0 THEN 'ready_to_build' ELSE 'idea' END, (g % 4)::smallint, 'spec ' || g,
       'ops', g * 1.5, ARRAY['t' || g]
FROM generate_series(1, 500) g;
CREATE TABLE agent_test_results (
    id serial PRIMARY KEY,
    automation_id integer NOT NULL,
    test_level integer NOT NULL,
    status text NOT NULL,
    execution_log text,
    tested_by text
);
INSERT INTO agent_test_results (automation_id, test_level, status, execution_log, tested_by)
VALUES (1, 1, 'pass', 'old run', 'a person');
"""


def snapshot(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, name, type, status, priority, task_description, infrastructure_requirement, owner,"
            " estimated_savings, tags, created_at FROM automation_ideas ORDER BY id"
        ).fetchall()


def test_existing_production_table_keeps_every_row_and_column(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(PRODUCTION_TABLE)
    before_rows = snapshot(empty_db_url)
    before_columns = columns(empty_db_url, "automation_ideas")

    migrate(empty_db_url)

    assert snapshot(empty_db_url) == before_rows
    after_columns = columns(empty_db_url, "automation_ideas")
    for name, kind in before_columns.items():
        assert after_columns[name] == kind, f"{name} was rewritten"
    assert {"builder_status", "acceptance_check", "builder_build_id", "builder_retry_at"} <= set(after_columns)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT DISTINCT builder_status FROM automation_ideas").fetchall() == [("not_started",)]
        old = conn.execute("SELECT automation_id, test_level, status, execution_log, tested_by FROM agent_test_results").fetchall()
        assert old == [(1, 1, "pass", "old run", "a person")]

    # Rolling everything back removes only what the builder added.
    for _ in ALL:
        migrate(empty_db_url, rollback=True)
    assert columns(empty_db_url, "automation_ideas") == before_columns
    assert set(columns(empty_db_url, "agent_test_results")) == {"id", "automation_id", "test_level", "status", "execution_log", "tested_by"}
    assert snapshot(empty_db_url) == before_rows


def test_existing_builder_status_column_is_left_alone(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE automation_ideas (id bigint PRIMARY KEY, name text, type text, status text,"
            " builder_status text DEFAULT 'not_started');"
            "INSERT INTO automation_ideas VALUES (1, 'a', 'script', 'deployed', 'deployed'), (2, 'b', 'script', 'idea', NULL)"
        )
    migrate(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT id, builder_status FROM automation_ideas ORDER BY id").fetchall() == [(1, "deployed"), (2, None)]
    for _ in ALL:
        migrate(empty_db_url, rollback=True)
    assert "builder_status" in columns(empty_db_url, "automation_ideas")


def test_table_without_integer_id_is_refused_clearly(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE automation_ideas (id uuid PRIMARY KEY, name text)")
    with pytest.raises(Exception, match="no integer id column"):
        migrate(empty_db_url)
    assert "builder_status" not in columns(empty_db_url, "automation_ideas")
