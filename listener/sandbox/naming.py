"""Names and labels of sandbox images and containers, safe for any automation name."""

from __future__ import annotations

import re
import unicodedata

MAX_SLUG = 40
LABEL_PREFIX = "io.agent-builder"
LABEL_AUTOMATION = f"{LABEL_PREFIX}.automation-id"
LABEL_BUILD = f"{LABEL_PREFIX}.build-id"
LABEL_ROLE = f"{LABEL_PREFIX}.role"


def slug(name: str | None, max_length: int = MAX_SLUG) -> str:
    """Lowercase [a-z0-9-], at most max_length, never empty: 'Bäckup «nightly»!' -> 'backup-nightly'."""
    ascii_text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    text = text[:max_length].rstrip("-")
    return text or "automation"


def repository(automation_id: int, name: str | None) -> str:
    """The image repository of an automation: agent-{id}-{slug}."""
    return f"agent-{int(automation_id)}-{slug(name)}"


def build_tag(automation_id: int, name: str | None, build_id: int) -> str:
    return f"{repository(automation_id, name)}:build-{int(build_id)}"


def labels(automation_id: int, build_id: int, role: str) -> dict[str, str]:
    return {LABEL_AUTOMATION: str(automation_id), LABEL_BUILD: str(build_id), LABEL_ROLE: role}
