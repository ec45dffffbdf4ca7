"""The review page's logic without a server: who is let in (WEB_TOKEN, loopback, links), CSRF
tokens, the diff, the levels, the highlighting and the address rule."""

from __future__ import annotations

import base64
import time
from email.message import Message

import pytest

from listener.approval.links import VIEW, Link, sign
from listener.approval.web import (Access, AccessKind, Gate, Refusal, Request, exposure_problem, file_diff, highlighted,
                                   level_views, loopback_host, serves_web)
from listener.config import Settings

SECRET = "unit-secret-for-the-gate-0123456"
TOKEN = "unit-web-token-0123456789abc"


def request(headers: dict[str, str] | None = None, **kwargs: object) -> Request:
    message = Message()
    for name, value in ({"Host": "127.0.0.1:8787"} if headers is None else headers).items():
        message[name] = value
    return Request("GET", "/", {}, message, **kwargs)  # type: ignore[arg-type]


def gate(**env: str) -> Gate:
    return Gate(Settings.from_env({"APPROVAL_SECRET": SECRET, **env}))


def view_key(automation_id: int, build_id: int, expires_in: float = 60, action: str = VIEW) -> str:
    return sign(SECRET, Link(action, automation_id, build_id, int(time.time() + expires_in), "nonce-1"))


def test_web_token_in_a_header_basic_auth_or_the_cookie() -> None:
    g = gate(WEB_TOKEN=TOKEN)
    assert isinstance(g.operator(request()), Refusal)
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"basic {basic}"},
                    {"X-Agent-Builder-Token": TOKEN}, {"Cookie": f"other=1; agent_builder_web={g.cookie_value}"}):
        assert g.operator(request(headers)) == Access(AccessKind.TOKEN), headers
    for headers in ({"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Basic !!!"}, {"Cookie": f"agent_builder_web={TOKEN}"},
                    {"X-Agent-Builder-Token": TOKEN[:-1]}):
        refused = g.operator(request(headers))
        assert isinstance(refused, Refusal) and refused.status == 401 and refused.login, headers


def test_without_web_token_only_a_loopback_host_and_no_proxy() -> None:
    g = gate()
    assert g.operator(request()) == Access(AccessKind.LOOPBACK)
    for headers in ({"Host": "evil.example"}, {}, {"Host": "127.0.0.1", "X-Forwarded-For": "10.0.0.1"},
                    {"Host": "localhost", "Forwarded": "for=10.0.0.1"}):
        assert isinstance(g.operator(request(headers)), Refusal), headers
    assert loopback_host("[::1]:8787") and loopback_host("localhost:1") and not loopback_host("127.0.0.1.example:80")


def test_a_link_opens_its_own_automation_only() -> None:
    g = gate(WEB_TOKEN=TOKEN)
    access = g.page(request(), 7, view_key(7, 70))
    assert isinstance(access, Access) and access.kind is AccessKind.LINK and access.link is not None
    assert access.link.build_id == 70 and not access.everything and access.actor == "web-link"
    for key, why in ((view_key(8, 80), "another automation"), (view_key(7, 70, expires_in=-1), "expired"),
                     (view_key(7, 70, action="approve"), "unknown action"), ("x.y", "malformed"),
                     (view_key(7, 70)[:-3] + "AAA", "bad signature")):
        refused = g.page(request(), 7, key)
        assert isinstance(refused, Refusal) and refused.status == 403 and why in refused.message, why
    without_links = Gate(Settings.from_env({"WEB_TOKEN": TOKEN})).page(request(), 7, view_key(7, 70))
    assert isinstance(without_links, Refusal) and "not set up" in without_links.message


def test_csrf_tokens_are_bound_to_the_viewer_the_automation_and_the_build() -> None:
    g = gate()
    loopback = Access(AccessKind.LOOPBACK)
    token = g.csrf(loopback, 7, 70)
    assert g.csrf_ok(loopback, 7, 70, token)
    assert not g.csrf_ok(loopback, 8, 70, token) and not g.csrf_ok(loopback, 7, 71, token)
    assert not g.csrf_ok(Access(AccessKind.TOKEN), 7, 70, token)
    link_access = g.page(request(), 7, view_key(7, 70))
    assert isinstance(link_access, Access) and not g.csrf_ok(link_access, 7, 70, token)
    assert not g.csrf_ok(loopback, 7, 70, None) and not g.csrf_ok(loopback, 7, 70, "") and not g.csrf_ok(loopback, 7, 70, "1.x")
    stale = g.csrf(loopback, 7, 70, now=time.time() - 3 * 3600)
    assert not g.csrf_ok(loopback, 7, 70, stale)
    # a link's token never outlives the link
    short = g.page(request(), 7, view_key(7, 70, expires_in=30))
    assert isinstance(short, Access) and short.link is not None
    assert int(g.csrf(short, 7, 70).split(".")[0]) == short.link.expires
    # the key comes from APPROVAL_SECRET: the same across restarts; random without one
    assert gate().csrf(loopback, 7, 70, now=1e9) == g.csrf(loopback, 7, 70, now=1e9)
    assert Gate(Settings.from_env({"WEB_TOKEN": TOKEN})).csrf_key != Gate(Settings.from_env({"WEB_TOKEN": TOKEN})).csrf_key


def test_the_diff_marks_added_removed_and_context_lines() -> None:
    diff = file_diff({"a.py": "one\nsame\n", "gone.txt": "x\n"}, 3, {"a.py": "two\nsame\n", "new.sh": "echo\n"}, 4)
    kinds = {(kind, line) for kind, line in diff.lines}
    assert ("del", "-one") in kinds and ("add", "+two") in kinds and ("ctx", " same") in kinds
    assert ("file", "--- production (build 3)/a.py") in kinds and ("file", "+++ build 4/a.py") in kinds
    assert ("del", "-x") in kinds and ("add", "+echo") in kinds
    assert file_diff({"a": "1\n"}, 3, {"a": "1\n"}, 4).identical
    nothing = file_diff(None, None, {"a": "1\n"}, 4)
    assert nothing.production_build is None and not nothing.lines


def test_levels_one_to_four_of_the_build_with_not_run_for_missing() -> None:
    results = [{"build_id": 5, "test_level": 1, "status": "pass", "duration_ms": 3, "execution_log": "ok"},
               {"build_id": 4, "test_level": 2, "status": "fail", "duration_ms": 3, "execution_log": "old build"},
               {"build_id": 5, "test_level": 4, "status": "pass", "duration_ms": 3,
                "execution_log": "after the run:\n  PASS check 1 file_exists: /tmp/x exists\n"}]
    views = level_views(results, 5)
    assert [(v.level, v.status) for v in views] == [(1, "pass"), (2, "not run"), (3, "not run"), (4, "pass")]
    assert views[3].evaluations == ("after the run:", "  PASS check 1 file_exists: /tmp/x exists")


@pytest.mark.parametrize("path", ["script.py", "agent.sh", "Dockerfile", "requirements.txt", "odd.unknown-ext"])
def test_highlighting_escapes_what_it_shows(path: str) -> None:
    shown = highlighted(path, "print('<script>alert(1)</script>')\n")
    assert "<script>" not in shown.html and "&lt;" in shown.html and shown.lines == 1
    big = highlighted(path, "<b>\n" * 100_000)
    assert "<b>" not in big.html.replace("<pre>", "")


def test_the_address_rule_and_when_the_server_runs() -> None:
    assert not serves_web(Settings.from_env({}))
    assert serves_web(Settings.from_env({"WEB_TOKEN": TOKEN})) and serves_web(Settings.from_env({"APPROVAL_SECRET": SECRET}))
    assert exposure_problem(Settings.from_env({"WEB_ADDR": "0.0.0.0:8787"})) is None  # nothing served
    problem = exposure_problem(Settings.from_env({"APPROVAL_SECRET": SECRET, "APPROVAL_ADDR": "0.0.0.0:8787"}))
    assert problem is not None and "WEB_TOKEN" in problem and "127.0.0.1:8787" in problem
    assert exposure_problem(Settings.from_env({"APPROVAL_SECRET": SECRET, "WEB_ADDR": ":8787"})) is None
    with pytest.raises(Exception, match="WEB_TOKEN: must be at least 16"):
        Settings.from_env({"WEB_TOKEN": "short"})
