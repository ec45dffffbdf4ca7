"""Alerts that are notified once per outage ("overseer not logged in"), not at every retry.

The state lives in the database (agent_builder_alerts, migration 0007): it survives restarts and
is shared by every listener, so a row released again and again, by any listener, notifies once.
"""

from __future__ import annotations

from dataclasses import dataclass

from listener.queue.store import Store

OVERSEER = "overseer"
SANDBOX_IMAGE = "sandbox-image"  # the build's sandbox base image is not on the Docker engine
MODEL = "ollama"  # Ollama is unreachable or does not serve OLLAMA_MODEL


@dataclass(frozen=True)
class Alerts:
    store: Store

    def raise_(self, name: str, detail: str) -> bool:
        """Record that the outage `name` goes on; True only when this call opened it (notify then)."""
        return self.store.raise_alert(name, detail)

    def clear(self, name: str) -> bool:
        """The outage is over; True when one was open."""
        return self.store.clear_alert(name)
