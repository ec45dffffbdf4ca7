"""The review pages over HTTP against a real database: who may see and press what, CSRF, the
operator's UPDATE bound to the build shown, escaping and redaction, the diff against production."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from psycopg.types.json import Jsonb

from listener.approval.links import VIEW, Link, review_link, sign
from listener.approval.web import COOKIE, ReviewServer, WebSetupError, exposure_problem
from listener.config import Settings
from tests.helpers import builder_status, insert_idea

SECRET = "s3cret-for-review-tests-0123456789"
TOKEN = "web-token-for-review-tests-0123"
BASE = "https://review.example/ab"
REPO = Path(__file__).resolve().parents[2]


def settings(**env: str) -> Settings:
    return Settings.from_env({"APPROVAL_SECRET": SECRET, "APPROVAL_BASE_URL": BASE, "WEB_ADDR": "127.0.0.1:0", **env})


@pytest.fixture
def serve(db_url, queries) -> Iterator[Any]:
    servers: list[ReviewServer] = []

    def start(**env: str) -> str:
        server = ReviewServer(settings(**env), db_url, queries)
        server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.stop()


def built(operator, builder_conn, queries, *, files: dict[str, str] | None = None, name: str = "Disk report",
          task: str = "Write the disk usage to /tmp/disk.json", level_log: str = "ok") -> tuple[int, int]:
    """An automation awaiting approval with a finished build: files, four passing levels, a review."""
    automation_id = insert_idea(operator, name=name, task_description=task)
    build_id = builder_conn.execute(queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "w"}).fetchone()["build_id"]
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'building' WHERE id = %s", (automation_id,))
    builder_conn.execute(
        "UPDATE agent_builds SET files = %s, overseer_verdict = 'PASS', overseer_reason = 'looks fine', overseer_cost_usd = 0.0016,"
        " overseer_input_tokens = 301, overseer_output_tokens = 19, overseer_model = 'claude-test', image_id = 'sha256:abc',"
        " artifact_sha256 = 'def', finished_at = now(), outcome = 'succeeded', step = 'done' WHERE id = %s",
        (Jsonb(files or {"script.py": "import shutil\nprint(shutil.disk_usage('/'))\n"}), build_id))
    for level in (1, 2, 3, 4):
        builder_conn.execute("INSERT INTO agent_test_results (automation_id, test_level, status, execution_log, build_id, duration_ms)"
                             " VALUES (%s, %s, 'pass', %s, %s, 5)", (automation_id, level, f"level {level}: {level_log}", build_id))
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'awaiting_approval' WHERE id = %s", (automation_id,))
    return automation_id, build_id


def rebuilt_after_production(operator, builder_conn, queries, first_files: dict[str, str]) -> tuple[int, int, int]:
    """An automation whose first build (`first_files`) went to production (a finished, successful
    deployment of it) and whose second build is claimed: (automation id, first, second)."""
    automation_id, first = built(operator, builder_conn, queries, files=first_files)
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    builder_conn.execute("INSERT INTO agent_builds (automation_id, kind, worker, step, source_build_id, finished_at, outcome)"
                         " VALUES (%s, 'deploy', 'w', 'done', %s, now(), 'succeeded')", (automation_id, first))
    with operator.transaction():
        operator.execute("SET LOCAL agent_builder.override = 'on'")
        operator.execute("UPDATE automation_ideas SET builder_status = 'rejected' WHERE id = %s", (automation_id,))
    operator.execute("UPDATE automation_ideas SET builder_status = 'not_started' WHERE id = %s", (automation_id,))
    second = builder_conn.execute(queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "w"}).fetchone()["build_id"]
    return automation_id, first, second


def page_key(automation_id: int, build_id: int, *, expires_in: float = 600, secret: str = SECRET, action: str = VIEW) -> str:
    return sign(secret, Link(action, automation_id, build_id, int(time.time() + expires_in), f"n{time.time_ns()}"))


def csrf_of(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


def test_the_ready_click_opens_that_builds_page_with_buttons(serve, operator, builder_conn, queries) -> None:
    endpoint = serve(WEB_TOKEN=TOKEN)
    automation_id, build_id = built(operator, builder_conn, queries)
    click = review_link(settings(), automation_id, build_id)
    assert click is not None and click.startswith(f"{BASE}/a/{automation_id}?k=")
    page = httpx.get(endpoint + click.removeprefix(BASE))
    assert page.status_code == 200, page.text
    for shown in ("Disk report", "shutil", "Nothing in production yet", "Level 1", "Level 4", "looks fine", "$0.0016",
                  "301 tokens in / 19 out", 'id="approve"', 'id="reject"'):
        assert shown in page.text, shown
    assert page.headers["Referrer-Policy"] == "no-referrer" and "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert 'href="/"' not in page.text  # a link authorises this page only: no way to the overview offered
    assert httpx.get(endpoint + "/").status_code == 401  # and it does not open the overview


@pytest.mark.parametrize("case", ["forged", "expired", "other automation", "build not this automation's", "decision link",
                                  "garbage"])
def test_a_bad_link_gets_403_and_no_buttons(serve, operator, builder_conn, queries, case: str) -> None:
    endpoint = serve(WEB_TOKEN=TOKEN)
    automation_id, build_id = built(operator, builder_conn, queries)
    other_id, other_build = built(operator, builder_conn, queries, name="Other")
    target, key = automation_id, {
        "forged": page_key(automation_id, build_id, secret="not-the-secret-0123456789"),
        "expired": page_key(automation_id, build_id, expires_in=-1),
        "other automation": page_key(other_id, other_build),
        "build not this automation's": page_key(automation_id, other_build),
        "decision link": page_key(automation_id, build_id, action="approve"),
        "garbage": "garbage",
    }[case]
    page = httpx.get(f"{endpoint}/a/{target}", params={"k": key})
    assert page.status_code == 403, page.text
    assert "<form" not in page.text and "shutil" not in page.text
    pressed = httpx.post(f"{endpoint}/a/{target}/approve", data={"k": key, "build": str(build_id), "csrf": "1.x"})
    assert pressed.status_code == 403 and builder_status(operator, automation_id) == "awaiting_approval"


def test_approve_with_the_link_decides_through_the_operator_session(serve, operator, builder_conn, queries) -> None:
    endpoint = serve()
    automation_id, build_id = built(operator, builder_conn, queries)
    key = page_key(automation_id, build_id)
    page = httpx.get(f"{endpoint}/a/{automation_id}", params={"k": key})
    done = httpx.post(f"{endpoint}/a/{automation_id}/approve", data={"k": key, "build": str(build_id), "csrf": csrf_of(page.text)})
    assert done.status_code == 200, done.text
    assert "builder_status is now approved" in done.text and builder_status(operator, automation_id) == "approved"
    last = operator.execute("SELECT new_status, actor FROM builder_status_history WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
                            (automation_id,)).fetchone()
    assert last == {"new_status": "approved", "actor": "web-link"}
    assert "<form" not in done.text  # approved: nothing more to press
    again = httpx.post(f"{endpoint}/a/{automation_id}/reject", data={"k": key, "build": str(build_id), "csrf": csrf_of(page.text)})
    assert again.status_code == 409 and "cannot change from &#39;approved&#39;" in again.text
    assert builder_status(operator, automation_id) == "approved"


@pytest.mark.parametrize("csrf", [None, "", "garbage", "other build", "expired"])
def test_a_post_without_a_valid_csrf_token_changes_nothing(serve, operator, builder_conn, queries, csrf: str | None) -> None:
    endpoint = serve()
    automation_id, build_id = built(operator, builder_conn, queries)
    other_id, other_build = built(operator, builder_conn, queries, name="Other")
    if csrf == "other build":  # a valid token, but of another page
        csrf = csrf_of(httpx.get(f"{endpoint}/a/{other_id}").text)
    elif csrf == "expired":
        real = csrf_of(httpx.get(f"{endpoint}/a/{automation_id}").text)
        csrf = f"{int(time.time()) - 1}.{real.split('.', 1)[1]}"
    form = {"build": str(build_id)} | ({} if csrf is None else {"csrf": csrf})
    pressed = httpx.post(f"{endpoint}/a/{automation_id}/approve", data=form)
    assert pressed.status_code == 403 and "CSRF" in pressed.text
    assert builder_status(operator, automation_id) == "awaiting_approval"
    assert builder_status(operator, other_id) == "awaiting_approval"


def test_a_button_for_a_build_the_row_no_longer_points_at_changes_nothing(serve, operator, builder_conn, queries) -> None:
    endpoint = serve()
    automation_id, build_id = built(operator, builder_conn, queries)
    csrf = csrf_of(httpx.get(f"{endpoint}/a/{automation_id}").text)
    operator.execute("UPDATE automation_ideas SET builder_status = 'rejected' WHERE id = %s", (automation_id,))
    operator.execute("UPDATE automation_ideas SET builder_status = 'not_started' WHERE id = %s", (automation_id,))
    newer = builder_conn.execute(queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "w"}).fetchone()["build_id"]
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'building' WHERE id = %s", (automation_id,))
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'awaiting_approval' WHERE id = %s", (automation_id,))
    assert newer != build_id
    pressed = httpx.post(f"{endpoint}/a/{automation_id}/approve", data={"build": str(build_id), "csrf": csrf})
    assert pressed.status_code == 409 and f"no longer points at build {build_id}" in pressed.text
    assert builder_status(operator, automation_id) == "awaiting_approval"


def test_the_overview_needs_web_token_when_one_is_set(serve, operator, builder_conn, queries) -> None:
    endpoint = serve(WEB_TOKEN=TOKEN)
    automation_id, _ = built(operator, builder_conn, queries)
    refused = httpx.get(endpoint + "/")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Disk report" not in refused.text
    assert httpx.get(endpoint + "/", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert httpx.get(f"{endpoint}/a/{automation_id}").status_code == 401  # a page without a link: the same rule
    basic = "Basic " + base64.b64encode(f"alice:{TOKEN}".encode()).decode()
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"Authorization": basic}, {"X-Agent-Builder-Token": TOKEN}):
        shown = httpx.get(endpoint + "/", headers=headers)
        assert shown.status_code == 200 and "Awaiting approval" in shown.text and f"/a/{automation_id}" in shown.text
    with httpx.Client(base_url=endpoint) as browser:
        assert browser.post("/login", data={"token": "wrong"}).status_code == 401
        login = browser.post("/login", data={"token": TOKEN})
        assert login.status_code == 303 and "HttpOnly" in login.headers["Set-Cookie"] and "SameSite=Strict" in login.headers["Set-Cookie"]
        assert TOKEN not in login.headers["Set-Cookie"]  # the cookie holds a value derived from it, not the token
        assert "Secure" in login.headers["Set-Cookie"]  # APPROVAL_BASE_URL is https: the cookie goes over TLS only
        cookie = login.headers["Set-Cookie"].split(";", 1)[0]
        assert cookie.startswith(f"{COOKIE}=")
        assert httpx.get(endpoint + "/", headers={"Cookie": cookie}).status_code == 200
        assert httpx.get(endpoint + "/", headers={"Cookie": f"{COOKIE}=forged"}).status_code == 401


def test_without_web_token_the_overview_is_loopback_only(serve, operator, builder_conn, queries) -> None:
    endpoint = serve()
    built(operator, builder_conn, queries)
    assert httpx.get(endpoint + "/").status_code == 200
    proxied = httpx.get(endpoint + "/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403 and "WEB_TOKEN" in proxied.text
    rebound = httpx.get(endpoint + "/", headers={"Host": "attacker.example:8787"})  # DNS rebinding to 127.0.0.1
    assert rebound.status_code == 403 and "loopback Host" in rebound.text
    assert httpx.get(endpoint + "/", headers={"Host": "localhost"}).status_code == 200
    assert exposure_problem(settings(WEB_ADDR="0.0.0.0:8787")) is not None
    assert exposure_problem(settings(WEB_ADDR="0.0.0.0:8787", WEB_TOKEN=TOKEN)) is None
    assert exposure_problem(settings(WEB_ADDR="[::1]:8787")) is None
    with pytest.raises(WebSetupError, match="WEB_TOKEN"):
        ReviewServer(settings(WEB_ADDR="0.0.0.0:0"), "postgresql://unused@/x", None)  # type: ignore[arg-type]


def test_the_listener_refuses_to_start_with_an_open_overview(db_url, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_url, "APPROVAL_SECRET": SECRET, "WEB_ADDR": "0.0.0.0:0", "PATH": "/usr/bin:/bin",
           "AGENT_BUILDER_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "listener", "listen"], env=env, capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    assert done.returncode == 1
    assert "review page cannot start" in done.stderr and "WEB_TOKEN is not set" in done.stderr, done.stderr[-2000:]


def test_pages_escape_sandbox_and_model_output_and_show_no_secret(serve, operator, builder_conn, queries) -> None:
    endpoint = serve()
    hostile = f"<script>alert(1)</script> \x1b[31m {SECRET} </pre><img src=x onerror=alert(2)>"
    automation_id, build_id = built(operator, builder_conn, queries, name="<b>bold</b> name", task=f"spec {hostile}",
                                    files={"script.py": f"print('{hostile}')\n", "notes.txt": hostile},
                                    level_log=hostile)
    builder_conn.execute("UPDATE agent_builds SET overseer_reason = %s WHERE id = %s", (hostile, build_id))
    page = httpx.get(f"{endpoint}/a/{automation_id}")
    assert page.status_code == 200
    assert "<script>" not in page.text and "<img" not in page.text and "<b>bold" not in page.text
    assert "&lt;script&gt;" in page.text or "&lt;</span><span" in page.text
    assert SECRET not in page.text and "[redacted]" in page.text
    assert "\x1b" not in page.text and "\\x1b[31m" in page.text
    overview = httpx.get(endpoint + "/")
    assert "<b>bold" not in overview.text and "&lt;b&gt;bold" in overview.text


def test_the_diff_is_against_the_build_in_production(serve, operator, builder_conn, queries) -> None:
    endpoint = serve()
    automation_id, first, second = rebuilt_after_production(
        operator, builder_conn, queries, {"script.py": "print('one')\nprint('same')\n"})
    builder_conn.execute("UPDATE agent_builds SET files = %s, finished_at = now(), outcome = 'succeeded' WHERE id = %s",
                         (Jsonb({"script.py": "print('two')\nprint('same')\n", "extra.sh": "echo hi\n"}), second))
    page = httpx.get(f"{endpoint}/a/{automation_id}").text
    assert f"production (build {first})/script.py" in page and f"build {second}/script.py" in page
    assert "d-del\">-print(&#39;one&#39;)" in page and "d-add\">+print(&#39;two&#39;)" in page
    assert "d-add\">+echo hi" in page and "Nothing in production yet" not in page
    assert "d-add\">+print(&#39;same&#39;)" not in page  # an unchanged line is context


def test_assets_ship_in_the_package_and_answers_are_compressed(serve, operator, builder_conn, queries) -> None:
    endpoint = serve()
    automation_id, _ = built(operator, builder_conn, queries)
    css = httpx.get(endpoint + "/static/style.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css") and ".hl" in css.text
    assert "max-age" in css.headers["Cache-Control"]
    assert httpx.get(endpoint + "/static/style.css", headers={"If-None-Match": css.headers["ETag"]}).status_code == 304
    page = httpx.get(f"{endpoint}/a/{automation_id}", headers={"Accept-Encoding": "gzip"})
    assert page.headers.get("Content-Encoding") == "gzip" and page.status_code == 200 and "shutil" in page.text
    assert int(page.headers["Content-Length"]) < len(page.content) / 2
    assert httpx.get(endpoint + "/nothing-here").status_code == 404
    assert httpx.post(endpoint + "/anything-else").status_code == 403


def test_the_one_tap_links_still_work_on_the_same_server(serve, operator, builder_conn, queries) -> None:
    endpoint = serve(WEB_TOKEN=TOKEN)
    automation_id, build_id = built(operator, builder_conn, queries)
    token = sign(SECRET, Link("approve", automation_id, build_id, int(time.time() + 60), "n-one-tap"))
    assert httpx.post(f"{endpoint}/decide/{token}").status_code == 200
    assert builder_status(operator, automation_id) == "approved"
    # a review link is not a decision: /decide refuses it
    other_id, other_build = built(operator, builder_conn, queries, name="Other")
    assert httpx.post(f"{endpoint}/decide/{page_key(other_id, other_build)}").status_code == 403
    assert builder_status(operator, other_id) == "awaiting_approval"


def test_the_page_of_an_unknown_or_unbuilt_automation(serve, operator) -> None:
    endpoint = serve()
    assert httpx.get(f"{endpoint}/a/999999").status_code == 404
    automation_id = insert_idea(operator, status="idea")
    page = httpx.get(f"{endpoint}/a/{automation_id}")
    assert page.status_code == 200 and "no build yet" in page.text and "<form" not in page.text


def test_retry_of_a_failed_build_from_its_page(serve, operator, builder_conn, queries) -> None:
    endpoint = serve()
    automation_id, build_id = built(operator, builder_conn, queries)
    operator.execute("UPDATE automation_ideas SET builder_status = 'rejected' WHERE id = %s", (automation_id,))
    page = httpx.get(f"{endpoint}/a/{automation_id}").text
    assert 'id="retry"' in page and 'id="approve"' not in page
    done = httpx.post(f"{endpoint}/a/{automation_id}/retry", data={"build": str(build_id), "csrf": csrf_of(page)})
    assert done.status_code == 200 and builder_status(operator, automation_id) == "not_started"
    actor = operator.execute("SELECT actor FROM builder_status_history WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
                             (automation_id,)).fetchone()["actor"]
    assert actor == "web"


def test_live_refresh_needs_no_script(serve, operator, builder_conn, queries) -> None:
    endpoint = serve()
    automation_id, _ = built(operator, builder_conn, queries)
    for path in ("/", f"/a/{automation_id}"):
        still = httpx.get(endpoint + path).text
        live = httpx.get(endpoint + path, params={"live": "1"}).text
        assert 'http-equiv="refresh"' not in still and '<meta http-equiv="refresh" content="10">' in live
        assert "<script" not in live and "live: on" in live


def test_a_database_without_the_schema_is_one_line_not_a_dropped_connection(empty_db_url, queries) -> None:
    server = ReviewServer(settings(), empty_db_url, queries)
    server.start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.port}/")
        assert answer.status_code == 500 and "database error" in answer.text and "Traceback" not in answer.text
    finally:
        server.stop()


def test_the_overview_names_the_leading_listener(serve, db_url, tmp_path: Path) -> None:
    from tests.e2e.listeners import ListenerProcess, base_env, wait_until

    endpoint = serve()
    listener = ListenerProcess(base_env(db_url), tmp_path / "listener.log")
    try:
        listener.wait_for_log("leading: this listener runs the rescuer and the sweeps")
        wait_until(lambda: f"pid {listener.pid} <b>leader</b>" in httpx.get(endpoint + "/").text, 15,
                   "the leader on the overview", listener)
    finally:
        assert listener.stop() == 0
