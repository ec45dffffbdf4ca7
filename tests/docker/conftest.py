"""Docker tests: a real engine or a clear skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BASE_IMAGE = "agent-builder-test-base:latest"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no Docker engine reachable (DOCKER_HOST / unix socket): start one with .ci/docker-up ({exc})")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    import docker

    name = os.environ.get("SANDBOX_BASE_IMAGE", BASE_IMAGE)
    try:
        docker_client.images.get(name)
    except docker.errors.ImageNotFound:
        pytest.skip(f"the sandbox base image {name} is missing: build it with .ci/docker-up")
    return name
