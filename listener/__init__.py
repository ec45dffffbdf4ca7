"""agent-builder: turns rows of automation_ideas into tested, human-approved automations."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # `listener.__version__`, from the one source (listener/version.py), read when asked
    if name == "__version__":
        from listener.version import builder_version

        return builder_version()
    raise AttributeError(f"module 'listener' has no attribute {name!r}")
