"""The listener as users run it: real subprocesses, real PostgreSQL, signals, killed connections."""

from __future__ import annotations

import random
import re
from pathlib import Path

import psycopg
import pytest

from tests.e2e.listeners import Listeners, base_env, query, run_cli, statuses, wait_until
from tests.fakes.ntfy_server import FakeNtfy
from tests.helpers import insert_idea

pytestmark = pytest.mark.slow


@pytest.fixture
def ntfy():
    with FakeNtfy() as server:
        yield server


@pytest.fixture
def start(db_url: str, tmp_path: Path, ntfy):
    listeners = Listeners(db_url, tmp_path, NTFY_URL=ntfy.url, FAKE_HOLD_DIR=str(tmp_path))
    yield listeners.start
    listeners.close()


def status_of(db_url: str, automation_id: int) -> str:
    return statuses(db_url)[automation_id]


def test_notification_wakes_an_idle_listener(db_url, operator, start) -> None:
    listener = start(POLL_INTERVAL_S="300")
    listener.wait_listening()
    automation_id = insert_idea(operator)
    wait_until(lambda: status_of(db_url, automation_id) == "awaiting_approval", 10, "the build", listener)
    assert listener.stop() == 0


def test_rows_ready_before_start_are_built(db_url, operator, start) -> None:
    ids = [insert_idea(operator, priority=p) for p in (3, 1, None)]
    listener = start()
    wait_until(lambda: all(status_of(db_url, i) == "awaiting_approval" for i in ids), 15, "the catch-up", listener)
    order = [r["automation_id"] for r in query(db_url, "SELECT automation_id FROM agent_builds ORDER BY id")]
    assert order == [ids[1], ids[0], ids[2]]
    assert listener.stop() == 0


def test_three_listeners_build_200_rows_exactly_once_in_priority_order(db_url, operator, start) -> None:
    listeners = [start(BUILDER_CONCURRENCY="2") for _ in range(3)]
    for listener in listeners:
        listener.wait_listening()
    rng = random.Random(3)
    with operator.transaction():
        for _ in range(200):
            insert_idea(operator, priority=rng.choice([None, 1, 2, 3, 4, 5]), type=rng.choice(["script", "claude_agent"]))
    wait_until(lambda: set(statuses(db_url).values()) == {"awaiting_approval"}, 60, "200 builds", listeners[0])

    attempts = query(db_url, "SELECT b.id, b.automation_id, b.worker, a.priority FROM agent_builds b"
                             " JOIN automation_ideas a ON a.id = b.automation_id ORDER BY b.id")
    assert len(attempts) == 200
    assert len({a["automation_id"] for a in attempts}) == 200
    workers = {a["worker"] for a in attempts}
    assert len(workers) == 3, "every listener took part"
    for worker in workers:
        keys = [(a["priority"] is None, a["priority"] or 0, a["automation_id"]) for a in attempts if a["worker"] == worker]
        assert keys == sorted(keys), f"{worker} claimed out of priority order"
    for listener in listeners:
        assert listener.stop() == 0


def test_terminated_connections_reconnect_and_catch_up(db_url, operator, start) -> None:
    listener = start(POLL_INTERVAL_S="300")
    listener.wait_listening()
    killed = operator.execute(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE 'agent-builder%%'"
    ).fetchone()["n"]
    assert killed >= 3  # listen, rescuer, worker
    automation_id = insert_idea(operator)  # its NOTIFY may reach nobody: the catch-up must find it
    wait_until(lambda: status_of(db_url, automation_id) == "awaiting_approval", 20, "the build after reconnect", listener)
    listener.wait_for_log("listening again")
    assert listener.stop() == 0


def test_sigkill_before_step_3_puts_the_row_back_and_it_is_built_again(db_url, operator, start, tmp_path) -> None:
    doomed = start(BUILD_HANDLER="tests.fakes.handlers:hold", FAKE_HOLD_PHASE="before")
    doomed.wait_listening()
    automation_id = insert_idea(operator)
    wait_until(lambda: (tmp_path / f"{automation_id}.holding").exists(), 10, "the held build", doomed)
    assert status_of(db_url, automation_id) == "queued"
    doomed.kill()

    survivor = start()
    wait_until(lambda: status_of(db_url, automation_id) == "awaiting_approval", 15, "the rebuild", survivor)
    attempts = query(db_url, "SELECT outcome, step FROM agent_builds WHERE automation_id = %s ORDER BY id", (automation_id,))
    assert [a["outcome"] for a in attempts] == ["crashed", "succeeded"]
    assert attempts[0]["step"] == "prompt"
    assert query(db_url, "SELECT * FROM agent_test_results WHERE automation_id = %s", (automation_id,)) == []
    assert survivor.stop() == 0


def test_sigkill_after_step_3_fails_the_row_with_a_level_0_result(db_url, operator, start, tmp_path, ntfy) -> None:
    doomed = start(BUILD_HANDLER="tests.fakes.handlers:hold", FAKE_HOLD_PHASE="after")
    doomed.wait_listening()
    automation_id = insert_idea(operator, name="Nightly backup check")
    wait_until(lambda: (tmp_path / f"{automation_id}.holding").exists(), 10, "the held build", doomed)
    assert status_of(db_url, automation_id) == "building"
    doomed.kill()

    survivor = start()
    wait_until(lambda: status_of(db_url, automation_id) == "failed", 10, "the rescue", survivor)
    results = query(db_url, "SELECT test_level, status, execution_log FROM agent_test_results WHERE automation_id = %s",
                    (automation_id,))
    assert len(results) == 1 and results[0]["test_level"] == 0 and results[0]["status"] == "fail"
    assert "died during step 'sandbox'" in results[0]["execution_log"]
    wait_until(lambda: any("ERROR — Nightly backup check" in m.get("message", "") for m in ntfy.published), 5,
               "the ERROR notification", survivor)
    assert query(db_url, "SELECT outcome FROM agent_builds WHERE automation_id = %s", (automation_id,)) == [{"outcome": "crashed"}]
    assert survivor.stop() == 0


def test_one_listener_leads_and_another_takes_over_the_rescue_when_it_is_killed(db_url, operator, start, tmp_path) -> None:
    leader = start(BUILD_HANDLER="tests.fakes.handlers:hold", FAKE_HOLD_PHASE="after", RESCUE_INTERVAL_S="1")
    leader.wait_for_log("leading: this listener runs the rescuer and the sweeps")
    automation_id = insert_idea(operator, name="Disk usage report")
    wait_until(lambda: (tmp_path / f"{automation_id}.holding").exists(), 10, "the held build", leader)
    assert status_of(db_url, automation_id) == "building"
    follower = start(RESCUE_INTERVAL_S="1")
    follower.wait_for_log("following: another listener leads")  # it tried the lock and did not get it
    assert "leading:" not in follower.log()
    leader.kill()

    wait_until(lambda: status_of(db_url, automation_id) == "failed", 15, "the rescue by the new leader", follower)
    # The rescuer logs after its transaction commits, so the line may trail the status by a moment.
    follower.wait_for_log("rescued: attempt died in step sandbox")  # the follower's own rescuer did it
    assert "leading: this listener runs the rescuer and the sweeps" in follower.log()
    assert query(db_url, "SELECT outcome FROM agent_builds WHERE automation_id = %s", (automation_id,)) == [{"outcome": "crashed"}]
    assert follower.stop() == 0


def test_sigterm_releases_a_build_that_has_not_reached_step_3(db_url, operator, start, tmp_path) -> None:
    listener = start(BUILD_HANDLER="tests.fakes.handlers:hold", FAKE_HOLD_PHASE="before")
    listener.wait_listening()
    automation_id = insert_idea(operator)
    wait_until(lambda: (tmp_path / f"{automation_id}.holding").exists(), 10, "the held build", listener)
    assert listener.stop() == 0
    assert status_of(db_url, automation_id) == "not_started"
    assert query(db_url, "SELECT outcome FROM agent_builds WHERE automation_id = %s", (automation_id,)) == [{"outcome": "stopped"}]
    assert query(db_url, "SELECT builder_retry_at FROM automation_ideas WHERE id = %s", (automation_id,)) == [{"builder_retry_at": None}]


def test_sigterm_gives_a_running_build_its_grace_then_treats_it_as_died(db_url, operator, start, tmp_path) -> None:
    listener = start(BUILD_HANDLER="tests.fakes.handlers:hold", FAKE_HOLD_PHASE="after", SHUTDOWN_GRACE_S="1")
    listener.wait_listening()
    automation_id = insert_idea(operator)
    wait_until(lambda: (tmp_path / f"{automation_id}.holding").exists(), 10, "the held build", listener)
    assert listener.stop(timeout=15) == 0
    assert status_of(db_url, automation_id) == "failed"
    log = query(db_url, "SELECT execution_log FROM agent_test_results WHERE automation_id = %s", (automation_id,))
    assert "SHUTDOWN_GRACE_S" in log[0]["execution_log"]
    assert query(db_url, "SELECT count(*) AS n FROM agent_builds WHERE finished_at IS NULL") == [{"n": 0}]


def test_sigterm_lets_a_build_finish_within_its_grace(db_url, operator, start, tmp_path) -> None:
    listener = start(BUILD_HANDLER="tests.fakes.handlers:hold", FAKE_HOLD_PHASE="after", FAKE_HOLD_S="1.5",
                     SHUTDOWN_GRACE_S="20")
    listener.wait_listening()
    automation_id = insert_idea(operator)
    wait_until(lambda: (tmp_path / f"{automation_id}.holding").exists(), 10, "the held build", listener)
    assert listener.stop() == 0
    assert status_of(db_url, automation_id) == "awaiting_approval"


def test_transient_failure_before_step_3_is_released_and_retried(db_url, operator, start) -> None:
    listener = start(BUILD_HANDLER="tests.fakes.handlers:transient_then_pass", POLL_INTERVAL_S="0.5")
    automation_id = insert_idea(operator)
    wait_until(lambda: status_of(db_url, automation_id) == "awaiting_approval", 15, "the retry", listener)
    outcomes = [r["outcome"] for r in query(db_url, "SELECT outcome FROM agent_builds WHERE automation_id = %s ORDER BY id", (automation_id,))]
    assert outcomes == ["released", "succeeded"]
    assert listener.stop() == 0


def test_approval_notification_hands_over_to_the_deploy_handler(db_url, operator, start) -> None:
    listener = start()
    automation_id = insert_idea(operator)
    wait_until(lambda: status_of(db_url, automation_id) == "awaiting_approval", 10, "the build", listener)
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    wait_until(lambda: status_of(db_url, automation_id) == "deployed", 10, "the deployment", listener)
    assert query(db_url, "SELECT status FROM automation_ideas WHERE id = %s", (automation_id,)) == [{"status": "deployed"}]
    assert listener.stop() == 0


# -- build-once -----------------------------------------------------------------------------------

def test_build_once_with_nothing_to_do_exits_0(db_url, ntfy) -> None:
    done = run_cli(base_env(db_url, NTFY_URL=ntfy.url), "build-once")
    assert done.returncode == 0, done.stderr
    assert "nothing to build" in done.stdout


def test_build_once_builds_the_next_row_only(db_url, operator, ntfy) -> None:
    first, second = insert_idea(operator, priority=1), insert_idea(operator, priority=2)
    done = run_cli(base_env(db_url, NTFY_URL=ntfy.url), "build-once")
    assert done.returncode == 0, done.stderr
    assert statuses(db_url) == {first: "awaiting_approval", second: "not_started"}


def test_build_once_exits_1_when_the_build_fails(db_url, operator, ntfy) -> None:
    automation_id = insert_idea(operator, name="Cert expiry")
    done = run_cli(base_env(db_url, NTFY_URL=ntfy.url, BUILD_HANDLER="tests.fakes.handlers:fail_level_2"), "build-once")
    assert done.returncode == 1, done.stderr
    assert status_of(db_url, automation_id) == "failed"
    levels = query(db_url, "SELECT test_level, status FROM agent_test_results WHERE automation_id = %s ORDER BY id", (automation_id,))
    assert levels == [{"test_level": 1, "status": "pass"}, {"test_level": 2, "status": "fail"}]
    assert any(m["message"].startswith("[Agent Builder] FAIL — Cert expiry failed Level 2:") for m in ntfy.published)


def test_build_once_unhandled_exception_is_a_level_0_failure(db_url, operator, ntfy) -> None:
    automation_id = insert_idea(operator)
    done = run_cli(base_env(db_url, NTFY_URL=ntfy.url, BUILD_HANDLER="tests.fakes.handlers:crash"), "build-once")
    assert done.returncode == 1
    rows = query(db_url, "SELECT test_level, execution_log FROM agent_test_results WHERE automation_id = %s", (automation_id,))
    assert rows[0]["test_level"] == 0 and "ZeroDivisionError" in rows[0]["execution_log"]


def test_build_once_by_id(db_url, operator, ntfy) -> None:
    low, high = insert_idea(operator, priority=5), insert_idea(operator, priority=1)
    done = run_cli(base_env(db_url, NTFY_URL=ntfy.url), "build-once", "--id", str(low))
    assert done.returncode == 0, done.stderr
    assert statuses(db_url) == {low: "awaiting_approval", high: "not_started"}


def test_build_once_by_id_not_claimable_exits_3_and_notifies(db_url, operator, ntfy, builder_conn, queries) -> None:
    taken = insert_idea(operator)
    builder_conn.execute(queries["claim"], {"kind": "build", "automation_id": None, "worker": "someone-else"})
    not_ready = insert_idea(operator, status="idea")
    for automation_id, reason in ((taken, "another builder has it"), (not_ready, "it is not ready"), (999999, "no automation with id")):
        done = run_cli(base_env(db_url, NTFY_URL=ntfy.url), "build-once", "--id", str(automation_id))
        assert done.returncode == 3, done.stderr
        assert reason in done.stdout
    assert len(ntfy.published) == 3
    assert status_of(db_url, taken) == "queued"


def test_build_once_rejects_a_bad_handler_clearly(db_url) -> None:
    done = run_cli(base_env(db_url, BUILD_HANDLER="tests.fakes.nothing_here:build"), "build-once")
    assert done.returncode == 1
    assert "BUILD_HANDLER='tests.fakes.nothing_here:build': cannot import" in done.stderr


def test_rejection_is_cleaned_up_once_and_notified(db_url, operator, start, ntfy) -> None:
    listener = start()
    automation_id = insert_idea(operator, name="Log shipper")
    wait_until(lambda: status_of(db_url, automation_id) == "awaiting_approval", 10, "the build", listener)
    operator.execute("UPDATE automation_ideas SET builder_status = 'rejected' WHERE id = %s", (automation_id,))
    wait_until(lambda: any(m["message"].startswith("[Agent Builder] REJECTED — Log shipper") for m in ntfy.published),
               10, "the REJECTED notification", listener)
    cleaned = query(db_url, "SELECT cleaned_at FROM agent_builds WHERE automation_id = %s", (automation_id,))
    assert cleaned[0]["cleaned_at"] is not None
    assert status_of(db_url, automation_id) == "rejected"
    assert listener.stop() == 0
    rejected = [m for m in ntfy.published if "REJECTED" in m["message"]]
    assert len(rejected) == 1


def test_metrics_and_health_endpoint(db_url, operator, start) -> None:
    import socket

    import httpx

    from tests.metrics_text import types, value

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = start(METRICS_ADDR=f"127.0.0.1:{port}")
    listener.wait_listening()
    automation_id = insert_idea(operator)
    insert_idea(operator, status="idea")
    wait_until(lambda: status_of(db_url, automation_id) == "awaiting_approval", 10, "the build", listener)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    # the worker counts the attempt just after it committed the status the wait above saw
    def counted() -> str | None:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        return text if value(text, "agent_builder_attempts_total", kind="build", outcome="succeeded") == 1 else None

    text = wait_until(counted, 5, "the attempt in the metrics", listener)
    assert value(text, "agent_builder_step_seconds_count", step="generate") == 1
    assert value(text, "agent_builder_queue_depth", queue="buildable") == 0
    assert value(text, "agent_builder_listener_reconnects_total") == 0 and value(text, "agent_builder_up") == 1
    assert value(text, "agent_builder_overseer_calls_total") == 0
    assert types(text)["agent_builder_attempts_total"] == "counter"
    assert listener.stop() == 0


def rounds_after(listener, reason: str) -> int:
    """Dispatch rounds (claims) the listener ran for this kind of wake-up, from its debug log."""
    return len(re.findall(rf"dispatch round \d+ after [^:]*\b{reason}\b", listener.log()))


def test_a_row_locked_at_the_moment_of_the_claim_is_looked_at_again(db_url, operator, start) -> None:
    """SKIP LOCKED passes over a row someone holds; the notification must not be wasted on it.

    The claim the notification causes is seen passing over the row (its dispatch round is logged)
    while the row is still locked; then the lock goes, and with POLL_INTERVAL_S=300 and no further
    notification only the recheck can build it. Fails with the recheck off (RECHECK_S = 0 in
    listener/queue/listen.py)."""
    for _ in range(3):  # a try is undecided only when the machine stalled for longer than the recheck delay
        automation_id = insert_idea(operator)
        with psycopg.connect(db_url) as holder:  # an operator's transaction, open while the claims run
            holder.execute("SELECT id FROM automation_ideas WHERE id = %s FOR UPDATE", (automation_id,))
            listener = start(POLL_INTERVAL_S="300")
            listener.wait_listening()  # its catch-up claim passes over the locked row
            operator.execute("SELECT pg_notify('agent_builder_ready', %s)", (str(automation_id),))
            wait_until(lambda: rounds_after(listener, "build"), 10, "the claim this notification caused", listener)
            decided = rounds_after(listener, "recheck") == 0  # the recheck's claim is still to come
        if decided:
            break
        assert listener.stop() == 0
    assert decided, "three times the recheck ran before the lock could be released"
    wait_until(lambda: status_of(db_url, automation_id) == "awaiting_approval", 10, "the second look", listener)
    assert rounds_after(listener, "recheck") == 1
    assert listener.stop() == 0


def test_json_logs_carry_the_automation_id_on_every_attempt_line(db_url, operator, ntfy) -> None:
    import json

    automation_id = insert_idea(operator)
    done = run_cli(base_env(db_url, NTFY_URL=ntfy.url, LOG_FORMAT="json", LOG_LEVEL="INFO"), "build-once")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line)["record"] for line in done.stderr.splitlines() if line.strip()]
    attempt_lines = [r for r in records if "step" in r["message"] or "attempt" in r["message"]]
    assert attempt_lines and all(r["extra"].get("automation_id") == automation_id for r in attempt_lines)


def test_the_web_and_metrics_servers_of_a_listener_bind_loopback_unless_told(db_url, start) -> None:
    import re

    import httpx

    one_tap = {"APPROVAL_SECRET": "a-long-approval-secret", "APPROVAL_BASE_URL": "https://ab.lan"}
    listener = start(WEB_ADDR=":0", METRICS_ADDR=":0", **one_tap)  # bare ports: the host stays 127.0.0.1
    listener.wait_for_log("one-tap approval endpoint on")
    listener.wait_for_log("metrics on")
    log = listener.log()
    approval = re.search(r"one-tap approval endpoint on (\S+):(\d+) ", log)
    metrics = re.search(r"metrics on http://(\S+):(\d+)/metrics", log)
    assert approval and metrics, log[-3000:]
    assert approval.group(1) == "127.0.0.1" and metrics.group(1) == "127.0.0.1"
    assert httpx.get(f"http://127.0.0.1:{metrics.group(2)}/healthz", timeout=5).status_code in (200, 503)
    assert httpx.post(f"http://127.0.0.1:{approval.group(2)}/decide/garbage", timeout=5).status_code == 403
    assert "listens on" not in log  # nothing to warn about
    # one-tap on and the fake topic readable by anyone: the start-up checks warn, and it starts anyway
    assert re.search(r"WARNING.*check ntfy: .*anyone who can read the topic can approve \(fix: protect the topic", log)
    assert listener.stop() == 0

    # every interface needs WEB_TOKEN (the review page's overview); with it, it starts and warns
    exposed = start(WEB_ADDR="0.0.0.0:0", WEB_TOKEN="a-long-web-token-value", **one_tap)
    exposed.wait_for_log("one-tap approval endpoint on 0.0.0.0:")
    assert re.search(r"WARNING.*the approvals endpoint listens on 0\.0\.0\.0:\d+, every interface", exposed.log())
    assert exposed.stop() == 0


def test_an_ntfy_that_does_not_answer_holds_no_build(db_url, operator, start, ntfy) -> None:
    """The workers hand their notifications to the outbox: while ntfy sits on the first READY, the
    one worker builds the next row. The held request is answered only once that second build is
    awaiting approval; a worker that sent it itself would have given up on ntfy first (3 s budget)."""
    import threading

    from tests.fakes.http_fake import Reply

    second: dict[str, int] = {}
    answered = threading.Event()

    def held(_request) -> Reply:
        try:
            wait_until(lambda: "id" in second and status_of(db_url, second["id"]) == "awaiting_approval", 20,
                       "the second build while ntfy holds the first READY")
        finally:
            answered.set()
        return Reply(200, {"id": "held", "event": "message", "topic": "agent-builder"})

    ntfy.script("POST", "/", held)
    listener = start(BUILDER_CONCURRENCY="1")
    listener.wait_listening()
    insert_idea(operator, name="First")
    wait_until(lambda: len(ntfy.requests_to("POST", "/")) == 1, 10, "the first READY in ntfy", listener)
    second["id"] = insert_idea(operator, name="Second")
    assert answered.wait(25)
    wait_until(lambda: any("Second" in m.get("title", "") for m in ntfy.published), 10, "the second READY", listener)
    log = listener.log()
    assert "notification sent: Agent Ready for Promotion — First" in log
    assert "not sent" not in log
    assert listener.stop() == 0
