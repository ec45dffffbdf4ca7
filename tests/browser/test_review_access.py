"""The review pages in headless Chromium at 390 px, against a real database (no Docker): bad
links get 403 and no buttons, a press without the CSRF token changes nothing, the overview
refuses without WEB_TOKEN and opens with it; the diff against production as a phone shows it."""

from __future__ import annotations

import base64
from typing import Any, Iterator

import pytest
from psycopg.types.json import Jsonb

from listener.approval.web import ReviewServer
from listener.config import Settings
from tests.browser.conftest import fits_the_phone, screenshot
from tests.helpers import builder_status
from tests.integration.test_review_pages import SECRET, TOKEN, built, page_key
from tests.integration.test_review_pages import rebuilt_after_production as in_production_then_claimed

PRODUCTION = '''import json
import shutil


def main() -> None:
    usage = shutil.disk_usage("/")
    with open("/tmp/disk.json", "w") as handle:
        json.dump({"total": usage.total}, handle)


if __name__ == "__main__":
    main()
'''
NEXT = PRODUCTION.replace('json.dump({"total": usage.total}, handle)',
                          'json.dump({"total": usage.total, "free": usage.free}, handle)\n    print("disk usage written")')


@pytest.fixture
def endpoint(db_url, queries) -> Iterator[str]:
    settings = Settings.from_env({"APPROVAL_SECRET": SECRET, "APPROVAL_BASE_URL": "http://127.0.0.1", "WEB_ADDR": "127.0.0.1:0",
                                  "WEB_TOKEN": TOKEN})
    server = ReviewServer(settings, db_url, queries)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def rebuilt_after_production(operator: Any, builder_conn: Any, queries: Any) -> tuple[int, int]:
    """An automation whose first build is in production and whose second awaits approval."""
    automation_id, _first, second = in_production_then_claimed(operator, builder_conn, queries, {"script.py": PRODUCTION})
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'building' WHERE id = %s", (automation_id,))
    builder_conn.execute("UPDATE agent_builds SET files = %s, finished_at = now(), outcome = 'succeeded', step = 'done',"
                         " overseer_verdict = 'PASS', overseer_reason = 'PASS: writes the report, no secrets',"
                         " overseer_cost_usd = 0.0021, overseer_input_tokens = 742, overseer_output_tokens = 19,"
                         " overseer_model = 'claude-sonnet' WHERE id = %s", (Jsonb({"script.py": NEXT}), second))
    for level in (1, 2, 3, 4):
        builder_conn.execute("INSERT INTO agent_test_results (automation_id, test_level, status, execution_log, build_id, duration_ms)"
                             " VALUES (%s, %s, 'pass', %s, %s, 40)", (automation_id, level, f"level {level} passed", second))
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'awaiting_approval' WHERE id = %s", (automation_id,))
    return automation_id, second


def test_the_diff_against_production_on_a_phone(endpoint, phone, operator, builder_conn, queries) -> None:
    automation_id, build_id = rebuilt_after_production(operator, builder_conn, queries)
    page = phone.new_page()
    answer = page.goto(f"{endpoint}/a/{automation_id}?k={page_key(automation_id, build_id)}")
    assert answer is not None and answer.status == 200
    diff = page.locator("#diff")
    assert diff.locator(".d-add").filter(has_text='"free": usage.free').count() == 1
    assert diff.locator(".d-del").filter(has_text='json.dump({"total": usage.total}, handle)').count() == 1
    assert page.locator("#approve").is_visible() and page.locator("#reject").is_visible()
    assert fits_the_phone(page)
    page.locator("#diff").scroll_into_view_if_needed()
    screenshot(page, "review-page-diff.png")


@pytest.mark.parametrize("case", ["forged", "expired", "other build"])
def test_a_forged_expired_or_other_build_link_gets_403_and_no_buttons(endpoint, phone, operator, builder_conn, queries,
                                                                       case: str) -> None:
    automation_id, build_id = built(operator, builder_conn, queries)
    other_id, other_build = built(operator, builder_conn, queries, name="Other")
    key = {"forged": page_key(automation_id, build_id, secret="a-secret-that-is-not-ours-42"),
           "expired": page_key(automation_id, build_id, expires_in=-5),
           "other build": page_key(other_id, other_build)}[case]
    page = phone.new_page()
    answer = page.goto(f"{endpoint}/a/{automation_id}?k={key}")
    assert answer is not None and answer.status == 403
    assert page.locator("button").count() == 0 and page.locator("form").count() == 0
    assert "shutil" not in page.content()
    assert builder_status(operator, automation_id) == "awaiting_approval"


def test_a_press_without_the_csrf_token_changes_nothing(endpoint, phone, operator, builder_conn, queries) -> None:
    automation_id, build_id = built(operator, builder_conn, queries)
    page = phone.new_page()
    page.goto(f"{endpoint}/a/{automation_id}?k={page_key(automation_id, build_id)}")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(input => input.remove())")
    with page.expect_navigation():
        page.locator("#approve").tap()
    assert "CSRF" in page.locator("#notice").inner_text()
    assert builder_status(operator, automation_id) == "awaiting_approval"
    # and a token of another page does not do either
    other_id, other_build = built(operator, builder_conn, queries, name="Other")
    other = phone.new_page()
    other.goto(f"{endpoint}/a/{other_id}?k={page_key(other_id, other_build)}")
    foreign = other.locator("input[name=csrf]").first.get_attribute("value")
    page.goto(f"{endpoint}/a/{automation_id}?k={page_key(automation_id, build_id)}")
    page.evaluate("token => document.querySelectorAll('input[name=csrf]').forEach(input => input.value = token)", foreign)
    with page.expect_navigation():
        page.locator("#approve").tap()
    assert "CSRF" in page.locator("#notice").inner_text()
    assert builder_status(operator, automation_id) == "awaiting_approval"
    assert builder_status(operator, other_id) == "awaiting_approval"


def test_the_overview_refuses_without_web_token_and_opens_with_it(endpoint, browser, phone, operator, builder_conn,
                                                                  queries) -> None:
    automation_id, _ = built(operator, builder_conn, queries)
    page = phone.new_page()
    refused = page.goto(f"{endpoint}/")
    assert refused is not None and refused.status == 401
    assert page.locator("#awaiting").count() == 0 and "Disk report" not in page.content()
    page.goto(f"{endpoint}/login")
    page.fill("#token", "not-the-web-token")
    with page.expect_navigation():
        page.locator("button[type=submit]").tap()
    assert "not the WEB_TOKEN" in page.content()
    page.fill("#token", TOKEN)
    with page.expect_navigation(url=f"{endpoint}/"):
        page.locator("button[type=submit]").tap()
    assert page.locator(f"#awaiting a[href='/a/{automation_id}']").is_visible()
    # basic auth, as a reverse proxy or a browser's prompt sends it
    basic = "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()
    context = browser.new_context(viewport={"width": 390, "height": 844}, extra_http_headers={"Authorization": basic})
    try:
        shown = context.new_page().goto(f"{endpoint}/")
        assert shown is not None and shown.status == 200
    finally:
        context.close()
