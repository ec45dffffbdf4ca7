"""The listener registry: each running listener keeps a row in agent_builder_listeners.

The row is written from a dedicated session that holds a session advisory lock keyed by the row's
id; `listeners` and `healthcheck` count a row as live only while that lock is held, so a listener
that is SIGKILLed, or whose host disappears, drops out as soon as its session ends (TCP keepalives
notice a dead peer in seconds), without waiting for a heartbeat to go stale. The heartbeat only
refreshes the in-flight count."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import psycopg
from loguru import logger

from listener.queue.db import Queries, connect
from listener.queue.store import Store
from listener.queue.services import Reconnect, ThreadService, one_line
from listener.version import builder_version


@dataclass(frozen=True)
class LiveListener:
    id: int
    host: str
    pid: int
    worker: str
    version: str
    concurrency: int
    in_flight: int
    started_at: datetime
    heartbeat_at: datetime
    leads: bool = False  # runs the rescuer and the sweeps (listener.queue.leader)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "LiveListener":
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


def live_listeners(conn: psycopg.Connection[dict[str, Any]], queries: Queries,
                   host: str | None = None) -> list[LiveListener]:
    return [LiveListener.from_row(row) for row in Store(conn, queries).live_listeners(host)]


class RegistryLoop(ThreadService):
    """Registers this listener, refreshes its in-flight count every LIVENESS_INTERVAL_S, re-registers
    after a lost connection, and removes its row on a clean stop."""

    name = "registry"

    def __init__(self, dsn: str, queries: Queries, worker: str, concurrency: int, interval_s: float,
                 in_flight: Callable[[], int], stopping: threading.Event | None = None) -> None:
        super().__init__(stopping)
        self.dsn = dsn
        self.queries = queries
        self.worker = worker
        self.concurrency = concurrency
        self.interval_s = interval_s
        self.in_flight = in_flight
        self.registered = threading.Event()
        self.reconnect = Reconnect("listener registry", self.stopping)

    def _register(self, conn: psycopg.Connection[dict[str, Any]]) -> int:
        return Store(conn, self.queries).register_listener(socket.gethostname(), os.getpid(), self.worker,
                                                           builder_version(), self.concurrency)

    def run(self) -> None:
        self.reconnect.run_forever(self._session)

    def _session(self) -> None:
        with connect(self.dsn, actor=f"builder-registry:{self.worker}", application="agent-builder registry") as conn:
            try:
                listener_id = self._register(conn)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:  # e.g. migration 0009 not applied: the listener runs unregistered
                logger.error("listener registry unavailable ({}); fix: run: agent-builder migrate", one_line(exc))
                self.stopping.wait(60.0)
                return
            self.reconnect.connected()
            self.registered.set()
            logger.info("registered as listener {} in agent_builder_listeners", listener_id)
            try:
                while not self.stopping.is_set():
                    Store(conn, self.queries).heartbeat(listener_id, self.in_flight())
                    self.stopping.wait(self.interval_s)
                Store(conn, self.queries).unregister_listener(listener_id)
            finally:
                self.registered.clear()
