"""The one shape of the listener's small HTTP endpoints (one-tap approvals, metrics, the sandbox
recording endpoint): bounded in time, in threads and in memory.

- A connection has `request_timeout_s` in all (request head, body and answer): a slow sender
  (slowloris) is cut at that deadline however it trickles its bytes; no per-read timeout to renew.
- The request head is read by the serving thread itself, without blocking (a selector over every
  connection still sending its head): a connection that connects and sends nothing, or sends its
  head slowly, holds no thread. At most `max_pending` such connections are kept; a new one beyond
  that closes the oldest, so a client holding idle connections cannot lock others out.
- A handler thread starts only once the head is complete, for at most `max_connections`
  connections at once; beyond that the connection is answered `503` with `Connection: close` at once,
  from the serving thread.
- The head is at most `max_head_bytes` (request line and headers; `431` beyond); http.server's own
  limits apply on top (a line of 64 KiB, 100 headers).
- Daemon threads, and a stop that closes every connection and returns.
"""

from __future__ import annotations

import io
import ipaddress
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from loguru import logger

REQUEST_TIMEOUT_S = 10.0  # a whole request, head to answer, on one connection
MAX_CONNECTIONS = 32  # handler threads at once (approvals, metrics); the recorder uses 64
MAX_HEAD_BYTES = 32 * 1024  # request line and headers
REJECT_LINGER_S = 2.0  # how long a refused connection is read (and dropped) so the client sees its answer
_RECV_BYTES = 16 * 1024


@dataclass(frozen=True)
class Limits:
    request_timeout_s: float = REQUEST_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    max_pending: int = 0  # connections still sending their head; 0: 4 × max_connections
    max_head_bytes: int = MAX_HEAD_BYTES

    def __post_init__(self) -> None:
        if self.request_timeout_s <= 0 or self.max_connections < 1 or self.max_pending < 0 or self.max_head_bytes < 256:
            raise ValueError(f"unusable limits: {self}")

    @property
    def pending(self) -> int:
        return self.max_pending or 4 * self.max_connections


def split_address(address: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or ':port' → (host, port); an empty host is 127.0.0.1, never all
    interfaces. ValueError with the reason when it is not one of those."""
    text = address.strip()
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError("an IPv6 address goes in brackets followed by the port, e.g. [::1]:8787")
        host, port_text = inside, rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError("must be host:port (e.g. 127.0.0.1:8787)")
        if ":" in host:
            raise ValueError("write an IPv6 address in brackets, e.g. [::1]:8787")
        host = host or "127.0.0.1"
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"port {port_text!r} must be a number from 0 to 65535")
    return host, int(port_text)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def reach_warning(what: str, host: str, port: int) -> str | None:
    """Who can reach an endpoint bound there, when that is more than this machine."""
    if is_loopback(host):
        return None
    where = join_address(host, port)
    if host in ("0.0.0.0", "::"):
        return (f"{what} listens on {where}, every interface: anyone who can reach this machine can call it, "
                "sandbox containers too (through their network's gateway); bind it to 127.0.0.1 unless that is meant")
    return (f"{what} listens on {where}: anyone who can reach {host} can call it, sandbox containers too "
            "when their network routes there; bind it to 127.0.0.1 unless that is meant")


class BoundedHandler(BaseHTTPRequestHandler):
    """Base of every handler served by BoundedHTTPServer: reads the head the server already
    buffered, keeps access logs off stderr, and treats a client that went away as nothing."""

    server: "BoundedHTTPServer"
    timeout = None  # the server sets each connection's timeout from its deadline

    def setup(self) -> None:
        super().setup()
        head = self.server.take_head(self.connection)
        if head:
            self.rfile = io.BufferedReader(_Prefixed(head, self.rfile))

    def handle(self) -> None:
        try:
            super().handle()
        except OSError as exc:  # reset, broken pipe, cut at the deadline
            logger.debug("{}: client {} gone: {}", self.server.name, self.client_address[0], exc)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return


@dataclass(frozen=True)
class Response:
    """One answer of a routed endpoint (the review pages): status, body, type and extra headers."""

    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class TextHandler(BoundedHandler):
    """A request handler that answers with plain text (or a whole Response)."""

    def send(self, response: Response, *, head_only: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(response.body)

    def send_text(self, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Prefixed(io.RawIOBase):
    """Bytes already read from the socket, then the socket's own reader (kept, and closed with this)."""

    def __init__(self, head: bytes, reader: Any) -> None:
        self._head = memoryview(head)
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        read_once = getattr(self._reader, "readinto1", self._reader.readinto)  # one recv, not a full buffer
        return int(read_once(buffer))

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


@dataclass
class _Pending:
    """A connection the serving thread holds: still sending its head, or refused and lingering."""

    sock: socket.socket
    address: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)
    refused: bool = False


@dataclass
class _Active:
    deadline: float
    head: bytes
    cut: bool = False


def _answer(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


BUSY = _answer(503, "Service Unavailable", "busy: too many connections; try again\n")
HEAD_TOO_LARGE = _answer(431, "Request Header Fields Too Large", "request head too large\n")


def _head_complete(head: bytearray, searched: int) -> bool:
    start = max(0, searched - 2)
    return head.find(b"\n\r\n", start) >= 0 or head.find(b"\n\n", start) >= 0


class BoundedHTTPServer(HTTPServer):
    """See the module docstring. `serve_forever` in one thread; `shutdown` from another."""

    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, host: str, port: int, handler: type[BoundedHandler], limits: Limits = Limits(),
                 name: str = "http") -> None:
        if not issubclass(handler, BoundedHandler):
            raise TypeError(f"{handler.__name__} must derive from BoundedHandler")
        self.name = name
        self.limits = limits
        host = host or "127.0.0.1"
        family, sockaddr = _resolve(host, port)
        self.address_family = family
        self._lock = threading.Lock()
        self._active: dict[socket.socket, _Active] = {}
        self._pending: dict[int, _Pending] = {}  # by fd, oldest first
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._accept_failed = False
        super().__init__(sockaddr, handler)
        self.socket.setblocking(False)

    def server_bind(self) -> None:
        # HTTPServer's server_bind also looks the name up (getfqdn): nothing here uses it.
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    # -- what tests and callers read -------------------------------------------------------------

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handler_threads(self) -> int:
        with self._lock:
            return len(self._active)

    def take_head(self, sock: socket.socket) -> bytes:
        with self._lock:
            active = self._active.get(sock)
            if active is None:
                return b""
            head, active.head = active.head, b""
            return head

    # -- the serving loop ------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ, None)
                selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
                while not self._stopping.is_set():
                    for key, _ in selector.select(self._wait(poll_interval)):
                        if key.data is None:
                            self._accept(selector)
                        elif key.data is self._wake_r:
                            self._drain_wake()
                        else:
                            self._readable(selector, key.data)
                    self._expire(selector, time.monotonic())
        finally:
            for pending in list(self._pending.values()):
                _close(pending.sock)
            self._pending.clear()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever (if it runs) and wait for it; handler threads are cut by server_close."""
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            for sock in self._active:  # wakes their threads: the read or write they wait in ends
                _shutdown(sock)
        for end in (self._wake_r, self._wake_w):
            end.close()

    def _wait(self, poll_interval: float) -> float:
        now = time.monotonic()
        deadlines = [p.deadline for p in self._pending.values()]
        with self._lock:
            deadlines += [a.deadline for a in self._active.values() if not a.cut]
        if not deadlines:
            return poll_interval
        return max(0.0, min(poll_interval, min(deadlines) - now))

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except OSError:
            pass

    def _accept(self, selector: selectors.BaseSelector) -> None:
        for _ in range(64):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: free one, keep serving the others
                if not self._accept_failed:
                    logger.warning("{}: cannot accept connections: {}", self.name, exc)
                self._accept_failed = True
                if self._pending:
                    self._drop(selector, next(iter(self._pending.values())))
                else:
                    self._stopping.wait(0.1)  # the listening socket stays readable: do not spin
                return
            self._accept_failed = False
            sock.setblocking(False)
            deadline = time.monotonic() + self.limits.request_timeout_s
            if self._busy():
                self._refuse(selector, _Pending(sock, address, deadline), BUSY)
            else:
                self._hold(selector, _Pending(sock, address, deadline))

    def _busy(self) -> bool:
        with self._lock:
            return len(self._active) >= self.limits.max_connections

    def _hold(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        while len(self._pending) >= self.limits.pending:  # the oldest makes room
            oldest = next(iter(self._pending.values()))
            self._drop(selector, oldest)
        self._pending[pending.sock.fileno()] = pending
        selector.register(pending.sock, selectors.EVENT_READ, pending)

    def _drop(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        self._pending.pop(pending.sock.fileno(), None)
        try:
            selector.unregister(pending.sock)
        except (KeyError, ValueError):
            pass
        _close(pending.sock)

    def _refuse(self, selector: selectors.BaseSelector, pending: _Pending, answer: bytes) -> None:
        """Answer at once and close for writing; read what the client still sends for a moment,
        so that closing does not reset the connection before the client read the answer."""
        try:
            pending.sock.send(answer)
            pending.sock.shutdown(socket.SHUT_WR)
        except OSError:
            if pending.sock.fileno() in self._pending:
                self._drop(selector, pending)
            else:
                _close(pending.sock)
            return
        pending.refused = True
        pending.head.clear()
        pending.deadline = min(pending.deadline, time.monotonic() + REJECT_LINGER_S)
        if pending.sock.fileno() not in self._pending:
            self._hold(selector, pending)

    def _readable(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        try:
            data = pending.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(selector, pending)
            return
        if pending.refused:
            return
        searched = len(pending.head)
        pending.head += data
        if _head_complete(pending.head, searched):
            head_end = min(i for i in (pending.head.find(b"\n\r\n"), pending.head.find(b"\n\n")) if i >= 0)
            if head_end > self.limits.max_head_bytes:
                self._refuse(selector, pending, HEAD_TOO_LARGE)
            elif self._busy():
                self._refuse(selector, pending, BUSY)
            else:
                self._dispatch(selector, pending)
        elif len(pending.head) > self.limits.max_head_bytes:
            self._refuse(selector, pending, HEAD_TOO_LARGE)

    def _dispatch(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        self._pending.pop(pending.sock.fileno(), None)
        selector.unregister(pending.sock)
        sock = pending.sock
        try:
            sock.settimeout(max(0.05, pending.deadline - time.monotonic()))
        except OSError:
            _close(sock)
            return
        with self._lock:
            self._active[sock] = _Active(pending.deadline, bytes(pending.head))
        threading.Thread(target=self._serve_one, args=(sock, pending.address), daemon=True,
                         name=f"{self.name}-conn").start()

    def _serve_one(self, sock: socket.socket, address: Any) -> None:
        try:
            self.finish_request(sock, address)
        except Exception:  # noqa: BLE001 - one request's failure must not end the server
            logger.opt(exception=True).warning("{}: request from {} failed", self.name, address[0])
        finally:
            with self._lock:
                self._active.pop(sock, None)
            self.shutdown_request(sock)

    def _expire(self, selector: selectors.BaseSelector, now: float) -> None:
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            self._drop(selector, pending)
        with self._lock:  # under the lock: a socket still listed is not closed yet
            for sock, active in self._active.items():
                if not active.cut and active.deadline <= now:
                    active.cut = True
                    _shutdown(sock)  # its thread's read or write ends; the thread closes the socket


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"{host} does not resolve")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class BackgroundServer:
    """A BoundedHTTPServer on 'host:port' (port 0: any free one; an empty host: 127.0.0.1), served
    from a daemon thread. `warn_reach`: log at start who can reach it when it is not loopback."""

    def __init__(self, address: str | tuple[str, int], handler: type[BoundedHandler], name: str,
                 limits: Limits = Limits(), *, warn_reach: bool = True, poll_interval: float = 0.5) -> None:
        host, port = split_address(address) if isinstance(address, str) else address
        self.name = name
        self.warn_reach = warn_reach
        self.poll_interval = poll_interval
        self.server = BoundedHTTPServer(host or "127.0.0.1", port, handler, limits, name)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return join_address(self.host, self.port)

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.warn_reach and (warning := reach_warning(f"the {self.name} endpoint", self.host, self.port)):
            logger.warning("{}", warning)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": self.poll_interval},
                                        name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server.server_close()

