"""The recording endpoint given to sandboxes as SANDBOX_HTTP_URL: it answers 200 to any request
under a run's token and remembers it, so Level 4 can check that the automation called it.

URLs are `http://<gateway>:<port>/<run_token>/<path...>`; the token is fresh and unguessable per
run, so concurrent runs cannot see (or fake) each other's requests. Unknown tokens get 404, bodies
over MAX_BODY get 413. It is a BoundedHTTPServer (listener/httpserver.py): a request has
REQUEST_TIMEOUT_S in all, at most RECORDER_LIMITS.max_connections are served at once (503 beyond).
The builder binds it to the sandbox network's gateway (`bound_to`), the address the host has on
that network, not to 0.0.0.0.
"""

from __future__ import annotations

import errno
import secrets
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable
from urllib.parse import urlsplit

import docker.errors
from loguru import logger

from listener.httpserver import BackgroundServer, BoundedHandler, Limits
from listener.sandbox.standin import RECORD_PATH, ClaudeCall, parse_call

MAX_BODY = 1 << 20  # larger bodies are refused with 413
DRAIN_LIMIT = 8 << 20  # a refused body up to this size is read and dropped, so the client sees the 413
MAX_RECORDS = 1000  # per run; later requests are answered but not kept
EXCERPT_BYTES = 500
KEPT_HEADERS = ("content-type", "content-length", "user-agent", "transfer-encoding")
RECORDER_LIMITS = Limits(max_connections=64)  # sandboxes of concurrent builds share it


@dataclass(frozen=True)
class Recorded:
    """One request a sandbox made. `path` is without the token prefix ('/hook'); header names are
    lower-case and only KEPT_HEADERS are kept (never authorization or cookies)."""

    method: str
    path: str
    status: int
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body_excerpt: str = ""
    call: ClaudeCall | None = None  # a request of the claude stand-in (RECORD_PATH), parsed


class _BodyTooLarge(Exception):
    pass


class _BadRequest(Exception):
    pass


class Recorder:
    """A small bounded HTTP server (daemon thread); use it as a context manager."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0, limits: Limits = RECORDER_LIMITS) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, list[Recorded]] = {}
        # Meant to be reached from sandbox networks: no warning about who can reach it.
        self._http = BackgroundServer((host, port), _handler_class(self._record), "recorder", limits,
                                      warn_reach=False, poll_interval=0.1)
        self._server = self._http.server
        self._started = False

    @classmethod
    def bound_to(cls, gateway: str, port: int = 0) -> "Recorder":
        """A recorder listening on the sandbox network's gateway only. When the gateway is not an
        address of this host (the listener runs in a container whose port is published, or the
        engine is remote), it listens on all of this host's (or container's) addresses and says so."""
        try:
            return cls(host=gateway, port=port)
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
        logger.warning("the sandbox gateway {} is not an address of this host (a listener in a container, or a remote "
                       "engine): the recording endpoint listens on 0.0.0.0:{} instead", gateway, port)
        return cls(host="0.0.0.0", port=port)

    @property
    def port(self) -> int:
        return self._http.port

    def start(self) -> None:
        if not self._started:
            self._http.start()
            self._started = True
            logger.info("recording endpoint listening on {}", self._http.address)

    def stop(self) -> None:
        self._http.stop()
        if self._started:
            self._started = False
            logger.info("recording endpoint on port {} stopped", self.port)

    def __enter__(self) -> "Recorder":
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def open_run(self) -> str:
        """A fresh, unguessable token; requests under it are recorded until close_run."""
        token = secrets.token_urlsafe(24)
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
        """The base URL a sandbox uses (SANDBOX_HTTP_URL), e.g. http://172.17.0.1:41234/<token>."""
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{shown}:{self.port}/{token}"

    def _record(self, method: str, target: str, headers: dict[str, str], body: bytes | None, status: int) -> int:
        """Record a request if its token is open; the status it gets (404 for unknown tokens)."""
        parts = urlsplit(target)
        token, _, rest = parts.path.lstrip("/").partition("/")
        with self._lock:
            run = self._runs.get(token)
            if run is None:
                return 404
            if len(run) < MAX_RECORDS:
                path = "/" + rest
                call = parse_call(body or b"") if path == RECORD_PATH and method == "POST" and status == 200 else None
                run.append(Recorded(
                    method=method, path=path, status=status, query=parts.query,
                    headers={k: v for k, v in headers.items() if k in KEPT_HEADERS},
                    body_excerpt=(body or b"")[:EXCERPT_BYTES].decode("utf-8", errors="replace"), call=call,
                ))
        logger.debug("recording endpoint: {} /{} -> {}", method, rest, status)
        return status


RecordFn = Callable[[str, str, dict[str, str], "bytes | None", int], int]


def _handler_class(record: RecordFn) -> type[BoundedHandler]:
    class Handler(BoundedHandler):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):  # any method: GET, POST, PUT, PROPFIND, ...
                return self._handle
            raise AttributeError(name)

        def _handle(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            close = False
            try:
                body: bytes | None = self._body(headers)
                status = 200
            except _BodyTooLarge:
                body, status, close = None, 413, True
            except _BadRequest:
                body, status, close = None, 400, True
            status = record(self.command, self.path, headers, body, status)
            payload = b'{"ok": true}' if status == 200 else b'{"ok": false}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _body(self, headers: dict[str, str]) -> bytes:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                return self._chunked()
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                raise _BadRequest() from None
            if length < 0:
                raise _BadRequest()
            if length > MAX_BODY:
                if length <= DRAIN_LIMIT:
                    self._drain(length)
                raise _BodyTooLarge()
            return self.rfile.read(length) if length else b""

        def _chunked(self) -> bytes:
            data = bytearray()
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadRequest() from None
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return bytes(data)
                if len(data) + size > MAX_BODY:
                    raise _BodyTooLarge()
                data += self.rfile.read(size)
                self.rfile.readline(1024)  # the CRLF after each chunk

        def _drain(self, length: int) -> None:
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 16))
                if not chunk:
                    return
                length -= len(chunk)

    return Handler


def gateway_address(client: Any, network_name: str) -> str | None:
    """The host's address as seen from containers on the network (its IPAM gateway): where a
    sandbox reaches the recording endpoint. None for 'none' (and 'host'), or a network without one."""
    if network_name in ("none", "host"):
        return None
    try:
        attrs = client.networks.get(network_name).attrs
    except docker.errors.NotFound:
        logger.warning("network {} does not exist: no gateway for SANDBOX_HTTP_URL", network_name)
        return None
    except docker.errors.APIError as exc:
        logger.warning("could not inspect network {}: {}", network_name, exc)
        return None
    for config in (attrs.get("IPAM") or {}).get("Config") or []:
        gateway = (config or {}).get("Gateway")
        if gateway and ":" not in gateway:  # prefer the IPv4 gateway
            return str(gateway).split("/")[0]
    for config in (attrs.get("IPAM") or {}).get("Config") or []:
        gateway = (config or {}).get("Gateway")
        if gateway:
            return str(gateway).split("/")[0]
    return None
