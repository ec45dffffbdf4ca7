"""ntfy notifications: JSON publishing to the server root, a few quick retries, never an exception.

Everything sent passes through the Redactor (listener.redact) in send(): the title, the message,
the tags and the action buttons' labels and bodies (our own signed URLs are left as they are).
The message builders at the bottom produce the playbook's patterns word for word; failures end
with a line pointing at `agent-builder show <id>`, which has the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import httpx
from loguru import logger
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_exponential

from listener.config import Settings
from listener.queue.records import Automation
from listener.redact import Redactor

ERROR_CHARS = 500
TokenProvider = Callable[[], "str | None"]


@dataclass(frozen=True)
class Notification:
    title: str
    message: str
    tags: tuple[str, ...] = ()
    priority: int = 3
    actions: tuple[dict[str, Any], ...] = ()
    click: str | None = None


class _Retryable(Exception):
    """A failure worth another try: the network, a timeout, 429 or 5xx."""


class Notifier:
    """Publishes to ntfy. With no URL it only logs. send() returns whether ntfy accepted it.
    Every notification is redacted first (secrets out, control characters escaped)."""

    def __init__(
        self,
        url: str | None,
        topic: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        attempts: int = 3,
        backoff_s: float = 0.2,
        budget_s: float = 3.0,
        redactor: Redactor | None = None,
    ) -> None:
        self.url = url.rstrip("/") if url else None
        self.topic = topic
        self._token = token
        self._token_provider = token_provider
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.budget_s = budget_s
        self.redactor = redactor if redactor is not None else Redactor()

    @classmethod
    def from_settings(cls, settings: Settings, token_provider: TokenProvider | None = None,
                      redactor: Redactor | None = None) -> "Notifier":
        """NTFY_TOKEN wins over the provider (e.g. a Vault lookup) when both are set."""
        return cls(settings.ntfy_url, settings.ntfy_topic, token=settings.ntfy_token, token_provider=token_provider,
                   redactor=redactor)

    def clean(self, n: Notification) -> Notification:
        """The notification as it may leave: every text redacted. Action buttons keep their
        action, method and URL (ours: the signed one-tap links), the rest of them is redacted."""
        r = self.redactor
        actions = tuple({key: value if key in ("action", "url", "method", "clear") else r.redact_tree(value)
                         for key, value in action.items()} for action in n.actions)
        return replace(n, title=r.redact(n.title), message=r.redact(n.message),
                       tags=tuple(r.redact(tag) for tag in n.tags), actions=actions)

    def payload(self, n: Notification) -> dict[str, Any]:
        body: dict[str, Any] = {
            "topic": self.topic,
            "title": n.title,
            "message": n.message,
            "tags": list(n.tags),
            "priority": n.priority,
        }
        if n.actions:
            body["actions"] = [dict(action) for action in n.actions]
        if n.click:
            body["click"] = n.click
        return body

    def send(self, n: Notification) -> bool:
        n = self.clean(n)
        if self.url is None:
            logger.info("notification (NTFY_URL not set, not sent): {} | {}", n.title, n.message)
            return False
        body = self.payload(n)
        headers = {"Content-Type": "application/json"}
        token = self._resolve_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        deadline = time.monotonic() + self.budget_s
        try:
            for attempt in Retrying(
                stop=lambda state: self._should_stop(state.attempt_number, deadline),
                wait=wait_exponential(multiplier=self.backoff_s, max=max(self.backoff_s, 1.0)),
                retry=retry_if_exception_type(_Retryable),
                reraise=True,
            ):
                with attempt:
                    self._publish(body, headers, deadline)
        except _Retryable as exc:
            logger.warning("notification not sent after retries ({}): {}", exc, n.title)
            return False
        except _Rejected as exc:
            logger.warning("notification rejected by ntfy ({}): {}", exc, n.title)
            return False
        except RetryError as exc:  # defensive: reraise=True normally unwraps it
            logger.warning("notification not sent ({}): {}", exc, n.title)
            return False
        except Exception as exc:  # a notification must never break a build
            logger.warning("notification failed unexpectedly ({}: {}): {}", type(exc).__name__, exc, n.title)
            return False
        logger.info("notification sent: {}", n.title)
        return True

    def _publish(self, body: dict[str, Any], headers: dict[str, str], deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Rejected("out of time")
        try:
            response = httpx.post(self.url + "/", json=body, headers=headers, timeout=remaining)  # type: ignore[operator]
        except httpx.TimeoutException:
            raise _Retryable(f"ntfy at {self.url} did not answer within {remaining:.1f} s") from None
        except httpx.HTTPError as exc:
            raise _Retryable(f"cannot reach ntfy at {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"ntfy answered HTTP {response.status_code}: {_clip(response.text, 200)}")
        if response.status_code >= 300:
            raise _Rejected(f"HTTP {response.status_code}: {_clip(response.text, 200)}")

    def _should_stop(self, attempt_number: int, deadline: float) -> bool:
        """Stop after the last attempt, or when the next one could not start within the budget."""
        return attempt_number >= self.attempts or time.monotonic() + self.backoff_s >= deadline

    def _resolve_token(self) -> str | None:
        if self._token:
            return self._token
        if self._token_provider is None:
            return None
        try:
            return self._token_provider()
        except Exception as exc:  # the provider is someone else's code (Vault); publish without a token
            logger.warning("ntfy token provider failed, publishing without a token: {}: {}", type(exc).__name__, exc)
            return None


class _Rejected(Exception):
    """ntfy refused the message (4xx) or time ran out: retrying will not help."""


# -- the playbook's messages -----------------------------------------------------------------

PREFIX = "[Agent Builder]"


def build_started(a: Automation) -> Notification:
    return Notification(
        title=f"Building {a.label}",
        message=f"{PREFIX} Building {a.label} (id={a.id}, type={_type(a)})",
        tags=("hammer_and_wrench",),
        priority=2,
    )


def overseer_failed(a: Automation, reason: str) -> Notification:
    """`reason` is the model's text: the caller passes it through Redactor.one_line first."""
    return Notification(
        title=f"Overseer rejected {a.label}",
        message=f"{PREFIX} FAIL — Overseer rejected {a.label}: {_clip(reason)}{_show_hint(a)}",
        tags=("x", "overseer"),
        priority=4,
    )


def level_failed(a: Automation, level: int, error: str) -> Notification:
    """`error` is the builder's own one-line reason (StepFailure.message), never sandbox output."""
    return Notification(
        title=f"{a.label} failed Level {level}",
        message=f"{PREFIX} FAIL — {a.label} failed Level {level}: {_clip(error)}{_show_hint(a)}",
        tags=("x", f"level-{level}"),
        priority=4,
    )


def ready_for_approval(a: Automation, actions: tuple[dict[str, Any], ...] = (), click: str | None = None) -> Notification:
    """Step 7's title and body, then the READY pattern line; approve/reject buttons may be attached.
    The body says how to decide (ntfy has no replies): the CLI, the SQL UPDATE with this id, and the
    buttons when one-tap approval is on."""
    body = (
        f"All 4 test levels passed in sandbox. Automation id={a.id} ({_type(a)}) is ready for production "
        f"promotion.\n{how_to_decide(a.id, buttons=bool(actions))}"
    )
    return Notification(
        title=f"Agent Ready for Promotion — {a.label}",
        message=f"{body}\n\n{PREFIX} READY — {a.label} passed all tests, awaiting your approval",
        tags=("rocket",),
        priority=4,
        actions=actions,
        click=click,
    )


def how_to_decide(automation_id: int, *, buttons: bool) -> str:
    """The ways to approve or reject a tested build, for the READY message."""
    lines = [f"Approve: agent-builder approve {automation_id}",
             f"  or in SQL: UPDATE automation_ideas SET builder_status = 'approved' WHERE id = {automation_id};",
             f"Reject: agent-builder reject {automation_id}",
             f"  or in SQL: UPDATE automation_ideas SET builder_status = 'rejected' WHERE id = {automation_id};"]
    if buttons:
        lines.append("Or tap Approve or Reject below (the link works once).")
    lines.append(f"`agent-builder show {automation_id} --files` has the code, `agent-builder show {automation_id}` the tests.")
    return "\n".join(lines)


def unhandled_error(a: Automation, exception_text: str) -> Notification:
    return Notification(
        title=f"Agent Builder error — {a.label}",
        message=f"{PREFIX} ERROR — {a.label}: {_clip(exception_text)}{_show_hint(a)}",
        tags=("rotating_light",),
        priority=4,
    )


def deployed(a: Automation) -> Notification:
    return Notification(
        title=f"Deployed {a.label}",
        message=f"{PREFIX} DEPLOYED — {a.label} is running in production",
        tags=("white_check_mark",),
        priority=3,
    )


def _show_hint(a: Automation) -> str:
    return f"\n`agent-builder show {a.id}` has the rest"


def _type(a: Automation) -> str:
    return (a.type or "").strip() or "unknown"


def _clip(text: str, limit: int = ERROR_CHARS) -> str:
    """One line, at most `limit` characters."""
    flat = " ".join(str(text).split()) or "(no detail)"
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def not_claimed(automation_id: int, reason: str) -> Notification:
    """build-once --id found the row not claimable (the playbook's Step 1: stop, notify, exit)."""
    return Notification(
        title=f"Not built — automation {automation_id}",
        message=f"{PREFIX} SKIPPED — automation id={automation_id} was not claimed: {_clip(reason)}",
        tags=("pause_button",),
        priority=2,
    )


def rejected(a: Automation, cleanup: str) -> Notification:
    return Notification(
        title=f"Rejected {a.label}",
        message=f"{PREFIX} REJECTED — {a.label} (id={a.id}) was not deployed; {_clip(cleanup)}. "
                "Set builder_status = 'not_started' to build it again.",
        tags=("no_entry",),
        priority=2,
    )
