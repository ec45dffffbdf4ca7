"""The URLs of `http_status` checks: parsed once, strictly, and classified.

The listener parses a check's URL here and hands the probe container the parts (host, port, the
request target, the Host header): the probe connects to exactly what was checked, with no second
URL parser that could read the same text differently.

A model-derived check must never point at the listener's host. `refusal()` says why a host is
refused: a loopback, unspecified, link-local (169.254/16, fe80::/10: cloud metadata), multicast or
reserved address in any spelling the C resolver accepts (the inet_aton forms `2130706433`,
`0x7f000001`, `017700000001`, `127.1`; IPv4-mapped and other IPv6 embeddings; zone ids), a
loopback or Docker-host name (`localhost`, `*.localhost`, `host.docker.internal`, trailing dots
included), a cloud metadata address, or an address of the Docker host the builder knows (the
gateways of the engine's networks).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AUTOMATION_HOST = "automation"  # the automation's own container, as a probe on its network reaches it

# Names that always mean "this machine" or the Docker host, whatever DNS says.
HOST_NAMES = frozenset({
    "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "localhost6",
    "localhost6.localdomain6", "host.docker.internal", "gateway.docker.internal",
    "host.containers.internal", "host.lima.internal", "metadata", "metadata.google.internal",
    "instance-data", "instance-data.ec2.internal",
})
HOST_NAME_SUFFIXES = (".localhost", ".docker.internal", ".containers.internal")

# Addresses a model-derived check may never reach, also handed to the probe (it refuses a name that
# resolves into one of them, and connects to the address it checked: no second lookup).
FORBIDDEN_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "the unspecified address ('this host')"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address (cloud metadata lives at 169.254.169.254)"),
    ("100.100.100.200/32", "a cloud metadata address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::/128", "the unspecified address"),
    ("::1/128", "the loopback address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
    ("fd00:ec2::254/128", "a cloud metadata address"),
)
_FORBIDDEN = tuple((ipaddress.ip_network(net), why) for net, why in FORBIDDEN_NETWORKS)
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-z]*|[0-9]+)$")
_INET_PART = re.compile(r"^(0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$")
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True)
class Target:
    """What the probe connects to. `host`: lower-case, without brackets, zone id or trailing dot."""

    scheme: str
    host: str
    port: int
    request_target: str  # path and query, as sent in the request line
    host_header: str
    authorization: str | None  # Basic credentials from the URL's userinfo, if any
    shown: str  # the URL without credentials, for logs


def parse(url: str) -> Target | str:
    """The parts of an http(s) URL, or what is wrong with it (an error as a value)."""
    if not isinstance(url, str) or not url:
        return "needs an http(s) URL"
    if _BAD_URL_CHARS.search(url) or not url.isascii():
        return "the URL has spaces, control characters, backslashes or non-ASCII characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"the URL cannot be parsed ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return "needs an http:// or https:// URL"
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    host = (parts.hostname or "").rstrip(".")
    if "%" in host:  # an IPv6 zone id ([fe80::1%25eth0]): the address is what counts
        host = host.split("%", 1)[0]
    if not host:
        return "the URL has no host"
    if port == 0:
        return "the URL's port must be between 1 and 65535"
    default = 443 if scheme == "https" else 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authorization = None
    if userinfo:
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    shown = url if not userinfo else url.replace(netloc, f"***@{hostport}", 1)
    return Target(scheme=scheme, host=host, port=port or default, request_target=target,
                  host_header=hostport, authorization=authorization, shown=shown)


def inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address the C library's inet_aton reads from `text` (what getaddrinfo connects to):
    one to four parts, each decimal, 0x-hex or 0-octal, the last filling the remaining bytes
    (`127.1` is 127.0.0.1, `2130706433` and `0x7f000001` are too). None when it is not one."""
    parts = text.lower().split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_PART.match(part) for part in parts):
        return None
    values = [int(part, 16) if part.startswith("0x") and len(part) > 2 else
              0 if part.startswith("0x") else int(part, 8) if part.startswith("0") else int(part)
              for part in parts]
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 1 << (8 * (5 - len(parts))):
        return None
    number = 0
    for value in leading:
        number = number << 8 | value
    number = number << (8 * (5 - len(parts))) | last
    return ipaddress.IPv4Address(number)


def address_of(host: str) -> IPAddress | None:
    """The IP address a host literal denotes (any inet_aton spelling, IPv6 with or without a zone
    id), None for a name."""
    bare = host.strip("[]").split("%", 1)[0].rstrip(".")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    return inet_aton(bare)


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses inside an IPv6 one (mapped, compatible, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour]
    if address.teredo:
        found.extend(address.teredo)
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # ::a.b.c.d (deprecated "compatible" form)
        found.append(ipaddress.IPv4Address(packed))
    if address in ipaddress.ip_network("64:ff9b::/96"):
        found.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def address_refusal(address: IPAddress, host_addresses: Iterable[IPAddress] = ()) -> str | None:
    """Why a model-derived check may not reach this address ("a loopback address"); None when it may."""
    known = set(host_addresses)

    def why(candidate: IPAddress) -> str | None:
        for network, reason in _FORBIDDEN:
            if candidate.version == network.version and candidate in network:
                return reason
        return "an address of the Docker host (a network gateway)" if candidate in known else None

    direct = why(address)
    if direct is not None:
        return direct
    for inner in embedded_ipv4(address):
        reason = why(inner)
        if reason is not None:
            return f"an IPv6 form of {inner}, {reason}"
    return None


def refusal(url: str, host_addresses: Iterable[IPAddress] = ()) -> str | None:
    """Why a model-derived http_status URL is refused (it would reach the listener's host, or
    cannot be read unambiguously); None when it may be probed."""
    target = parse(url)
    if isinstance(target, str):
        return target
    return host_refusal(target.host, host_addresses)


def host_refusal(host: str, host_addresses: Iterable[IPAddress] = ()) -> str | None:
    name = host.lower().strip("[]").rstrip(".")
    address = address_of(name)
    if address is not None:
        reason = address_refusal(address, host_addresses)
        if reason is None:
            return None
        return f"{host} is {reason}" if name == str(address) else f"{host} is {address}, {reason}"
    if name in HOST_NAMES or name.endswith(HOST_NAME_SUFFIXES):
        return f"{host} names the listener's machine, the Docker host or a cloud metadata service"
    if all(_NUMERIC_LABEL.match(label) for label in name.split(".")):  # 1.2.3.4.5, 256.1, 0x1g
        return f"{host} looks numeric but is no IP address in any standard spelling (resolvers disagree on it)"
    return None


def forbidden_networks(host_addresses: Iterable[IPAddress] = ()) -> list[str]:
    """The networks handed to the probe for a model-derived check (CIDR strings)."""
    nets = [str(network) for network, _why in _FORBIDDEN]
    nets += [str(ipaddress.ip_network(address)) for address in host_addresses]
    return nets
