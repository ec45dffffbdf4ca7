"""Claims on one worker connection, under the names they had before the store (listener.queue.store)
took them over: the attempt side of the store is the `Store` itself."""

from __future__ import annotations

from typing import Any

import psycopg

from listener.queue.db import Queries
from listener.queue.states import backoff_seconds
from listener.queue.store import ATTEMPT_FIELDS, CLAIM_LOCK_TRIES, Finished, Store

AttemptStore = Store

__all__ = ["ATTEMPT_FIELDS", "CLAIM_LOCK_TRIES", "AttemptStore", "Finished", "backoff_seconds", "installation_of"]


def installation_of(conn: psycopg.Connection[Any], queries: Queries) -> str:
    """The identity every container, image, network and label of this database's builder carries."""
    return Store(conn, queries).installation
