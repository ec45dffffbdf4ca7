"""Fixtures that start the fake services for the client tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest
from loguru import logger

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the fakes are imported as tests.fakes.* from the repository root
    sys.path.insert(0, str(ROOT))

from tests.fakes.ntfy_server import FakeNtfy  # noqa: E402
from tests.fakes.ollama_server import FakeOllama  # noqa: E402
from tests.fakes.vault_server import TEST_ROLE_ID, TEST_SECRET_ID, FakeVault  # noqa: E402

FAKE_CLAUDE = ROOT / "tests" / "fakes" / "claude"
ROLE_ID = TEST_ROLE_ID
SECRET_ID = TEST_SECRET_ID


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def fake_ntfy() -> Iterator[FakeNtfy]:
    with FakeNtfy() as server:
        yield server


@pytest.fixture
def fake_vault() -> Iterator[FakeVault]:
    secrets = {"secret/agent-builder": {"ntfy_token": "tk_fromvault123", "other": "x"}}
    with FakeVault(ROLE_ID, SECRET_ID, secrets) as server:
        yield server


@pytest.fixture
def approle_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "approle"
    directory.mkdir()
    (directory / "role-id").write_text(ROLE_ID + "\n")
    (directory / "secret-id").write_text(SECRET_ID + "\n")
    return directory


@pytest.fixture
def claude_log(tmp_path: Path) -> Path:
    return tmp_path / "claude-calls.jsonl"


@pytest.fixture
def claude_cmd(claude_log: Path) -> Callable[..., tuple[str, ...]]:
    """claude_cmd("fail", FAKE_CLAUDE_EXIT="3") -> a CLAUDE_CMD-like tuple running the fake through env(1)."""

    def make(mode: str, **env: str) -> tuple[str, ...]:
        settings = {"FAKE_CLAUDE_MODE": mode, "FAKE_CLAUDE_LOG": str(claude_log), **env}
        return ("env", *(f"{k}={v}" for k, v in settings.items()), str(FAKE_CLAUDE), "-p")

    return make


@pytest.fixture
def claude_calls(claude_log: Path) -> Callable[[], list[dict[str, object]]]:
    def read() -> list[dict[str, object]]:
        if not claude_log.exists():
            return []
        return [json.loads(line) for line in claude_log.read_text().splitlines() if line.strip()]

    return read


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every loguru line emitted during the test (message and extra), as text."""
    lines: list[str] = []
    sink_id = logger.add(lambda message: lines.append(str(message)), format="{level} {message}", level="DEBUG")
    yield lines
    logger.remove(sink_id)
