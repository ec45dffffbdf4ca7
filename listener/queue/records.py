"""Records that cross module boundaries: an automation row and a claimed attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from listener.queue.states import AttemptKind

AUTOMATION_TYPES = ("script", "claude_agent")


@dataclass(frozen=True)
class Automation:
    """The fields of an automation_ideas row the builder uses (NULLs stay None)."""

    id: int
    name: str | None
    type: str | None
    status: str | None
    priority: int | None
    task_description: str | None
    infrastructure_requirement: str | None
    builder_status: str | None
    acceptance_check: Any = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Automation":
        return cls(
            id=int(row["id"]),
            name=row.get("name"),
            type=row.get("type"),
            status=row.get("status"),
            priority=row.get("priority"),
            task_description=row.get("task_description"),
            infrastructure_requirement=row.get("infrastructure_requirement"),
            builder_status=row.get("builder_status"),
            acceptance_check=row.get("acceptance_check"),
        )

    @property
    def label(self) -> str:
        """A name fit for messages: the name, or a placeholder that says it is missing."""
        name = (self.name or "").strip()
        return name if name else f"automation {self.id} (no name)"


@dataclass(frozen=True)
class Claim:
    """One attempt on one automation: a build, or a deployment after approval."""

    automation: Automation
    build_id: int
    kind: AttemptKind  # a build, or a deployment after approval ('build' / 'deploy' are accepted too)
    worker: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", AttemptKind(self.kind))
