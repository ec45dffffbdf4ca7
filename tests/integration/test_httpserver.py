"""The bounded HTTP server shared by the approval, metrics and recording endpoints, over real sockets."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Iterator

import pytest
from loguru import logger

from listener.httpserver import BackgroundServer, Limits, TextHandler, split_address
from tests.endpoint_probes import (close_all, connect_idle, connection_threads, read_answer, request, status_of,
                                   wait_closed_by_server, wait_for)

GET = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"


class Hello(TextHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/boom":
            raise RuntimeError("a handler bug")
        self.send_text(200, "hello\n")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_text(200, f"{len(body)} bytes\n")


def blocking_handler(release: threading.Event) -> type[TextHandler]:
    class Blocking(TextHandler):
        def do_GET(self) -> None:  # noqa: N802
            release.wait(20)
            self.send_text(200, "done\n")

    return Blocking


def serve(handler: type[TextHandler], name: str, limits: Limits, address: str = "127.0.0.1:0") -> BackgroundServer:
    server = BackgroundServer(address, handler, name, limits, poll_interval=0.1)
    server.start()
    return server


@pytest.fixture
def idle() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    close_all(opened)


def still_open(sock: socket.socket) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return not selector.select(0)


def test_300_idle_connections_hold_no_thread_a_request_is_answered_and_they_are_dropped_at_the_timeout(idle) -> None:
    server = serve(Hello, "idle300", Limits(request_timeout_s=3.0, max_connections=4, max_pending=512))
    try:
        threads_before = threading.active_count()
        idle += connect_idle(server.port, 300)
        started = time.monotonic()
        assert status_of(request(server.port, GET, bound_s=2)) == 200
        answered_in = time.monotonic() - started
        assert answered_in < 2.0
        assert still_open(idle[-1]), "the request was answered while the idle connections were still held"
        wait_for(lambda: server.server.handler_threads() == 0 and connection_threads("idle300") == 0, 2,
                 "the request's thread to exit")  # the idle connections never had a thread
        assert threading.active_count() - threads_before <= 4
        closed = wait_closed_by_server(idle, bound_s=3.0 + 5)
        assert len(closed) == 300, f"{300 - len(closed)} idle connection(s) still open after the timeout"
    finally:
        server.stop()


def test_held_heads_are_bounded_the_oldest_make_room(idle) -> None:
    server = serve(Hello, "pool", Limits(request_timeout_s=20.0, max_connections=2, max_pending=8))
    try:
        idle += connect_idle(server.port, 20)
        assert status_of(request(server.port, GET, bound_s=2)) == 200  # it took a place too
        oldest = wait_closed_by_server(idle[:13], bound_s=5)
        assert len(oldest) == 13, "the oldest held connections were closed to make room"
        assert all(still_open(sock) for sock in idle[13:])  # the newest 7 stay until their deadline
    finally:
        server.stop()


def test_a_slow_sender_is_cut_at_the_deadline_however_it_trickles() -> None:
    server = serve(Hello, "slow", Limits(request_timeout_s=1.0, max_connections=4))
    try:
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            started = time.monotonic()
            cut_after = None
            for byte in head:  # one byte every 50 ms: a per-read timeout would never fire
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    cut_after = time.monotonic() - started
                    break
                if not still_open(sock) and sock.recv(1) == b"":
                    cut_after = time.monotonic() - started
                    break
                time.sleep(0.05)
        assert cut_after is not None, "the slow sender was never cut"
        assert 0.5 <= cut_after <= 4.0
    finally:
        server.stop()


def test_over_the_cap_a_connection_gets_503_at_once_and_the_server_serves_again_afterwards(idle) -> None:
    release = threading.Event()
    server = serve(blocking_handler(release), "capped", Limits(request_timeout_s=15.0, max_connections=4))
    answers: list[bytes] = []
    clients = [threading.Thread(target=lambda: answers.append(request(server.port, GET, bound_s=20))) for _ in range(4)]
    try:
        for client in clients:
            client.start()
        wait_for(lambda: server.server.handler_threads() == 4, 5, "4 requests in their handlers")
        idle += connect_idle(server.port, 300)  # cost no thread, change nothing
        started = time.monotonic()
        refused = request(server.port, GET, bound_s=3)
        assert time.monotonic() - started < 1.5
        assert status_of(refused) == 503 and b"Connection: close" in refused
        assert connection_threads("capped") == 4
        release.set()
        for client in clients:
            client.join(20)
        assert [status_of(a) for a in answers] == [200] * 4
        wait_for(lambda: server.server.handler_threads() == 0, 5, "the handlers to end")
        assert b"done" in request(server.port, GET, bound_s=5)
    finally:
        release.set()
        server.stop()


def test_heads_are_bounded_bodies_are_the_handlers_business() -> None:
    server = serve(Hello, "heads", Limits(request_timeout_s=5.0, max_connections=4, max_head_bytes=1024))
    try:
        big_head = b"GET / HTTP/1.0\r\nX-Big: " + b"b" * 2000 + b"\r\n\r\n"
        assert status_of(request(server.port, big_head)) == 431
        endless = b"GET / HTTP/1.0\r\nX-Big: " + b"b" * 5000  # never ends its head
        assert status_of(request(server.port, endless)) == 431
        body = b"c" * 200_000
        post = b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        assert request(server.port, post).endswith(b"200000 bytes\n")
    finally:
        server.stop()


def test_a_failing_handler_does_not_end_the_server() -> None:
    server = serve(Hello, "boom", Limits(request_timeout_s=5.0))
    try:
        assert request(server.port, b"GET /boom HTTP/1.0\r\n\r\n") == b""
        assert status_of(request(server.port, GET)) == 200
    finally:
        server.stop()


def test_an_empty_host_binds_127_0_0_1_never_all_interfaces() -> None:
    for address in (":0", ("", 0)):
        server = BackgroundServer(address, Hello, "bare")
        try:
            assert server.host == "127.0.0.1"
        finally:
            server.stop()
    assert split_address(":9100") == ("127.0.0.1", 9100)
    assert split_address("[::1]:8787") == ("::1", 8787)


def test_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    server = BackgroundServer("[::1]:0", Hello, "v6")
    server.start()
    try:
        assert server.host == "::1" and server.address == f"[::1]:{server.port}"
        assert status_of(request(server.port, GET, host="::1")) == 200
    finally:
        server.stop()


def test_a_bind_beyond_loopback_is_announced_with_who_can_reach_it() -> None:
    seen: list[str] = []
    sink = logger.add(lambda message: seen.append(str(message)), level="WARNING")
    try:
        for address in ("127.0.0.1:0", "0.0.0.0:0"):
            server = BackgroundServer(address, Hello, "reach")
            server.start()
            server.stop()
        quiet = BackgroundServer("0.0.0.0:0", Hello, "quiet", warn_reach=False)
        quiet.start()
        quiet.stop()
    finally:
        logger.remove(sink)
    assert len(seen) == 1, seen
    assert "the reach endpoint listens on 0.0.0.0:" in seen[0] and "every interface" in seen[0]
    assert "sandbox containers" in seen[0]


def test_a_clean_stop_closes_every_connection_and_the_port() -> None:
    release = threading.Event()
    server = serve(blocking_handler(release), "stopping", Limits(request_timeout_s=30.0, max_connections=4))
    port = server.port
    held = connect_idle(port, 3)
    busy = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        busy.sendall(GET)
        wait_for(lambda: server.server.handler_threads() == 1, 5, "a request in its handler")
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3
        assert len(wait_closed_by_server(held, bound_s=3)) == 3
        assert read_answer(busy, 3) == b""  # cut, not answered
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        release.set()
        close_all([*held, busy])
    never_started = BackgroundServer("127.0.0.1:0", Hello, "never")
    never_started.stop()  # returns: nothing to wait for
