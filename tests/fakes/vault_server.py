"""A fake Vault: AppRole login and KV version 2 reads, with Vault's status codes and shapes.

  POST /v1/auth/approle/login     {"role_id", "secret_id"} -> {"auth": {"client_token", ...}}
                                  wrong pair -> 400 {"errors": ["invalid role or secret ID"]}
  GET  /v1/{mount}/data/{path}    X-Vault-Token must be a token it issued (403 otherwise);
                                  unknown path -> 404 {"errors": []}
`revoke_tokens()` forgets every issued token (an expired lease).
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

from tests.fakes.http_fake import FakeHTTPServer, RecordedRequest, Reply

LOGIN_PATH = "/v1/auth/approle/login"
TEST_ROLE_ID = "role-5f1e2d3c"
TEST_SECRET_ID = "secret-9a8b7c6d"


class FakeVault(FakeHTTPServer):
    def __init__(self, role_id: str, secret_id: str, secrets_by_path: dict[str, dict[str, Any]] | None = None,
                 token_ttl_s: int = 3600) -> None:
        self.token_ttl_s = token_ttl_s
        """secrets_by_path keys are 'mount/path', e.g. 'secret/agent-builder'."""
        super().__init__()
        self.role_id = role_id
        self.secret_id = secret_id
        self.secrets_by_path = dict(secrets_by_path or {})
        self._tokens: set[str] = set()
        self._token_lock = threading.Lock()

    @property
    def issued_tokens(self) -> set[str]:
        with self._token_lock:
            return set(self._tokens)

    def revoke_tokens(self) -> None:
        with self._token_lock:
            self._tokens.clear()

    def respond(self, request: RecordedRequest) -> Reply:
        if request.method in ("POST", "PUT") and request.path == LOGIN_PATH:
            return self._login(request)
        if request.method == "GET" and request.path.startswith("/v1/"):
            return self._read(request)
        return Reply(404, {"errors": []})

    def _login(self, request: RecordedRequest) -> Reply:
        body = request.json if isinstance(request.json, dict) else {}
        if not body.get("role_id"):
            return Reply(400, {"errors": ["missing role_id"]})
        if body.get("role_id") != self.role_id or body.get("secret_id") != self.secret_id:
            return Reply(400, {"errors": ["invalid role or secret ID"]})
        token = "hvs." + secrets.token_urlsafe(24)
        with self._token_lock:
            self._tokens.add(token)
        return Reply(
            200,
            {
                "request_id": secrets.token_hex(8),
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": None,
                "auth": {
                    "client_token": token,
                    "accessor": secrets.token_urlsafe(12),
                    "policies": ["default", "agent-builder"],
                    "token_policies": ["default", "agent-builder"],
                    "metadata": {"role_name": "agent-builder"},
                    "lease_duration": self.token_ttl_s,
                    "renewable": True,
                    "entity_id": secrets.token_hex(8),
                    "token_type": "service",
                    "orphan": True,
                },
            },
        )

    def _read(self, request: RecordedRequest) -> Reply:
        token = request.headers.get("x-vault-token")
        with self._token_lock:
            known = token in self._tokens
        if not known:
            return Reply(403, {"errors": ["permission denied"]})
        parts = request.path[len("/v1/"):].split("/", 2)
        if len(parts) != 3 or parts[1] != "data":
            return Reply(404, {"errors": []})
        key = f"{parts[0]}/{parts[2]}"
        if key not in self.secrets_by_path:
            return Reply(404, {"errors": []})
        return Reply(
            200,
            {
                "request_id": secrets.token_hex(8),
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": {
                    "data": self.secrets_by_path[key],
                    "metadata": {
                        "created_time": "2024-08-01T00:00:00.000000Z",
                        "custom_metadata": None,
                        "deletion_time": "",
                        "destroyed": False,
                        "version": 1,
                    },
                },
                "wrap_info": None,
                "warnings": None,
                "auth": None,
            },
        )
