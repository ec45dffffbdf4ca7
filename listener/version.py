"""The version of agent-builder, for `--version`, the listeners' registry and `listener.__version__`.

One source: `[project].version` in pyproject.toml, read from the installed distribution's metadata.
Not installed (a checkout on PYTHONPATH), it is read from the checkout's pyproject.toml; with
neither, it is UNKNOWN, a valid version that sorts below every release.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "agent-builder"
UNKNOWN = "0+unknown"
# pyproject.toml of the checkout this package was imported from (absent from an installed copy)
CHECKOUT_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@lru_cache(maxsize=1)
def builder_version() -> str:
    return version_of(DISTRIBUTION, CHECKOUT_PYPROJECT)


def version_of(distribution: str, pyproject: Path) -> str:
    """The distribution's installed version; else the version its pyproject.toml declares (when
    that file is this distribution's); else UNKNOWN."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        pass
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return UNKNOWN
    if not isinstance(project, dict) or project.get("name") != distribution:
        return UNKNOWN
    declared = project.get("version")
    return declared.strip() if isinstance(declared, str) and declared.strip() else UNKNOWN
