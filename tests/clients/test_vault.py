"""VaultClient (hvac, AppRole, KV v2) against a fake Vault speaking Vault's HTTP API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from listener.clients.ntfy import Notification, Notifier
from listener.clients.vault import VaultClient, VaultError
from tests.fakes.http_fake import Reply, closed_port_url
from tests.fakes.ntfy_server import FakeNtfy
from tests.fakes.vault_server import LOGIN_PATH, FakeVault
from tests.fakes.vault_server import TEST_ROLE_ID as ROLE_ID
from tests.fakes.vault_server import TEST_SECRET_ID as SECRET_ID

DATA_PATH = "/v1/secret/data/agent-builder"


def test_login_then_read_kv(fake_vault: FakeVault, approle_dir: Path) -> None:
    vault = VaultClient(fake_vault.url, approle_dir, timeout_s=5)
    assert vault.read_kv("agent-builder") == {"ntfy_token": "tk_fromvault123", "other": "x"}

    [login] = fake_vault.requests_to("POST", LOGIN_PATH)
    assert login.json == {"role_id": ROLE_ID, "secret_id": SECRET_ID}
    [read] = fake_vault.requests_to("GET", DATA_PATH)
    assert read.headers["x-vault-token"] in fake_vault.issued_tokens


def test_a_second_read_reuses_the_token(fake_vault: FakeVault, approle_dir: Path) -> None:
    vault = VaultClient(fake_vault.url, approle_dir, timeout_s=5)
    vault.read_kv("agent-builder")
    vault.read_kv("agent-builder")
    assert len(fake_vault.requests_to("POST", LOGIN_PATH)) == 1


def test_an_expired_token_is_renewed_by_logging_in_once_more(fake_vault: FakeVault, approle_dir: Path) -> None:
    vault = VaultClient(fake_vault.url, approle_dir, timeout_s=5)
    vault.read_kv("agent-builder")
    fake_vault.revoke_tokens()

    assert vault.read_kv("agent-builder")["other"] == "x"
    assert len(fake_vault.requests_to("POST", LOGIN_PATH)) == 2


def test_permission_denied_after_a_fresh_login_is_an_error(fake_vault: FakeVault, approle_dir: Path) -> None:
    denied = Reply(403, {"errors": ["permission denied"]})
    fake_vault.script("GET", DATA_PATH, denied, denied)
    vault = VaultClient(fake_vault.url, approle_dir, timeout_s=5)
    with pytest.raises(VaultError, match="permission denied reading secret/agent-builder"):
        vault.read_kv("agent-builder")


def test_permission_denied_twice_with_an_old_token_is_an_error(fake_vault: FakeVault, approle_dir: Path) -> None:
    vault = VaultClient(fake_vault.url, approle_dir, timeout_s=5)
    vault.login()
    denied = Reply(403, {"errors": ["permission denied"]})
    fake_vault.script("GET", DATA_PATH, denied, denied)
    with pytest.raises(VaultError, match="check the AppRole's policy"):
        vault.read_kv("agent-builder")
    assert len(fake_vault.requests_to("POST", LOGIN_PATH)) == 2
    assert len(fake_vault.requests_to("GET", DATA_PATH)) == 2


def test_a_missing_path_is_reported(fake_vault: FakeVault, approle_dir: Path) -> None:
    with pytest.raises(VaultError, match="no secret at secret/nope"):
        VaultClient(fake_vault.url, approle_dir, timeout_s=5).read_kv("nope")


def test_another_mount_is_read_from_its_own_path(approle_dir: Path) -> None:
    with FakeVault(ROLE_ID, SECRET_ID, {"kv/team/app": {"k": 1}}) as fake:
        assert VaultClient(fake.url, approle_dir, timeout_s=5).read_kv("team/app", mount="kv") == {"k": "1"}
        assert fake.requests_to("GET", "/v1/kv/data/team/app")


def test_bad_credentials_are_reported_without_revealing_them(fake_vault: FakeVault, tmp_path: Path, log_lines: list[str]) -> None:
    directory = tmp_path / "wrong"
    directory.mkdir()
    (directory / "role-id").write_text(ROLE_ID)
    (directory / "secret-id").write_text("wrong-secret-0000")
    with pytest.raises(VaultError) as caught:
        VaultClient(fake_vault.url, directory, timeout_s=5).login()
    message = str(caught.value)
    assert "rejected the AppRole credentials" in message
    assert "invalid role or secret ID" in message
    assert str(directory) in message
    for secret in (ROLE_ID, "wrong-secret-0000"):
        assert secret not in message
        assert not any(secret in line for line in log_lines)


def test_an_unreachable_vault_is_reported(approle_dir: Path) -> None:
    url = closed_port_url()
    with pytest.raises(VaultError, match="unreachable") as caught:
        VaultClient(url, approle_dir, timeout_s=5).login()
    assert url in str(caught.value)


def test_a_vault_that_does_not_answer_times_out(fake_vault: FakeVault, approle_dir: Path) -> None:
    fake_vault.script("POST", LOGIN_PATH, Reply(200, {}, delay_s=5))
    started = time.monotonic()
    with pytest.raises(VaultError, match="did not answer within 0.5 s"):
        VaultClient(fake_vault.url, approle_dir, timeout_s=0.5).login()
    assert time.monotonic() - started < 3


def test_a_sealed_vault_is_reported(fake_vault: FakeVault, approle_dir: Path) -> None:
    fake_vault.script("POST", LOGIN_PATH, Reply(503, {"errors": ["Vault is sealed"]}))
    with pytest.raises(VaultError, match="sealed"):
        VaultClient(fake_vault.url, approle_dir, timeout_s=5).login()


@pytest.mark.parametrize("name", ["role-id", "secret-id"])
def test_a_missing_credential_file_is_named(fake_vault: FakeVault, approle_dir: Path, name: str) -> None:
    (approle_dir / name).unlink()
    with pytest.raises(VaultError, match=f"{approle_dir / name} is missing"):
        VaultClient(fake_vault.url, approle_dir, timeout_s=5).login()
    assert fake_vault.requests == []


def test_an_empty_credential_file_is_named(fake_vault: FakeVault, approle_dir: Path) -> None:
    (approle_dir / "secret-id").write_text("  \n")
    with pytest.raises(VaultError, match=f"{approle_dir / 'secret-id'} is empty"):
        VaultClient(fake_vault.url, approle_dir, timeout_s=5).login()


def test_an_unreadable_credential_file_is_named(fake_vault: FakeVault, approle_dir: Path) -> None:
    (approle_dir / "role-id").unlink()
    (approle_dir / "role-id").mkdir()
    with pytest.raises(VaultError, match=f"{approle_dir / 'role-id'}"):
        VaultClient(fake_vault.url, approle_dir, timeout_s=5).login()


def test_secrets_and_tokens_never_reach_the_log(fake_vault: FakeVault, approle_dir: Path, log_lines: list[str]) -> None:
    vault = VaultClient(fake_vault.url, approle_dir, timeout_s=5)
    vault.read_kv("agent-builder")
    fake_vault.revoke_tokens()
    vault.read_kv("agent-builder")
    text = "\n".join(log_lines)
    assert "vault login ok" in text
    for secret in (ROLE_ID, SECRET_ID, "tk_fromvault123", *fake_vault.issued_tokens):
        assert secret not in text


def test_token_provider_feeds_the_ntfy_token(fake_vault: FakeVault, approle_dir: Path) -> None:
    vault = VaultClient(fake_vault.url, approle_dir, timeout_s=5)
    provider = vault.token_provider("agent-builder", "ntfy_token")
    assert fake_vault.requests == []  # lazy: nothing happens until it is called
    with FakeNtfy(required_token="tk_fromvault123") as ntfy:
        assert Notifier(ntfy.url, "t", token_provider=provider).send(Notification("t", "m")) is True
        assert ntfy.requests[0].headers["authorization"] == "Bearer tk_fromvault123"


def test_token_provider_returns_none_for_a_missing_key(fake_vault: FakeVault, approle_dir: Path) -> None:
    assert VaultClient(fake_vault.url, approle_dir, timeout_s=5).token_provider("agent-builder", "nope")() is None


def test_token_provider_raises_vault_errors(approle_dir: Path) -> None:
    provider = VaultClient(closed_port_url(), approle_dir, timeout_s=5).token_provider("agent-builder", "ntfy_token")
    with pytest.raises(VaultError, match="unreachable"):
        provider()


def test_a_token_near_the_end_of_its_lease_is_replaced_by_a_fresh_login(approle_dir) -> None:
    with FakeVault(ROLE_ID, SECRET_ID, {"secret/agent-builder": {"ntfy_token": "tk_1"}}, token_ttl_s=1) as vault:
        client = VaultClient(vault.url, approle_dir)
        assert client.read_kv("agent-builder") == {"ntfy_token": "tk_1"}
        assert client.read_kv("agent-builder") == {"ntfy_token": "tk_1"}
        assert len(vault.requests_to("POST", "/v1/auth/approle/login")) == 1
        time.sleep(0.8)
        assert client.read_kv("agent-builder") == {"ntfy_token": "tk_1"}
        assert len(vault.requests_to("POST", "/v1/auth/approle/login")) == 2


def test_every_credential_and_token_the_client_obtains_is_known_to_the_redactor(fake_vault: FakeVault,
                                                                               approle_dir: Path) -> None:
    from listener.redact import Redactor

    redactor = Redactor()
    vault = VaultClient(fake_vault.url, approle_dir, timeout_s=5, redactor=redactor)
    assert vault.read_kv("agent-builder")["ntfy_token"] == "tk_fromvault123"
    [token] = fake_vault.issued_tokens
    text = f"{token} {ROLE_ID} {SECRET_ID} tk_fromvault123 x"
    assert redactor.redact(text) == "[redacted] [redacted] [redacted] [redacted] x"  # 'x' is too short to be one
    fake_vault.revoke_tokens()
    vault.read_kv("agent-builder")  # a fresh login: its token is registered as well
    assert all(redactor.redact(t) == "[redacted]" for t in fake_vault.issued_tokens | {token})
