"""Vault through hvac: AppRole login from the role-id/secret-id files, KV version 2 reads.

Errors become VaultError with a message fit for a person. Credentials and tokens are never logged,
and every one the client obtains (the AppRole pair it read, each login's token, each value it reads)
is registered with the Redactor, so no sink shows it even if some text carries it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import hvac
import hvac.exceptions
import requests
from loguru import logger

from listener.redact import Redactor


class VaultError(Exception):
    """Vault could not be used; the message says why (unreachable, bad credentials, no such path...)."""


class VaultClient:
    def __init__(self, addr: str, approle_dir: Path, timeout_s: float = 10, redactor: Redactor | None = None) -> None:
        self.addr = addr.rstrip("/")
        self.redactor = redactor
        self.approle_dir = Path(approle_dir)
        self.timeout_s = timeout_s
        self._client = hvac.Client(url=self.addr, timeout=timeout_s)  # type: ignore[arg-type]  # requests takes a float; the stubs say int
        self._logged_in = False
        self._lease_s: float | None = None
        self._logged_in_at = 0.0

    def login(self) -> None:
        """AppRole login with the credentials in approle_dir. Raises VaultError."""
        role_id = self._read_credential("role-id")
        secret_id = self._read_credential("secret-id")
        self._register(role_id, "AppRole role-id")
        self._register(secret_id, "AppRole secret-id")
        try:
            answer = self._client.auth.approle.login(role_id=role_id, secret_id=secret_id, use_token=True)
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Unauthorized, hvac.exceptions.Forbidden) as exc:
            self._logged_in = False
            raise VaultError(
                f"Vault at {self.addr} rejected the AppRole credentials in {self.approle_dir} ({_errors(exc)})"
            ) from None
        except hvac.exceptions.VaultError as exc:
            self._logged_in = False
            raise VaultError(f"AppRole login to Vault at {self.addr} failed: {_describe(exc)}") from None
        except requests.exceptions.RequestException as exc:
            self._logged_in = False
            raise self._transport_error(exc) from None
        except (KeyError, TypeError, ValueError) as exc:
            self._logged_in = False
            raise VaultError(f"Vault at {self.addr} sent an unexpected AppRole login answer ({type(exc).__name__})") from None
        self._logged_in = True
        auth = answer.get("auth") if isinstance(answer, dict) else None
        self._register((auth or {}).get("client_token") if isinstance(auth, dict) else None, "Vault token")
        lease = (answer or {}).get("auth", {}).get("lease_duration") if isinstance(answer, dict) else None
        self._lease_s = float(lease) if isinstance(lease, (int, float)) and lease > 0 else None
        self._logged_in_at = time.monotonic()
        logger.info("vault login ok addr={} approle_dir={}", self.addr, self.approle_dir)

    def _token_expiring(self) -> bool:
        """A token past two thirds of its lease is replaced by a fresh AppRole login before use
        (the credentials are on disk, so a new login always works where a renewal might not)."""
        return self._lease_s is not None and time.monotonic() - self._logged_in_at > self._lease_s * 2 / 3

    def read_kv(self, path: str, mount: str = "secret") -> dict[str, str]:
        """The latest version of a KV v2 secret, values as text. Logs in when needed; once more on 403."""
        fresh = not self._logged_in or self._token_expiring()
        if fresh:
            self.login()
        try:
            return self._read(path, mount)
        except hvac.exceptions.Forbidden:
            if fresh:
                raise self._denied(path, mount) from None
            logger.info("vault read {}/{} forbidden; logging in again", mount, path)
        self.login()
        try:
            return self._read(path, mount)
        except hvac.exceptions.Forbidden:
            raise self._denied(path, mount) from None

    def token_provider(self, path: str, key: str, mount: str = "secret") -> Callable[[], str | None]:
        """A zero-argument callable returning secret `key` at `path` (None when the key is absent).

        It raises VaultError when Vault cannot be read; the Notifier logs that and goes on without a token.
        """

        def provide() -> str | None:
            value = self.read_kv(path, mount).get(key)
            if value is None:
                logger.warning("vault secret {}/{} has no key {!r}", mount, path, key)
            return value

        return provide

    # -- internals ---------------------------------------------------------------------------

    def _read(self, path: str, mount: str) -> dict[str, str]:
        try:
            response = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.Forbidden:
            raise
        except hvac.exceptions.InvalidPath:
            raise VaultError(f"no secret at {mount}/{path} in Vault at {self.addr} (KV v2 mount {mount!r})") from None
        except hvac.exceptions.VaultError as exc:
            raise VaultError(f"reading {mount}/{path} from Vault at {self.addr} failed: {_describe(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise self._transport_error(exc) from None
        try:
            data: dict[str, Any] = response["data"]["data"]
        except (KeyError, TypeError):
            raise VaultError(f"Vault at {self.addr} sent an unexpected answer for {mount}/{path} (is it a KV v2 mount?)") from None
        logger.info("vault read {}/{} keys={}", mount, path, sorted(data))
        values = {str(k): "" if v is None else str(v) for k, v in data.items()}
        for key, value in values.items():
            self._register(value, f"{key} from Vault {mount}/{path}")
        return values

    def _register(self, value: object, kind: str) -> None:
        if self.redactor is not None and isinstance(value, str):
            self.redactor.add(value, kind)

    def _read_credential(self, name: str) -> str:
        file = self.approle_dir / name
        try:
            value = file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise VaultError(f"AppRole credential file {file} is missing") from None
        except IsADirectoryError:
            raise VaultError(f"AppRole credential file {file} is a directory") from None
        except OSError as exc:
            raise VaultError(f"AppRole credential file {file} cannot be read: {exc.strerror or type(exc).__name__}") from None
        except UnicodeDecodeError:
            raise VaultError(f"AppRole credential file {file} is not text") from None
        if not value:
            raise VaultError(f"AppRole credential file {file} is empty")
        return value

    def _denied(self, path: str, mount: str) -> VaultError:
        return VaultError(f"permission denied reading {mount}/{path} from Vault at {self.addr}: check the AppRole's policy")

    def _transport_error(self, exc: requests.exceptions.RequestException) -> VaultError:
        if isinstance(exc, requests.exceptions.Timeout):
            return VaultError(f"Vault at {self.addr} did not answer within {self.timeout_s:g} s")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return VaultError(f"Vault at {self.addr} is unreachable (connection failed): is VAULT_ADDR right and Vault running?")
        return VaultError(f"talking to Vault at {self.addr} failed: {type(exc).__name__}")


def _errors(exc: hvac.exceptions.VaultError) -> str:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    if isinstance(errors, str) and errors:
        return errors
    return type(exc).__name__


def _describe(exc: hvac.exceptions.VaultError) -> str:
    kind = {
        hvac.exceptions.VaultDown: "Vault is sealed or down",
        hvac.exceptions.InternalServerError: "internal server error",
        hvac.exceptions.RateLimitExceeded: "rate limited",
        hvac.exceptions.VaultNotInitialized: "Vault is not initialized",
    }.get(type(exc), type(exc).__name__)
    return f"{kind} ({_errors(exc)})"
