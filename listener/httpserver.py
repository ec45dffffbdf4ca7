"""The few lines every small HTTP endpoint of the listener shares (approvals, metrics)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
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
