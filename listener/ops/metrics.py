"""Prometheus text metrics and /healthz on METRICS_ADDR."""

from __future__ import annotations

import threading
from typing import Any, Callable

import psycopg
from loguru import logger

from listener.queue.db import Queries, connect
from listener.queue.states import BuilderStatus
from listener.queue.store import Store
from listener.httpserver import BackgroundServer, Limits, TextHandler

HELP = {
    "agent_builder_attempts_total": ("counter", "attempts ended, by kind (build, deploy) and outcome"),
    "agent_builder_step_seconds": ("summary", "time spent in each pipeline step"),
    "agent_builder_listener_reconnects_total": ("counter", "times the listening connection was re-established"),
    "agent_builder_queue_depth": ("gauge", "rows waiting: buildable (ready, not started) and approved"),
    "agent_builder_in_flight": ("gauge", "attempts running now, all listeners"),
    "agent_builder_overseer_calls_total": ("counter", "paid claude -p calls, all listeners"),
    "agent_builder_overseer_cost_usd_total": ("counter", "reported cost of the overseer calls"),
    "agent_builder_overseer_input_tokens_total": ("counter", "input tokens of the overseer calls (cache reads and writes included)"),
    "agent_builder_overseer_output_tokens_total": ("counter", "output tokens of the overseer calls"),
    "agent_builder_up": ("gauge", "1 when the listening connection is up"),
}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{str(value).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for key, value in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    """In-process counters and summaries; one instance per listener, passed to whoever records."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self.inc(f"{name}_sum", seconds, **labels)
        self.inc(f"{name}_count", 1, **labels)

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        with self._lock:
            return [(name, dict(labels), value) for (name, labels), value in sorted(self._values.items())]


def render(samples: list[tuple[str, dict[str, str], float]]) -> str:
    lines: list[str] = []
    described: set[str] = set()
    for name, labels, value in samples:
        family = name.removesuffix("_sum").removesuffix("_count") if name.endswith(("_sum", "_count")) else name
        if family in HELP and family not in described:
            kind, text = HELP[family]
            lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}"]
            described.add(family)
        lines.append(f"{name}{_labels(labels)} {value:g}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, address: str, metrics: Metrics, dsn: str, queries: Queries,
                 listening: Callable[[], bool], reconnects: Callable[[], int], limits: Limits = Limits()) -> None:
        self.metrics = metrics
        self.dsn = dsn
        self.queries = queries
        self.listening = listening
        self.reconnects = reconnects
        self.http = BackgroundServer(address, self._handler(), "metrics", limits)

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> None:
        self.http.start()
        logger.info("metrics on http://{}/metrics, health on /healthz", self.http.address)

    def stop(self) -> None:
        self.http.stop()

    def collect(self) -> list[tuple[str, dict[str, str], float]]:
        samples = self.metrics.samples()
        samples.append(("agent_builder_listener_reconnects_total", {}, float(self.reconnects())))
        samples.append(("agent_builder_up", {}, 1.0 if self.listening() else 0.0))
        try:
            with connect(self.dsn, actor="metrics", application="agent-builder metrics") as conn:
                row: dict[str, Any] = Store(conn, self.queries).metrics_totals()
        except psycopg.Error as exc:
            logger.warning("metrics: database unreachable: {}", exc)
            return samples
        samples += [
            ("agent_builder_queue_depth", {"queue": "buildable"}, float(row["queue_buildable"])),
            ("agent_builder_queue_depth", {"queue": BuilderStatus.APPROVED.value}, float(row["queue_approved"])),
            ("agent_builder_in_flight", {}, float(row["in_flight"])),
            ("agent_builder_overseer_calls_total", {}, float(row["overseer_calls"])),
            ("agent_builder_overseer_cost_usd_total", {}, float(row["overseer_cost_usd"])),
            ("agent_builder_overseer_input_tokens_total", {}, float(row["overseer_input_tokens"])),
            ("agent_builder_overseer_output_tokens_total", {}, float(row["overseer_output_tokens"])),
        ]
        return samples

    def _handler(self) -> type[TextHandler]:
        outer = self

        class Handler(TextHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/metrics":
                    self.send_text(200, render(outer.collect()), "text/plain; version=0.0.4")
                elif self.path == "/healthz":
                    up = outer.listening()
                    self.send_text(200 if up else 503, "ok\n" if up else "the listening connection is down\n")
                else:
                    self.send_text(404, "not found\n")

        return Handler
