"""Prometheus metrics (prometheus_client) and /healthz on METRICS_ADDR.

Each listener has its own registry (no process-wide one): the attempts and step durations it
records itself (a Counter and a Summary), and, read at every scrape, the listening connection's
state and the totals only the database knows (queue depth, attempts in flight, overseer calls).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import psycopg
from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Summary, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from listener.queue.db import Queries, connect
from listener.queue.states import BuilderStatus
from listener.queue.store import Store
from listener.httpserver import BackgroundServer, Limits, TextHandler

# The Prometheus text format generate_latest() writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name as exposed: (type, help)
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


class Metrics:
    """What this listener records itself; one instance per listener, passed to whoever records.

    `inc` and `observe` take the name as exposed (agent_builder_attempts_total,
    agent_builder_step_seconds) and its labels; an unknown name or a wrong set of labels is a
    ValueError.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # prometheus_client adds the _total suffix of a counter itself
        self._counters = {
            "agent_builder_attempts_total": Counter(
                "agent_builder_attempts", HELP["agent_builder_attempts_total"][1], ["kind", "outcome"],
                registry=self.registry),
        }
        self._summaries = {
            "agent_builder_step_seconds": Summary(
                "agent_builder_step_seconds", HELP["agent_builder_step_seconds"][1], ["step"], registry=self.registry),
        }

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        counter = self._counters.get(name)
        if counter is None:
            raise ValueError(f"no counter named {name!r}: one of {', '.join(sorted(self._counters))}")
        counter.labels(**labels).inc(value)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        summary = self._summaries.get(name)
        if summary is None:
            raise ValueError(f"no summary named {name!r}: one of {', '.join(sorted(self._summaries))}")
        summary.labels(**labels).observe(seconds)


class _Recorded(Collector):
    """The listener's own metrics without prometheus_client's `_created` timestamps (the series
    /metrics has always had; PROMETHEUS_DISABLE_CREATED_SERIES would be process-wide)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for family in self.metrics.registry.collect():
            family.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
            yield family


class _Live(Collector):
    """The values read at each scrape: the listening connection, and the database's totals."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        reconnects = CounterMetricFamily("agent_builder_listener_reconnects_total",
                                         HELP["agent_builder_listener_reconnects_total"][1],
                                         value=float(self.server.reconnects()))
        up = GaugeMetricFamily("agent_builder_up", HELP["agent_builder_up"][1],
                               value=1.0 if self.server.listening() else 0.0)
        yield from (reconnects, up)
        row = self.server.totals()
        if row is None:
            return
        depth = GaugeMetricFamily("agent_builder_queue_depth", HELP["agent_builder_queue_depth"][1], labels=["queue"])
        depth.add_metric(["buildable"], float(row["queue_buildable"]))
        depth.add_metric([BuilderStatus.APPROVED.value], float(row["queue_approved"]))
        yield depth
        yield GaugeMetricFamily("agent_builder_in_flight", HELP["agent_builder_in_flight"][1],
                                value=float(row["in_flight"]))
        for name, column in (("agent_builder_overseer_calls_total", "overseer_calls"),
                             ("agent_builder_overseer_cost_usd_total", "overseer_cost_usd"),
                             ("agent_builder_overseer_input_tokens_total", "overseer_input_tokens"),
                             ("agent_builder_overseer_output_tokens_total", "overseer_output_tokens")):
            yield CounterMetricFamily(name, HELP[name][1], value=float(row[column]))


class MetricsServer:
    def __init__(self, address: str, metrics: Metrics, dsn: str, queries: Queries,
                 listening: Callable[[], bool], reconnects: Callable[[], int], limits: Limits = Limits()) -> None:
        self.metrics = metrics
        self.dsn = dsn
        self.queries = queries
        self.listening = listening
        self.reconnects = reconnects
        # what one scrape shows: the listener's own metrics and the live values
        self.registry = CollectorRegistry()
        self.registry.register(_Recorded(metrics))
        self.registry.register(_Live(self))
        self.http = BackgroundServer(address, self._handler(), "metrics", limits)

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> None:
        self.http.start()
        logger.info("metrics on http://{}/metrics, health on /healthz", self.http.address)

    def stop(self) -> None:
        self.http.stop()

    def totals(self) -> dict[str, Any] | None:
        """The database's totals (sql/metrics_totals.sql); None, logged, when it cannot be read."""
        try:
            with connect(self.dsn, actor="metrics", application="agent-builder metrics") as conn:
                row: dict[str, Any] = Store(conn, self.queries).metrics_totals()
        except psycopg.Error as exc:
            logger.warning("metrics: database unreachable: {}", exc)
            return None
        return row

    def render(self) -> str:
        """One scrape, in the Prometheus text format."""
        return generate_latest(self.registry).decode()

    def _handler(self) -> type[TextHandler]:
        outer = self

        class Handler(TextHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/metrics":
                    self.send_text(200, outer.render(), CONTENT_TYPE)
                elif self.path == "/healthz":
                    up = outer.listening()
                    self.send_text(200 if up else 503, "ok\n" if up else "the listening connection is down\n")
                else:
                    self.send_text(404, "not found\n")

        return Handler
