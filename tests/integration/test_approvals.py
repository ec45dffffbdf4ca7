"""One-tap approval links against the real endpoint and a real database."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import httpx
import psycopg
import pytest

from listener.approval.links import ApprovalServer, Link, LinkError, approval_actions, sign, verify
from listener.config import Settings
from listener.httpserver import Limits
from tests.endpoint_probes import (close_all, connect_idle, connection_threads, request, status_of,
                                   wait_closed_by_server, wait_for)
from tests.helpers import builder_status, insert_idea

SECRET = "s3cret-for-tests-only-0123456789"


@pytest.fixture
def endpoint(db_url, queries):
    settings = Settings.from_env({"APPROVAL_SECRET": SECRET, "APPROVAL_BASE_URL": "http://phone.example/ab",
                                  "APPROVAL_ADDR": "127.0.0.1:0"})
    server = ApprovalServer(settings, db_url, queries)
    server.start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def awaiting(operator, builder_conn, queries) -> tuple[int, int]:
    automation_id = insert_idea(operator)
    row = builder_conn.execute(queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "w"}).fetchone()
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'building' WHERE id = %s", (automation_id,))
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'awaiting_approval' WHERE id = %s", (automation_id,))
    return automation_id, row["build_id"]


def link(action: str, automation_id: int, build_id: int, *, expires_in: float = 600, secret: str = SECRET) -> str:
    return sign(secret, Link(action, automation_id, build_id, int(time.time() + expires_in), f"n-{time.time_ns()}"))


def test_notification_buttons_carry_signed_links() -> None:
    settings = Settings.from_env({"APPROVAL_SECRET": SECRET, "APPROVAL_BASE_URL": "https://ab.lan"})
    approve, reject = approval_actions(settings, 42, 7)
    assert approve["action"] == "http" and approve["method"] == "POST" and approve["label"] == "Approve"
    token = approve["url"].removeprefix("https://ab.lan/decide/")
    assert verify(SECRET, token).automation_id == 42 and verify(SECRET, token).build_id == 7
    assert reject["label"] == "Reject" and verify(SECRET, reject["url"].rsplit("/", 1)[1]).action == "reject"
    assert approval_actions(Settings.from_env({}), 42, 7) == ()


def test_a_valid_link_approves_once(endpoint, operator, builder_conn, queries) -> None:
    automation_id, build_id = awaiting(operator, builder_conn, queries)
    token = link("approve", automation_id, build_id)
    first = httpx.post(f"{endpoint}/decide/{token}")
    assert first.status_code == 200, first.text
    assert builder_status(operator, automation_id) == "approved"
    history = operator.execute("SELECT actor FROM builder_status_history WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
                               (automation_id,)).fetchone()
    assert history["actor"] == "one-tap"
    replay = httpx.post(f"{endpoint}/decide/{token}")
    assert replay.status_code == 403 and "already used" in replay.text


def test_a_valid_link_rejects(endpoint, operator, builder_conn, queries) -> None:
    automation_id, build_id = awaiting(operator, builder_conn, queries)
    assert httpx.post(f"{endpoint}/decide/{link('reject', automation_id, build_id)}").status_code == 200
    assert builder_status(operator, automation_id) == "rejected"


def test_expired_forged_and_misdirected_links_get_403(endpoint, operator, builder_conn, queries) -> None:
    automation_id, build_id = awaiting(operator, builder_conn, queries)
    other_id, _ = awaiting(operator, builder_conn, queries)
    expired = link("approve", automation_id, build_id, expires_in=-1)
    forged = link("approve", automation_id, build_id, secret="not-the-secret-0123456789")
    payload, mac = link("approve", automation_id, build_id).split(".")
    tampered = link("approve", other_id, build_id).split(".")[0] + "." + mac
    wrong_build = link("approve", automation_id, build_id + 1000)
    for token, reason in ((expired, "expired"), (forged, "bad signature"), (tampered, "bad signature"),
                          (wrong_build, "current build"), ("garbage", "malformed")):
        answer = httpx.post(f"{endpoint}/decide/{token}")
        assert answer.status_code == 403 and reason in answer.text, (reason, answer.text)
    assert httpx.get(f"{endpoint}/decide/{link('approve', automation_id, build_id)}").status_code == 403
    assert httpx.post(f"{endpoint}/anything-else").status_code == 403
    assert builder_status(operator, automation_id) == "awaiting_approval"
    assert builder_status(operator, other_id) == "awaiting_approval"


def test_a_link_for_a_row_no_longer_awaiting_is_refused_by_the_state_machine(endpoint, operator, builder_conn, queries) -> None:
    automation_id, build_id = awaiting(operator, builder_conn, queries)
    operator.execute("UPDATE automation_ideas SET builder_status = 'rejected' WHERE id = %s", (automation_id,))
    answer = httpx.post(f"{endpoint}/decide/{link('approve', automation_id, build_id)}")
    assert answer.status_code == 403 and "cannot change from 'rejected'" in answer.text
    assert builder_status(operator, automation_id) == "rejected"


def test_verify_rejects_an_unknown_action() -> None:
    with pytest.raises(LinkError, match="unknown action"):
        verify(SECRET, sign(SECRET, Link("deploy", 1, 1, int(time.time()) + 60, "n")))


# -- the endpoint's bounds and address ---------------------------------------------------------------

def bounded(db_url: str, queries, limits: Limits, **env: str) -> ApprovalServer:
    settings = Settings.from_env({"APPROVAL_SECRET": SECRET, "APPROVAL_BASE_URL": "http://phone.example/ab",
                                  "APPROVAL_ADDR": "127.0.0.1:0", **env})
    server = ApprovalServer(settings, db_url, queries, limits=limits)
    server.start()
    return server


def test_300_idle_connections_hold_no_thread_a_tap_still_approves_and_they_are_dropped(
        db_url, queries, operator, builder_conn) -> None:
    server = bounded(db_url, queries, Limits(request_timeout_s=2.0, max_connections=32, max_pending=512))
    idle = connect_idle(server.port, 300)
    try:
        automation_id, build_id = awaiting(operator, builder_conn, queries)
        tap = httpx.post(f"http://127.0.0.1:{server.port}/decide/{link('approve', automation_id, build_id)}", timeout=5)
        assert tap.status_code == 200, tap.text
        assert builder_status(operator, automation_id) == "approved"
        wait_for(lambda: server.http.server.handler_threads() == 0 and connection_threads("approvals") == 0, 2,
                 "the tap's thread to exit")  # the idle connections never had a thread
        assert len(wait_closed_by_server(idle, bound_s=2.0 + 5)) == 300
    finally:
        close_all(idle)
        server.stop()


def test_over_the_cap_a_tap_gets_503_at_once_and_is_served_again_afterwards(
        db_url, queries, operator, builder_conn) -> None:
    """Taps wait for one another (one database connection) and for the row: while an operator holds
    the row, four taps hold the four handler threads; the fifth is answered 503 without waiting."""
    server = bounded(db_url, queries, Limits(request_timeout_s=15.0, max_connections=4))
    base = f"http://127.0.0.1:{server.port}"
    automation_id, build_id = awaiting(operator, builder_conn, queries)
    answers: list[int] = []
    taps = [threading.Thread(target=lambda token=token: answers.append(httpx.post(f"{base}/decide/{token}", timeout=20).status_code))
            for token in [link("approve", automation_id, build_id)] + ["garbage"] * 3]
    idle: list[socket.socket] = []
    try:
        with psycopg.connect(db_url) as holder:
            holder.execute("SELECT id FROM automation_ideas WHERE id = %s FOR UPDATE", (automation_id,))
            taps[0].start()
            wait_for(lambda: server.http.server.handler_threads() == 1, 5, "the first tap in its handler")
            for tap in taps[1:]:
                tap.start()
            wait_for(lambda: server.http.server.handler_threads() == 4, 5, "four taps in their handlers")
            idle += connect_idle(server.port, 300)
            started = time.monotonic()
            refused = request(server.port, b"POST /decide/garbage HTTP/1.0\r\nContent-Length: 0\r\n\r\n", bound_s=3)
            assert time.monotonic() - started < 1.5
            assert status_of(refused) == 503 and b"Connection: close" in refused
            assert connection_threads("approvals") == 4
            holder.rollback()
        for tap in taps:
            tap.join(20)
        assert sorted(answers) == [200, 403, 403, 403]
        assert builder_status(operator, automation_id) == "approved"
        wait_for(lambda: server.http.server.handler_threads() == 0, 5, "the handlers to end")
        assert httpx.post(f"{base}/decide/garbage", timeout=5).status_code == 403
    finally:
        close_all(idle)
        server.stop()


def test_the_endpoint_listens_on_127_0_0_1_by_default(db_url, queries) -> None:
    settings = Settings.from_env({"APPROVAL_SECRET": SECRET, "APPROVAL_BASE_URL": "http://phone.example/ab"})
    assert settings.approval_addr == "127.0.0.1:8787"
    host = settings.approval_addr.rsplit(":", 1)[0]
    server = ApprovalServer(replace(settings, approval_addr=f"{host}:0"), db_url, queries)  # the default host, a free port
    try:
        assert server.http.server.socket.getsockname()[0] == "127.0.0.1"
    finally:
        server.stop()
    for env in ({"WEB_ADDR": ":0"}, {"APPROVAL_ADDR": ":0"}):  # a bare port is loopback too
        server = bounded(db_url, queries, Limits(), **env)
        try:
            assert server.http.server.socket.getsockname()[0] == "127.0.0.1"
        finally:
            server.stop()


# -- under the roles: the listener's builder login spends the link, an operator's session decides ------

def roles_endpoint(dsn: str, queries, operator_url: str | None):
    env = {"APPROVAL_SECRET": SECRET, "APPROVAL_BASE_URL": "http://phone.example/ab", "APPROVAL_ADDR": "127.0.0.1:0"}
    if operator_url:
        env["OPERATOR_DATABASE_URL"] = operator_url
    server = ApprovalServer(Settings.from_env(env), dsn, queries)
    server.start()
    return server


def test_one_tap_decides_through_an_operator_session(operator, logins, queries, log_lines) -> None:
    from listener.queue.db import connect

    listener_login = logins.make("builder", label="listener")
    person = logins.make("operator", label="alice")
    with connect(listener_login.url, actor="builder:test") as builder_conn:
        automation_id, build_id = awaiting(operator, builder_conn, queries)
    server = roles_endpoint(listener_login.url, queries, person.url)
    try:
        answer = httpx.post(f"http://127.0.0.1:{server.port}/decide/{link('approve', automation_id, build_id)}")
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    assert builder_status(operator, automation_id) == "approved"
    change = operator.execute("SELECT db_user, actor FROM builder_status_history WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
                              (automation_id,)).fetchone()
    assert change == {"db_user": person.name, "actor": "one-tap"}
    assert operator.execute("SELECT count(*) AS n FROM approval_link_uses WHERE automation_id = %s", (automation_id,)).fetchone() == {"n": 1}


def test_one_tap_without_an_operator_session_says_what_to_set(operator, logins, queries, log_lines) -> None:
    from listener.queue.db import connect

    listener_login = logins.make("builder", label="listener")
    with connect(listener_login.url, actor="builder:test") as builder_conn:
        automation_id, build_id = awaiting(operator, builder_conn, queries)
    server = roles_endpoint(listener_login.url, queries, None)
    try:
        assert any("one-tap approval cannot decide" in line and "OPERATOR_DATABASE_URL" in line for line in log_lines)  # at start
        answer = httpx.post(f"http://127.0.0.1:{server.port}/decide/{link('approve', automation_id, build_id)}")
    finally:
        server.stop()
    assert answer.status_code == 503 and "Set OPERATOR_DATABASE_URL" in answer.text
    assert builder_status(operator, automation_id) == "awaiting_approval"
    assert operator.execute("SELECT count(*) AS n FROM approval_link_uses").fetchone() == {"n": 0}


def test_a_refused_decision_leaves_the_link_unspent(operator, logins, queries) -> None:
    from listener.queue.db import connect

    listener_login = logins.make("builder", label="listener")
    person = logins.make("operator", label="alice")
    with connect(listener_login.url, actor="builder:test") as builder_conn:
        automation_id, build_id = awaiting(operator, builder_conn, queries)
    operator.execute("UPDATE automation_ideas SET builder_status = 'rejected' WHERE id = %s", (automation_id,))
    server = roles_endpoint(listener_login.url, queries, person.url)
    try:
        answer = httpx.post(f"http://127.0.0.1:{server.port}/decide/{link('approve', automation_id, build_id)}")
    finally:
        server.stop()
    assert answer.status_code == 403 and "cannot change from 'rejected'" in answer.text
    assert operator.execute("SELECT count(*) AS n FROM approval_link_uses").fetchone() == {"n": 0}
