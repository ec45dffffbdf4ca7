"""Level 4: the acceptance check of interface.md, evaluated against real state after the run
(the container's filesystem, the sandbox database, a URL, the recording endpoint, a running
container). Output text is never matched."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
import psycopg

from listener.outcome import StepFailure
from listener.sandbox.engine import file_in_container
from listener.sandbox.recorder import Recorder

KINDS = ("file_exists", "sql_rows", "http_status", "http_request", "container_running")
MAX_WAIT_S = 600


@dataclass(frozen=True)
class CheckResult:
    kind: str
    passed: bool
    detail: str


@dataclass
class RunState:
    container: Any  # the sandbox container, exited (job) or running (service); removed afterwards
    recorder: Recorder | None
    run_token: str
    sandbox_database_url: str | None


def _invalid(message: str) -> StepFailure:
    return StepFailure(level=4, step="level4", kind="level",
                       message=f"acceptance check unusable: {message}")


def validate_spec(spec: Any) -> list[dict[str, Any]]:
    """The checks of an acceptance_check object, with defaults filled in; a clear failure otherwise."""
    if spec is None:
        raise _invalid("acceptance_check is missing (NULL) and no checks were derived")
    if not isinstance(spec, dict):
        raise _invalid(f"acceptance_check must be a JSON object {{\"checks\": [...]}}, not {type(spec).__name__}")
    checks = spec.get("checks")
    if not isinstance(checks, list):
        raise _invalid("acceptance_check has no \"checks\" list")
    if not checks:
        raise _invalid("acceptance_check has an empty \"checks\" list: nothing would be verified")
    return [_validate_one(index, check) for index, check in enumerate(checks, start=1)]


def _validate_one(index: int, check: Any) -> dict[str, Any]:
    where = f"check {index}"
    if not isinstance(check, dict):
        raise _invalid(f"{where} is not an object")
    kind = check.get("kind")
    if kind not in KINDS:
        raise _invalid(f"{where} has unknown kind {kind!r} (known: {', '.join(KINDS)})")
    out = dict(check)
    if kind == "file_exists":
        path = check.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise _invalid(f"{where} (file_exists) needs an absolute \"path\"")
        out["min_bytes"] = _int(check.get("min_bytes", 1), f"{where} min_bytes", minimum=0)
    elif kind == "sql_rows":
        query = check.get("query")
        if not isinstance(query, str) or not re.match(r"\s*(select|with)\b", query, re.IGNORECASE):
            raise _invalid(f"{where} (sql_rows) needs a \"query\" that is a SELECT")
        if ";" in query.strip().rstrip(";"):
            raise _invalid(f"{where} (sql_rows) must be a single statement")
        out["min_rows"] = _int(check.get("min_rows", 1), f"{where} min_rows", minimum=0)
    elif kind == "http_status":
        url = check.get("url")
        if not isinstance(url, str) or not re.match(r"https?://", url):
            raise _invalid(f"{where} (http_status) needs an http(s) \"url\"")
        out["status"] = _int(check.get("status", 200), f"{where} status", minimum=100)
    elif kind == "http_request":
        path = check.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise _invalid(f"{where} (http_request) needs a \"path\" starting with /")
        method = check.get("method", "POST")
        if not isinstance(method, str) or not method.isalpha():
            raise _invalid(f"{where} (http_request) has an invalid method")
        out["method"] = method.upper()
    else:
        after = check.get("after_s")
        if not isinstance(after, (int, float)) or isinstance(after, bool) or not 0 < after <= MAX_WAIT_S:
            raise _invalid(f"{where} (container_running) needs \"after_s\" between 0 and {MAX_WAIT_S}")
    return out


def _int(value: Any, what: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _invalid(f"{what} must be an integer ≥ {minimum}")
    return value


def evaluate(checks: list[dict[str, Any]], state: RunState) -> list[CheckResult]:
    return [_EVALUATORS[check["kind"]](check, state) for check in checks]


def _file_exists(check: dict[str, Any], state: RunState) -> CheckResult:
    data = file_in_container(state.container, check["path"], max_bytes=max(check["min_bytes"], 1) + 1)
    if data is None:
        return CheckResult("file_exists", False, f"{check['path']}: no such file in the sandbox container")
    if len(data) < check["min_bytes"]:
        return CheckResult("file_exists", False, f"{check['path']}: {len(data)} bytes, at least {check['min_bytes']} expected")
    return CheckResult("file_exists", True, f"{check['path']} exists ({len(data)}+ bytes)")


def _sql_rows(check: dict[str, Any], state: RunState) -> CheckResult:
    if not state.sandbox_database_url:
        return CheckResult("sql_rows", False, "SANDBOX_DATABASE_URL is not set: the query cannot run")
    try:
        with psycopg.connect(state.sandbox_database_url, connect_timeout=10) as conn:
            conn.read_only = True
            with conn.transaction():
                conn.execute("SET LOCAL statement_timeout = '10s'")
                rows = conn.execute(check["query"].strip().rstrip(";")).fetchmany(check["min_rows"] + 1)
    except psycopg.Error as exc:
        return CheckResult("sql_rows", False, f"the query failed: {' '.join(str(exc).split())[:300]}")
    passed = len(rows) >= check["min_rows"]
    return CheckResult("sql_rows", passed, f"{len(rows)}{'+' if len(rows) > check['min_rows'] else ''} row(s), "
                                           f"at least {check['min_rows']} expected")


def _http_status(check: dict[str, Any], state: RunState) -> CheckResult:
    try:
        answer = httpx.get(check["url"], timeout=10, follow_redirects=False)
    except httpx.HTTPError as exc:
        return CheckResult("http_status", False, f"{check['url']}: {type(exc).__name__}: {exc}")
    return CheckResult("http_status", answer.status_code == check["status"],
                       f"{check['url']} answered {answer.status_code}, {check['status']} expected")


def _http_request(check: dict[str, Any], state: RunState) -> CheckResult:
    seen = state.recorder.requests_for(state.run_token) if state.recorder else []
    wanted = [r for r in seen if r.method == check["method"] and r.path == check["path"]]
    if any(r.status == 200 for r in wanted):
        return CheckResult("http_request", True, f"{check['method']} {check['path']} reached SANDBOX_HTTP_URL")
    calls = ", ".join(f"{r.method} {r.path}" for r in seen) or "none"
    return CheckResult("http_request", False, f"no {check['method']} {check['path']} reached SANDBOX_HTTP_URL "
                                              f"(requests seen: {calls})")


def _container_running(check: dict[str, Any], state: RunState) -> CheckResult:
    container = state.container
    container.reload()
    started = container.attrs.get("State", {}).get("StartedAt", "")
    waited = _seconds_since(started)
    if waited is not None and waited < check["after_s"]:
        time.sleep(check["after_s"] - waited)
        container.reload()
    status = container.status
    return CheckResult("container_running", status == "running",
                       f"container {status} after {check['after_s']:g} s")


def _seconds_since(timestamp: str) -> float | None:
    """Seconds since Docker's StartedAt ("2026-11-28T13:50:13.123456789Z")."""
    text = timestamp.rstrip("Z")
    if "." in text:
        head, fraction = text.split(".", 1)
        text = f"{head}.{fraction[:6]}"
    try:
        started = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return (datetime.now(timezone.utc) - started).total_seconds()


_EVALUATORS = {
    "file_exists": _file_exists,
    "sql_rows": _sql_rows,
    "http_status": _http_status,
    "http_request": _http_request,
    "container_running": _container_running,
}


def summarize(results: list[CheckResult]) -> str:
    return "\n".join(f"{'PASS' if r.passed else 'FAIL'} {r.kind}: {r.detail}" for r in results)
