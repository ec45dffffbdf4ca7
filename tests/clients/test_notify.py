"""Notifier against a fake ntfy server, and the playbook's message patterns."""

from __future__ import annotations

import time

import pytest

from listener.config import Settings
from listener.clients.ntfy import (
    Notification,
    Notifier,
    build_started,
    deployed,
    level_failed,
    overseer_failed,
    ready_for_approval,
    unhandled_error,
)
from listener.queue.records import Automation
from tests.fakes.http_fake import Reply, closed_port_url
from tests.fakes.ntfy_server import FakeNtfy

NOTE = Notification(title="Hello", message="World", tags=("tada",), priority=4)
AUTOMATION = Automation(
    id=7,
    name="Nightly backup",
    type="script",
    status="ready_to_build",
    priority=1,
    task_description="Back up the DB",
    infrastructure_requirement="postgres",
    builder_status="building",
)
NAMELESS = Automation(
    id=8,
    name=None,
    type=None,
    status="ready_to_build",
    priority=None,
    task_description="x",
    infrastructure_requirement=None,
    builder_status="building",
)


def notifier(url: str | None, **options: object) -> Notifier:
    settings: dict[str, object] = {"attempts": 3, "backoff_s": 0.05, "budget_s": 3.0}
    settings.update(options)
    return Notifier(url, "agent-builder", **settings)  # type: ignore[arg-type]


def test_send_publishes_json_to_the_server_root(fake_ntfy: FakeNtfy) -> None:
    assert notifier(fake_ntfy.url).send(NOTE) is True

    [request] = fake_ntfy.requests
    assert (request.method, request.path) == ("POST", "/")
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert request.json == {"topic": "agent-builder", "title": "Hello", "message": "World", "tags": ["tada"], "priority": 4}


def test_actions_and_click_are_sent_when_present(fake_ntfy: FakeNtfy) -> None:
    action = {"action": "http", "label": "Approve", "url": "https://builder.example/approve/7", "method": "POST"}
    note = Notification("t", "m", actions=(action,), click="https://builder.example/7")
    assert notifier(fake_ntfy.url).send(note) is True

    [body] = fake_ntfy.published
    assert body["actions"] == [action]
    assert body["click"] == "https://builder.example/7"


def test_a_configured_token_is_sent_as_bearer() -> None:
    with FakeNtfy(required_token="tk_secret") as fake:
        assert notifier(fake.url, token="tk_secret").send(NOTE) is True
        assert fake.requests[0].headers["authorization"] == "Bearer tk_secret"


def test_a_wrong_token_is_not_retried_and_returns_false() -> None:
    with FakeNtfy(required_token="tk_secret") as fake:
        assert notifier(fake.url, token="tk_wrong").send(NOTE) is False
        assert len(fake.requests) == 1


def test_the_token_provider_is_called_lazily_at_send() -> None:
    calls: list[int] = []

    def provider() -> str:
        calls.append(1)
        return "tk_lazy"

    with FakeNtfy(required_token="tk_lazy") as fake:
        sender = notifier(fake.url, token_provider=provider)
        assert calls == []
        assert sender.send(NOTE) is True
        assert calls == [1]
        assert fake.requests[0].headers["authorization"] == "Bearer tk_lazy"


def test_a_failing_token_provider_is_logged_and_the_message_goes_without_a_token(
    fake_ntfy: FakeNtfy, log_lines: list[str]
) -> None:
    def provider() -> str:
        raise RuntimeError("vault is sealed")

    assert notifier(fake_ntfy.url, token_provider=provider).send(NOTE) is True
    assert "authorization" not in fake_ntfy.requests[0].headers
    assert any("token provider failed" in line and "vault is sealed" in line for line in log_lines)


def test_without_a_url_the_notification_is_only_logged(log_lines: list[str]) -> None:
    assert notifier(None).send(NOTE) is False
    assert any("Hello" in line and "World" in line for line in log_lines)


def test_a_server_error_is_retried(fake_ntfy: FakeNtfy) -> None:
    fake_ntfy.script("POST", "/", Reply(500, {"code": 50001, "http": 500, "error": "internal"}))
    assert notifier(fake_ntfy.url).send(NOTE) is True
    assert len(fake_ntfy.requests) == 2


def test_a_server_that_keeps_failing_gives_up_quickly(fake_ntfy: FakeNtfy, log_lines: list[str]) -> None:
    fake_ntfy.script("POST", "/", *[Reply(503, "down")] * 10)
    started = time.monotonic()
    assert notifier(fake_ntfy.url).send(NOTE) is False
    assert time.monotonic() - started < 3
    assert len(fake_ntfy.requests) == 3
    assert any("not sent" in line and "503" in line for line in log_lines)


def test_an_unreachable_server_returns_false() -> None:
    started = time.monotonic()
    assert notifier(closed_port_url()).send(NOTE) is False
    assert time.monotonic() - started < 3


def test_a_hung_server_does_not_block_past_the_budget(fake_ntfy: FakeNtfy) -> None:
    fake_ntfy.script("POST", "/", *[Reply(200, {}, delay_s=5)] * 3)
    started = time.monotonic()
    assert notifier(fake_ntfy.url, budget_s=1.0).send(NOTE) is False
    assert time.monotonic() - started < 2


def test_from_settings_uses_the_ntfy_settings() -> None:
    with FakeNtfy(required_token="tk_env") as fake:
        settings = Settings.from_env({"NTFY_URL": fake.url, "NTFY_TOPIC": "builds", "NTFY_TOKEN": "tk_env"})
        assert Notifier.from_settings(settings).send(NOTE) is True
        assert fake.published[0]["topic"] == "builds"


# -- message builders --------------------------------------------------------------------------


def test_build_started_pattern() -> None:
    n = build_started(AUTOMATION)
    assert n.message == "[Agent Builder] Building Nightly backup (id=7, type=script)"


def test_overseer_failed_pattern() -> None:
    n = overseer_failed(AUTOMATION, "The code hardcodes a password.")
    assert n.message == ("[Agent Builder] FAIL — Overseer rejected Nightly backup: The code hardcodes a password.\n"
                         "`agent-builder show 7` has the rest")
    assert n.priority == 4


def test_level_failed_pattern() -> None:
    n = level_failed(AUTOMATION, 3, "exit code 1")
    assert n.message == "[Agent Builder] FAIL — Nightly backup failed Level 3: exit code 1\n`agent-builder show 7` has the rest"
    assert n.priority == 4


def test_ready_for_approval_has_step_7_title_and_body_and_the_ready_line() -> None:
    n = ready_for_approval(AUTOMATION)
    assert n.title == "Agent Ready for Promotion — Nightly backup"
    assert "All 4 test levels passed in sandbox. Automation id=7 (script) is ready for production promotion.\n" in n.message
    assert "[Agent Builder] READY — Nightly backup passed all tests, awaiting your approval" in n.message
    assert n.priority == 4
    assert "rocket" in n.tags


def test_ready_says_how_to_approve_never_reply() -> None:
    """ntfy has no reply: the READY message names the CLI, the SQL with the id, and the buttons when on."""
    plain = ready_for_approval(AUTOMATION)
    assert "Reply" not in plain.message and "reply" not in plain.message
    assert "Approve: agent-builder approve 7\n" in plain.message
    assert "UPDATE automation_ideas SET builder_status = 'approved' WHERE id = 7;" in plain.message
    assert "Reject: agent-builder reject 7\n" in plain.message
    assert "UPDATE automation_ideas SET builder_status = 'rejected' WHERE id = 7;" in plain.message
    assert "tap Approve" not in plain.message and plain.actions == ()
    buttons = ({"action": "http", "label": "Approve", "url": "https://ab.lan/decide/x", "method": "POST"},)
    one_tap = ready_for_approval(AUTOMATION, actions=buttons)
    assert "Or tap Approve or Reject below (the link works once)." in one_tap.message and one_tap.actions == buttons
    assert "agent-builder approve 7" in one_tap.message  # the other ways stay


def test_unhandled_error_pattern() -> None:
    n = unhandled_error(AUTOMATION, "KeyError: 'x'")
    assert n.message == "[Agent Builder] ERROR — Nightly backup: KeyError: 'x'\n`agent-builder show 7` has the rest"
    assert n.priority == 4


def test_deployed_message() -> None:
    assert deployed(AUTOMATION).message == "[Agent Builder] DEPLOYED — Nightly backup is running in production"


def test_a_missing_name_never_shows_as_none() -> None:
    messages = [
        build_started(NAMELESS),
        overseer_failed(NAMELESS, "r"),
        level_failed(NAMELESS, 1, "e"),
        ready_for_approval(NAMELESS),
        unhandled_error(NAMELESS, "e"),
        deployed(NAMELESS),
    ]
    for n in messages:
        assert "None" not in n.title + n.message
        assert "automation 8 (no name)" in n.message
    assert "type=unknown" in build_started(NAMELESS).message


@pytest.mark.parametrize("build", [lambda a, t: overseer_failed(a, t), lambda a, t: level_failed(a, 2, t), unhandled_error])
def test_error_text_is_bounded(build: object) -> None:
    n = build(AUTOMATION, "Traceback\n" + "x" * 5000)  # type: ignore[operator]
    first, hint = n.message.split("\n")  # the reason on one line, then the pointer to `show`
    assert len(first) < 600 and first.endswith("…")
    assert hint == "`agent-builder show 7` has the rest"


def test_what_is_published_or_logged_is_redacted(fake_ntfy: FakeNtfy, log_lines: list[str]) -> None:
    from listener.redact import Redactor, Secret

    redactor = Redactor(fixed=(Secret("secret-9a8b7c6d", "test"),))
    action = {"action": "http", "label": "Approve secret-9a8b7c6d", "url": "https://builder.example/decide/t", "method": "POST"}
    note = Notification("title secret-9a8b7c6d", "a \x1b[2J secret-9a8b7c6d", actions=(action,))
    assert notifier(fake_ntfy.url, redactor=redactor).send(note) is True
    [body] = fake_ntfy.published
    assert body["title"] == "title [redacted]" and body["message"] == "a \\x1b[2J [redacted]"
    assert body["actions"] == [{**action, "label": "Approve [redacted]"}]
    assert notifier(None, redactor=redactor).send(note) is False
    assert not any("secret-9a8b7c6d" in line for line in log_lines)
    assert any("title [redacted] | a \\x1b[2J [redacted]" in line for line in log_lines)
