"""Third-party dependencies of a generated script, without running package code while the network is up.

The model declares requirements (requirements.txt, or `RUN pip install …` lines); they are
validated strictly (`parse_requirements`), resolved by the listener with `pip download
--only-binary=:all:` for the image's Python and platform (`download`: wheels only, so no sdist is
built and no setup.py runs), and unpacked by the listener in Python (`unpack`: a wheel is a zip;
unsafe paths, symlinks and files that do not match the wheel's RECORD are refused) into a tar the
builder puts into the image under /app/deps. Nothing is installed by pip inside the image.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import posixpath
import re
import stat
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

MAX_REQUIREMENTS = 30
MAX_LINE = 200
MAX_DEPS_BYTES = 256 << 20  # unpacked size of all wheels together
MAX_DEPS_FILES = 20_000
PROBE = ("import platform, sys; libc = platform.libc_ver(); "
         "print(sys.implementation.name, '%d.%d' % sys.version_info[:2], platform.machine(), libc[0] or '-', libc[1] or '-')")

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_VERSION_CLAUSE = r"(?:~=|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+"
_REQUIREMENT = re.compile(
    rf"^(?P<name>{_NAME})\s*(?:\[\s*(?P<extras>{_NAME}(?:\s*,\s*{_NAME})*)\s*\])?"
    rf"\s*(?P<spec>{_VERSION_CLAUSE}(?:\s*,\s*{_VERSION_CLAUSE})*)?$"
)
_ARCHIVE = re.compile(r"\.(whl|zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz|egg)$", re.IGNORECASE)
_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")
_LEGACY_MANYLINUX = (("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5))
_RECORD_ALGORITHMS = frozenset({"sha256", "sha384", "sha512"})


class DependencyError(Exception):
    """The dependencies cannot be used. The message is the builder's sentence; `detail` holds what
    others wrote that it is about (a line of requirements.txt, a path inside a wheel, pip's output)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class DependencyTimeout(DependencyError):
    """Resolving the wheels took longer than the build's remaining time."""


@dataclass(frozen=True)
class Requirement:
    name: str
    extras: tuple[str, ...] = ()
    specifier: str = ""

    def __str__(self) -> str:
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return f"{self.name}{extras}{self.specifier}"

    @property
    def key(self) -> str:
        return canonical(self.name)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(lines: Sequence[str]) -> list[Requirement]:
    """Project names with optional extras and version ranges; nothing else (no URLs, paths,
    options such as -e, -r or --index-url, no environment markers). DependencyError otherwise."""
    requirements: list[Requirement] = []
    for number, raw in enumerate(lines, start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        requirements.append(_requirement(number, line))
    if len(requirements) > MAX_REQUIREMENTS:
        raise DependencyError(f"{len(requirements)} requirements, more than the {MAX_REQUIREMENTS} allowed")
    return requirements


def requirement_problems(text: str) -> list[str]:
    """For the free checks before the overseer: what is wrong with a requirements.txt, if anything."""
    try:
        parse_requirements(text.splitlines())
    except DependencyError as exc:
        return [f"requirements.txt: {exc}"]
    return []


def _requirement(number: int, line: str) -> Requirement:
    where, quoted = f"line {number}", line[:MAX_LINE]
    if len(line) > MAX_LINE:
        raise DependencyError(f"{where}: longer than {MAX_LINE} characters", quoted)
    if line.startswith("-"):
        raise DependencyError(f"{where}: pip options (-e, -r, --index-url, …) are refused; name packages only", quoted)
    if "://" in line or "@" in line:
        raise DependencyError(f"{where}: URLs and direct references are refused; name packages only", quoted)
    if "/" in line or "\\" in line:
        raise DependencyError(f"{where}: local paths and files are refused; name packages only", quoted)
    if ";" in line:
        raise DependencyError(f"{where}: environment markers are refused", quoted)
    match = _REQUIREMENT.match(line)
    if not match:
        raise DependencyError(f"{where}: not a requirement like `name`, `name==1.2` or `name[extra]>=1,<2`", quoted)
    if _ARCHIVE.search(match.group("name")):
        raise DependencyError(f"{where}: local paths and files are refused; name packages only", quoted)
    extras = tuple(e.strip() for e in match.group("extras").split(",")) if match.group("extras") else ()
    spec = re.sub(r"\s+", "", match.group("spec") or "")
    return Requirement(name=match.group("name"), extras=extras, specifier=spec)


# -- the image's Python -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PythonTarget:
    """What wheels must fit: read from the base image by running PROBE in it (confined)."""

    implementation: str  # 'cpython'
    version: str  # '3.11'
    machine: str  # 'x86_64', 'aarch64'
    glibc: tuple[int, int] | None  # None: musl or unknown (then only pure-Python wheels fit)

    @classmethod
    def from_probe(cls, output: str) -> "PythonTarget":
        words = output.split()
        if len(words) != 5 or not re.fullmatch(r"3\.\d+", words[1]):
            raise DependencyError("the image's python3 did not answer with its version", output.strip()[:200])
        implementation, version, machine, libc, libc_version = words
        glibc = None
        match = re.fullmatch(r"(\d+)\.(\d+)", libc_version)
        if libc == "glibc" and match:
            glibc = (int(match.group(1)), int(match.group(2)))
        return cls(implementation=implementation, version=version, machine=machine, glibc=glibc)

    def platforms(self) -> list[str]:
        """Platform tags for pip --platform: manylinux_2_5 … manylinux_2_{glibc} and the legacy
        aliases; just `any` (pure-Python wheels) when the C library is not glibc."""
        if self.glibc is None or self.glibc[0] != 2:
            return ["any"]
        minor = self.glibc[1]
        tags = [f"manylinux_2_{m}_{self.machine}" for m in range(minor, 4, -1)]
        legacy = [f"{alias}_{self.machine}" for alias, needs in _LEGACY_MANYLINUX if minor >= needs
                  and (alias == "manylinux2014" or self.machine in ("x86_64", "i686"))]
        return tags + legacy

    def describe(self) -> str:
        libc = f"glibc {self.glibc[0]}.{self.glibc[1]}" if self.glibc else "no glibc (pure-Python wheels only)"
        return f"{self.implementation} {self.version} on {self.machine}, {libc}"


# -- resolving: pip download, wheels only -----------------------------------------------------------------

@dataclass(frozen=True)
class Index:
    url: str | None = None
    find_links: Path | None = None

    def options(self) -> list[str]:
        options: list[str] = []
        if self.url:
            options += ["--index-url", self.url]
        if self.find_links:
            options += ["--find-links", str(self.find_links)]
            if not self.url:
                options.append("--no-index")  # a local directory of wheels, and nothing else
        return options


def pip_command(requirements: Sequence[Requirement], dest: Path, target: PythonTarget, index: Index) -> list[str]:
    if target.implementation != "cpython":
        raise DependencyError(f"the image's Python is {target.implementation}; wheels are resolved for CPython only")
    platforms = [f"--platform={tag}" for tag in target.platforms()]
    return [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
            "--python-version", target.version, "--implementation", "cp", *platforms,
            "--no-input", "--disable-pip-version-check", "--progress-bar", "off", *index.options(),
            *(str(r) for r in requirements)]


def download(requirements: Sequence[Requirement], dest: Path, target: PythonTarget, index: Index,
             timeout_s: float) -> list[Path]:
    """The wheels of the requirements and their dependencies, for `target`, into `dest`."""
    if index.find_links is not None and not index.find_links.is_dir():
        raise DependencyError(f"SANDBOX_PIP_FIND_LINKS={index.find_links} is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(pip_command(requirements, dest, target, index), cwd=dest, capture_output=True,
                              text=True, timeout=max(timeout_s, 0.1), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DependencyTimeout("resolving the wheels did not finish in time") from None
    except OSError as exc:
        raise DependencyError(f"the listener cannot run pip ({sys.executable} -m pip): {exc}") from None
    if done.returncode != 0:
        raise _pip_failure(done.stdout + done.stderr, target)
    wheels = sorted(dest.glob("*.whl"))
    others = [p.name for p in dest.iterdir() if p.suffix != ".whl"]
    if others:
        raise DependencyError("pip left files that are not wheels", ", ".join(others[:5]))
    return wheels


def _pip_failure(output: str, target: PythonTarget) -> DependencyError:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    tail = " / ".join(lines[-3:])[:600]
    missing = _NOT_FOUND.search(output)
    if missing:
        name = missing.group(1) if re.fullmatch(r"[A-Za-z0-9._\[\],<>=!~*+-]{1,120}", missing.group(1)) else "a requirement"
        return DependencyError(f"no wheel of {name} for Python {target.version} on {target.machine}: only wheels are "
                               "installed (no source distributions, nothing compiled, no setup.py), from the index "
                               "or SANDBOX_PIP_FIND_LINKS", tail)
    return DependencyError("pip download failed", tail or "no output")


# -- unpacking, in Python --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unpacked:
    wheels: tuple[str, ...]
    files: int
    size: int
    skipped: int  # .data/scripts, headers and data files, never installed


def unpack(wheels: Sequence[Path], out: tarfile.TarFile, prefix: str, max_bytes: int = MAX_DEPS_BYTES) -> Unpacked:
    """Every wheel's files as tar entries under `prefix` (root-owned, 0644 or 0755)."""
    files = size = skipped = 0
    for wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as archive:
                record = _record(wheel.name, archive)
                for info in archive.infolist():
                    if info.is_dir():
                        continue
                    target = _target(wheel.name, info)
                    if target is None:
                        skipped += 1
                        continue
                    size += info.file_size
                    files += 1
                    if size > max_bytes or files > MAX_DEPS_FILES:
                        raise DependencyError(f"the dependencies unpack to more than {max_bytes:,} bytes "
                                              f"or {MAX_DEPS_FILES} files")
                    _add(out, archive, info, f"{prefix}/{target}", record, wheel.name)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DependencyError(f"{wheel.name} is not a readable wheel", str(exc)) from None
    return Unpacked(wheels=tuple(w.name for w in wheels), files=files, size=size, skipped=skipped)


def _record(wheel: str, archive: zipfile.ZipFile) -> dict[str, tuple[str, str]]:
    """RECORD: path -> (algorithm, urlsafe-base64 digest). Every file must be listed with a hash."""
    names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/RECORD", n)]
    if len(names) != 1:
        raise DependencyError(f"{wheel} has {len(names)} .dist-info/RECORD files, not one")
    text = archive.read(names[0]).decode("utf-8")
    record: dict[str, tuple[str, str]] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[1]:
            algorithm, _, digest = row[1].partition("=")
            record[row[0]] = (algorithm, digest)
    return record


def _target(wheel: str, info: zipfile.ZipInfo) -> str | None:
    """Where a member goes below the prefix, None for members that are never installed."""
    name = info.filename
    if (name.startswith("/") or "\\" in name or "\0" in name or posixpath.normpath(name) != name
            or ".." in name.split("/") or re.match(r"^[A-Za-z]:", name)):
        raise DependencyError(f"{wheel} has an unsafe path", repr(name))
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind and kind != stat.S_IFREG:
        raise DependencyError(f"{wheel} has a member that is not a regular file (symlinks and devices are refused)", name)
    first, _, rest = name.partition("/")
    if first.endswith(".data"):
        area, _, inner = rest.partition("/")
        return inner if area in ("purelib", "platlib") and inner else None
    return name


def _add(out: tarfile.TarFile, archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str,
         record: dict[str, tuple[str, str]], wheel: str) -> None:
    expected = record.get(info.filename)
    is_record = re.fullmatch(r"[^/]+\.dist-info/RECORD(\.jws|\.p7s)?", info.filename) is not None
    if expected is None and not is_record:
        raise DependencyError(f"{wheel} has a file that is not listed with a hash in RECORD", info.filename)
    if expected is not None and expected[0] not in _RECORD_ALGORITHMS:
        raise DependencyError(f"{wheel} has a file with a weak hash in RECORD (sha256 or stronger needed)", info.filename)
    entry = tarfile.TarInfo(path)
    entry.size = info.file_size
    entry.mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = "root"
    with archive.open(info) as member:
        reader = _Hashing(member, expected[0] if expected else "sha256")
        out.addfile(entry, reader)
    if expected is not None and reader.digest() != expected[1]:
        raise DependencyError(f"{wheel} has a file that does not match its hash in RECORD", info.filename)


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it."""

    def __init__(self, inner: IO[bytes], algorithm: str) -> None:
        self.inner = inner
        self.hash = hashlib.new(algorithm)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.hash.update(data)
        return data

    def digest(self) -> str:
        return base64.urlsafe_b64encode(self.hash.digest()).rstrip(b"=").decode()
