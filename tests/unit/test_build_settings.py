"""The image-build settings are read and validated like every other setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.config import ConfigError, Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.sandbox_build_timeout_s == 300.0
    assert settings.sandbox_base_images == ()
    assert settings.sandbox_pip_index_url is None and settings.sandbox_pip_find_links is None


def test_values_are_read() -> None:
    settings = Settings.from_env({"SANDBOX_BUILD_TIMEOUT_S": "20", "SANDBOX_BASE_IMAGES": "python:3.11-slim, registry.lan:5000/team/py@sha256:abc",
                                  "SANDBOX_PIP_INDEX_URL": "https://mirror.lan/simple/", "SANDBOX_PIP_FIND_LINKS": "/srv/wheels"})
    assert settings.sandbox_build_timeout_s == 20.0
    assert settings.sandbox_base_images == ("python:3.11-slim", "registry.lan:5000/team/py@sha256:abc")
    assert settings.sandbox_pip_index_url == "https://mirror.lan/simple"
    assert settings.sandbox_pip_find_links == Path("/srv/wheels")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SANDBOX_BUILD_TIMEOUT_S", "0", "SANDBOX_BUILD_TIMEOUT_S='0': must be at least 1"),
    ("SANDBOX_BUILD_TIMEOUT_S", "soon", "SANDBOX_BUILD_TIMEOUT_S='soon': must be a number"),
    ("SANDBOX_BASE_IMAGES", "python:3.12,,ubuntu", "SANDBOX_BASE_IMAGES='python:3.12,,ubuntu': must be image references"),
    ("SANDBOX_BASE_IMAGES", "python 3.12", "must be image references"),
    ("SANDBOX_PIP_INDEX_URL", "file:///srv/simple", "SANDBOX_PIP_INDEX_URL='file:///srv/simple': must be an http"),
    ("SANDBOX_PIP_FIND_LINKS", "wheels", "SANDBOX_PIP_FIND_LINKS='wheels': must be an absolute path"),
])
def test_bad_values_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
