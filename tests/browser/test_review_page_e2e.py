"""End to end in a browser: a listener (a real subprocess, as a builder login) builds an idea with
the fakes (Ollama, `claude`, ntfy) and real Docker to awaiting_approval; the READY notification's
click opens that build's page in headless Chromium at 390 px, which shows the code, the diff
against production and the four levels; pressing Approve there deploys it (the row becomes
deployed). The overview needs WEB_TOKEN. Screenshots of both pages come from this run."""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.browser.conftest import PHONE, fits_the_phone, screenshot
from tests.docker.test_end_to_end import pipeline_env
from tests.docker.test_roles_loop import ACCEPTANCE, SCRIPT, status
from tests.e2e.listeners import ListenerProcess, wait_until
from tests.fakes.ntfy_server import FakeNtfy
from tests.helpers import installation, remove_installation_objects

pytestmark = pytest.mark.docker
SECRET = "approval-secret-for-the-browser-test"
TOKEN = "web-token-for-the-browser-test-01"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ready_click(ntfy: FakeNtfy, name: str) -> str | None:
    for message in ntfy.published:
        if f"READY — {name}" in message.get("message", "") and message.get("click"):
            return str(message["click"])
    return None


def test_approve_from_the_phone_deploys_the_build_it_shows(db_url, logins, docker_client, base_image, fake_ollama, browser,
                                                           tmp_path: Path) -> None:
    fake_ollama.response_text = SCRIPT
    listener_login = logins.make("builder", label="listener")
    person = logins.make("operator", label="alice")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with FakeNtfy() as ntfy:
        env = pipeline_env(listener_login.url, fake_ollama, ntfy.url, base_image, tmp_path)
        env.update({"DEPLOY_HANDLER": "listener.deploy.production:deploy", "PROD_NETWORK": "none", "PROD_VERIFY_S": "1",
                    "PROD_AGENTS_DIR": str(tmp_path / "agents"), "SANDBOX_NETWORK": "none",
                    "APPROVAL_SECRET": SECRET, "APPROVAL_BASE_URL": base, "WEB_ADDR": f"127.0.0.1:{port}",
                    "WEB_TOKEN": TOKEN, "OPERATOR_DATABASE_URL": person.url})
        listener = ListenerProcess(env, tmp_path / "listener.log")
        try:
            listener.wait_listening()
            listener.wait_for_log("review pages on")
            with psycopg.connect(person.url, autocommit=True) as alice:
                automation_id = alice.execute(
                    "INSERT INTO automation_ideas (name, type, status, priority, task_description, infrastructure_requirement,"
                    " acceptance_check) VALUES ('Disk report', 'script', 'ready_to_build', 1, %s, 'none', %s) RETURNING id",
                    ("Write the disk usage of / as JSON to /tmp/disk.json", Jsonb(ACCEPTANCE))).fetchone()[0]
            wait_until(lambda: status(db_url, automation_id) in ("awaiting_approval", "failed"), 180, "the build", listener)
            assert status(db_url, automation_id) == "awaiting_approval", listener.log()[-3000:]
            click = wait_until(lambda: ready_click(ntfy, "Disk report"), 15, "the READY notification's click", listener)
            assert click.startswith(f"{base}/a/{automation_id}?k=")

            phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
            try:
                page = phone.new_page()
                answer = page.goto(click)
                assert answer is not None and answer.status == 200
                assert "shutil.disk_usage" in page.locator("#files").inner_text()  # the code
                assert page.locator("#files .hl").count() == 1  # highlighted
                assert "Nothing in production yet" in page.locator("#diff").inner_text()  # the diff against production
                for level in (1, 2, 3, 4):  # the four levels, each with its log
                    assert page.locator(f"#level-{level} .badge").inner_text() == "PASS", level
                    assert page.locator(f"#level-{level} pre.log").count() == 1, level
                assert "after the run" in page.locator("#checks").inner_text()  # before/after evaluations
                assert page.locator("#overseer .badge").inner_text() == "PASS"
                assert fits_the_phone(page)
                screenshot(page, "review-page.png")
                overview_with_token(browser, base, automation_id, waiting=True)

                with page.expect_navigation():
                    page.locator("#approve").tap()
                assert "builder_status is now approved" in page.locator("#notice").inner_text()
                assert page.locator("#approve").count() == 0
                wait_until(lambda: status(db_url, automation_id) in ("deployed", "failed"), 90, "the deployment", listener)
                assert status(db_url, automation_id) == "deployed", listener.log()[-3000:]
                page.reload()
                assert page.locator("#summary .badge").inner_text() == "deployed"
                assert page.locator("button").count() == 0
                assert "Identical to the version in production" in page.locator("#diff").inner_text()

                overview = phone.new_page()
                refused = overview.goto(f"{base}/")
                assert refused is not None and refused.status == 401 and "Disk report" not in overview.content()
            finally:
                phone.close()

            overview_with_token(browser, base, automation_id, waiting=False)
            history = _history(db_url, automation_id)
            decided = [row for row in history if row[0] == "approved"]
            assert decided == [("approved", person.name, "web-link")]
        finally:
            listener.stop()
            remove_installation_objects(docker_client, installation(db_url))


def overview_with_token(browser: Any, base: str, automation_id: int, *, waiting: bool) -> None:
    """The overview as an operator with WEB_TOKEN (basic auth, as a proxy would send it) sees it."""
    basic = "Basic " + base64.b64encode(f"alice:{TOKEN}".encode()).decode()
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                  extra_http_headers={"Authorization": basic})
    try:
        page = context.new_page()
        answer = page.goto(f"{base}/")
        assert answer is not None and answer.status == 200
        assert page.locator("#listeners li").count() == 1  # this listener, live
        assert fits_the_phone(page)
        if waiting:
            assert page.locator(f"#awaiting a[href='/a/{automation_id}']").is_visible()
            assert "waiting" in page.locator("#awaiting").inner_text()
            screenshot(page, "overview.png")
        else:
            assert "1 deployed" in page.locator("#counts").inner_text()
            assert page.locator("#awaiting li").count() == 0
    finally:
        context.close()


def _history(db_url: str, automation_id: int) -> list[Any]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT new_status, db_user, actor FROM builder_status_history WHERE automation_id = %s ORDER BY id",
                            (automation_id,)).fetchall()
