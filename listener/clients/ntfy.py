"""ntfy notifications: JSON publishing to the server root, a few quick retries, never an exception.

Everything sent passes through the Redactor (listener.redact) in send(): the title, the message,
the tags and the action buttons' labels and bodies (our own signed URLs are left as they are).
The messages themselves (the playbook's patterns) are built in listener.notices, which the queue
uses without loading this transport.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

import httpx
from loguru import logger
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_exponential

from listener.config import Settings
from listener.notices import (ERROR_CHARS, PREFIX, Notification, build_started, deployed, how_to_decide, level_failed,
                              not_claimed, overseer_failed, ready_for_approval, rejected, unhandled_error)
from listener.notices import clip as _clip
from listener.redact import Redactor

__all__ = ["ERROR_CHARS", "PREFIX", "Notification", "Notifier", "build_started", "deployed", "how_to_decide", "level_failed",
           "not_claimed", "overseer_failed", "ready_for_approval", "rejected", "unhandled_error"]
TokenProvider = Callable[[], "str | None"]


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

    @property
    def delivers(self) -> bool:
        return self.url is not None

    def clean(self, n: Notification) -> Notification:
        """The notification as it may leave: every text redacted. Action buttons keep their
        action, method and URL (ours: the signed one-tap links), the rest of them is redacted."""
        r = self.redactor.snapshot()  # one look at the AppRole files for the whole notification
        actions = tuple({key: value if key in ("action", "url", "method", "clear") else r.redact_tree(value)
                         for key, value in action.items()} for action in n.actions)
        return replace(n, title=r.redact(n.title), message=r.redact(n.message),
                       tags=tuple(r.redact(tag) for tag in n.tags), actions=actions)

    def _logged(self, n: Notification) -> str:
        cleaned = self.clean(n)
        return f"{cleaned.title} | {cleaned.message}"

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
        if self.url is None:  # redacted only when the line is written (lazy: not below LOG_LEVEL)
            logger.opt(lazy=True).info("notification (NTFY_URL not set, not sent): {}", lambda: self._logged(n))
            return False
        n = self.clean(n)
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
