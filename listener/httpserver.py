"""What the listener's small HTTP endpoints share (approvals, metrics)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TextHandler(BaseHTTPRequestHandler):
    """A request handler that answers with plain text and keeps access logs off stderr."""

    def send_text(self, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return


class BackgroundServer:
    """A threading HTTP server on 'host:port' (port 0: any free one), served from a daemon thread."""

    def __init__(self, address: str, handler: type[TextHandler], name: str) -> None:
        host, _, port = address.rpartition(":")
        self.name = name
        self.server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name=self.name, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
