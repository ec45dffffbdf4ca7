"""Level 4: the acceptance check of interface.md, evaluated against real state after the run
(the container's filesystem, the sandbox database, a URL, the recording endpoint, a running
container). Output text is never matched.

`validate_spec` turns an acceptance_check object into checks with their defaults filled in (or a
StepFailure that says what is wrong); `evaluate` runs them; a check that cannot run (the engine or
the database is unreachable) fails with the reason, it never raises.

Level 4 acts with the automation's reach, not the listener's: `http_status` is a GET from a probe
container on the sandbox network (listener/sandbox/probe.py; a model-derived URL that points at the
listener's host is refused, listener/sandbox/urls.py); `sql_rows` is one plain SELECT calling only
pure functions (listener/sandbox/sqlguard.py), run read-only under a role that can only read
(listener/sandbox/sqlrole.py), and its failures are a SQLSTATE and our words, never the server's.
"""

from __future__ import annotations

import io
import ipaddress
import posixpath
import re
import socket
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import docker.errors
import psycopg
import requests.exceptions
from loguru import logger

from listener.queue.db import Queries
from listener.queue.outcome import StepFailure
from listener.sandbox import urls
from listener.sandbox.engine import Sandbox
from listener.sandbox.probe import ProbeRequest, run_probe
from listener.sandbox.recorder import Recorder
from listener.sandbox.sqlguard import check_select
from listener.sandbox.sqlrole import FIX as ROLE_FIX
from listener.sandbox.sqlrole import inspect_role, login_of, sql_failure
from listener.sandbox.standin import MAX_REPLY_CHARS, RECORD_PATH

KINDS = ("file_exists", "sql_rows", "http_status", "http_request", "container_running", "claude_called")
MAX_WAIT_S = 600
SQL_TIMEOUT = "10s"
HTTP_TIMEOUT_S = 10.0
MAX_SYMLINK_HOPS = 8
HEADER_BYTES = 16 * 512  # room for a pax/GNU long-name header before the file's own
_METHOD = re.compile(r"^[A-Za-z]{1,20}$")


@dataclass(frozen=True)
class CheckResult:
    kind: str
    passed: bool
    detail: str
    ran: bool = True  # False: the check could not be evaluated (the engine or the database failed)


@dataclass
class RunState:
    """What the checks look at. `container`: a docker SDK Container, exited but not removed (job),
    or started detached (service). `sandbox`: the run's Sandbox (engine, settings and network), from
    which http_status probes are made. `derived`: the checks were written by the model (their URLs
    may not point at the listener's host)."""

    container: Any
    recorder: Recorder | None
    run_token: str
    sandbox_database_url: str | None
    sandbox: Sandbox | None = None
    derived: bool = False


# -- validation ----------------------------------------------------------------------------------

def _invalid(message: str) -> StepFailure:
    return StepFailure(level=4, step="level4", kind="level", message=f"acceptance check unusable: {message}")


def validate_spec(spec: Any) -> list[dict[str, Any]]:
    """The checks of an acceptance_check object, with defaults filled in; a clear StepFailure otherwise."""
    if spec is None:
        raise _invalid("acceptance_check is missing (NULL) and no checks were derived")
    if isinstance(spec, str):
        raise _invalid('acceptance_check is a JSON string, not an object: store {"checks": [...]} as jsonb '
                       "(was it encoded twice?)")
    if not isinstance(spec, dict):
        raise _invalid(f'acceptance_check must be a JSON object {{"checks": [...]}}, not {_json_type(spec)}')
    checks = spec.get("checks")
    if not isinstance(checks, list):
        raise _invalid('acceptance_check has no "checks" list')
    if not checks:
        raise _invalid('acceptance_check has an empty "checks" list: nothing would be verified')
    validated = [_validate_one(index, check) for index, check in enumerate(checks, start=1)]
    replies = {check["reply"] for check in validated if check["kind"] == "claude_called" and check.get("reply") is not None}
    if len(replies) > 1:
        raise _invalid('the claude_called checks give different "reply" texts: the stand-in gives one reply per run')
    return validated


def _validate_one(index: int, check: Any) -> dict[str, Any]:
    where = f"check {index}"
    if not isinstance(check, dict):
        raise _invalid(f"{where} is {_json_type(check)}, not an object")
    kind = check.get("kind")
    if kind not in KINDS:
        raise _invalid(f"{where} has unknown kind {kind!r} (known: {', '.join(KINDS)})")
    where = f"{where} ({kind})"
    out = dict(check)
    if kind == "file_exists":
        path = check.get("path")
        if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
            raise _invalid(f'{where} needs an absolute "path", e.g. "/tmp/report.json"')
        out["min_bytes"] = _int(check.get("min_bytes", 1), f'{where} "min_bytes"', minimum=0)
    elif kind == "sql_rows":
        out["query"] = _single_select(check.get("query"), where)
        out["min_rows"] = _int(check.get("min_rows", 1), f'{where} "min_rows"', minimum=1)
    elif kind == "http_status":
        url = check.get("url")
        target = urls.parse(url) if isinstance(url, str) and re.match(r"^https?://", url, re.IGNORECASE) else None
        if not isinstance(target, urls.Target):
            why = f" ({target})" if isinstance(target, str) else ""
            raise _invalid(f'{where} needs an http(s) "url", e.g. "http://{urls.AUTOMATION_HOST}:8080/health"{why}')
        out["status"] = _int(check.get("status", 200), f'{where} "status"', minimum=100, maximum=599)
    elif kind == "http_request":
        path = check.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise _invalid(f'{where} needs a "path" starting with /, e.g. "/report"')
        if path == RECORD_PATH or path.startswith(RECORD_PATH + "/"):
            raise _invalid(f'{where}: the path {RECORD_PATH} is reserved for the claude stand-in (use a "claude_called" check)')
        method = check.get("method", "POST")
        if not isinstance(method, str) or not _METHOD.match(method):
            raise _invalid(f'{where} has an invalid "method" {method!r} (e.g. "POST")')
        out["method"] = method.upper()
    elif kind == "claude_called":
        out["min_calls"] = _int(check.get("min_calls", 1), f'{where} "min_calls"', minimum=1)
        wanted = check.get("args_include", [])
        if not isinstance(wanted, list) or not all(isinstance(arg, str) and arg for arg in wanted):
            raise _invalid(f'{where} "args_include" must be a list of arguments, e.g. ["-p"]')
        out["args_include"] = list(wanted)
        reply = check.get("reply")
        if reply is not None and (not isinstance(reply, str) or "\x00" in reply or len(reply) > MAX_REPLY_CHARS):
            raise _invalid(f'{where} "reply" must be a text of at most {MAX_REPLY_CHARS} characters')
    else:
        after = check.get("after_s")
        if not isinstance(after, (int, float)) or isinstance(after, bool) or not 0 < after <= MAX_WAIT_S:
            raise _invalid(f'{where} needs "after_s", a number of seconds > 0 and ≤ {MAX_WAIT_S}')
    return out


def _int(value: Any, what: str, minimum: int, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"≥ {minimum}"
        raise _invalid(f"{what} must be an integer {bound}, not {value!r}")
    return value


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _single_select(query: Any, where: str) -> str:
    """The query as written without trailing semicolons: one plain SELECT (sqlguard.check_select)."""
    accepted = check_select(query)
    if isinstance(accepted, str):
        raise _invalid(f"{where} {accepted}")
    return accepted.statement


# -- evaluation ----------------------------------------------------------------------------------

def evaluate(checks: list[dict[str, Any]], state: RunState) -> list[CheckResult]:
    """Every check against the real state, in order; each result says what was found."""
    results = []
    for check in checks:
        kind = check["kind"]
        try:
            result = _EVALUATORS[kind](check, state)
        except psycopg.Error as exc:  # the server's text is never shown
            result = CheckResult(kind, False, sql_failure(exc, "the check could not run"), ran=False)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run fails with the reason
            logger.warning("level 4 check {} could not run: {}: {}", kind, type(exc).__name__, exc)
            result = CheckResult(kind, False, f"the check could not run: {type(exc).__name__}: {_flat(str(exc))}",
                                 ran=False)
        logger.info("level 4 check {} {}: {}", kind, "passed" if result.passed else "FAILED", result.detail)
        results.append(result)
    return results


def summarize(results: list[CheckResult]) -> str:
    """The Level 4 log: one line per check."""
    return "\n".join(f"{'PASS' if r.passed else 'FAIL'} {r.kind}: {r.detail}" for r in results)


def _file_exists(check: dict[str, Any], state: RunState) -> CheckResult:
    path, wanted = check["path"], check["min_bytes"]
    member = _archive_member(state.container, path)
    if member is None:
        return CheckResult("file_exists", False, f"{path}: no such file in the sandbox container")
    if member.isdir():
        return CheckResult("file_exists", False, f"{path} is a directory, not a file")
    if not member.isfile():
        return CheckResult("file_exists", False, f"{path} is not a regular file")
    if member.size < wanted:
        return CheckResult("file_exists", False, f"{path} has {member.size} bytes, at least {wanted} expected")
    return CheckResult("file_exists", True, f"{path} exists ({member.size} bytes)")


def _archive_member(container: Any, path: str) -> tarfile.TarInfo | None:
    """The tar header of `path` in the container's filesystem (symlinks followed), None when missing."""
    for _hop in range(MAX_SYMLINK_HOPS):
        member = _first_member(container, path)
        if member is None or not member.issym():
            return member
        target = member.linkname
        path = posixpath.normpath(target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target))
    return None


def _first_member(container: Any, path: str) -> tarfile.TarInfo | None:
    try:
        stream, _stat = container.get_archive(path)
    except docker.errors.NotFound as exc:
        if "no such container" in str(exc).lower():
            raise  # the container is gone: the check cannot run (not "the file is missing")
        return None
    buffer = io.BytesIO()
    try:
        for chunk in stream:  # only the first header is needed: stop as soon as it has arrived
            buffer.write(chunk)
            if buffer.tell() >= HEADER_BYTES:
                break
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    buffer.seek(0)
    try:
        with tarfile.open(fileobj=buffer, mode="r|") as archive:
            return archive.next()
    except tarfile.TarError:
        return None


def _sql_rows(check: dict[str, Any], state: RunState) -> CheckResult:
    if not state.sandbox_database_url:
        return CheckResult("sql_rows", False, "SANDBOX_DATABASE_URL is not set: the query cannot run")
    wanted = check["min_rows"]
    accepted = check_select(check["query"])
    if isinstance(accepted, str):
        return CheckResult("sql_rows", False, f"the query is refused: it {accepted}")
    queries = Queries.load()
    try:
        conn = psycopg.connect(state.sandbox_database_url, connect_timeout=10, application_name="agent-builder-level4")
    except psycopg.Error as exc:
        return CheckResult("sql_rows", False, sql_failure(exc, "could not connect to SANDBOX_DATABASE_URL"))
    try:
        with conn:
            conn.read_only = True  # the implicit BEGIN is BEGIN READ ONLY
            conn.execute(queries["level4_sql_session"], {"timeout": SQL_TIMEOUT})
            powers = inspect_role(conn, queries, _listener_login(state, queries))
            if not powers.read_only:
                return CheckResult("sql_rows", False, f"the query was not run: SANDBOX_DATABASE_URL's {powers.describe()}; "
                                                      f"fix: {ROLE_FIX}")
            cursor = conn.execute(accepted.query)  # no parameters: the text is sent as checked
            rows = cursor.fetchmany(wanted + 1)
            conn.rollback()
    except psycopg.Error as exc:
        return CheckResult("sql_rows", False, sql_failure(exc))
    more = "+" if len(rows) > wanted else ""
    return CheckResult("sql_rows", len(rows) >= wanted, f"the query returned {len(rows)}{more} row(s), at least {wanted} expected")


def _listener_login(state: RunState, queries: Queries) -> str | None:
    """The listener's own login (its DATABASE_URL), whose backends the check's role must not be
    able to signal; None when it is not known here."""
    url = state.sandbox.settings.database_url if state.sandbox is not None else None
    if not url:
        return None
    try:
        with psycopg.connect(url, connect_timeout=10, application_name="agent-builder-level4") as conn:
            return login_of(conn, queries)
    except psycopg.Error:
        return None


def _http_status(check: dict[str, Any], state: RunState) -> CheckResult:
    wanted = check["status"]
    target = urls.parse(check["url"])
    if isinstance(target, str):
        return CheckResult("http_status", False, f"the URL is unusable: {target}")
    shown = target.shown
    sandbox = state.sandbox
    if sandbox is None:
        return CheckResult("http_status", False, f"{shown}: no sandbox for this run (http_status is made from the "
                                                 "sandbox network, never from the listener's host)")
    network = sandbox.network or sandbox.settings.sandbox_network
    if network == "none":
        return CheckResult("http_status", False, f"{shown}: SANDBOX_NETWORK=none: the sandbox has no network, so no URL "
                                                 "can be reached from it")
    host_addresses = _docker_host_addresses(sandbox.client) if state.derived else []
    if state.derived:
        reason = urls.host_refusal(target.host, host_addresses)
        if reason is not None:
            logger.warning("level 4: model-derived http_status {} refused: {}", shown, reason)
            return CheckResult("http_status", False, f"{shown}: refused, a model-derived check never reaches the "
                                                     f"listener's host: {reason}")
    connect = target.host
    if target.host == urls.AUTOMATION_HOST:
        address = _address_on(state.container, network)
        if address is None:
            return CheckResult("http_status", False, f"{shown}: the automation's container has no address on {network} "
                                                     "(it is not running)")
        connect = address
    image, note = _probe_image(sandbox, state.container)
    forbidden = tuple(urls.forbidden_networks(host_addresses)) if state.derived else ()
    answer = run_probe(sandbox, image, ProbeRequest(target=target, connect=connect, forbidden=forbidden,
                                                    timeout_s=HTTP_TIMEOUT_S))
    if answer.status is None:
        return CheckResult("http_status", False, f"{shown}: {answer.problem}{note}")
    return CheckResult("http_status", answer.status == wanted, f"{shown} answered {answer.status}, {wanted} expected{note}")


def _docker_host_addresses(client: Any) -> list[urls.IPAddress]:
    """Addresses of the Docker host the builder knows: every network's gateway on the engine, and
    the addresses of this machine's name."""
    found: list[urls.IPAddress] = []
    try:
        networks = client.networks.list()
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        logger.warning("level 4: could not list the engine's networks for their gateways: {}", exc)
        networks = []
    texts = [str(config.get("Gateway") or "") for network in networks
             for config in ((network.attrs.get("IPAM") or {}).get("Config") or []) if config]
    try:
        texts += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    for text in texts:
        address = urls.address_of(text.split("/")[0]) if text else None
        if address is not None and address not in found:
            found.append(address)
    return found


def _address_on(container: Any, network: str) -> str | None:
    """The container's address on the network (None when it has none: stopped, or not attached)."""
    if container is None:
        return None
    try:
        container.reload()
    except docker.errors.NotFound:
        return None
    if container.status != "running":
        return None
    attached = ((container.attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}
    for key in ("IPAddress", "GlobalIPv6Address"):
        text = str(attached.get(key) or "")
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            continue
    return None


def _probe_image(sandbox: Sandbox, container: Any) -> tuple[str, str]:
    """SANDBOX_BASE_IMAGE (the operator's image, with python3); the automation's own image only when
    it is missing (then the automation could answer for the probe: the log says so)."""
    base = sandbox.settings.sandbox_base_image
    try:
        sandbox.client.images.get(base)
        return base, ""
    except (docker.errors.ImageNotFound, docker.errors.APIError):
        own = str((getattr(container, "attrs", None) or {}).get("Image") or "")
        if not own:
            return base, ""
        return own, f" (probe made in the automation's own image: {base} is missing)"


def _http_request(check: dict[str, Any], state: RunState) -> CheckResult:
    wanted = f"{check['method']} {check['path']}"
    if state.recorder is None:
        return CheckResult("http_request", False, f"no recording endpoint for this run: {wanted} cannot be seen")
    seen = state.recorder.requests_for(state.run_token)
    matching = [r for r in seen if r.method.upper() == check["method"] and r.path == check["path"]]
    if any(r.status == 200 for r in matching):
        return CheckResult("http_request", True, f"{wanted} reached SANDBOX_HTTP_URL and got 200")
    calls = ", ".join(f"{r.method} {r.path} ({r.status})" for r in seen[:10]) or "none"
    return CheckResult("http_request", False, f"no {wanted} answered 200 at SANDBOX_HTTP_URL (requests seen: {calls})")


def _claude_called(check: dict[str, Any], state: RunState) -> CheckResult:
    wanted, needed = check["min_calls"], check["args_include"]
    with_args = f" with {' '.join(needed)} among its arguments" if needed else ""
    if state.recorder is None:
        return CheckResult("claude_called", False, "no recording endpoint for this run (SANDBOX_NETWORK=none): the "
                                                   "claude stand-in cannot record its calls")
    calls = [r.call for r in state.recorder.requests_for(state.run_token) if r.path == RECORD_PATH and r.call is not None]
    matching = [call for call in calls if all(arg in call.argv for arg in needed)]
    found = f"{len(matching)} call(s) of the claude stand-in{with_args} ({len(calls)} in all), at least {wanted} expected"
    shown = (matching or calls)[:1]
    for call in shown:  # the arguments and the names of the variables it saw: never their values
        argv = ", ".join(repr(arg if len(arg) <= 80 else arg[:80] + "…") for arg in call.argv[:20])
        found += (f"; {'first' if matching else 'a non-matching'} call: argv [{argv}], {len(call.stdin)} characters on "
                  f"stdin, environment variable names: {', '.join(call.env_names[:60]) or '(none)'}")
    return CheckResult("claude_called", len(matching) >= wanted, found)


def _container_running(check: dict[str, Any], state: RunState) -> CheckResult:
    container, after = state.container, float(check["after_s"])
    container.reload()
    if container.status == "running":
        waited = _seconds_since(container.attrs.get("State", {}).get("StartedAt", ""))
        time.sleep(max(0.0, after - (waited if waited is not None else 0.0)))
        container.reload()
    if container.status == "running":
        return CheckResult("container_running", True, f"container still running {after:g} s after it started")
    exit_code = container.attrs.get("State", {}).get("ExitCode")
    return CheckResult("container_running", False,
                       f"container {container.status} (exit code {exit_code}) within {after:g} s of its start")


def _seconds_since(timestamp: str) -> float | None:
    """Seconds since Docker's StartedAt ("2026-11-28T13:50:13.123456789Z")."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?", timestamp or "")
    if not match or timestamp.startswith("0001-"):
        return None
    started = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc)
    fraction = float(f"0.{match.group(2)}") if match.group(2) else 0.0
    return (datetime.now(timezone.utc) - started).total_seconds() - fraction


def _flat(text: str) -> str:
    return " ".join(text.split())


_EVALUATORS: dict[str, Callable[[dict[str, Any], RunState], CheckResult]] = {
    "file_exists": _file_exists,
    "sql_rows": _sql_rows,
    "http_status": _http_status,
    "http_request": _http_request,
    "container_running": _container_running,
    "claude_called": _claude_called,
}
