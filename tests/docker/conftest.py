"""Fixtures for tests that need a real Docker engine and the local sandbox base image.

No registry is reachable on our machines, so the base image is made locally by `.ci/docker-up`
(debootstrap + `docker import`). Without an engine or without the image, these tests skip with a
reason that says how to get them; CI runs `.ci/docker-up` first, so there they run. With
AGENT_BUILDER_REQUIRE_DOCKER=1 (CI sets it) a missing engine or image fails instead of skipping,
so a broken engine cannot pass as a green run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import docker
import pytest
from docker.errors import DockerException, ImageNotFound

DEFAULT_BASE_IMAGE = "agent-builder-test-base:latest"
HERE = Path(__file__).resolve().parent


def _unavailable(reason: str) -> None:
    if os.environ.get("AGENT_BUILDER_REQUIRE_DOCKER") == "1":
        pytest.fail(f"AGENT_BUILDER_REQUIRE_DOCKER=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A pytestmark in a conftest applies to nothing: mark every test under tests/docker here.
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except (DockerException, OSError) as exc:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        _unavailable(
            f"no Docker engine reachable (DOCKER_HOST / unix socket, here {where}): "
            f"start one with .ci/docker-up ({type(exc).__name__}: {exc})"
        )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    name = os.environ.get("SANDBOX_BASE_IMAGE") or DEFAULT_BASE_IMAGE
    try:
        docker_client.images.get(name)
    except ImageNotFound:
        _unavailable(
            f"base image {name} is missing (no registry is reachable, so it is built locally): "
            "build it with .ci/docker-up"
        )
    return name
