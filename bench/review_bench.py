"""The review page's weight and speed: `python bench/review_bench.py [--requests N]`.

An embedded PostgreSQL with 200 automations (50 awaiting approval, 100 deployed, 50 failed), one of
them rebuilt after production with a 150-line script, four level logs of 4 KB each and a diff.
Prints, for the overview and that automation's page: server time per request (median, p90, over N
sequential requests on one keep-alive-less client), the bytes sent (plain and gzip), and, when
Playwright and a system Chromium are installed, the load time of each page in Chromium at 390 px
on an emulated slow link (400 kbit/s down, 400 ms round trip: "slow 3G")."""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from listener.approval.links import review_link  # noqa: E402
from listener.approval.web import ReviewServer  # noqa: E402
from listener.config import Settings  # noqa: E402
from listener.queue.db import Queries, connect  # noqa: E402
from tests.pg import test_server  # noqa: E402

SECRET = "review-bench-secret-0123456789"
TOKEN = "review-bench-web-token-0123456"


def script(lines: int, variant: str) -> str:
    body = [f"# report {variant}", "import json", "import shutil", "", "", "def main() -> None:"]
    body += [f"    value_{i} = shutil.disk_usage('/').free // {i + 1}  # step {i} {variant if i % 40 == 0 else ''}"
             for i in range(lines - 10)]
    body += ["    print(json.dumps({'done': True}))", "", "", "if __name__ == '__main__':", "    main()"]
    return "\n".join(body) + "\n"


def seed(url: str, queries: Queries) -> tuple[int, int]:
    with connect(url, actor="bench") as conn:
        for i in range(200):
            automation_id = conn.execute(
                "INSERT INTO automation_ideas (name, type, status, task_description) VALUES (%s, 'script', 'ready_to_build',"
                " 'Write the disk usage as JSON') RETURNING id", (f"Automation {i}",)).fetchone()["id"]
            build_id = conn.execute(queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "bench"}).fetchone()["build_id"]
            conn.execute("UPDATE automation_ideas SET builder_status = 'building' WHERE id = %s", (automation_id,))
            outcome = "failed" if i % 4 == 3 else "succeeded"
            conn.execute("UPDATE agent_builds SET files = %s, finished_at = now(), outcome = %s, error = %s, step = 'done',"
                         " overseer_verdict = 'PASS', overseer_reason = 'fine', overseer_cost_usd = 0.002,"
                         " overseer_input_tokens = 750, overseer_output_tokens = 19, overseer_model = 'm' WHERE id = %s",
                         (Jsonb({"script.py": script(150, "old")}), outcome, "Level 3: exit 1" if outcome == "failed" else None,
                          build_id))
            for level in (1, 2, 3, 4):
                conn.execute("INSERT INTO agent_test_results (automation_id, test_level, status, execution_log, build_id, duration_ms)"
                             " VALUES (%s, %s, 'pass', %s, %s, 50)", (automation_id, level, ("log line of the level\n" * 190)[:4096],
                                                                        build_id))
            conn.execute("UPDATE automation_ideas SET builder_status = %s WHERE id = %s",
                         ("failed" if outcome == "failed" else "awaiting_approval", automation_id))
            if outcome == "succeeded" and i % 4 != 0:
                conn.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
                conn.execute("INSERT INTO agent_builds (automation_id, kind, worker, step, source_build_id, finished_at, outcome)"
                             " VALUES (%s, 'deploy', 'bench', 'done', %s, now(), 'succeeded')", (automation_id, build_id))
                with conn.transaction():
                    conn.execute("SET LOCAL agent_builder.override = 'on'")
                    conn.execute("UPDATE automation_ideas SET builder_status = 'deployed' WHERE id = %s", (automation_id,))
        # automation 2 (deployed) is rebuilt: its second build awaits approval, with a diff
        target = 2
        with conn.transaction():
            conn.execute("SET LOCAL agent_builder.override = 'on'")
            conn.execute("UPDATE automation_ideas SET builder_status = 'not_started' WHERE id = %s", (target,))
        build_id = conn.execute(queries["claim"], {"kind": "build", "automation_id": target, "worker": "bench"}).fetchone()["build_id"]
        conn.execute("UPDATE automation_ideas SET builder_status = 'building' WHERE id = %s", (target,))
        conn.execute("UPDATE agent_builds SET files = %s, finished_at = now(), outcome = 'succeeded', step = 'done',"
                     " overseer_verdict = 'PASS', overseer_reason = 'fine', overseer_cost_usd = 0.002 WHERE id = %s",
                     (Jsonb({"script.py": script(150, "new")}), build_id))
        for level in (1, 2, 3, 4):
            conn.execute("INSERT INTO agent_test_results (automation_id, test_level, status, execution_log, build_id, duration_ms)"
                         " VALUES (%s, %s, 'pass', %s, %s, 50)", (target, level, ("log line of the level\n" * 190)[:4096], build_id))
        conn.execute("UPDATE automation_ideas SET builder_status = 'awaiting_approval' WHERE id = %s", (target,))
        return target, build_id


def timed(client: httpx.Client, url: str, requests: int, headers: dict[str, str]) -> tuple[list[float], int, int]:
    times = []
    plain = zipped = 0
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(url, headers=headers)
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text[:300]
        plain = len(answer.content)
    zipped = int(client.get(url, headers={**headers, "Accept-Encoding": "gzip"}).headers["Content-Length"])
    return times, plain, zipped


def slow_link_load(url: str, headers: dict[str, str]) -> float | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 390, "height": 844}, extra_http_headers=headers)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 400,
                                                      "downloadThroughput": 400 * 1000 / 8, "uploadThroughput": 400 * 1000 / 8})
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        started = time.perf_counter()
        page.goto(url, wait_until="load")
        elapsed = time.perf_counter() - started
        browser.close()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with test_server() as server:
        server.create_template()
        url = server.new_database()
        queries = Queries.load()
        target, build_id = seed(url, queries)
        settings = Settings.from_env({"APPROVAL_SECRET": SECRET, "APPROVAL_BASE_URL": "http://127.0.0.1", "WEB_ADDR": "127.0.0.1:0",
                                      "WEB_TOKEN": TOKEN})
        review = ReviewServer(settings, url, queries)
        review.start()
        base = f"http://127.0.0.1:{review.port}"
        link = base + (review_link(settings, target, build_id) or "").removeprefix("http://127.0.0.1")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            print(f"{'page':<24} {'median ms':>9} {'p90 ms':>7} {'bytes':>8} {'gzip':>7} {'slow link load s':>16}")
            with httpx.Client() as client:
                for name, page_url, headers in (("overview (200 rows)", base + "/", auth),
                                                ("automation (diff)", link, {})):
                    times, plain, zipped = timed(client, page_url, args.requests, headers)
                    times.sort()
                    slow = slow_link_load(page_url, headers)
                    print(f"{name:<24} {statistics.median(times) * 1000:>9.1f} {times[int(len(times) * 0.9) - 1] * 1000:>7.1f} "
                          f"{plain:>8} {zipped:>7} {('%.2f' % slow) if slow is not None else 'n/a':>16}")
                css = client.get(base + "/static/style.css", headers={"Accept-Encoding": "gzip"})
                print(f"{'style.css (cached 1 d)':<24} {'':>9} {'':>7} {len(css.content):>8} {css.headers['Content-Length']:>7}")
        finally:
            review.stop()


if __name__ == "__main__":
    main()
