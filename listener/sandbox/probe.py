"""The `http_status` probe: one GET made from a short-lived container on the sandbox network, with
the same confinement as a sandbox run (Sandbox.container), never from the listener's host.

The listener parses the URL (listener/sandbox/urls.py) and gives the probe the parts: the probe
resolves the host *inside* the sandbox network, refuses (for a model-derived check) a name that
resolves into a forbidden network, connects to the address it checked (no second lookup), sends
one request with no redirects, no proxy and a timeout, and prints one JSON line: the status, or a
fixed token for what went wrong. Nothing the server sends besides its status code comes back.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from listener.sandbox.engine import EngineError, Sandbox
from listener.sandbox.urls import Target, address_refusal

MARK = "agent-builder-probe:"
CONTAINER_MARGIN_S = 20.0  # start-up, name resolution and the interpreter, on top of the HTTP timeouts

PROBE_SCRIPT = r"""
import errno, http.client, ipaddress, json, socket, ssl, sys
A = json.loads(sys.argv[1])

def done(**answer):
    print("agent-builder-probe:" + json.dumps(answer), flush=True)
    sys.exit(0)

def plain(text):
    ip = ipaddress.ip_address(text.split("%")[0])
    return (ip.ipv4_mapped or ip) if ip.version == 6 else ip

def failure(exc):
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_verify"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, http.client.HTTPException):
        return "bad_response"
    if isinstance(exc, OSError) and exc.errno:
        return "errno:" + errno.errorcode.get(exc.errno, "unknown")
    return "exception:" + type(exc).__name__

forbidden = [ipaddress.ip_network(n) for n in A["forbidden"]]
try:
    infos = socket.getaddrinfo(A["connect"], A["port"], type=socket.SOCK_STREAM)
except (OSError, UnicodeError):
    done(error="resolve")
for info in infos:
    ip = plain(info[4][0])
    if any(ip.version == n.version and ip in n for n in forbidden):
        done(error="forbidden", address=str(ip))
sock, problem = None, "resolve"
for family, kind, proto, _name, address in infos:
    candidate = socket.socket(family, kind, proto)
    candidate.settimeout(A["timeout"])
    try:
        candidate.connect(address)
    except OSError as exc:
        candidate.close()
        problem = failure(exc)
        continue
    sock = candidate
    break
if sock is None:
    done(error=problem)
try:
    if A["scheme"] == "https":
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=A["host"])
    conn = http.client.HTTPConnection(A["host"], A["port"], timeout=A["timeout"])
    conn.sock = sock
    headers = {"Host": A["host_header"], "User-Agent": "agent-builder-level4", "Accept": "*/*",
               "Connection": "close"}
    if A["authorization"]:
        headers["Authorization"] = A["authorization"]
    conn.request("GET", A["target"], headers=headers)
    done(status=conn.getresponse().status)
except Exception as exc:
    done(error=failure(exc))
"""

_ERROR = re.compile(r"^(resolve|forbidden|timeout|refused|reset|tls_verify|tls|bad_response|errno:[A-Z0-9]{1,20}"
                    r"|exception:[A-Za-z_][A-Za-z0-9_]{0,60})$")


@dataclass(frozen=True)
class ProbeRequest:
    target: Target
    connect: str  # the host name or address the probe resolves and connects to
    forbidden: tuple[str, ...]  # CIDRs a resolved address may not be in (model-derived checks)
    timeout_s: float


@dataclass(frozen=True)
class ProbeAnswer:
    status: int | None
    problem: str | None = None  # our words for why there is no status


def run_probe(sandbox: Sandbox, image: str, request: ProbeRequest) -> ProbeAnswer:
    """Make the request from a confined container on the sandbox network; never raises."""
    argument = json.dumps({
        "scheme": request.target.scheme, "host": request.target.host, "port": request.target.port,
        "target": request.target.request_target, "host_header": request.target.host_header,
        "authorization": request.target.authorization, "connect": request.connect,
        "forbidden": list(request.forbidden), "timeout": request.timeout_s,
    })
    limit = 2 * request.timeout_s + CONTAINER_MARGIN_S
    try:
        with sandbox.container(image, ["-I", "-c", PROBE_SCRIPT, argument], {}, entrypoint=["python3"]) as container:
            run = sandbox.run_to_end(container, timeout_s=limit)
    except EngineError as exc:
        return ProbeAnswer(None, f"the probe container could not run: {exc}")
    if run.timed_out:
        return ProbeAnswer(None, f"no answer within {limit:g} s (the probe was stopped)")
    answer = _reported(run.logs)
    if answer is None:
        return ProbeAnswer(None, f"the probe reported nothing (exit code {run.exit_code}): its image {image} needs python3")
    status = answer.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        return ProbeAnswer(status)
    error = answer.get("error")
    if not isinstance(error, str) or not _ERROR.match(error):
        return ProbeAnswer(None, "the probe's answer is unusable")
    return ProbeAnswer(None, _explain(error, answer.get("address"), request))


def _reported(logs: str) -> dict[str, Any] | None:
    for line in reversed(logs.splitlines()):
        if line.startswith(MARK):
            try:
                value = json.loads(line[len(MARK):])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _explain(error: str, address: Any, request: ProbeRequest) -> str:
    host = request.target.host
    if error == "resolve":
        return f"{host} does not resolve on the sandbox network"
    if error == "forbidden":
        try:
            ip = ipaddress.ip_address(str(address))
        except ValueError:
            return f"{host} resolves to an address a model-derived check may not reach"
        why = address_refusal(ip) or "an address of the Docker host (a network gateway)"
        return f"refused: {host} resolves to {ip}, {why}; a model-derived check never reaches the listener's host"
    if error == "timeout":
        return f"no answer within {request.timeout_s:g} s"
    if error == "refused":
        return "connection refused"
    if error == "reset":
        return "the connection was reset"
    if error == "tls_verify":
        return "the TLS certificate does not verify"
    if error == "tls":
        return "the TLS handshake failed"
    if error == "bad_response":
        return "the answer is not HTTP"
    if error.startswith("errno:"):
        return f"cannot connect ({error.removeprefix('errno:')})"
    return f"the request failed ({error.removeprefix('exception:')})"
