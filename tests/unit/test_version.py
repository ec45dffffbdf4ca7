"""One version: pyproject.toml's, read from the package metadata (listener/version.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

import listener
from listener.version import UNKNOWN, builder_version, version_of

ROOT = Path(__file__).resolve().parents[2]
DECLARED = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def test_the_version_is_the_installed_metadata_which_is_pyprojects() -> None:
    assert builder_version() == version("agent-builder") == DECLARED
    assert listener.__version__ == builder_version()


def test_no_module_writes_a_version_of_its_own() -> None:
    for path in (ROOT / "listener").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            assert not any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets), path


def test_a_checkout_that_is_not_installed_reads_its_pyproject(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "agent-builder-not-installed"\nversion = "2.3.4"\n', encoding="utf-8")
    assert version_of("agent-builder-not-installed", pyproject) == "2.3.4"


@pytest.mark.parametrize("text", [
    None,  # no pyproject.toml: an installed copy of another distribution's files
    '[project]\nname = "someone-else"\nversion = "9.9"\n',
    '[project]\nname = "agent-builder-not-installed"\n',  # a dynamic version
    '[project]\nname = "agent-builder-not-installed"\nversion = ""\n',
    "project = 1\n",
    "[project\n",  # not TOML
])
def test_with_neither_metadata_nor_its_pyproject_the_version_is_unknown(tmp_path: Path, text: str | None) -> None:
    pyproject = tmp_path / "pyproject.toml"
    if text is not None:
        pyproject.write_text(text, encoding="utf-8")
    assert version_of("agent-builder-not-installed", pyproject) == UNKNOWN == "0+unknown"


def test_listener_reads_its_version_when_asked_and_has_no_other_attributes_by_magic() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'version_'"):
        getattr(listener, "version_")  # noqa: B009 - the name must not resolve
    done = subprocess.run([sys.executable, "-c", "import sys, listener; before = 'listener.version' in sys.modules;"
                           "print(before, listener.__version__)"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", DECLARED]
