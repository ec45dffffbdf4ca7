"""The recording endpoint over real HTTP: what a sandbox's requests leave for Level 4 to see."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from listener.httpserver import Limits
from listener.sandbox.recorder import MAX_BODY, Recorder
from tests.endpoint_probes import (close_all, connect_idle, connection_threads, request, status_of,
                                   wait_closed_by_server, wait_for)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder(host="127.0.0.1") as server:
        yield server


def _base(recorder: Recorder, token: str) -> str:
    return recorder.url_for(token, "127.0.0.1")


def test_requests_are_recorded_under_their_token(recorder: Recorder) -> None:
    token = recorder.open_run()
    base = _base(recorder, token)
    answer = httpx.post(f"{base}/hook?x=1", json={"disk": 42}, headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    assert httpx.get(f"{base}/status").status_code == 200
    seen = recorder.requests_for(token)
    assert [(r.method, r.path, r.status) for r in seen] == [("POST", "/hook", 200), ("GET", "/status", 200)]
    assert seen[0].query == "x=1"
    assert seen[0].body_excerpt == '{"disk":42}'
    assert seen[0].headers["content-type"] == "application/json"
    assert "authorization" not in seen[0].headers


def test_the_token_alone_is_the_root_path(recorder: Recorder) -> None:
    token = recorder.open_run()
    assert httpx.put(_base(recorder, token), content=b"x").status_code == 200
    assert [(r.method, r.path) for r in recorder.requests_for(token)] == [("PUT", "/")]


def test_any_method_is_accepted(recorder: Recorder) -> None:
    token = recorder.open_run()
    base = _base(recorder, token)
    for method in ("DELETE", "PATCH", "OPTIONS", "PROPFIND", "HEAD"):
        assert httpx.request(method, f"{base}/r").status_code == 200, method
    assert [r.method for r in recorder.requests_for(token)] == ["DELETE", "PATCH", "OPTIONS", "PROPFIND", "HEAD"]


def test_unknown_and_closed_tokens_get_404_and_nothing_is_recorded(recorder: Recorder) -> None:
    token = recorder.open_run()
    assert httpx.post(f"http://127.0.0.1:{recorder.port}/not-a-token/hook").status_code == 404
    assert httpx.post(f"http://127.0.0.1:{recorder.port}/").status_code == 404
    recorder.close_run(token)
    assert httpx.post(f"{_base(recorder, token)}/hook").status_code == 404
    assert recorder.requests_for(token) == []
    assert recorder.requests_for("not-a-token") == []


def test_bodies_over_the_cap_get_413(recorder: Recorder) -> None:
    token = recorder.open_run()
    base = _base(recorder, token)
    assert httpx.post(f"{base}/big", content=b"x" * MAX_BODY).status_code == 200
    assert httpx.post(f"{base}/big", content=b"x" * (MAX_BODY + 1)).status_code == 413
    [ok, refused] = recorder.requests_for(token)
    assert (ok.status, len(ok.body_excerpt)) == (200, 500)
    assert (refused.path, refused.status, refused.body_excerpt) == ("/big", 413, "")


def test_chunked_bodies_are_read_and_capped(recorder: Recorder) -> None:
    token = recorder.open_run()
    base = _base(recorder, token)

    def chunks(total: int) -> Iterator[bytes]:
        sent = 0
        while sent < total:
            size = min(65536, total - sent)
            sent += size
            yield b"y" * size

    assert httpx.post(f"{base}/stream", content=chunks(1000)).status_code == 200
    assert recorder.requests_for(token)[0].body_excerpt == "y" * 500
    try:
        status = httpx.post(f"{base}/stream", content=chunks(MAX_BODY + 65536)).status_code
    except httpx.TransportError:
        status = None  # the server may close while the client still sends: the record is what counts
    assert status in (413, None)
    assert recorder.requests_for(token)[1].status == 413


def test_concurrent_runs_see_only_their_own_requests(recorder: Recorder) -> None:
    tokens = [recorder.open_run() for _ in range(4)]
    assert len(set(tokens)) == 4 and all(len(t) >= 32 for t in tokens)
    errors: list[BaseException] = []

    def client(index: int, token: str) -> None:
        try:
            with httpx.Client() as http:
                for n in range(10):
                    http.post(f"{_base(recorder, token)}/run{index}/{n}", content=str(n).encode()).raise_for_status()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i, t)) for i, t in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    for index, token in enumerate(tokens):
        paths = sorted(r.path for r in recorder.requests_for(token))
        assert paths == sorted(f"/run{index}/{n}" for n in range(10))


def test_url_for_and_a_clean_stop() -> None:
    server = Recorder(host="127.0.0.1", port=0)
    server.start()
    port = server.port
    token = server.open_run()
    assert server.url_for(token, "172.17.0.1") == f"http://172.17.0.1:{port}/{token}"
    assert server.url_for(token, "fd00::1") == f"http://[fd00::1]:{port}/{token}"
    assert httpx.get(f"{server.url_for(token, '127.0.0.1')}/x").status_code == 200
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_binds_all_interfaces_by_default() -> None:
    with Recorder() as server:
        assert server._server.server_address[0] == "0.0.0.0"
        token = server.open_run()
        assert httpx.get(f"{server.url_for(token, '127.0.0.1')}/x").status_code == 200


# -- bounds: a sandbox (or anything that reaches the endpoint) cannot hold the listener's threads ----

def test_300_idle_connections_hold_no_thread_while_requests_are_recorded() -> None:
    limits = Limits(request_timeout_s=2.0, max_connections=64, max_pending=512)
    with Recorder(host="127.0.0.1", limits=limits) as server:
        token = server.open_run()
        idle = connect_idle(server.port, 300)
        try:
            assert httpx.post(f"{_base(server, token)}/hook", content=b"x", timeout=2).status_code == 200
            assert [r.path for r in server.requests_for(token)] == ["/hook"]
            wait_for(lambda: server._server.handler_threads() == 0 and connection_threads("recorder") == 0, 2,
                     "the request's thread to exit")  # the idle connections never had a thread
            assert len(wait_closed_by_server(idle, bound_s=2.0 + 5)) == 300
        finally:
            close_all(idle)


def test_over_the_cap_a_request_gets_503_at_once_and_recording_resumes() -> None:
    with Recorder(host="127.0.0.1", limits=Limits(request_timeout_s=15.0, max_connections=4)) as server:
        token = server.open_run()
        path = urlsplit(_base(server, token)).path
        slow = connect_idle(server.port, 4)
        idle: list[socket.socket] = []
        try:
            for sock in slow:  # a complete head, then a body that never comes: each holds a handler
                sock.sendall(f"POST {path}/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode())
            wait_for(lambda: server._server.handler_threads() == 4, 5, "4 slow bodies in their handlers")
            idle += connect_idle(server.port, 300)
            started = time.monotonic()
            refused = request(server.port, f"POST {path}/late HTTP/1.0\r\nContent-Length: 0\r\n\r\n".encode(), bound_s=3)
            assert time.monotonic() - started < 1.5
            assert status_of(refused) == 503 and b"Connection: close" in refused
            assert connection_threads("recorder") == 4
            assert "/late" not in [r.path for r in server.requests_for(token)]
        finally:
            close_all(slow)
        try:
            wait_for(lambda: server._server.handler_threads() == 0, 5, "the slow handlers to end")
            assert httpx.post(f"{_base(server, token)}/again", timeout=5).status_code == 200
            assert "/again" in [r.path for r in server.requests_for(token)]
        finally:
            close_all(idle)
