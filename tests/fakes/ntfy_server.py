"""A fake ntfy server: JSON publishing (POST / with a "topic" field), polling a topic's cached
messages (GET /<topic>/json?poll=1: newline-delimited JSON message objects, then the end of the
answer), /v1/health, and the bearer-token check.

`required_token` set: requests without `Authorization: Bearer <that token>` get ntfy's 403 (no
token: an anonymous client has no access) or 401 (a wrong one), publishing and reading alike; unset,
anyone may publish and read, as on a server without access control.
`published` lists the accepted message bodies. Streaming subscriptions (without poll=1) are not
imitated.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

from tests.fakes.http_fake import FakeHTTPServer, RecordedRequest, Reply


class FakeNtfy(FakeHTTPServer):
    def __init__(self, required_token: str | None = None) -> None:
        super().__init__()
        self.required_token = required_token
        self._cache_lock = threading.Lock()
        self._cache: list[dict[str, Any]] = []  # the messages ntfy keeps for pollers, oldest first

    @property
    def published(self) -> list[dict[str, Any]]:
        return [r.json for r in self.requests_to("POST", "/") if isinstance(r.json, dict)]

    def respond(self, request: RecordedRequest) -> Reply:
        if request.method == "GET" and request.path == "/v1/health":
            return Reply(200, {"healthy": True})
        topic, _, kind = request.path.lstrip("/").partition("/")
        if request.method == "GET" and topic and kind == "json" and request.query.get("poll") == ["1"]:
            return self._access(request) or self._poll(topic)
        if request.method != "POST" or request.path != "/":
            return Reply(404, {"code": 40401, "http": 404, "error": "page not found"})
        return self._access(request) or self._publish(request)

    def _access(self, request: RecordedRequest) -> Reply | None:
        if self.required_token is None:
            return None
        auth = request.headers.get("authorization")
        if auth is None:
            return Reply(403, {"code": 40301, "http": 403, "error": "forbidden"})
        if auth != f"Bearer {self.required_token}":
            return Reply(401, {"code": 40101, "http": 401, "error": "unauthorized"})
        return None

    def _poll(self, topic: str) -> Reply:
        with self._cache_lock:
            messages = [m for m in self._cache if m["topic"] == topic]
        lines = "".join(json.dumps(m, separators=(",", ":")) + "\n" for m in messages)
        return Reply(200, lines, headers={"Content-Type": "application/x-ndjson; charset=utf-8"})

    def _publish(self, request: RecordedRequest) -> Reply:
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
        with self._cache_lock:
            self._cache.append(message)
        return Reply(200, message)
