"""How stages plug into the queue: handlers (the build, the deployment) and hooks, registered by
the wiring (listener.service). The queue imports no stage: it calls what it is given here.

- on_rejected(automation, build_id, image_id) -> what was done: clean up after a person rejected a
  tested build (the production deploy stage removes the build's sandbox image). Only the stage
  that made something to clean registers it: a custom DEPLOY_HANDLER gets no Docker clean-up.
- on_dead_attempt(installation, build_id): after the rescuer closed an attempt whose worker died
  (the sandbox stage removes the containers it left behind).
- approval_actions(automation_id, build_id) -> ntfy action buttons for the "ready for approval"
  notification (the approval stage's signed one-tap links).
- review_link(automation_id, build_id) -> the notification's click URL: the approval stage's signed
  link to the build's review page (listener.approval.web), or None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from listener.queue.records import Automation

if TYPE_CHECKING:
    from listener.queue.context import BuildHandler, DeployHandler

RejectedHook = Callable[[Automation, int, "str | None"], str]
DeadAttemptHook = Callable[[str, int], Any]
ActionsHook = Callable[[int, int], "tuple[dict[str, Any], ...]"]
LinkHook = Callable[[int, int], "str | None"]

NO_CLEANUP = "nothing to clean up (the deploy handler registers no clean-up)"


def no_actions(_automation_id: int, _build_id: int) -> tuple[dict[str, Any], ...]:
    return ()


def no_link(_automation_id: int, _build_id: int) -> str | None:
    return None


@dataclass(frozen=True)
class Hooks:
    on_rejected: RejectedHook | None = None
    on_dead_attempt: DeadAttemptHook | None = None
    approval_actions: ActionsHook = field(default=no_actions)
    review_link: LinkHook = field(default=no_link)

    def rejected(self, automation: Automation, build_id: int, image_id: str | None) -> str:
        """Run the clean-up of a rejected build, if a stage registered one; what was done."""
        if self.on_rejected is None:
            return NO_CLEANUP
        return self.on_rejected(automation, build_id, image_id)

    def dead_attempt(self, installation: str, build_id: int) -> None:
        if self.on_dead_attempt is not None:
            self.on_dead_attempt(installation, build_id)


@dataclass(frozen=True)
class Handlers:
    build: BuildHandler
    deploy: DeployHandler | None  # None: this listener does not deploy; approved rows wait
    hooks: Hooks = field(default_factory=Hooks)
