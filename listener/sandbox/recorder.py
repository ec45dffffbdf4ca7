"""The recording endpoint given to sandboxes as SANDBOX_HTTP_URL: it answers 200 to any request
under a run's token and remembers it, so Level 4 can check that the automation called it."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    status: int
    body_excerpt: str


class Recorder:
    """A small HTTP server on all interfaces (the sandbox reaches it through its network's gateway)."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, list[Recorded]] = {}
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> "Recorder":
        self._thread = threading.Thread(target=self._server.serve_forever, name="recorder", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def open_run(self) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._runs[token] = []
        return token

    def close_run(self, token: str) -> None:
        with self._lock:
            self._runs.pop(token, None)

    def requests_for(self, token: str) -> list[Recorded]:
        with self._lock:
            return list(self._runs.get(token, []))

    def url_for(self, token: str, host: str) -> str:
        return f"http://{host}:{self.port}/{token}"

    def _record(self, method: str, raw_path: str, body: bytes | None, too_large: bool) -> int:
        path = urlsplit(raw_path).path
        token, _, rest = path.lstrip("/").partition("/")
        with self._lock:
            run = self._runs.get(token)
            if run is None:
                return 404
            status = 413 if too_large else 200
            run.append(Recorded(method=method, path="/" + rest, status=status,
                                body_excerpt=(body or b"")[:500].decode("utf-8", errors="replace")))
            return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                too_large = length > MAX_BODY
                body = None if too_large else (self.rfile.read(length) if length else b"")
                status = recorder._record(self.command, self.path, body, too_large)
                payload = b'{"ok": true}' if status == 200 else b'{"ok": false}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if too_large:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        return Handler


def gateway_address(client: Any, network: str) -> str | None:
    """The host's address as seen from containers on `network` (its IPAM gateway); None for 'none'."""
    if network in ("none", "host"):
        return None
    try:
        attrs = client.networks.get(network).attrs
    except Exception:  # noqa: BLE001 - a missing network has no gateway
        return None
    for config in (attrs.get("IPAM") or {}).get("Config") or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
    return None
