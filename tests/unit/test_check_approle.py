"""Whether the sandbox user (65534:65534, no other groups) can read the AppRole files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from listener.ops.check import approle_problems, readable_by


def info(mode: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(("mode", "uid", "gid", "readable"), [
    (0o644, 0, 0, True),  # others may read
    (0o600, 0, 0, False),
    (0o640, 0, 65534, True),  # nogroup may read
    (0o604, 0, 65534, False),  # the group bits decide for a member of the group, not the others' bits
    (0o400, 65534, 0, True),  # the owner
    (0o044, 65534, 0, False),  # the owner bits decide for the owner
])
def test_the_kernel_s_order_owner_group_others(mode: int, uid: int, gid: int, readable: bool) -> None:
    assert readable_by(info(mode, uid, gid), 65534, 65534, need=4) is readable


def test_a_directory_of_readable_files(tmp_path: Path) -> None:
    for name in ("role-id", "secret-id"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o644)
    tmp_path.chmod(0o755)
    assert approle_problems(tmp_path) == []
    tmp_path.chmod(0o700)
    assert approle_problems(tmp_path) == [f"the directory {tmp_path} (mode 700, owner {os.getuid()}:{os.getgid()}) "
                                          "cannot be entered by uid 65534"] or os.getuid() == 65534
    tmp_path.chmod(0o755)
    (tmp_path / "role-id").unlink()
    (tmp_path / "role-id").symlink_to("/etc/hostname")
    (tmp_path / "secret-id").chmod(0o600)
    problems = approle_problems(tmp_path)
    assert any("role-id is a symlink out of the directory" in p for p in problems)
    assert any(f"{tmp_path / 'secret-id'} (mode 600" in p for p in problems)


def test_a_missing_directory(tmp_path: Path) -> None:
    assert approle_problems(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'}: No such file or directory"]
