"""Where the SQL files live: beside the package in a checkout, inside it when installed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _locate(name: str) -> Path:
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    installed = Path(str(resources.files("listener") / name))
    if installed.is_dir():
        return installed
    raise FileNotFoundError(f"agent-builder: cannot find its {name}/ directory (looked in {checkout} and {installed})")


def sql_dir() -> Path:
    return _locate("sql")


def migrations_dir() -> Path:
    return _locate("migrations")
