"""The service shape and the reconnect helper, without a database."""

from __future__ import annotations

import threading

import psycopg
import pytest

from listener.queue.services import Reconnect, Service, ServiceGroup, Started, ThreadService


def test_reconnect_backs_off_while_down_then_starts_afresh_after_a_lost_session() -> None:
    stopping = threading.Event()
    reconnect = Reconnect("test", stopping, initial_s=0.001, max_s=0.002, jitter_s=0.0)
    calls: list[str] = []
    downs: list[float | None] = []

    def session() -> None:
        calls.append("try")
        if len(calls) <= 2:
            raise psycopg.OperationalError("connection refused")  # not up yet: retried with backoff
        downs.append(reconnect.connected())
        if len(calls) == 3:
            raise psycopg.OperationalError("server closed the connection unexpectedly")  # up, then lost
        stopping.set()

    reconnect.run(session)
    assert calls == ["try"] * 4
    assert reconnect.losses == 1
    assert downs[0] is None and downs[1] is not None, "the second session knows since when it was down"
    assert reconnect.down_since is None


def test_reconnect_ends_at_once_when_stopped_and_lets_other_errors_through() -> None:
    stopping = threading.Event()
    stopping.set()
    Reconnect("test", stopping).run(lambda: pytest.fail("a stopped loop runs no session"))

    def broken() -> None:
        raise ValueError("not a connection problem")

    with pytest.raises(ValueError):
        Reconnect("test", threading.Event()).run(broken)


def test_reconnect_stops_waiting_when_stopped_mid_backoff() -> None:
    stopping = threading.Event()
    reconnect = Reconnect("test", stopping, initial_s=600, max_s=600, jitter_s=0.0)
    tried = threading.Event()

    def down() -> None:
        tried.set()
        raise psycopg.OperationalError("connection refused")

    runner = threading.Thread(target=reconnect.run, args=(down,))
    runner.start()
    assert tried.wait(10)
    stopping.set()  # wakes the backoff's wait: no sleep to sit out
    runner.join(10)
    assert not runner.is_alive()


class Waiter(ThreadService):
    name = "waiter"

    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order
        self.running = threading.Event()

    def run(self) -> None:
        self.running.set()
        self.stopping.wait()
        self.order.append(self.name)


class Named(Waiter):
    def __init__(self, name: str, order: list[str]) -> None:
        super().__init__(order)
        self.name = name


class Server:
    def __init__(self, order: list[str]) -> None:
        self.order = order

    def start(self) -> None:
        self.order.append("server started")

    def stop(self) -> None:
        self.order.append("server")


def test_a_group_starts_in_order_and_stops_in_reverse_each_joined() -> None:
    order: list[str] = []
    group = ServiceGroup()
    first, second = Named("first", order), Named("second", order)
    for service in (group.start(first), group.start(Started("http", Server(order))), group.start(second)):
        assert isinstance(service, Service)
    assert first.running.wait(10) and second.running.wait(10)
    assert group.stop(timeout_each=10) == []
    assert order == ["server started", "second", "server", "first"]
    assert not first.alive and not second.alive


def test_a_service_that_dies_says_so_and_joins() -> None:
    class Dying(ThreadService):
        name = "dying"

        def run(self) -> None:
            raise RuntimeError("boom")

    service = Dying()
    service.start()
    assert service.join(10)


def test_run_forever_starts_again_after_an_unexpected_error() -> None:
    stopping = threading.Event()
    calls: list[int] = []

    def session() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug, not the connection")
        stopping.set()

    Reconnect("test", stopping).run_forever(session, pause_s=0.0)
    assert len(calls) == 2
