"""The installed distribution's version (package metadata), for `--version` and the registry."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def builder_version() -> str:
    try:
        return version("agent-builder")
    except PackageNotFoundError:
        return "unknown (not installed as a distribution)"
