"""Every text the builder stores goes through its Redactor, against a real database: the store's
writes (results, errors, the overseer's reason, the acceptance checks, prompt and model output),
the rescuer's, what finish() makes of a failure, and what the recording endpoint saw when it
reaches a Level 4 log."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from listener.clients import ntfy as notify
from listener.queue.store import Store
from listener.config import Settings
from listener.queue.context import AttemptContext
from listener.queue.db import connect
from listener.queue.finish import Ending, run_attempt
from listener.queue.outcome import LevelResult, StepFailure
from listener.redact import REDACTED, Redactor
from listener.queue.rescue import Rescuer
from listener.queue.states import BuilderStatus as S, Move, Outcome
from listener.sandbox.checks import RunState, evaluate, summarize
from listener.sandbox.recorder import Recorder
from tests.conftest import ROLE_ID, SECRET_ID
from tests.fakes.ntfy_server import FakeNtfy
from tests.helpers import insert_idea

ENCODED = "".join(f"%{b:02X}" for b in SECRET_ID.encode())


@pytest.fixture
def settings(db_url: str, approle_dir: Path, fake_ntfy: FakeNtfy) -> Settings:
    return Settings.from_env({"DATABASE_URL": db_url, "VAULT_APPROLE_DIR": str(approle_dir), "NTFY_URL": fake_ntfy.url})


@pytest.fixture
def store(builder_conn, queries, settings: Settings) -> Store:
    return Store(builder_conn, queries, "redaction-test", Redactor.from_settings(settings, environ={}))


def everything(operator: psycopg.Connection[dict[str, Any]], automation_id: int) -> str:
    builds = operator.execute("SELECT b::text AS t FROM agent_builds b WHERE automation_id = %s", (automation_id,)).fetchall()
    results = operator.execute("SELECT r::text AS t FROM agent_test_results r WHERE automation_id = %s",
                               (automation_id,)).fetchall()
    return "\n".join(row["t"] for row in builds + results)


def test_every_field_an_attempt_stores_is_redacted(store: Store, operator) -> None:
    automation_id = insert_idea(operator)
    claim = store.claim_build(automation_id)
    assert claim is not None
    store.save(claim, prompt=f"task mentions {SECRET_ID}\r\n", model_output=f"print('{ROLE_ID}')\r\n\x1b[0m",
               overseer_reason=f"FAIL it prints {SECRET_ID} \x1b]0;title\x07",
               acceptance_check={"checks": [{"kind": "http_status", "url": f"http://x/{SECRET_ID}", "status": 200}]})
    store.record_result(claim, LevelResult(level=3, passed=False, log=f"out {SECRET_ID}\n\x00\x1b[31m {ENCODED}"))
    store.finish(claim, Move(S.QUEUED, S.FAILED, Outcome.FAILED, result=True), error=f"Level 3: {ROLE_ID}",
                 results=[LevelResult(level=0, passed=False, log=f"tb {SECRET_ID.upper()}")])
    row = operator.execute("SELECT prompt, model_output, overseer_reason, acceptance_check, error FROM agent_builds"
                           " WHERE id = %s", (claim.build_id,)).fetchone()
    assert row["prompt"] == f"task mentions {REDACTED}\r\n"  # code and prompts keep their characters
    assert row["model_output"] == f"print('{REDACTED}')\r\n\x1b[0m"
    assert row["overseer_reason"] == f"FAIL it prints {REDACTED} \\x1b]0;title\\x07"
    assert row["acceptance_check"]["checks"][0]["url"] == f"http://x/{REDACTED}"
    assert row["error"] == f"Level 3: {REDACTED}"
    logs = [r["execution_log"] for r in operator.execute(
        "SELECT execution_log FROM agent_test_results WHERE automation_id = %s ORDER BY id", (automation_id,))]
    assert logs == [f"out {REDACTED}\n\\x00\\x1b[31m {REDACTED}", f"tb {REDACTED}"]
    assert SECRET_ID not in everything(operator, automation_id) and ROLE_ID not in everything(operator, automation_id)


def test_what_the_recorder_saw_is_redacted_in_the_level_4_log(store: Store, operator) -> None:
    automation_id = insert_idea(operator)
    claim = store.claim_build(automation_id)
    assert claim is not None
    with Recorder(host="127.0.0.1") as recorder:
        token = recorder.open_run()
        base = recorder.url_for(token, "127.0.0.1")
        for path in (f"/exfil/{SECRET_ID}", f"/exfil/{ENCODED}?r={ROLE_ID}", "/x/%2573ecret-9a8b7c6d"):
            assert httpx.post(base + path, content=f"{SECRET_ID} {ROLE_ID}\x1b[2J".encode()).status_code == 200
        seen = recorder.requests_for(token)
        results = evaluate([{"kind": "http_request", "method": "POST", "path": "/never"}],
                           RunState(container=None, recorder=recorder, run_token=token, sandbox_database_url=None))
    assert SECRET_ID in results[0].detail or ENCODED in results[0].detail  # the raw detail does carry it
    recorded = "\n".join(f"{r.method} {r.path}?{r.query} {r.body_excerpt}" for r in seen)
    store.record_result(claim, LevelResult(level=4, passed=False, log=f"{summarize(results)}\n{recorded}"))
    [log] = [r["execution_log"] for r in operator.execute(
        "SELECT execution_log FROM agent_test_results WHERE automation_id = %s", (automation_id,))]
    assert f"POST /exfil/{REDACTED} (200)" in log and f"{REDACTED} {REDACTED}\\x1b[2J" in log
    assert SECRET_ID not in log and ROLE_ID not in log and ENCODED not in log and "%2573" not in log


def test_a_failure_stores_the_detail_and_notifies_only_the_builders_reason(store: Store, operator, settings,
                                                                             fake_ntfy: FakeNtfy) -> None:
    automation_id = insert_idea(operator, name="Leaky")
    claim = store.claim_build(automation_id)
    assert claim is not None
    notifier = notify.Notifier.from_settings(settings, redactor=store.redactor)
    ctx = AttemptContext(claim=claim, store=store, settings=settings, notifier=notifier, stop=threading.Event())

    def handler(context: AttemptContext) -> None:
        context.start_generation()
        raise StepFailure(level=3, step="level3", kind="level", message="Level 3 (smoke) failed: exit code 1 after 0.2 s",
                          detail=f"last output line: stolen {SECRET_ID}", log=f"raw output {SECRET_ID}")

    assert run_attempt(ctx, handler) is Ending.FAILED
    [log] = [r["execution_log"] for r in operator.execute(
        "SELECT execution_log FROM agent_test_results WHERE automation_id = %s", (automation_id,))]
    assert log == (f"step: level3\nLevel 3 (smoke) failed: exit code 1 after 0.2 s\nlast output line: stolen {REDACTED}"
                   f"\n\nraw output {REDACTED}")
    [message] = [m["message"] for m in fake_ntfy.published]
    assert message == ("[Agent Builder] FAIL — Leaky failed Level 3: Level 3 (smoke) failed: exit code 1 after 0.2 s\n"
                       f"`agent-builder show {automation_id}` has the rest")


def test_an_unexpected_error_is_redacted_before_it_is_clipped(store: Store, operator, settings,
                                                               fake_ntfy: FakeNtfy) -> None:
    automation_id = insert_idea(operator, name="Crashy")
    claim = store.claim_build(automation_id)
    assert claim is not None
    notifier = notify.Notifier.from_settings(settings, redactor=store.redactor)
    ctx = AttemptContext(claim=claim, store=store, settings=settings, notifier=notifier, stop=threading.Event())

    def handler(context: AttemptContext) -> None:
        context.start_generation()
        raise ValueError("x" * 460 + f" {SECRET_ID}\x1b[2J" * 3)

    assert run_attempt(ctx, handler) is Ending.FAILED
    stored = everything(operator, automation_id)
    assert SECRET_ID not in stored and "\x1b" not in stored and REDACTED in stored
    [message] = [m["message"] for m in fake_ntfy.published]
    first = message.split("\n")[0]
    assert first.startswith("[Agent Builder] ERROR — Crashy: ValueError: xxx") and first.endswith("…")
    assert SECRET_ID[:6] not in message and "\x1b" not in message


def test_the_rescuers_writes_are_redacted(operator, builder_conn, queries, settings, approle_dir: Path) -> None:
    automation_id = insert_idea(operator)
    claim = Store(builder_conn, queries, "w").claim_build(automation_id)
    assert claim is not None
    builder_conn.execute("UPDATE automation_ideas SET builder_status = 'building' WHERE id = %s", (automation_id,))
    builder_conn.execute("UPDATE agent_builds SET step = %s WHERE id = %s", (f"step-{SECRET_ID}", claim.build_id))
    builder_conn.execute(queries["unlock_attempt"], {"build_id": claim.build_id})
    redactor = Redactor.from_settings(settings, environ={})
    assert settings.database_url is not None
    with connect(settings.database_url, actor="builder-rescuer:test") as conn:
        notifier = notify.Notifier(None, "t", redactor=redactor)
        rescued = Rescuer(conn, queries, settings, notifier, redactor=redactor).sweep()
    assert [r.new_status for r in rescued] == ["failed"]
    error = operator.execute("SELECT error FROM agent_builds WHERE id = %s", (claim.build_id,)).fetchone()["error"]
    [log] = [r["execution_log"] for r in operator.execute(
        "SELECT execution_log FROM agent_test_results WHERE automation_id = %s", (automation_id,))]
    assert f"step-{REDACTED}" in error and f"step-{REDACTED}" in log
    assert SECRET_ID not in error + log
