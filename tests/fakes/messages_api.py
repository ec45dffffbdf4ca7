"""A stand-in for the Anthropic Messages API: real HTTP on 127.0.0.1, recording every request.

The real Claude Code CLI is pointed at it with ANTHROPIC_BASE_URL. It answers

  POST /v1/messages                 with "stream": true: Server-Sent Events, sent as they are made
                                    (chunked): message_start, content_block_start,
                                    content_block_delta…, content_block_stop, message_delta,
                                    message_stop; without it: one JSON message
  POST /v1/messages/count_tokens    {"input_tokens": n}
  anything else                     404 in the API's error shape

What it answers comes from a queue of Answers (`queue(...)`), then `default`:

  Answer.say("PASS …")                     a text block
  Answer.tool_use("Read", {"file_path": …}) a tool_use block (stop_reason "tool_use")
  Answer.error(401, "authentication_error", "invalid x-api-key")   (5xx and 429 say x-should-retry: true)
  Answer.say("PASS", delay_s=60)           a hung API (nothing is sent for delay_s)

Every request is recorded (`requests`, `message_requests`) with its raw body. The usage it reports
is an estimate of about 4 characters per token (`estimate_tokens`): input over the request's
system prompt, messages and tool definitions; output over the answer.
"""

from __future__ import annotations

import json
import math
import secrets
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http_fake import FakeHTTPServer, RecordedRequest

CHARS_PER_TOKEN = 4
DEFAULT_MODEL = "claude-stand-in-1"


def estimate_tokens(text: str) -> int:
    """About 4 characters per token, the rule of thumb for English text and code."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Answer:
    """One scripted reply of the stand-in: Answer.say(...), Answer.tool_use(...), Answer.error(...)."""

    kind: str  # 'text' | 'tool_use' | 'error'
    text: str = ""
    tool_name: str = ""
    tool_input: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    error_type: str = ""
    delay_s: float = 0.0

    @classmethod
    def say(cls, text: str, delay_s: float = 0.0) -> "Answer":
        return cls(kind="text", text=text, delay_s=delay_s)

    @classmethod
    def tool_use(cls, name: str, tool_input: dict[str, Any], text: str = "") -> "Answer":
        return cls(kind="tool_use", tool_name=name, tool_input=dict(tool_input), text=text)

    @classmethod
    def error(cls, status: int, error_type: str, message: str) -> "Answer":
        return cls(kind="error", status=status, error_type=error_type, text=message)


@dataclass(frozen=True)
class MessagesRequest:
    """A recorded POST /v1/messages, with its parsed body."""

    raw: RecordedRequest
    body: dict[str, Any]

    @property
    def size_bytes(self) -> int:
        return len(self.raw.body)

    @property
    def tools(self) -> list[Any]:
        tools = self.body.get("tools")
        return list(tools) if isinstance(tools, list) else []

    @property
    def system_text(self) -> str:
        return _text_of(self.body.get("system"))

    @property
    def messages_text(self) -> str:
        return "\n".join(_text_of(m.get("content")) for m in self.body.get("messages", []) if isinstance(m, dict))

    @property
    def text(self) -> str:
        """Every piece of text the model would read: system prompt, messages, tool definitions."""
        tools = json.dumps(self.tools) if self.tools else ""
        return "\n".join(part for part in (self.system_text, self.messages_text, tools) if part)

    @property
    def input_tokens(self) -> int:
        return estimate_tokens(self.text)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    parts.append(block["text"])
                elif block.get("type") == "tool_result":
                    parts.append(_text_of(block.get("content")))
                elif block.get("type") == "tool_use":
                    parts.append(json.dumps(block.get("input")))
            elif isinstance(block, str):
                parts.append(block)
        return "\n".join(parts)
    return ""


class FakeMessagesAPI(FakeHTTPServer):
    """Start with `start()` or `with`; `url` is the base URL to give as ANTHROPIC_BASE_URL."""

    def __init__(self, default: Answer | None = None, model: str = DEFAULT_MODEL) -> None:
        super().__init__()
        self.default = default or Answer.say("PASS The code reads its secrets from Vault via AppRole and matches the spec.")
        self.model = model
        self._answers: deque[Answer] = deque()
        self._usage: list[dict[str, int]] = []
        self._closing = threading.Event()

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    def stop(self) -> None:
        self._closing.set()  # a delayed answer gives up at once
        super().stop()

    # -- scripting and recording ---------------------------------------------------------------
    def queue(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    @property
    def message_requests(self) -> list[MessagesRequest]:
        found = []
        for request in self.requests:
            if request.method == "POST" and request.path == "/v1/messages":
                body = request.json
                found.append(MessagesRequest(request, body if isinstance(body, dict) else {}))
        return found

    @property
    def reported_usage(self) -> list[dict[str, int]]:
        """The usage of every message it answered, as sent (input_tokens, output_tokens, …)."""
        with self._lock:
            return [dict(u) for u in self._usage]

    def all_bytes(self) -> bytes:
        """Everything any request carried (path, headers, body): for "never reaches the API" checks."""
        return b"\n".join(
            r.path.encode() + b"\n" + json.dumps(r.headers).encode() + b"\n" + r.body for r in self.requests)

    def _next_answer(self) -> Answer:
        with self._lock:
            return self._answers.popleft() if self._answers else self.default

    # -- the API -------------------------------------------------------------------------------
    def message(self, request: MessagesRequest, answer: Answer) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """The full message and the SSE events that stream it."""
        model = str(request.body.get("model") or self.model)
        message_id = "msg_" + secrets.token_hex(12)
        input_tokens = request.input_tokens
        events: list[tuple[str, dict[str, Any]]] = []
        start = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
                 "stop_reason": None, "stop_sequence": None,
                 "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                           "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        events.append(("message_start", {"type": "message_start", "message": start}))
        content: list[dict[str, Any]] = []
        index = 0
        output_text = ""
        if answer.text and answer.kind in ("text", "tool_use"):
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            for piece in _pieces(answer.text):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": piece}}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
            content.append({"type": "text", "text": answer.text})
            output_text += answer.text
            index += 1
        if answer.kind == "tool_use":
            tool_id = "toolu_" + secrets.token_hex(12)
            encoded = json.dumps(answer.tool_input)
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "tool_use", "id": tool_id,
                                                                     "name": answer.tool_name, "input": {}}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "input_json_delta", "partial_json": encoded}}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
            content.append({"type": "tool_use", "id": tool_id, "name": answer.tool_name, "input": answer.tool_input})
            output_text += encoded
        stop_reason = "tool_use" if answer.kind == "tool_use" else "end_turn"
        output_tokens = max(1, estimate_tokens(output_text))
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                         "usage": {"output_tokens": output_tokens}}))
        events.append(("message_stop", {"type": "message_stop"}))
        full = {**start, "content": content, "stop_reason": stop_reason,
                "usage": {**start["usage"], "output_tokens": output_tokens}}
        with self._lock:
            self._usage.append(dict(full["usage"]))
        return full, events


def _pieces(text: str, size: int = 16) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message},
            "request_id": "req_" + secrets.token_hex(8)}


def _make_handler(api: FakeMessagesAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _read(self) -> RecordedRequest:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            return RecordedRequest(method=self.command, path=parts.path, query=parse_qs(parts.query),
                                   headers={k.lower(): v for k, v in self.headers.items()}, body=body)

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", "req_" + secrets.token_hex(8))
            if status >= 400:  # as the API: overload and server errors may be retried, the rest not
                self.send_header("x-should-retry", "true" if status >= 500 or status == 429 else "false")
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _wait(self, seconds: float) -> bool:
            """Sleep, but give up at once when the server stops; False when it did."""
            return not api._closing.wait(seconds)

        def do_POST(self) -> None:  # noqa: N802
            raw = self._read()
            api._record(raw)
            if raw.path == "/v1/messages/count_tokens":
                body = raw.json if isinstance(raw.json, dict) else {}
                self._send_json(200, {"input_tokens": MessagesRequest(raw, body).input_tokens})
                return
            if raw.path != "/v1/messages":
                self._send_json(404, _error_body("not_found_error", f"no route for POST {raw.path}"))
                return
            body = raw.json
            if not isinstance(body, dict):
                self._send_json(400, _error_body("invalid_request_error", "the body is not a JSON object"))
                return
            request = MessagesRequest(raw, body)
            answer = api._next_answer()
            if answer.delay_s and not self._wait(answer.delay_s):
                return
            if answer.kind == "error":
                self._send_json(answer.status, _error_body(answer.error_type, answer.text))
                return
            full, events = api.message(request, answer)
            if not body.get("stream"):
                self._send_json(200, full)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("request-id", "req_" + secrets.token_hex(8))
            self.end_headers()
            for name, data in events:
                self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self._chunk(b"")

        def do_GET(self) -> None:  # noqa: N802
            raw = self._read()
            api._record(raw)
            self._send_json(404, _error_body("not_found_error", f"no route for GET {raw.path}"))

        do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
                pass  # the client gave up (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    return Handler
