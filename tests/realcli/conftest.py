"""The real Claude Code CLI (npm @anthropic-ai/claude-code, pinned by .ci/claude-up), pointed at the
stand-in Messages API on 127.0.0.1 (tests/fakes/messages_api.py): it never reaches the internet and
needs no login but the test key.

AGENT_BUILDER_CLAUDE_BIN names the executable (`export AGENT_BUILDER_CLAUDE_BIN="$(bash .ci/claude-up)"`).
Without it these tests skip with that reason; with AGENT_BUILDER_REQUIRE_CLAUDE=1, as in CI, they fail.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from listener.build.overseer import Overseer
from tests.fakes.messages_api import FakeMessagesAPI

TEST_KEY = "sk-ant-api03-stand-in-test-key"
# The listener's own secrets, as they would be in its environment: none may reach the CLI or the API.
LISTENER_SECRETS = {
    "DATABASE_URL": "postgresql://builder:canary-db-password-5b1e@db.lan/api_business",
    "APPROVAL_SECRET": "canary-approval-secret-77c4a9",
    "NTFY_TOKEN": "tk_canary_ntfy_token_31d0",
    "VAULT_TOKEN": "hvs.canary-vault-token-9f2e",
    "SANDBOX_DATABASE_URL": "postgresql://reader:canary-sandbox-pw-0aa1@db.lan/x",
}


@pytest.fixture(scope="session")
def claude_bin() -> str:
    path = os.environ.get("AGENT_BUILDER_CLAUDE_BIN", "").strip()
    reason = ""
    if not path:
        reason = "AGENT_BUILDER_CLAUDE_BIN is not set: run `export AGENT_BUILDER_CLAUDE_BIN=\"$(bash .ci/claude-up)\"`"
    elif not os.access(path, os.X_OK):
        reason = f"AGENT_BUILDER_CLAUDE_BIN={path} is not an executable: run bash .ci/claude-up"
    if reason:
        if os.environ.get("AGENT_BUILDER_REQUIRE_CLAUDE") == "1":
            pytest.fail(f"the real claude CLI is required (AGENT_BUILDER_REQUIRE_CLAUDE=1): {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture
def stand_in() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as api:
        yield api


@pytest.fixture
def cli_home(tmp_path: Path) -> Path:
    """The CLI's HOME: a fresh one per test, never the machine's."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def listener_environ(claude_bin: str, stand_in: FakeMessagesAPI, cli_home: Path) -> dict[str, str]:
    """The listener's environment: PATH, HOME, the CLI's API settings, and the builder's secrets."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(cli_home),
        "ANTHROPIC_BASE_URL": stand_in.url,
        "ANTHROPIC_API_KEY": TEST_KEY,
        **LISTENER_SECRETS,
    }


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    root = tmp_path / "scratch"
    root.mkdir()
    return root


@pytest.fixture
def real_overseer(claude_bin: str, listener_environ: dict[str, str], scratch: Path) -> Callable[..., Overseer]:
    """real_overseer(*extra_flags, timeout_s=…, model=…, max_usd=…, environ=…) -> an Overseer on the real CLI."""

    def make(*extra: str, **fields: object) -> Overseer:
        values: dict[str, object] = {"timeout_s": 30.0, "environ": listener_environ, "scratch_root": scratch, **fields}
        return Overseer(cmd=(claude_bin, "-p", *extra), **values)  # type: ignore[arg-type]

    return make
