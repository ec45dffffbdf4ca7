"""CI lints before it tests: ruff and mypy (strict on listener/) configured in pyproject.toml,
installed by the `lint` extra, run by .ci/run before the first pytest."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith(("#", "echo"))]


def test_ci_installs_the_lint_extra_and_runs_ruff_and_mypy_before_any_test() -> None:
    commands = _commands()
    install = next(i for i, c in enumerate(commands) if "pip install" in c and "-e" in c)
    assert re.search(r"\.\[[^\]]*\blint\b[^\]]*\]", commands[install]), commands[install]
    ruff = next(i for i, c in enumerate(commands) if c.startswith("ruff check --no-cache ."))
    mypy = commands.index("mypy")
    first_test = next(i for i, c in enumerate(commands) if "pytest" in c)
    assert install < ruff < first_test and install < mypy < first_test
    assert "set -euo pipefail" in commands  # a finding stops the run


def test_the_lint_extra_has_the_tools_and_the_stubs() -> None:
    names = {re.split(r"[<>=\[ ]", spec, maxsplit=1)[0] for spec in PYPROJECT["project"]["optional-dependencies"]["lint"]}
    assert {"ruff", "mypy", "types-docker", "types-hvac"} <= names


def test_mypy_is_strict_on_listener_and_ignores_only_what_has_no_types() -> None:
    mypy = PYPROJECT["tool"]["mypy"]
    assert mypy["strict"] is True and mypy["files"] == ["listener"]
    ignored = {module for override in mypy.get("overrides", []) if override.get("ignore_missing_imports")
               for module in override["module"]}
    assert ignored == {"yoyo", "yoyo.*"}  # docker and hvac are checked against their stubs
    assert not any(override.get("ignore_errors") for override in mypy.get("overrides", []))
