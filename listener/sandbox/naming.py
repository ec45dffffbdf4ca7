"""Names and labels of sandbox images and containers, safe for any automation name."""

from __future__ import annotations

import re
import unicodedata

MAX_SLUG = 40
LABEL_PREFIX = "io.agent-builder"
LABEL_AUTOMATION = f"{LABEL_PREFIX}.automation-id"
LABEL_BUILD = f"{LABEL_PREFIX}.build-id"
LABEL_ROLE = f"{LABEL_PREFIX}.role"
LABEL_INSTALLATION = f"{LABEL_PREFIX}.installation"
LABEL_DEADLINE = f"{LABEL_PREFIX}.deadline"  # unix time by which a sandbox container is gone (sweeps remove it after)
INSTALLATION_RE = re.compile(r"^[a-z0-9]{1,32}$")


def slug(name: str | None, max_length: int = MAX_SLUG) -> str:
    """Lowercase [a-z0-9-], at most max_length, never empty: 'Bäckup «nightly»!' -> 'backup-nightly'."""
    ascii_text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    text = text[:max_length].rstrip("-")
    return text or "automation"


def repository(automation_id: int, name: str | None) -> str:
    """The image repository of an automation: agent-{id}-{slug}."""
    return f"agent-{int(automation_id)}-{slug(name)}"


def build_tag(automation_id: int, name: str | None, build_id: int, installation: str) -> str:
    """A sandbox image's tag: agent-{id}-{slug}:build-{build}-{installation} (unique per engine)."""
    return f"{repository(automation_id, name)}:build-{int(build_id)}-{_checked(installation)}"


def production_tag(installation: str) -> str:
    """The tag of the image in production: `production-{installation}` (two installations on one
    engine may have the same automation id and name; the tag tells their images apart)."""
    return f"production-{_checked(installation)}"


def labels(installation: str, automation_id: int, build_id: int, role: str) -> dict[str, str]:
    return {LABEL_INSTALLATION: _checked(installation), LABEL_AUTOMATION: str(automation_id),
            LABEL_BUILD: str(build_id), LABEL_ROLE: role}


def installation_filter(installation: str, **more: str | int) -> dict[str, str | list[str] | bool]:
    """A docker SDK `filters` value selecting only this installation's objects (and `more` labels,
    e.g. build=12 for LABEL_BUILD): every listing the builder acts on goes through it."""
    names = {"automation": LABEL_AUTOMATION, "build": LABEL_BUILD, "role": LABEL_ROLE}
    selected = [f"{LABEL_INSTALLATION}={_checked(installation)}"]
    selected += [f"{names[key]}={value}" for key, value in more.items()]
    return {"label": selected}


def _checked(installation: str) -> str:
    if not INSTALLATION_RE.match(installation or ""):
        raise ValueError(f"not an installation identity: {installation!r}")
    return installation
