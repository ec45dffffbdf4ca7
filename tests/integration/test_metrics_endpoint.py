"""The metrics endpoint's bounds and address (the listener's own use of it: tests/e2e/test_listener.py)."""

from __future__ import annotations

import time

import httpx

from listener.config import Settings
from listener.httpserver import Limits
from listener.ops.metrics import Metrics, MetricsServer
from tests.endpoint_probes import close_all, connect_idle, connection_threads, wait_closed_by_server, wait_for
from tests.metrics_text import value


def metrics_server(db_url: str, queries, address: str, limits: Limits = Limits()) -> MetricsServer:
    server = MetricsServer(address, Metrics(), db_url, queries, listening=lambda: True, reconnects=lambda: 0,
                           limits=limits)
    server.start()
    return server


def test_300_idle_connections_hold_no_thread_while_health_and_metrics_answer(db_url, queries) -> None:
    server = metrics_server(db_url, queries, "127.0.0.1:0", Limits(request_timeout_s=2.0, max_pending=512))
    idle = connect_idle(server.port, 300)
    try:
        started = time.monotonic()
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2).text == "ok\n"
        assert value(httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text, "agent_builder_up") == 1
        assert time.monotonic() - started < 2.0
        wait_for(lambda: server.http.server.handler_threads() == 0 and connection_threads("metrics") == 0, 2,
                 "the requests' threads to exit")  # the idle connections never had a thread
        assert len(wait_closed_by_server(idle, bound_s=2.0 + 5)) == 300
    finally:
        close_all(idle)
        server.stop()


def test_metrics_addr_is_unset_by_default_and_a_bare_port_is_loopback(db_url, queries) -> None:
    assert Settings.from_env({}).metrics_addr is None
    address = Settings.from_env({"METRICS_ADDR": ":0"}).metrics_addr
    assert address == "127.0.0.1:0"
    server = metrics_server(db_url, queries, address)
    try:
        assert server.http.server.socket.getsockname()[0] == "127.0.0.1"
    finally:
        server.stop()
