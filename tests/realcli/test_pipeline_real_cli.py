"""The build pipeline with the real claude CLI as its overseer (stand-in Messages API), a real
PostgreSQL, the fake Ollama and the fake ntfy: the free login check before Step 3, and what one
review records on the attempt."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from listener.queue.store import Store
from listener.config import Settings
from listener.queue.context import AttemptContext
from listener.queue.finish import Ending, run_attempt
from listener.build.ollama import OllamaClient
from listener.build.overseer import Overseer
from listener.build.pipeline import Pipeline
from listener.service import make_notifier
from tests.fakes.messages_api import FakeMessagesAPI
from tests.helpers import builder_status, insert_idea
from tests.integration.test_pipeline import GOOD_SCRIPT, SandboxRecorder


@pytest.fixture
def build(db_url: str, builder_conn, queries, fake_ollama, fake_ntfy, claude_bin: str, listener_environ: dict[str, str],
          scratch: Path) -> Callable[..., tuple[Ending, AttemptContext, SandboxRecorder]]:
    def run(**overrides: str) -> tuple[Ending, AttemptContext, SandboxRecorder]:
        environ = {**listener_environ, "DATABASE_URL": db_url, "OLLAMA_URL": fake_ollama.url,
                   "NTFY_URL": fake_ntfy.url, "CLAUDE_CMD": f"{claude_bin} -p", "CLAUDE_TIMEOUT_S": "30",
                   "OLLAMA_NUM_CTX": "4096", "RELEASE_BACKOFF_BASE_S": "0", **overrides}
        environ = {k: v for k, v in environ.items() if v != "<unset>"}
        settings = Settings.from_env(environ)
        store = Store(builder_conn, queries, "test-worker")
        claim = store.claim_next_build()
        assert claim is not None
        ctx = AttemptContext(claim=claim, store=store, settings=settings, notifier=make_notifier(settings),
                             stop=threading.Event())
        sandbox = SandboxRecorder()
        overseer = Overseer(cmd=settings.claude_cmd, timeout_s=settings.claude_timeout_s, environ=environ,
                            scratch_root=scratch)
        pipeline = Pipeline(ollama=OllamaClient.from_settings(settings), sandbox=sandbox, overseer=overseer)
        return run_attempt(ctx, pipeline.run), ctx, sandbox

    return run


def attempt(operator, automation_id: int) -> dict[str, Any]:
    return operator.execute("SELECT * FROM agent_builds WHERE automation_id = %s ORDER BY id DESC LIMIT 1",
                            (automation_id,)).fetchone()


def test_a_build_is_reviewed_once_and_records_what_the_api_reported(build, operator, fake_ollama,
                                                                     stand_in: FakeMessagesAPI) -> None:
    automation_id = insert_idea(operator, name="Disk report")
    fake_ollama.queue_texts(GOOD_SCRIPT)
    ending, _, sandbox = build()
    assert ending is Ending.SUCCEEDED and len(sandbox.calls) == 1
    assert builder_status(operator, automation_id) == "awaiting_approval"
    [request] = stand_in.message_requests
    assert request.body.get("tools") in (None, []) and "shutil.disk_usage" in request.messages_text
    row = attempt(operator, automation_id)
    assert row["overseer_verdict"] == "PASS"
    assert row["overseer_input_tokens"] == request.input_tokens and row["overseer_output_tokens"] > 0
    assert row["overseer_model"] == request.body["model"] and float(row["overseer_cost_usd"]) > 0


def test_not_logged_in_is_released_before_step_3_with_one_notification(build, operator, fake_ollama, fake_ntfy,
                                                                         stand_in: FakeMessagesAPI) -> None:
    first, second = insert_idea(operator, name="First", priority=1), insert_idea(operator, name="Second", priority=2)
    for _ in range(3):
        ending, ctx, sandbox = build(ANTHROPIC_API_KEY="<unset>")
        assert ending is Ending.RELEASED and ctx.status == "queued" and sandbox.calls == []
    assert {builder_status(operator, first), builder_status(operator, second)} == {"not_started"}
    assert fake_ollama.requests_to("POST", "/api/generate") == []  # no generation spent
    assert stand_in.requests == []  # nothing asked of the API either
    [published] = fake_ntfy.published
    assert published["title"] == "Overseer not logged in"
    assert "overseer not logged in: claude auth status reports loggedIn: false" in published["message"]
