"""`agent-builder check` and `config` against a healthy and a broken set of dependencies."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.listeners import base_env, run_cli
from tests.fakes.http_fake import closed_port_url

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "fakes" / "claude"


def lines(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] in ("ok", "FAIL"):
            found[parts[1]] = line
    return found


def test_check_with_healthy_dependencies(db_url, fake_ollama, fake_vault, fake_ntfy, approle_dir) -> None:
    import docker

    try:
        docker.from_env(timeout=5).ping()
        images = [image.tags[0] for image in docker.from_env().images.list() if image.tags]
    except Exception:  # noqa: BLE001
        pytest.skip("no Docker engine reachable: the healthy set includes Docker")
    if not images:
        pytest.skip("no image on the Docker engine")
    done = run_cli(base_env(db_url, OLLAMA_URL=fake_ollama.url, VAULT_ADDR=fake_vault.url, VAULT_APPROLE_DIR=str(approle_dir),
                            NTFY_URL=fake_ntfy.url, CLAUDE_CMD=f"{FAKE_CLAUDE} -p", SANDBOX_BASE_IMAGE=images[0],
                            SANDBOX_AGENT_IMAGE=images[0]), "check")
    assert done.returncode == 0, done.stdout + done.stderr
    found = lines(done.stdout)
    assert set(found) == {"database", "sandbox-db", "ollama", "claude", "vault", "ntfy", "docker"}
    assert all(line.startswith("ok") for line in found.values()), done.stdout
    assert fake_ntfy.published == []  # checking publishes nothing


def test_check_with_broken_dependencies_says_how_to_fix_each(empty_db_url, fake_ollama, tmp_path) -> None:
    done = run_cli(base_env(empty_db_url, OLLAMA_URL=fake_ollama.url, OLLAMA_MODEL="llama9:404b",
                            VAULT_ADDR=closed_port_url(), VAULT_APPROLE_DIR=str(tmp_path / "missing"),
                            NTFY_URL=closed_port_url(), CLAUDE_CMD="no-such-claude -p",
                            DOCKER_HOST="tcp://127.0.0.1:1", SANDBOX_DATABASE_URL=empty_db_url), "check")
    assert done.returncode == 1
    found = lines(done.stdout)
    assert all(line.startswith("FAIL") for line in found.values()), done.stdout
    assert "run: agent-builder migrate" in done.stdout
    assert "run: ollama pull llama9:404b" in done.stdout
    assert "'no-such-claude' (CLAUDE_CMD) is not on PATH" in done.stdout
    assert "role-id is missing" in done.stdout
    assert "unreachable" in found["ntfy"]
    assert "no Docker engine" in found["docker"]
    assert "is a superuser" in found["sandbox-db"]


def test_listen_refuses_to_start_on_a_broken_database(empty_db_url) -> None:
    done = run_cli(base_env(empty_db_url), "listen", timeout=60)
    assert done.returncode == 1
    assert "migration(s) pending" in done.stderr


def test_config_prints_the_effective_configuration_with_secrets_redacted(db_url) -> None:
    url = db_url.replace("postgres:@", "postgres:hunter2@") if "postgres:@" in db_url else db_url
    done = run_cli(base_env(url, NTFY_TOKEN="tk_secret_value", APPROVAL_SECRET="a-long-approval-secret", OLLAMA_NUM_CTX="4096"), "config")
    assert done.returncode == 0, done.stderr
    assert "OLLAMA_NUM_CTX=4096" in done.stdout and "NTFY_TOKEN=***" in done.stdout and "APPROVAL_SECRET=***" in done.stdout
    assert "tk_secret_value" not in done.stdout and "a-long-approval-secret" not in done.stdout and "hunter2" not in done.stdout


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("OLLAMA_TIMEOUT_S", "soon", "OLLAMA_TIMEOUT_S='soon': must be a number"),
    ("BUILDER_CONCURRENCY", "0", "BUILDER_CONCURRENCY='0': must be at least 1"),
    ("SANDBOX_NETWORK", "host", "SANDBOX_NETWORK='host': sandboxes never share the host network"),
    ("NTFY_URL", "ntfy.lan", "NTFY_URL='ntfy.lan': must be an http:// or https:// URL"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': must be 'text' or 'json'"),
    ("APPROVAL_SECRET", "short", "APPROVAL_SECRET: must be at least 16 characters"),
])
def test_invalid_settings_are_named_with_what_is_wrong(db_url, variable, value, message) -> None:
    done = run_cli(base_env(db_url, **{variable: value}), "config")
    assert done.returncode == 1
    assert message in done.stderr
