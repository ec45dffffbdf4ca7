"""Schema migrations with yoyo: apply pending ones, or roll back the last one."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from loguru import logger
from yoyo import get_backend, read_migrations

from listener.resources import migrations_dir


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
