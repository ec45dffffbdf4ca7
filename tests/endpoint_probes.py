"""Raw-socket clients for the bounded HTTP endpoints: idle connections, slow senders, EOF waits,
and the handler threads a server holds."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def connect_idle(port: int, count: int, host: str = "127.0.0.1") -> list[socket.socket]:
    """`count` connections that send nothing."""
    return [socket.create_connection((host, port), timeout=5) for _ in range(count)]


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def wait_closed_by_server(socks: list[socket.socket], bound_s: float) -> dict[int, float]:
    """Wait, at most bound_s, until the server closed each connection (EOF or reset); the seconds
    each took, by index. Connections still open at the bound are missing from the answer."""
    start = time.monotonic()
    closed: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        while len(closed) < len(socks):
            remaining = bound_s - (time.monotonic() - start)
            if remaining <= 0:
                break
            for key, _ in selector.select(remaining):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed[key.data] = time.monotonic() - start
                    selector.unregister(key.fileobj)
    return closed


def read_answer(sock: socket.socket, bound_s: float) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close), within bound_s."""
    sock.settimeout(bound_s)
    data = b""
    deadline = time.monotonic() + bound_s
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def request(port: int, raw: bytes, bound_s: float = 5.0, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port), timeout=bound_s) as sock:
        sock.sendall(raw)
        return read_answer(sock, bound_s)


def status_of(answer: bytes) -> int | None:
    first = answer.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else None


def connection_threads(name: str) -> int:
    """Handler threads of the server called `name` alive now (BoundedHTTPServer names them)."""
    return sum(1 for thread in threading.enumerate() if thread.name == f"{name}-conn")


def wait_for(predicate: Callable[[], T], bound_s: float, what: str) -> T:
    deadline = time.monotonic() + bound_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {bound_s} s waiting for {what}")
        time.sleep(0.02)
