"""A fake ntfy server: JSON publishing (POST / with a "topic" field) and the bearer-token check.

`required_token` set: requests without `Authorization: Bearer <that token>` get ntfy's 401/403.
`published` lists the accepted message bodies.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from tests.fakes.http_fake import FakeHTTPServer, RecordedRequest, Reply


class FakeNtfy(FakeHTTPServer):
    def __init__(self, required_token: str | None = None) -> None:
        super().__init__()
        self.required_token = required_token

    @property
    def published(self) -> list[dict[str, Any]]:
        return [r.json for r in self.requests_to("POST", "/") if isinstance(r.json, dict)]

    def respond(self, request: RecordedRequest) -> Reply:
        if request.method != "POST" or request.path != "/":
            return Reply(404, {"code": 40401, "http": 404, "error": "page not found"})
        if self.required_token is not None:
            auth = request.headers.get("authorization")
            if auth is None:
                return Reply(403, {"code": 40301, "http": 403, "error": "forbidden"})
            if auth != f"Bearer {self.required_token}":
                return Reply(401, {"code": 40101, "http": 401, "error": "unauthorized"})
        body = request.json
        if not isinstance(body, dict) or not body.get("topic"):
            return Reply(400, {"code": 40009, "http": 400, "error": "invalid request: topic invalid"})
        message = {
            "id": secrets.token_hex(6),
            "time": int(time.time()),
            "event": "message",
            "topic": body["topic"],
            "message": body.get("message", "triggered"),
        }
        for key in ("title", "tags", "priority", "click", "actions"):
            if key in body:
                message[key] = body[key]
        return Reply(200, message)
