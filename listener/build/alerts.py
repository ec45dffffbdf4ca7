"""Alerts that are notified once per outage ("overseer not logged in"), not at every retry.

The state lives in the database (agent_builder_alerts, migration 0007): it survives restarts and
is shared by every listener, so a row released again and again, by any listener, notifies once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from listener.queue.db import Queries

OVERSEER = "overseer"
SANDBOX_IMAGE = "sandbox-image"  # the build's sandbox base image is not on the Docker engine


@dataclass(frozen=True)
class Alerts:
    conn: psycopg.Connection[dict[str, Any]]
    queries: Queries

    def raise_(self, name: str, detail: str) -> bool:
        """Record that the outage `name` goes on; True only when this call opened it (notify then)."""
        row = self.conn.execute(self.queries["raise_alert"], {"name": name, "detail": detail}).fetchone()
        return bool(row and row["opened"])

    def clear(self, name: str) -> bool:
        """The outage is over; True when one was open."""
        return self.conn.execute(self.queries["clear_alert"], {"name": name}).fetchone() is not None
