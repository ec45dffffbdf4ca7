"""The notifications of the builder: the playbook's patterns word for word (failures end with a
line pointing at `agent-builder show <id>`, which has the rest), and what sends them.

No transport here: listener.clients.ntfy publishes them (redacting every text first). The queue
builds and hands them on through the `Notifier` protocol without loading any HTTP client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from listener.queue.records import Automation
from listener.redact import Redactor

ERROR_CHARS = 500


@dataclass(frozen=True)
class Notification:
    title: str
    message: str
    tags: tuple[str, ...] = ()
    priority: int = 3
    actions: tuple[dict[str, Any], ...] = ()
    click: str | None = None
    # The attempt whose ending this announces: a listener's outbox (listener.queue.outbox) sends it
    # only once a durable commit has seen that ending. Not part of the message.
    after_attempt: int | None = None


class Notifier(Protocol):
    """What sends notifications (listener.clients.ntfy.Notifier): never raises, says whether it was sent."""

    redactor: Redactor

    @property
    def delivers(self) -> bool:
        """False when notifications only go to the log (no NTFY_URL): nothing leaves to be confirmed."""
        ...

    def send(self, n: Notification) -> bool: ...


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
        message=f"{PREFIX} FAIL — Overseer rejected {a.label}: {clip(reason)}{_show_hint(a)}",
        tags=("x", "overseer"),
        priority=4,
    )


def level_failed(a: Automation, level: int, error: str) -> Notification:
    """`error` is the builder's own one-line reason (StepFailure.message), never sandbox output."""
    return Notification(
        title=f"{a.label} failed Level {level}",
        message=f"{PREFIX} FAIL — {a.label} failed Level {level}: {clip(error)}{_show_hint(a)}",
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
        message=f"{PREFIX} ERROR — {a.label}: {clip(exception_text)}{_show_hint(a)}",
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


def clip(text: str, limit: int = ERROR_CHARS) -> str:
    """One line, at most `limit` characters."""
    flat = " ".join(str(text).split()) or "(no detail)"
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def not_claimed(automation_id: int, reason: str) -> Notification:
    """build-once --id found the row not claimable (the playbook's Step 1: stop, notify, exit)."""
    return Notification(
        title=f"Not built — automation {automation_id}",
        message=f"{PREFIX} SKIPPED — automation id={automation_id} was not claimed: {clip(reason)}",
        tags=("pause_button",),
        priority=2,
    )


def rejected(a: Automation, cleanup: str) -> Notification:
    return Notification(
        title=f"Rejected {a.label}",
        message=f"{PREFIX} REJECTED — {a.label} (id={a.id}) was not deployed; {clip(cleanup)}. "
                "Set builder_status = 'not_started' to build it again.",
        tags=("no_entry",),
        priority=2,
    )
