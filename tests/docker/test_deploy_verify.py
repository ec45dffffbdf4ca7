"""Verification of a new production service, in process against the real engine: a crash loop is
caught at every crash delay, at once (the die event), and a steady service passes."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

from listener.config import Settings
from listener.deploy.production import _watch_service, production_options
from tests.helpers import installation, remove_installation_objects

VERIFY_S = 2.0
CRASH_WINDOW_S = 6.0  # long, so that a catch before its end shows the signal worked, not the final check


@pytest.fixture
def make(docker_client, base_image, db_url) -> Iterator[Any]:
    """Creates (not starts) production-like service containers of this test's installation."""
    inst = installation(db_url)
    settings = Settings.from_env({"PROD_NETWORK": "none", "PROD_RUNTIME": "runc"})
    made: list[str] = []

    def create(code: str) -> Any:
        options = production_options(settings, inst, 1, 1, "service", f"agent-verify-{inst}-{len(made)}")
        container = docker_client.containers.create(base_image, ["python3", "-c", code], **options)
        made.append(container.id)
        return container

    yield create
    remove_installation_objects(docker_client, inst)


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.2, 0.2, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5])
def test_a_crash_loop_is_caught_at_its_first_exit(make, docker_client, delay: float) -> None:
    container = make(f"import time; time.sleep({delay}); raise SystemExit(3)")
    began = time.monotonic()
    problem = _watch_service(docker_client, container, CRASH_WINDOW_S)
    took = time.monotonic() - began
    # by the die event ("exited with code 3 … crash loop") or by the inspect that saw it restarted
    assert problem is not None and "code 3" in problem and ("crash loop" in problem or "restarted" in problem)
    assert took < CRASH_WINDOW_S - 1  # caught when it crashed (event or inspect), not at the end of the window


def test_a_service_that_exits_cleanly_before_the_window_ends_fails(make, docker_client) -> None:
    container = make("import time; time.sleep(1.6)")
    problem = _watch_service(docker_client, container, VERIFY_S)
    assert problem is not None and "exited with code 0" in problem


def test_a_steady_service_is_verified_after_the_whole_window(make, docker_client) -> None:
    container = make("import time\nwhile True: time.sleep(1)")
    began = time.monotonic()
    assert _watch_service(docker_client, container, VERIFY_S) is None
    assert VERIFY_S <= time.monotonic() - began < VERIFY_S + 2
    container.reload()
    assert container.status == "running" and container.attrs["RestartCount"] == 0


def test_a_restart_from_outside_during_the_window_fails(make, docker_client) -> None:
    import threading

    container = make("import time\nwhile True: time.sleep(1)")
    restarter = threading.Timer(0.8, lambda: container.restart(timeout=0))
    restarter.start()
    try:
        problem = _watch_service(docker_client, container, VERIFY_S)
    finally:
        restarter.join()
    assert problem is not None and ("exited" in problem or "restarted" in problem or "'restart'" in problem)
