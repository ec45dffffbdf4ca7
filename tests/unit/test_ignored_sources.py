"""No source of the package is ignored by git: `.gitignore`'s `build/` once matched every
directory of that name, listener/build/ included, so a new module there was never committed
while the working copy (and every test run from it) still had it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("listener", "sql", "migrations", "tests", "bench", "docker", ".ci")


def test_no_file_the_package_or_its_tests_need_is_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [str(path.relative_to(ROOT)) for top in SHIPPED if (ROOT / top).exists()
             for path in (ROOT / top).rglob("*")
             if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"]
    assert any(p.startswith("listener/build/") for p in paths)
    done = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(paths), cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode in (0, 1), done.stderr  # 1: nothing ignored
    assert done.stdout.split() == []


@pytest.mark.parametrize("name", ["build", "dist"])
def test_only_the_top_level_build_outputs_are_ignored(name: str) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = subprocess.run(["git", "check-ignore", "--no-index", f"{name}/x.py", f"listener/{name}/x.py"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=False)
    assert probe.stdout.split() == [f"{name}/x.py"]
