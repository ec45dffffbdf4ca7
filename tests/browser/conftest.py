"""Headless Chromium for the review page's tests: Playwright's Python package (the `browser`
extra) driving the system's Chromium (Debian's `chromium`, apt), never a browser Playwright
downloads. Without either these tests skip with the reason; with AGENT_BUILDER_REQUIRE_BROWSER=1
(CI sets it, after `apt-get install chromium`) they fail instead.

Screenshots: with AGENT_BUILDER_SCREENSHOTS=<dir> (e.g. docs) the tests write theirs there;
without it they write nothing into the tree."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.docker.conftest import base_image, docker_client  # noqa: F401 - the end-to-end test's fixtures

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
PHONE = {"width": 390, "height": 844}
HERE = Path(__file__).resolve().parent


def _unavailable(reason: str) -> None:
    if os.environ.get("AGENT_BUILDER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"AGENT_BUILDER_REQUIRE_BROWSER=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    explicit = os.environ.get("AGENT_BUILDER_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_NAMES:
        if (found := shutil.which(name)) is not None:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright's Python package is not installed: pip install -e '.[browser]'")
    executable = chromium_path()
    if executable is None:
        _unavailable("no system Chromium (install it with: apt-get install -y chromium; or set AGENT_BUILDER_CHROMIUM); "
                     "never `playwright install`")
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's own sandbox cannot start as root in a container; the pages are ours
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) the size of a phone, 390 px wide."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        yield context
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path | None:
    """Write docs-style screenshots only when AGENT_BUILDER_SCREENSHOTS names a directory."""
    folder = os.environ.get("AGENT_BUILDER_SCREENSHOTS")
    if not folder:
        return None
    target = Path(folder)
    if not target.is_absolute():
        target = HERE.parents[1] / target
    target.mkdir(parents=True, exist_ok=True)
    path = target / name
    page.screenshot(path=str(path), full_page=True)
    return path


def fits_the_phone(page: Any) -> bool:
    """Nothing wider than the viewport: no sideways scrolling of the page itself (code scrolls in its box)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))
