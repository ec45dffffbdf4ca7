"""Requirements are validated strictly; wheels are resolved with pip (wheels only) and unpacked in Python."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from listener.sandbox.wheels import (MAX_REQUIREMENTS, DependencyError, Index, PythonTarget, Requirement, download,
                                     parse_requirements, pip_command, requirement_problems, unpack)

WHEELS = Path(__file__).resolve().parents[1] / "fixtures" / "wheels"
FIXTURE_WHEEL = WHEELS / "agentbuilder_fixture_dep-1.0-py3-none-any.whl"
CPYTHON_311 = PythonTarget(implementation="cpython", version="3.11", machine="x86_64", glibc=(2, 36))


# -- validation ---------------------------------------------------------------------------------------

def test_names_versions_and_extras_are_accepted() -> None:
    text = "# what the script needs\nrequests==2.32.3\nFlask[async] >= 2.0, <3\n\nzope.interface~=6.0  # pinned loosely\nhvac\n"
    assert parse_requirements(text.splitlines()) == [
        Requirement("requests", (), "==2.32.3"), Requirement("Flask", ("async",), ">=2.0,<3"),
        Requirement("zope.interface", (), "~=6.0"), Requirement("hvac"),
    ]
    assert str(Requirement("Flask", ("async",), ">=2.0,<3")) == "Flask[async]>=2.0,<3"


@pytest.mark.parametrize(("line", "why"), [
    ("-e .", "pip options"), ("-r other.txt", "pip options"), ("--index-url https://evil.example/simple", "pip options"),
    ("--extra-index-url=https://evil.example", "pip options"), ("pkg @ https://evil.example/pkg.whl", "URLs"),
    ("https://evil.example/pkg-1.0.tar.gz", "URLs"), ("git+https://github.com/a/b", "URLs"),
    ("./vendored", "local paths"), ("/tmp/pkg", "local paths"), ("pkg.whl", "local paths"), ("evil.tar.gz", "local paths"),
    ("requests; python_version < '3.12'", "markers"), ("requests===2.0", "not a requirement"),
    ("requests 2.0", "not a requirement"), ("x" * 201, "longer than"),
])
def test_anything_else_is_refused(line: str, why: str) -> None:
    with pytest.raises(DependencyError, match=why):
        parse_requirements(["ok", line])
    assert requirement_problems(f"ok\n{line}\n")[0].startswith("requirements.txt: line 2")


def test_the_number_of_requirements_is_bounded() -> None:
    with pytest.raises(DependencyError, match=f"more than the {MAX_REQUIREMENTS} allowed"):
        parse_requirements([f"package{i}" for i in range(MAX_REQUIREMENTS + 1)])
    assert requirement_problems("requests\n") == []


# -- the target Python and pip's command line ----------------------------------------------------------------

def test_the_probe_output_gives_python_version_and_platform_tags() -> None:
    target = PythonTarget.from_probe("cpython 3.11 x86_64 glibc 2.36\n")
    assert target == CPYTHON_311
    tags = target.platforms()
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux_2_5_x86_64" in tags
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_37_x86_64" not in tags and not any(tag.startswith("linux_") for tag in tags)


def test_other_machines_and_libraries() -> None:
    arm = PythonTarget.from_probe("cpython 3.12 aarch64 glibc 2.28")
    assert "manylinux_2_28_aarch64" in arm.platforms() and "manylinux2014_aarch64" in arm.platforms()
    assert not any(tag.startswith("manylinux1") for tag in arm.platforms())
    assert PythonTarget.from_probe("cpython 3.12 x86_64 - -").platforms() == ["any"]  # musl: pure wheels only
    with pytest.raises(DependencyError):
        PythonTarget.from_probe("Python 2.7.18")


def test_pip_downloads_wheels_only_for_the_images_python(tmp_path: Path) -> None:
    command = pip_command([Requirement("requests", (), "==2.32.3")], tmp_path, CPYTHON_311, Index(find_links=WHEELS))
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in command and "--no-index" in command
    assert command[command.index("--python-version") + 1] == "3.11" and command[command.index("--implementation") + 1] == "cp"
    assert "--platform=manylinux_2_17_x86_64" in command and command[-1] == "requests==2.32.3"
    with_index = pip_command([Requirement("x")], tmp_path, CPYTHON_311, Index(url="https://mirror.lan/simple"))
    assert "--no-index" not in with_index and with_index[with_index.index("--index-url") + 1] == "https://mirror.lan/simple"


def test_download_from_a_local_directory_without_any_index(tmp_path: Path) -> None:
    wheels = download([Requirement("agentbuilder-fixture-dep", (), "==1.0")], tmp_path / "wheels", CPYTHON_311,
                      Index(find_links=WHEELS), timeout_s=120)
    assert [w.name for w in wheels] == [FIXTURE_WHEEL.name]


def test_a_package_without_a_wheel_is_named_and_its_setup_py_never_runs(tmp_path: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    marker = tmp_path / "setup-py-ran"
    _sdist(links / "agentbuilder_sdist_only-1.0.tar.gz", f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(DependencyError) as caught:
        download([Requirement("agentbuilder-sdist-only")], tmp_path / "wheels", CPYTHON_311, Index(find_links=links), 120)
    assert "no wheel of agentbuilder-sdist-only for Python 3.11 on x86_64" in str(caught.value)
    assert not marker.exists()


# -- unpacking ----------------------------------------------------------------------------------------------

def test_the_fixture_wheel_unpacks_under_the_prefix_owned_by_root() -> None:
    members = _unpacked([FIXTURE_WHEEL])
    assert sorted(members) == ["app/deps/agentbuilder_fixture_dep-1.0.dist-info/METADATA",
                               "app/deps/agentbuilder_fixture_dep-1.0.dist-info/RECORD",
                               "app/deps/agentbuilder_fixture_dep-1.0.dist-info/WHEEL",
                               "app/deps/agentbuilder_fixture_dep/__init__.py"]
    for member in members.values():
        assert (member.uid, member.gid, member.mode, member.type) == (0, 0, 0o644, tarfile.REGTYPE)


def test_data_directories_map_like_an_installer_and_scripts_are_skipped(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, {"pkg/__init__.py": b"", "pkg-1.0.data/purelib/extra.py": b"x = 1\n",
                              "pkg-1.0.data/scripts/run-me": b"#!/bin/sh\nrm -rf /\n"})
    assert sorted(_unpacked([wheel])) == ["app/deps/extra.py", "app/deps/pkg-1.0.dist-info/RECORD",
                                          "app/deps/pkg/__init__.py"]


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil.py", "pkg/../../evil.py", "pkg\\..\\evil.py", "C:/evil.py",
                                  "pkg//evil.py"])
def test_unsafe_paths_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DependencyError, match="unsafe path"):
        _unpacked([_wheel(tmp_path, {"pkg/__init__.py": b"", name: b"evil"})])


def test_symlinks_are_refused(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, {"pkg/__init__.py": b"", "pkg/link": b"/etc/shadow"}, modes={"pkg/link": 0o120777})
    with pytest.raises(DependencyError, match="not a regular file"):
        _unpacked([wheel])


def test_files_must_match_the_record(tmp_path: Path) -> None:
    tampered = _wheel(tmp_path, {"pkg/__init__.py": b"print('original')\n"}, replace={"pkg/__init__.py": b"print('evil')\n"})
    with pytest.raises(DependencyError, match="does not match its hash"):
        _unpacked([tampered])
    unlisted = _wheel(tmp_path, {"pkg/__init__.py": b""}, unlisted={"pkg/extra.py": b"x"})
    with pytest.raises(DependencyError, match="not listed with a hash"):
        _unpacked([unlisted])


def test_the_unpacked_size_is_capped(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, {"pkg/__init__.py": b"", "pkg/big.bin": b"\0" * 4096})
    with pytest.raises(DependencyError, match="more than"):
        unpack([wheel], tarfile.open(fileobj=io.BytesIO(), mode="w"), "app/deps", max_bytes=1024)


def test_executable_bits_are_kept_and_nothing_else(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, {"pkg/__init__.py": b"", "pkg/tool": b"#!/bin/sh\n"}, modes={"pkg/tool": 0o106777})
    assert _unpacked([wheel])["app/deps/pkg/tool"].mode == 0o755


# -- helpers ---------------------------------------------------------------------------------------------

def _unpacked(wheels: list[Path]) -> dict[str, tarfile.TarInfo]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as out:
        unpack(wheels, out, "app/deps")
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        return {member.name: member for member in archive.getmembers()}


def _wheel(directory: Path, files: dict[str, bytes], *, modes: dict[str, int] | None = None,
           replace: dict[str, bytes] | None = None, unlisted: dict[str, bytes] | None = None) -> Path:
    """A wheel of package `pkg` with a RECORD of `files` (then `replace`d or `unlisted` files added)."""
    path = directory / f"pkg-1.0-py3-none-any-{len(list(directory.glob('*.whl')))}.whl"
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()] + ["pkg-1.0.dist-info/RECORD,,"]
    content = {**files, **(replace or {}), **(unlisted or {}), "pkg-1.0.dist-info/RECORD": "\n".join(record).encode()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in content.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (modes or {}).get(name, 0o100644) << 16
            archive.writestr(info, data)
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _sdist(path: Path, setup_py: str) -> None:
    """A source distribution whose setup.py would leave a marker if anything ever ran it."""
    root = path.name[: -len(".tar.gz")]
    with tarfile.open(path, "w:gz") as archive:
        for name, text in {"setup.py": setup_py, "PKG-INFO": "Metadata-Version: 2.1\nName: agentbuilder-sdist-only\nVersion: 1.0\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
