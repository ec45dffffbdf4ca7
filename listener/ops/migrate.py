"""Schema migrations with yoyo: apply pending ones, or roll back the last one."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
from loguru import logger
from psycopg.rows import dict_row
from yoyo import get_backend, read_migrations

from listener.queue.resources import migrations_dir

# The group roles of migration 0006, what each is for, and who should be a member.
ROLES = (
    ("agent_builder_builder", "the listener's own login, and nothing else (never a superuser, operator or admin)",
     "<listener login>"),
    ("agent_builder_operator", "people and tools that add ideas, approve, reject and retry", "<operator login>"),
    ("agent_builder_admin", "people who repair rows by hand with the override (superusers already are)", "<admin login>"),
)


@dataclass(frozen=True)
class MigrationReport:
    applied: tuple[str, ...]
    rolled_back: tuple[str, ...]
    current: tuple[str, ...]


def yoyo_url(database_url: str) -> str:
    """yoyo names its psycopg 3 backend 'postgresql+psycopg'; libpq URIs are accepted as they are."""
    scheme = urlsplit(database_url).scheme
    if scheme in ("postgres", "postgresql"):
        return "postgresql+psycopg" + database_url[len(scheme):]
    if not scheme:
        raise ValueError("DATABASE_URL: migrations need a URI (postgresql://user@host/db), not key=value pairs")
    return database_url


def migrate(database_url: str, *, rollback: bool = False) -> MigrationReport:
    backend = get_backend(yoyo_url(database_url), migration_table="agent_builder_migrations")
    migrations = read_migrations(str(migrations_dir()))
    applied: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()
    with backend.lock():
        if rollback:
            done = backend.to_rollback(migrations)
            last = done[:1]
            if last:
                backend.rollback_migrations(last)
                rolled_back = tuple(m.id for m in last)
                logger.info("rolled back migration {}", rolled_back[0])
            else:
                logger.info("nothing to roll back")
        else:
            pending = backend.to_apply(migrations)
            if pending:
                backend.apply_migrations(pending)
                applied = tuple(m.id for m in pending)
                logger.info("applied migrations {}", ", ".join(applied))
            else:
                logger.info("database schema is up to date")
        current = tuple(m.id for m in migrations if backend.is_applied(m))
    backend.connection.close()
    return MigrationReport(applied=applied, rolled_back=rolled_back, current=current)


def pending_migrations(database_url: str) -> tuple[str, ...]:
    backend = get_backend(yoyo_url(database_url), migration_table="agent_builder_migrations")
    try:
        return tuple(m.id for m in backend.to_apply(read_migrations(str(migrations_dir()))))
    finally:
        backend.connection.close()


def role_setup(database_url: str, *, embedded: bool = False) -> str:
    """What `migrate` prints: the group roles, their members now, and the GRANT statements that
    finish the set-up of an existing database (the embedded default has its logins already)."""
    from listener.queue.store import Store

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        members = Store(conn).role_members()
    if not members:
        return "roles: none yet (the schema is older than migration 0006_roles)"
    lines = ["roles (cluster-wide; the database decides by membership of the session's login):"]
    for role, purpose, _ in ROLES:
        lines.append(f"  {role:<23} {purpose}; members: {', '.join(members.get(role, [])) or 'none'}")
    if embedded:
        lines.append("the embedded default's logins: listener (builder), operator (operator); the superuser only migrates")
        return "\n".join(lines)
    lines.append("to finish the set-up, run as a superuser (or a role with CREATEROLE and ADMIN on these roles):")
    lines += [f"  GRANT {role} TO {placeholder};" for role, _, placeholder in ROLES]
    lines.append("  -- a new listener login: CREATE ROLE agent_builder_listener LOGIN PASSWORD '...' IN ROLE agent_builder_builder;")
    lines.append("then point DATABASE_URL of the listener at its builder login, and OPERATOR_DATABASE_URL (for "
                 "agent-builder approve/reject/retry and the one-tap endpoint) at an operator's login")
    return "\n".join(lines)
