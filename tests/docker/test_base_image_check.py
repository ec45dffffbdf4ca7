"""A build whose sandbox base image is not on the engine is released before Step 3: no model
call, no review, nothing failed, one PAUSED notification naming SANDBOX_BASE_IMAGE. Real Docker,
the real default pipeline, the fakes for Ollama, claude and ntfy."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.docker.test_end_to_end import ACCEPTANCE, MODEL_ANSWER, pipeline_env
from tests.e2e.listeners import ListenerProcess, query, wait_until
from tests.fakes.ntfy_server import FakeNtfy
from tests.helpers import installation, insert_idea, remove_installation_objects


def test_a_missing_base_image_releases_the_build_before_any_model_or_paid_call(
        db_url, operator, docker_client, base_image, fake_ollama, tmp_path: Path) -> None:
    import json

    fake_ollama.response_text = MODEL_ANSWER
    missing_repo = f"agent-builder-missing-{uuid.uuid4().hex[:12]}"  # no engine has it
    missing = f"{missing_repo}:latest"
    claude_log = tmp_path / "claude.jsonl"
    with FakeNtfy() as ntfy:
        env = pipeline_env(db_url, fake_ollama, ntfy.url, missing, tmp_path)
        env.update(RELEASE_BACKOFF_BASE_S="0.2", RELEASE_BACKOFF_MAX_S="0.5", POLL_INTERVAL_S="0.2")
        listener = ListenerProcess(env, tmp_path / "listener.log")
        tagged = False
        try:
            listener.wait_listening()
            automation_id = insert_idea(operator, name="Disk report", status="idea")
            operator.execute("UPDATE automation_ideas SET acceptance_check = %s::jsonb, status = 'ready_to_build'"
                             " WHERE id = %s", (json.dumps(ACCEPTANCE), automation_id))

            def released() -> list[dict]:
                return query(db_url, "SELECT outcome, step, error FROM agent_builds WHERE automation_id = %s"
                                     " AND outcome = 'released' ORDER BY id", (automation_id,))

            attempts = wait_until(lambda: len(released()) >= 3 and released(), 60, "three releases", listener)
            assert {a["step"] for a in attempts} == {"sandbox-image"}
            assert all(f"SANDBOX_BASE_IMAGE={missing} is not on the Docker engine" in a["error"] for a in attempts)
            assert query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                         (automation_id,))[0]["builder_status"] in ("not_started", "queued")  # never failed
            assert query(db_url, "SELECT count(*) AS n FROM agent_test_results WHERE automation_id = %s",
                         (automation_id,)) == [{"n": 0}]
            assert fake_ollama.requests_to("POST", "/api/generate") == []  # zero model calls
            assert [r for r in fake_ollama.requests if r.method != "GET"] == []
            assert not claude_log.exists() or claude_log.read_text() == ""  # zero reviews
            paused = [m for m in ntfy.published if "PAUSED" in m.get("message", "")]
            assert len(paused) == 1, paused  # once per outage, not once per release
            assert f"SANDBOX_BASE_IMAGE={missing}" in paused[0]["message"]
            assert f"docker pull {missing}, or set SANDBOX_BASE_IMAGE" in paused[0]["message"]
            assert [m for m in ntfy.published if "Building" in m.get("message", "")] == []

            # The image arrives: the next claim builds, and the outage is over.
            docker_client.images.get(base_image).tag(missing_repo, "latest")
            tagged = True
            wait_until(lambda: query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                                     (automation_id,))[0]["builder_status"] in ("awaiting_approval", "failed"),
                       180, "the build", listener)
            assert query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                         (automation_id,))[0]["builder_status"] == "awaiting_approval", listener.log()[-3000:]
            assert query(db_url, "SELECT cleared_at IS NOT NULL AS cleared FROM agent_builder_alerts"
                                 " WHERE name = 'sandbox-image'") == [{"cleared": True}]
            assert len(fake_ollama.requests_to("POST", "/api/generate")) == 1
        finally:
            assert listener.stop() == 0
            if tagged:
                docker_client.images.remove(missing, noprune=True)  # the tag this test made, not the image
    remove_installation_objects(docker_client, installation(db_url))
