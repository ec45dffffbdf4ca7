"""One shape for every background service of a listener, and one reconnect helper.

Every service (the listen loop, the dispatcher and its workers, the leader with the rescuer and the
sweeps, the registry heartbeat, the HTTP servers) is started, stopped and joined the same way:
`start()` returns at once, `stop()` asks it to end and returns at once, `join(timeout)` waits and
says whether it ended. A `ServiceGroup` starts a list of them in order and stops them in reverse.

Every loop that holds a database session reconnects through `Reconnect`: exponential backoff with
jitter (tenacity) while the database cannot be reached, a fresh backoff after a session that was up
and was lost, one warning per outage (then rarely), and an end as soon as the service is stopped.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol, runtime_checkable

import psycopg
from loguru import logger
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential, wait_random


@runtime_checkable
class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> bool: ...


class ThreadService:
    """A service whose work is `run()` in one daemon thread; `stopping` is set by `stop()`.

    Subclasses implement `run()` and end it soon after `stopping` is set (wait on it, never sleep);
    `_wake()` is called by `stop()` for loops that wait on something else as well."""

    name = "service"

    def __init__(self, stopping: threading.Event | None = None) -> None:
        self.stopping = stopping if stopping is not None else threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self.run()
        except Exception as exc:  # noqa: BLE001 - a dying service says so, in one line
            logger.exception("{} stopped on an unexpected error: {}", self.name, one_line(exc))

    def stop(self) -> None:
        self.stopping.set()
        self._wake()

    def _wake(self) -> None:
        """Interrupt whatever `run()` waits on besides `stopping` (nothing by default)."""

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


class Started:
    """Gives an object with only start() and stop() (the HTTP servers: their stop() waits for their
    serving thread) the service shape."""

    def __init__(self, name: str, target: "_StartStop") -> None:
        self.name = name
        self.target = target
        self._stopped = threading.Event()

    def start(self) -> None:
        self.target.start()

    def stop(self) -> None:
        try:
            self.target.stop()
        finally:
            self._stopped.set()

    def join(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


class _StartStop(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class ServiceGroup:
    """Services started in order and stopped in reverse order, each joined before the next stops."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    def start(self, service: Service) -> Service:
        service.start()
        self.services.append(service)
        return service

    def stop(self, timeout_each: float = 5.0) -> list[str]:
        """Stop every service, newest first; the names of those that did not end in time."""
        late = []
        for service in reversed(self.services):
            service.stop()
            if not service.join(timeout_each):
                late.append(service.name)
        self.services.clear()
        if late:
            logger.warning("did not stop within {:g} s: {}", timeout_each, ", ".join(late))
        return late


def one_line(exc: BaseException | None) -> str:
    return " ".join(str(exc).split()) if exc is not None else "unknown error"


class Reconnect:
    """Runs a database session again and again until stopped.

    `session()` connects, calls `connected()` once its connection is usable, and works until it
    returns or raises. A psycopg.OperationalError before `connected()` (the database cannot be
    reached) is retried with exponential backoff and jitter; one after it (connected, then lost)
    is logged and the session starts again at once with a fresh backoff. Any other exception ends
    the loop (the caller's to handle). `down_since` is when the last session that was up was lost.
    """

    def __init__(self, what: str, stopping: threading.Event, *, initial_s: float = 0.2, max_s: float = 15.0,
                 jitter_s: float = 0.5) -> None:
        self.what = what
        self.stopping = stopping
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter_s = jitter_s
        self.down_since: float | None = None
        self.losses = 0
        self._up = False

    def connected(self) -> float | None:
        """Mark the session usable; the monotonic time it had been down since (None: first time up)."""
        self._up = True
        down, self.down_since = self.down_since, None
        return down

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)  # a stop ends the backoff at once

    def _retry_while_down(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.OperationalError) and not self._up and not self.stopping.is_set()

    def _before_sleep(self, state: RetryCallState) -> None:
        if state.attempt_number in (1, 10, 100) or state.attempt_number % 1000 == 0:  # once per outage, then rarely
            exc = state.outcome.exception() if state.outcome else None
            logger.warning("{}: the database is unreachable, retrying (attempt {}): {}", self.what, state.attempt_number,
                           one_line(exc))

    def run_forever(self, session: Callable[[], object], pause_s: float = 1.0) -> None:
        """`run`, and after an unexpected error (a bug, not the connection) log it and start
        again after `pause_s`: a background loop of a listener never dies of one bad moment."""
        while not self.stopping.is_set():
            try:
                self.run(session)
            except Exception as exc:  # noqa: BLE001 - said in full, then the loop goes on
                logger.opt(exception=exc).error("{} failed unexpectedly: {}; starting again", self.what, one_line(exc))
                self.stopping.wait(pause_s)

    def run(self, session: Callable[[], object]) -> None:
        while not self.stopping.is_set():
            self._up = False
            retrying = Retrying(
                retry=retry_if_exception(self._retry_while_down),
                wait=wait_exponential(multiplier=self.initial_s, max=self.max_s) + wait_random(0, self.jitter_s),
                sleep=self._sleep,
                before_sleep=self._before_sleep,
                reraise=True,
            )
            try:
                retrying(session)
            except psycopg.OperationalError as exc:
                if self.stopping.is_set():
                    return  # the connection went down with the rest of the shutdown
                self.losses += 1
                self.down_since = time.monotonic()
                logger.warning("{} lost its database connection: {}", self.what, one_line(exc))
