"""WEB_ADDR (alias APPROVAL_ADDR) and METRICS_ADDR: loopback by default, checked at config time."""

from __future__ import annotations

import pytest

from listener.config import ConfigError, Settings


def test_defaults_are_loopback() -> None:
    settings = Settings.from_env({})
    assert settings.approval_addr == "127.0.0.1:8787"
    assert settings.metrics_addr is None


@pytest.mark.parametrize(("env", "approval", "metrics"), [
    ({"METRICS_ADDR": ":9100"}, "127.0.0.1:8787", "127.0.0.1:9100"),
    ({"APPROVAL_ADDR": ":8787"}, "127.0.0.1:8787", None),
    ({"WEB_ADDR": "[::1]:8787"}, "[::1]:8787", None),
    ({"WEB_ADDR": "0.0.0.0:8787"}, "0.0.0.0:8787", None),  # explicit: allowed, and warned about at start
    ({"WEB_ADDR": "localhost:0"}, "localhost:0", None),
    ({"WEB_ADDR": "10.1.2.3:8787", "APPROVAL_ADDR": "10.1.2.3:8787"}, "10.1.2.3:8787", None),
    ({"WEB_ADDR": ":8787", "APPROVAL_ADDR": "127.0.0.1:8787"}, "127.0.0.1:8787", None),  # the same address
    ({"METRICS_ADDR": "[::]:65535"}, "127.0.0.1:8787", "[::]:65535"),
])
def test_addresses_are_accepted_and_written_one_way(env: dict[str, str], approval: str, metrics: str | None) -> None:
    settings = Settings.from_env(env)
    assert (settings.approval_addr, settings.metrics_addr) == (approval, metrics)


@pytest.mark.parametrize(("env", "message"), [
    ({"APPROVAL_ADDR": "nonsense"}, "APPROVAL_ADDR='nonsense': must be host:port"),
    ({"WEB_ADDR": "8787"}, "WEB_ADDR='8787': must be host:port"),
    ({"METRICS_ADDR": "1.2.3.4:99999"}, "METRICS_ADDR='1.2.3.4:99999': port '99999' must be a number from 0 to 65535"),
    ({"METRICS_ADDR": "127.0.0.1:http"}, "METRICS_ADDR='127.0.0.1:http': port 'http' must be a number"),
    ({"WEB_ADDR": "::1:8787"}, "WEB_ADDR='::1:8787': write an IPv6 address in brackets"),
    ({"WEB_ADDR": "[not-v6]:8787"}, "WEB_ADDR='[not-v6]:8787': 'not-v6' in brackets is not an IPv6 address"),
    ({"WEB_ADDR": "[::1]8787"}, "WEB_ADDR='[::1]8787': an IPv6 address goes in brackets followed by the port"),
    ({"METRICS_ADDR": "no-such-host.invalid:9100"}, "METRICS_ADDR='no-such-host.invalid:9100': host 'no-such-host.invalid' does not resolve"),
    ({"WEB_ADDR": "127.0.0.1:8787", "APPROVAL_ADDR": "127.0.0.1:8788"},
     "WEB_ADDR='127.0.0.1:8787' and APPROVAL_ADDR='127.0.0.1:8788' disagree"),
])
def test_bad_addresses_are_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert any(message in problem for problem in refused.value.problems), refused.value.problems
