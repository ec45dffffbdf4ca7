"""`check` reports the review server the way `listen` will treat it (listener.ops.check.check_review_page)."""

from __future__ import annotations

import socket

from listener.config import Settings
from listener.ops.check import check_review_page, exit_code, listen_addresses


def settings(**env: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": "postgresql://x@127.0.0.1/db", **env})


def test_off_without_secret_or_token_is_optional_and_passes() -> None:
    check = check_review_page(settings())
    assert check.ok and check.optional
    assert ("WEB_ADDR", "127.0.0.1:8787") not in listen_addresses(settings())


def test_public_address_without_token_fails_like_listen_refuses() -> None:
    check = check_review_page(settings(APPROVAL_SECRET="s" * 20, WEB_ADDR="0.0.0.0:18787"))
    assert not check.ok and not check.optional
    assert "WEB_TOKEN" in check.detail
    assert exit_code([check]) == 1


def test_token_alone_starts_the_server_and_its_address_is_bound_by_listen() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = settings(WEB_TOKEN="t" * 20, WEB_ADDR=f"0.0.0.0:{port}")
    assert ("WEB_ADDR", f"0.0.0.0:{port}") in listen_addresses(env)
    check = check_review_page(env)
    assert check.ok, check.detail
    assert "WEB_TOKEN required" in check.detail


def test_address_in_use_by_something_silent_fails() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        check = check_review_page(settings(APPROVAL_SECRET="s" * 20, WEB_ADDR=f"127.0.0.1:{port}"))
    assert not check.ok
    assert "WEB_ADDR" in check.detail
