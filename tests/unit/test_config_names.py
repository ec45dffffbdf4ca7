"""`config` prints each setting under the variable a user sets, and every setting is validated."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import pytest

from listener.config import ConfigError, Settings
from listener.ops.cli import render_config
from listener.ops.embedded import embedded_address


class Recording(Mapping[str, str]):
    """An empty environment that remembers every name the reader asks for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_every_printed_name_is_a_variable_the_reader_reads() -> None:
    env = Recording()
    printed = set(Settings.from_env(env).redacted())
    assert printed <= env.asked, printed - env.asked
    assert {"AGENT_BUILDER_HOME", "WEB_ADDR"} <= printed and not {"HOME", "APPROVAL_ADDR"} & printed


def test_config_shows_the_embedded_database_when_database_url_is_unset(tmp_path: Path) -> None:
    settings = Settings.from_env({"AGENT_BUILDER_HOME": str(tmp_path)})
    text = render_config(settings)
    expected = embedded_address(tmp_path)
    assert f"DATABASE_URL={expected.url}  # DATABASE_URL is not set: the embedded PostgreSQL" in text
    assert expected.url == f"postgresql://listener@/postgres?host={tmp_path / 'pgdata'}" and not expected.running
    assert f"OPERATOR_DATABASE_URL={expected.operator_url}  #" in text
    assert f"AGENT_BUILDER_HOME={tmp_path}\n" in text


def test_config_prints_a_set_database_url_as_it_is() -> None:
    text = render_config(Settings.from_env({"DATABASE_URL": "postgresql://u:pw-secret-1@db/x"}))
    assert "DATABASE_URL=postgresql://u:***@db/x\n" in text and "embedded" not in text


def test_a_running_embedded_server_is_read_from_its_postmaster_pid(tmp_path: Path) -> None:
    import os

    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{pgdata}\n1700000000\n5432\n/run/short\n\n0 0\nready\n")
    found = embedded_address(tmp_path)
    assert found.running and found.url == "postgresql://listener@/postgres?host=/run/short"


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SANDBOX_BASE_IMAGE", "python 3.12", "SANDBOX_BASE_IMAGE='python 3.12': must be an image reference"),
    ("SANDBOX_AGENT_IMAGE", "--privileged", "SANDBOX_AGENT_IMAGE='--privileged': must be an image reference"),
    ("SANDBOX_RUNTIME", "run sc", "SANDBOX_RUNTIME='run sc': must be a Docker runtime name"),
    ("NTFY_TOPIC", "my topic", "NTFY_TOPIC='my topic': must be 1 to 64 letters"),
    ("SANDBOX_HTTP_PORT", "70000", "SANDBOX_HTTP_PORT=70000: must be a port from 0 (any) to 65535"),
    ("OLLAMA_MODEL", "llama 3", "OLLAMA_MODEL='llama 3': must be one model name"),
    ("BUILD_HANDLER", "listener.build.pipeline", "BUILD_HANDLER='listener.build.pipeline': must be module:function"),
    ("METRICS_ADDR", "nonsense", "METRICS_ADDR='nonsense': must be host:port"),
])
def test_each_setting_is_validated_and_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert any(problem.startswith(message) for problem in raised.value.problems), raised.value.problems
