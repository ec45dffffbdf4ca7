"""The listener's /metrics text, rendered by prometheus_client and read back by its parser."""

from __future__ import annotations

import socket

import pytest

from listener.ops.metrics import HELP, Metrics, MetricsServer
from listener.queue.db import Queries
from tests.metrics_text import samples, types, value


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server(metrics: Metrics, *, up: bool = True, reconnects: int = 0) -> MetricsServer:
    """A server whose database is a port nobody listens on: only the listener's own values."""
    dsn = f"postgresql://nobody@127.0.0.1:{_closed_port()}/none?connect_timeout=5"
    return MetricsServer("127.0.0.1:0", metrics, dsn, Queries.load(), listening=lambda: up,
                         reconnects=lambda: reconnects)


def test_attempts_and_step_durations_are_counted_by_label() -> None:
    metrics = Metrics()
    metrics.inc("agent_builder_attempts_total", kind="build", outcome="succeeded")
    metrics.inc("agent_builder_attempts_total", kind="build", outcome="succeeded")
    metrics.inc("agent_builder_attempts_total", kind="deploy", outcome="failed")
    metrics.observe("agent_builder_step_seconds", 0.25, step="generate")
    metrics.observe("agent_builder_step_seconds", 0.5, step="generate")
    text = server(metrics, reconnects=3).render()
    assert value(text, "agent_builder_attempts_total", kind="build", outcome="succeeded") == 2
    assert value(text, "agent_builder_attempts_total", kind="deploy", outcome="failed") == 1
    assert value(text, "agent_builder_attempts_total", kind="deploy", outcome="succeeded") is None
    assert value(text, "agent_builder_step_seconds_count", step="generate") == 2
    assert value(text, "agent_builder_step_seconds_sum", step="generate") == 0.75
    assert value(text, "agent_builder_listener_reconnects_total") == 3
    assert value(text, "agent_builder_up") == 1


def test_every_family_has_the_type_and_help_it_always_had_and_nothing_else() -> None:
    metrics = Metrics()
    metrics.inc("agent_builder_attempts_total", kind="build", outcome="crashed")
    metrics.observe("agent_builder_step_seconds", 1.0, step="sandbox")
    text = server(metrics).render()
    assert types(text) == {name: kind for name, (kind, _) in HELP.items()
                           if name in ("agent_builder_attempts_total", "agent_builder_step_seconds",
                                       "agent_builder_listener_reconnects_total", "agent_builder_up")}
    for name, (_, help_text) in HELP.items():
        if name in types(text):
            assert f"# HELP {name} {help_text}\n" in text
    assert "_created" not in text  # no series /metrics did not have before prometheus_client


def test_the_database_totals_are_left_out_when_it_is_unreachable_and_health_says_down() -> None:
    text = server(Metrics(), up=False).render()
    names = {name for name, _ in samples(text)}
    assert names == {"agent_builder_listener_reconnects_total", "agent_builder_up"}
    assert value(text, "agent_builder_up") == 0


def test_label_values_are_escaped_so_the_text_parses_back_to_them() -> None:
    metrics = Metrics()
    awkward = 'gen"er\\ate\nnext line'
    metrics.observe("agent_builder_step_seconds", 2.0, step=awkward)
    assert value(server(metrics).render(), "agent_builder_step_seconds_count", step=awkward) == 1


def test_an_unknown_name_or_wrong_labels_are_refused_by_name() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="no counter named 'agent_builder_attempt_total'"):
        metrics.inc("agent_builder_attempt_total", kind="build", outcome="succeeded")
    with pytest.raises(ValueError, match="no summary named 'agent_builder_steps'"):
        metrics.observe("agent_builder_steps", 1.0, step="generate")
    with pytest.raises(ValueError):
        metrics.inc("agent_builder_attempts_total", kind="build")  # outcome missing
    assert samples(server(metrics).render()).keys() == {("agent_builder_listener_reconnects_total", frozenset()),
                                                         ("agent_builder_up", frozenset())}


def test_two_listeners_in_one_process_keep_their_own_counts() -> None:
    first, second = Metrics(), Metrics()
    first.inc("agent_builder_attempts_total", kind="build", outcome="succeeded")
    assert value(server(first).render(), "agent_builder_attempts_total", kind="build", outcome="succeeded") == 1
    assert value(server(second).render(), "agent_builder_attempts_total", kind="build", outcome="succeeded") is None
