"""The URL classifier of http_status checks: every spelling of the listener's host is refused for a
model-derived check, with the reason; ordinary hosts pass; the parts handed to the probe are exact."""

from __future__ import annotations

import ipaddress

import pytest

from listener.sandbox.urls import Target, address_of, forbidden_networks, inet_aton, parse, refusal

GATEWAY = ipaddress.ip_address("172.18.0.1")


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8080/", "127.0.0.1 is a loopback address"),
    ("http://127.254.3.4/", "a loopback address"),
    ("http://0:8080/", "0 is 0.0.0.0, the unspecified address"),
    ("http://0.0.0.0/", "the unspecified address"),
    ("http://0.1.2.3/", "the unspecified address"),
    ("http://2130706433/", "2130706433 is 127.0.0.1, a loopback address"),
    ("http://0x7f000001/", "0x7f000001 is 127.0.0.1, a loopback address"),
    ("http://0X7F000001/", "is 127.0.0.1, a loopback address"),
    ("http://017700000001/", "017700000001 is 127.0.0.1, a loopback address"),
    ("http://127.1/", "127.1 is 127.0.0.1, a loopback address"),
    ("http://127.0.1/", "127.0.1 is 127.0.0.1, a loopback address"),
    ("http://0x7f.1/", "is 127.0.0.1, a loopback address"),
    ("http://0177.0.0.1/", "is 127.0.0.1, a loopback address"),
    ("http://127.000.000.001/", "is 127.0.0.1, a loopback address"),
    ("http://[::1]/", "::1 is the loopback address"),
    ("http://[0:0:0:0:0:0:0:1]/", "the loopback address"),
    ("http://[::]/", "the unspecified address"),
    ("http://[::ffff:127.0.0.1]/", "an IPv6 form of 127.0.0.1, a loopback address"),
    ("http://[::ffff:7f00:1]/", "an IPv6 form of 127.0.0.1, a loopback address"),
    ("http://[::127.0.0.1]/", "an IPv6 form of 127.0.0.1, a loopback address"),
    ("http://[2002:7f00:1::]/", "an IPv6 form of 127.0.0.1, a loopback address"),
    ("http://[64:ff9b::7f00:1]/", "an IPv6 form of 127.0.0.1, a loopback address"),
    ("http://[::ffff:169.254.169.254]/", "an IPv6 form of 169.254.169.254, a link-local address"),
    ("http://[::1%25lo]:8080/", "the loopback address"),
    ("http://[fe80::1%25eth0]/", "fe80::1 is a link-local address"),
    ("http://[fe80::1]/", "a link-local address"),
    ("http://user@127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://user:pass@localhost:8080/", "localhost names the listener's machine"),
    ("http://svc@0x7f000001:80@127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://localhost/", "localhost names the listener's machine"),
    ("http://LOCALHOST/", "localhost names the listener's machine"),
    ("http://localhost./", "localhost names the listener's machine"),
    ("http://127.0.0.1./", "a loopback address"),
    ("http://api.localhost/", "api.localhost names the listener's machine"),
    ("http://api.localhost./", "names the listener's machine"),
    ("http://ip6-localhost/", "names the listener's machine"),
    ("http://host.docker.internal:11434/", "names the listener's machine, the Docker host"),
    ("http://gateway.docker.internal/", "names the listener's machine, the Docker host"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address (cloud metadata"),
    ("http://2852039166/latest/meta-data/", "2852039166 is 169.254.169.254, a link-local address"),
    ("http://169.254.1.1/", "a link-local address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata service"),
    ("http://100.100.100.200/latest/meta-data/", "a cloud metadata address"),
    ("http://[fd00:ec2::254]/", "a cloud metadata address"),
    ("http://224.0.0.1/", "a multicast address"),
    ("http://255.255.255.255/", "a reserved address"),
    ("http://172.18.0.1:8788/", "172.18.0.1 is an address of the Docker host (a network gateway)"),
    ("http://2886860801:8788/", "2886860801 is 172.18.0.1, an address of the Docker host"),
    ("http://[::ffff:172.18.0.1]/", "an IPv6 form of 172.18.0.1, an address of the Docker host"),
    ("http://1.2.3.4.5/", "looks numeric but is no IP address"),
    ("http://256.0.0.1/", "looks numeric but is no IP address"),
    ("http://0x1g/", "looks numeric"),
])
def test_the_listeners_host_in_every_spelling_is_refused(url: str, expected: str) -> None:
    reason = refusal(url, [GATEWAY])
    assert reason is not None and expected in reason, reason


@pytest.mark.parametrize("url", [
    "http://automation:8080/health",
    "http://reports.lan/api",
    "https://example.org/",
    "http://10.0.0.5:9000/x",
    "http://192.168.1.20/",
    "http://172.18.0.7:8000/",  # another container on the sandbox network: not the gateway
    "http://1password.com/",
    "http://[2001:db8::1]:8080/",
])
def test_other_hosts_pass(url: str) -> None:
    assert refusal(url, [GATEWAY]) is None


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("017700000001", "127.0.0.1"), ("127.1", "127.0.0.1"), ("127.0.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
    ("0", "0.0.0.0"), ("10.1", "10.0.0.1"), ("10.0x10.1", "10.16.0.1"), ("0x", "0.0.0.0"),
    ("4294967295", "255.255.255.255"),
])
def test_inet_aton_reads_what_the_c_resolver_reads(text: str, address: str) -> None:
    assert inet_aton(text) == ipaddress.IPv4Address(address)


@pytest.mark.parametrize("text", ["4294967296", "256.1.1.1", "1.2.3.4.5", "08", "1.2.3.0x100", "example", "", "1..2"])
def test_inet_aton_refuses_what_is_no_address(text: str) -> None:
    assert inet_aton(text) is None


def test_address_of_names_is_none() -> None:
    assert address_of("automation") is None
    assert address_of("[::1%25lo]") == ipaddress.ip_address("::1")


def test_parse_gives_the_probe_exact_parts_and_hides_credentials() -> None:
    target = parse("http://admin:hunter%402@svc.lan:8080/a/b?x=1#frag")
    assert isinstance(target, Target)
    assert (target.scheme, target.host, target.port, target.request_target, target.host_header) == (
        "http", "svc.lan", 8080, "/a/b?x=1", "svc.lan:8080")
    assert target.authorization == "Basic YWRtaW46aHVudGVyQDI="  # admin:hunter@2
    assert "hunter" not in target.shown and target.shown.startswith("http://***@svc.lan:8080/")
    https = parse("HTTPS://[fe80::1%25eth0]/")
    assert isinstance(https, Target)
    assert (https.scheme, https.host, https.port, https.request_target) == ("https", "fe80::1", 443, "/")


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://svc/", "needs an http:// or https:// URL"),
    ("http://", "no host"),
    ("http://svc:65536/", "cannot be parsed"),
    ("http://svc/\x00", "control characters"),
    ("http://svc/ä", "non-ASCII"),
])
def test_parse_errors_are_values(url: str, problem: str) -> None:
    result = parse(url)
    assert isinstance(result, str) and problem in result


def test_the_probe_gets_every_forbidden_network_and_the_gateways() -> None:
    nets = forbidden_networks([GATEWAY])
    assert {"127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "::1/128", "fe80::/10", "172.18.0.1/32"} <= set(nets)
