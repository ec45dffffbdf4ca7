"""`agent-builder check` and `config` against a healthy and a broken set of dependencies."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.config import ConfigError, Settings
from listener.ops.check import Check, check_ntfy
from tests.e2e.listeners import base_env, query, run_cli
from tests.fakes.http_fake import Reply, closed_port_url
from tests.fakes.ntfy_server import FakeNtfy
from tests.helpers import insert_idea

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "fakes" / "claude"
STABLE_IMAGE = "agent-builder-test-base:latest"  # built by .ci/docker-up, never removed by the tests


def lines(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] in ("ok", "WARN", "FAIL"):
            found[parts[1]] = line
    return found


@pytest.fixture
def listener_url(logins) -> str:
    """The listener's own login, as it should be: a builder, not a superuser (else `roles` warns)."""
    return logins.make("builder", label="listener").url


def healthy_env(db_url: str, fake_ollama, fake_vault, ntfy_url: str, approle_dir, **extra: str) -> dict[str, str]:
    import docker

    try:
        docker.from_env(timeout=5).ping()
        images = [image.tags[0] for image in docker.from_env().images.list() if image.tags]
    except Exception:  # noqa: BLE001
        pytest.skip("no Docker engine reachable: the healthy set includes Docker")
    if not images:
        pytest.skip("no image on the Docker engine")
    if STABLE_IMAGE in images:  # other runs on the same engine add and remove their own images meanwhile
        images.insert(0, STABLE_IMAGE)
    return base_env(db_url, **{"OLLAMA_URL": fake_ollama.url, "VAULT_ADDR": fake_vault.url,
                               "VAULT_APPROLE_DIR": str(approle_dir), "NTFY_URL": ntfy_url,
                               "CLAUDE_CMD": f"{FAKE_CLAUDE} -p", "SANDBOX_BASE_IMAGE": images[0],
                               "SANDBOX_AGENT_IMAGE": images[0], "ANTHROPIC_API_KEY": "sk-ant-test-key", **extra})


def test_check_with_healthy_dependencies(listener_url, fake_ollama, fake_vault, fake_ntfy, approle_dir) -> None:
    done = run_cli(healthy_env(listener_url, fake_ollama, fake_vault, fake_ntfy.url, approle_dir), "check")
    assert done.returncode == 0, done.stdout + done.stderr
    found = lines(done.stdout)
    assert set(found) == {"database", "roles", "sandbox-db", "ollama", "claude", "vault", "approle", "ntfy", "metrics",
                          "docker", "agent-image", "review-page"}
    assert all(line.startswith("ok") for line in found.values()), done.stdout
    assert fake_ntfy.published == []  # checking publishes nothing
    assert "review flags ok" in found["claude"] and "logged in (api_key from ANTHROPIC_API_KEY)" in found["claude"]


@pytest.mark.parametrize(("env", "expected"), [
    ({"ANTHROPIC_API_KEY": ""}, "overseer not logged in: claude auth status reports loggedIn: false"),
    ({"ANTHROPIC_API_KEY": "sk-ant-test-key", "FAKE_CLAUDE_HELP": "no-tools"}, "lacks --tools"),
])
def test_check_reports_the_overseers_login_and_flags(db_url, tmp_path, env, expected) -> None:
    settings = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("FAKE_"))
    done = run_cli(base_env(db_url, CLAUDE_CMD=f"env {settings} {FAKE_CLAUDE} -p".replace("env  ", ""),
                            **{k: v for k, v in env.items() if not k.startswith("FAKE_")}), "check")
    assert done.returncode == 1
    claude = lines(done.stdout)["claude"]
    assert claude.startswith("FAIL") and expected in claude, done.stdout


def test_check_with_broken_dependencies_says_how_to_fix_each(empty_db_url, fake_ollama, tmp_path) -> None:
    done = run_cli(base_env(empty_db_url, OLLAMA_URL=fake_ollama.url, OLLAMA_MODEL="llama9:404b",
                            VAULT_ADDR=closed_port_url(), VAULT_APPROLE_DIR=str(tmp_path / "missing"),
                            NTFY_URL=closed_port_url(), CLAUDE_CMD="no-such-claude -p",
                            DOCKER_HOST="tcp://127.0.0.1:1", SANDBOX_DATABASE_URL=empty_db_url), "check")
    assert done.returncode == 1
    found = lines(done.stdout)
    required = {"database", "roles", "ollama", "claude", "docker", "vault", "approle", "sandbox-db"}
    assert all(found[name].startswith("FAIL") for name in required), done.stdout
    assert found["ntfy"].startswith("WARN") and found["metrics"].startswith("ok"), done.stdout  # optional
    assert done.stdout.index("required (a build needs each):") < done.stdout.index(found["database"])
    assert done.stdout.index("optional (WARN leaves") < done.stdout.index(found["ntfy"])
    assert done.stdout.rstrip().endswith("required check(s) failed: exit code 1")
    assert "run: agent-builder migrate" in done.stdout
    assert "no agent-builder roles yet" in found["roles"]
    assert "run: ollama pull llama9:404b" in done.stdout
    assert "'no-such-claude' (CLAUDE_CMD) is not on PATH" in done.stdout
    assert "role-id is missing" in done.stdout
    assert "approle" in found and "No such file or directory" in found["approle"]
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


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("APPROVAL_ADDR", "nonsense", "APPROVAL_ADDR='nonsense': must be host:port"),
    ("WEB_ADDR", "[::1]", "WEB_ADDR='[::1]': an IPv6 address goes in brackets followed by the port"),
    ("METRICS_ADDR", "1.2.3.4:99999", "METRICS_ADDR='1.2.3.4:99999': port '99999' must be a number from 0 to 65535"),
])
def test_config_refuses_bad_addresses(db_url, variable, value, message) -> None:
    done = run_cli(base_env(db_url, **{variable: value}), "config")
    assert done.returncode == 1
    assert message in done.stderr


def test_config_refuses_web_addr_and_approval_addr_that_disagree(db_url) -> None:
    done = run_cli(base_env(db_url, WEB_ADDR="127.0.0.1:8787", APPROVAL_ADDR="0.0.0.0:8787"), "config")
    assert done.returncode == 1
    assert "WEB_ADDR='127.0.0.1:8787' and APPROVAL_ADDR='0.0.0.0:8787' disagree" in done.stderr
    same = run_cli(base_env(db_url, WEB_ADDR="127.0.0.1:8787", APPROVAL_ADDR="127.0.0.1:8787"), "config")
    assert same.returncode == 0 and "WEB_ADDR=127.0.0.1:8787" in same.stdout
    default = run_cli(base_env(db_url), "config")
    assert "WEB_ADDR=127.0.0.1:8787" in default.stdout and "METRICS_ADDR=\n" in default.stdout + "\n"


@pytest.mark.parametrize("env", [
    {"APPROVAL_ADDR": "nonsense"},
    {"METRICS_ADDR": "1.2.3.4:99999"},
    {"WEB_ADDR": "127.0.0.1:8787", "APPROVAL_ADDR": "127.0.0.1:9999"},
])
def test_listen_refuses_bad_addresses_before_it_starts_anything(db_url, env) -> None:
    automation_id = insert_idea_in(db_url)
    done = run_cli(base_env(db_url, APPROVAL_SECRET="a-long-approval-secret", APPROVAL_BASE_URL="https://ab.lan", **env),
                   "listen", timeout=60)
    assert done.returncode == 1
    variable = next(iter(env))
    assert f"{variable}=" in done.stderr and "invalid configuration" in done.stderr
    assert "started" not in done.stdout + done.stderr and "check " not in done.stdout + done.stderr
    assert query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s", (automation_id,)) == [
        {"builder_status": "not_started"}]  # no worker claimed it
    assert query(db_url, "SELECT count(*) AS n FROM agent_builds") == [{"n": 0}]


def insert_idea_in(db_url: str) -> int:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        return insert_idea(conn)


ONE_TAP = {"APPROVAL_SECRET": "a-long-approval-secret", "APPROVAL_BASE_URL": "https://ab.lan"}


def test_check_warns_when_one_tap_is_on_and_the_topic_is_readable_without_a_token(
        listener_url, fake_ollama, fake_vault, fake_ntfy, approle_dir) -> None:
    without = run_cli(healthy_env(listener_url, fake_ollama, fake_vault, fake_ntfy.url, approle_dir), "check")
    with_one_tap = run_cli(healthy_env(listener_url, fake_ollama, fake_vault, fake_ntfy.url, approle_dir, **ONE_TAP), "check")
    assert without.returncode == 0, without.stdout
    assert with_one_tap.returncode == without.returncode, with_one_tap.stdout  # a warning, not a failure
    assert lines(without.stdout)["ntfy"].startswith("ok")
    ntfy_line = lines(with_one_tap.stdout)["ntfy"]
    assert ntfy_line.startswith("WARN") and "anyone who can read the topic can approve" in ntfy_line
    assert "protect the topic with an access token (ntfy ACL" in with_one_tap.stdout and "turn one-tap off" in with_one_tap.stdout
    assert all(line.startswith("ok") for name, line in lines(with_one_tap.stdout).items() if name != "ntfy")
    polls = fake_ntfy.requests_to("GET", "/agent-builder/json")
    assert len(polls) == 1 and polls[0].query == {"poll": ["1"]} and "authorization" not in polls[0].headers
    assert fake_ntfy.published == []


def test_check_says_ok_when_the_topic_needs_a_token(listener_url, fake_ollama, fake_vault, approle_dir) -> None:
    with FakeNtfy(required_token="tk_topic_reader") as ntfy:
        done = run_cli(healthy_env(listener_url, fake_ollama, fake_vault, ntfy.url, approle_dir, NTFY_TOKEN="tk_topic_reader",
                                   **ONE_TAP), "check")
        polls = ntfy.requests_to("GET", "/agent-builder/json")
    assert done.returncode == 0, done.stdout
    line = lines(done.stdout)["ntfy"]
    assert line.startswith("ok") and "cannot be read without a token (an anonymous read answered 403)" in line
    assert len(polls) == 1 and "authorization" not in polls[0].headers  # asked anonymously, the token kept back


def test_the_topic_check_in_detail(fake_ntfy) -> None:
    def check(url: str, **env: str) -> Check:
        return check_ntfy(Settings.from_env({"NTFY_URL": url, "NTFY_TOPIC": "ab-topic_1", **env}))

    off = check(fake_ntfy.url)
    assert off.ok and not off.warning and fake_ntfy.requests_to("GET", "/ab-topic_1/json") == []  # one-tap off: not asked
    readable = check(fake_ntfy.url, **ONE_TAP)
    assert readable.ok and readable.warning and "anyone who can read the topic can approve" in readable.detail
    assert len(fake_ntfy.requests_to("GET", "/ab-topic_1/json")) == 1
    fake_ntfy.script("GET", "/ab-topic_1/json", Reply(401, {"code": 40101, "http": 401, "error": "unauthorized"}),
                     Reply(429, {"code": 42901, "http": 429, "error": "limit reached"}))
    assert check(fake_ntfy.url, **ONE_TAP).warning is False
    unclear = check(fake_ntfy.url, **ONE_TAP)
    assert unclear.ok and unclear.warning and "answered 429" in unclear.detail
    down = check(closed_port_url(), **ONE_TAP)
    assert not down.ok and "unreachable" in down.detail  # the health check fails first, as before
    assert down.optional and down.mark == "WARN" and not down.fails  # ntfy is optional
    with pytest.raises(ConfigError, match="NTFY_TOPIC='ab topic/1': must be 1 to 64 letters"):
        Settings.from_env({"NTFY_TOPIC": "ab topic/1"})  # ntfy would refuse it: named at start


def test_approle_files_the_sandbox_user_cannot_read_are_a_required_failure(
        listener_url, fake_ollama, fake_vault, fake_ntfy, approle_dir) -> None:
    env = healthy_env(listener_url, fake_ollama, fake_vault, fake_ntfy.url, approle_dir)
    (approle_dir / "secret-id").chmod(0o600)  # owned by whoever runs the tests, not by 65534
    done = run_cli(env, "check")
    assert done.returncode == 1, done.stdout
    line = lines(done.stdout)["approle"]
    assert line.startswith("FAIL") and f"{approle_dir / 'secret-id'} (mode 600" in line and "cannot be read by uid 65534" in line
    assert "role-id" not in line.replace("secret-id", "")  # only the unreadable one is named
    assert "chmod 0755 on the directory and 0644 on role-id and secret-id" in done.stdout
    assert lines(done.stdout)["vault"].startswith("ok")  # the listener itself can still log in
    (approle_dir / "secret-id").chmod(0o644)
    assert run_cli(env, "check").returncode == 0


def test_optional_dependencies_warn_and_leave_the_exit_code_alone(
        listener_url, fake_ollama, fake_vault, approle_dir) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:  # METRICS_ADDR in use by something that is no listener
        port = taken.getsockname()[1]
        env = healthy_env(listener_url, fake_ollama, fake_vault, closed_port_url(), approle_dir,
                          METRICS_ADDR=f"127.0.0.1:{port}", SANDBOX_DATABASE_URL=closed_port_url().replace("http", "postgresql"),
                          SANDBOX_AGENT_IMAGE="agent-builder-no-such-agent-image:latest")  # a scripts-only machine
        done = run_cli(env, "check")
    assert done.returncode == 0, done.stdout
    found = lines(done.stdout)
    assert found["agent-image"].startswith("WARN") and "claude_agent builds wait" in found["agent-image"], done.stdout
    assert "docker build -t agent-builder-no-such-agent-image:latest - < docker/claude-agent.Dockerfile" in done.stdout
    assert found["docker"].startswith("ok")
    assert found["ntfy"].startswith("WARN") and "unreachable" in found["ntfy"]
    assert found["metrics"].startswith("WARN") and f"cannot listen on METRICS_ADDR=127.0.0.1:{port}" in found["metrics"]
    assert found["sandbox-db"].startswith("WARN"), done.stdout
    assert done.stdout.rstrip().endswith("every required check passed: exit code 0")
    unset = base_env(listener_url, OLLAMA_URL=fake_ollama.url, CLAUDE_CMD=f"{FAKE_CLAUDE} -p", DOCKER_HOST="tcp://127.0.0.1:1")
    unset_found = lines(run_cli(unset, "check").stdout)
    assert unset_found["vault"].startswith("WARN") and "VAULT_ADDR is not set" in unset_found["vault"]
    assert unset_found["approle"].startswith("ok") and unset_found["ntfy"].startswith("WARN")


@pytest.mark.parametrize("variable", ["METRICS_ADDR", "WEB_ADDR"])
def test_listen_refuses_an_address_in_use_before_it_starts_anything(db_url, variable) -> None:
    import socket

    automation_id = insert_idea_in(db_url)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_cli(base_env(db_url, **ONE_TAP, **{variable: address}), "listen", timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"agent-builder: cannot listen on {variable}={address}: Address already in use; fix: set {variable}")
    assert "Traceback" not in done.stderr and "started" not in done.stdout + done.stderr
    assert query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s", (automation_id,)) == [
        {"builder_status": "not_started"}]
    assert query(db_url, "SELECT count(*) AS n FROM agent_builds") == [{"n": 0}]
