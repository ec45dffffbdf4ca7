"""Small helpers for tests that talk to a real database."""

from __future__ import annotations

from typing import Any

import psycopg


def insert_idea(
    conn: psycopg.Connection[Any],
    *,
    name: str | None = "Disk usage report",
    type: str | None = "script",
    status: str = "ready_to_build",
    priority: int | None = None,
    task_description: str | None = "Report disk usage of / to stdout and write it to /tmp/disk.txt",
    infrastructure_requirement: str | None = "none",
) -> int:
    row = conn.execute(
        "INSERT INTO automation_ideas (name, type, status, priority, task_description, infrastructure_requirement)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (name, type, status, priority, task_description, infrastructure_requirement),
    ).fetchone()
    assert row is not None
    return int(row["id"] if isinstance(row, dict) else row[0])


def builder_status(conn: psycopg.Connection[Any], automation_id: int) -> str:
    row = conn.execute("SELECT builder_status FROM automation_ideas WHERE id = %s", (automation_id,)).fetchone()
    assert row is not None
    return row["builder_status"] if isinstance(row, dict) else row[0]


def force_status(conn: psycopg.Connection[Any], automation_id: int, status: str) -> None:
    """Put a row in any status through the documented admin override."""
    with conn.transaction():
        conn.execute("SET LOCAL agent_builder.override = 'on'")
        conn.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s", (status, automation_id))


def claim_builds(conn: psycopg.Connection[Any], queries: Any, *automation_ids: int) -> dict[int, int]:
    """Claim each of these rows for a build with the one claim (sql/claim.sql): automation id -> attempt id."""
    claims = {}
    for automation_id in automation_ids:
        row = conn.execute(queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "w1"}).fetchone()
        assert row is not None, f"automation {automation_id} was not claimed"
        claims[automation_id] = int(row["build_id"])
    return claims


def installation(db_url: str) -> str:
    """The installation identity of a test database (every Docker object its builder makes has it)."""
    from psycopg.rows import dict_row

    from listener.queue.store import installation_of
    from listener.queue.db import Queries

    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return installation_of(conn, Queries.load())


def remove_installation_objects(client: Any, installation_id: str) -> None:
    """Remove the containers, images and networks of one installation (a test's own database):
    never anything another test run, or a real installation on the same engine, made."""
    import docker.errors

    from listener.sandbox.naming import installation_filter

    selected = installation_filter(installation_id)
    for container in client.containers.list(all=True, filters=selected):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
    for image in client.images.list(filters=selected):
        try:
            client.images.remove(image.id, force=True)
        except docker.errors.ImageNotFound:
            pass
    for network in client.networks.list(filters=selected):
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
