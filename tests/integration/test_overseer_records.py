"""What a review leaves behind: tokens, model and cost on the attempt, in `show` and in /metrics;
and the alert that makes an outage notify once (migration 0007), against a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from listener.build.alerts import OVERSEER, Alerts
from listener.queue.store import Store
from listener.ops.inspect import render_show, show_report
from listener.redact import Redactor
from listener.ops.metrics import Metrics, MetricsServer
from tests.helpers import insert_idea
from tests.metrics_text import types, value


def add_review(operator, automation_id: int, *, tokens_in: int | None, tokens_out: int | None, model: str | None,
               cost: float | None, verdict: str = "PASS") -> None:
    operator.execute(
        "INSERT INTO agent_builds (automation_id, worker, step, finished_at, outcome, overseer_verdict, overseer_reason,"
        " overseer_cost_usd, overseer_called_at, overseer_input_tokens, overseer_output_tokens, overseer_model)"
        " VALUES (%s, 'host:1', 'overseer', now(), 'failed', %s, 'reason', %s, now(), %s, %s, %s)",
        (automation_id, verdict, cost, tokens_in, tokens_out, model))


def test_show_prints_the_reviews_tokens_model_and_cost(operator, builder_conn, queries) -> None:
    automation_id = insert_idea(operator)
    add_review(operator, automation_id, tokens_in=301, tokens_out=19, model="claude-opus-5-5", cost=0.001584)
    add_review(operator, automation_id, tokens_in=None, tokens_out=None, model=None, cost=None, verdict="FAIL")
    report = show_report(builder_conn, queries, automation_id, Redactor())
    assert report is not None
    text = render_show(report)
    assert "overseer usage: $0.0016, 301 tokens in / 19 out, model claude-opus-5-5" in text
    assert "overseer usage: cost n/a, tokens n/a, model n/a" in text
    first = report["attempts"][0]
    assert (first["overseer_input_tokens"], first["overseer_output_tokens"], first["overseer_model"]) == (
        301, 19, "claude-opus-5-5")


def test_metrics_count_the_overseers_tokens(db_url, operator, queries) -> None:
    first, second = insert_idea(operator), insert_idea(operator)
    add_review(operator, first, tokens_in=301, tokens_out=19, model="m", cost=0.0016)
    add_review(operator, second, tokens_in=1200, tokens_out=40, model="m", cost=0.01)
    server = MetricsServer("127.0.0.1:0", Metrics(), db_url, queries, listening=lambda: True, reconnects=lambda: 0)
    server.start()
    try:
        text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    finally:
        server.stop()
    assert value(text, "agent_builder_overseer_calls_total") == 2
    assert value(text, "agent_builder_overseer_input_tokens_total") == 1501
    assert value(text, "agent_builder_overseer_output_tokens_total") == 59
    assert value(text, "agent_builder_overseer_cost_usd_total") == pytest.approx(0.0116)
    assert types(text)["agent_builder_overseer_input_tokens_total"] == "counter"


def test_an_alert_opens_once_per_outage(builder_conn, queries, db_url) -> None:
    from listener.queue.db import connect

    alerts = Alerts(Store(builder_conn, queries))
    assert alerts.clear(OVERSEER) is False  # nothing open
    assert alerts.raise_(OVERSEER, "overseer not logged in") is True
    with connect(db_url, actor="builder:other") as other:  # another listener sees the same outage
        assert Alerts(Store(other, queries)).raise_(OVERSEER, "overseer not logged in (again)") is False
    assert alerts.raise_(OVERSEER, "still not logged in") is False
    row: dict[str, Any] = builder_conn.execute("SELECT detail, cleared_at FROM agent_builder_alerts").fetchone()
    assert row == {"detail": "still not logged in", "cleared_at": None}
    assert alerts.clear(OVERSEER) is True and alerts.clear(OVERSEER) is False
    assert alerts.raise_(OVERSEER, "logged out again") is True  # a new outage


def test_show_prints_both_evaluations_of_every_level_4_check(operator, builder_conn, queries) -> None:
    automation_id = insert_idea(operator)
    log = ("Level 4 (assertion) failed: check 1 (file_exists): this check held before the automation ran\n"
           "acceptance checks given by the operator (acceptance_check)\n"
           "before the run (negative control: a fresh container of the same image, the automation not started):\n"
           "  check 1 file_exists: held: /etc/passwd exists (922 bytes)\n"
           "  check 2 container_running: skipped: a control is not meaningful here\n"
           "after the run:\n"
           "  PASS check 1 file_exists: /etc/passwd exists (922 bytes)\n"
           "  PASS check 2 container_running: container still running 1 s after it started")
    operator.execute("INSERT INTO agent_test_results (automation_id, test_level, status, execution_log)"
                     " VALUES (%s, 4, 'fail', %s)", (automation_id, log))
    report = show_report(builder_conn, queries, automation_id, Redactor())
    assert report is not None
    text = render_show(report).splitlines()
    start = text.index("    before the run (negative control: a fresh container of the same image, the automation not started):")
    assert text[start + 1:start + 6] == [
        "      check 1 file_exists: held: /etc/passwd exists (922 bytes)",
        "      check 2 container_running: skipped: a control is not meaningful here",
        "    after the run:",
        "      PASS check 1 file_exists: /etc/passwd exists (922 bytes)",
        "      PASS check 2 container_running: container still running 1 s after it started",
    ]
