"""The overseer (Step 4): the one paid `claude -p` review of the generated code.

It fails closed: a Verdict passes only when the command exits 0, its JSON envelope (when it
prints one) reports no error, and the answer's first word is exactly PASS. Every other outcome
is a failed Verdict whose reason says which; nothing here raises for them.

Verdict rule: leading whitespace and markdown decoration (* _ # > ` ~) are skipped; the next
word must be PASS or FAIL in any case, followed by the end of the text, whitespace, or one of
the characters : . , ; - – — ) * _ ` !  So "**PASS**: ok" and "pass - ok" count, while "PASSED",
"PASSING", "PASS?" or "Verdict: PASS" do not (they are treated as an answer without a verdict).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from loguru import logger

REASON_CHARS = 500
DECORATION = "*_#>`~ \t\r\n"
VERDICT = re.compile(r"(PASS|FAIL)(?=$|[\s:.,;\-–—)*_`!])", re.IGNORECASE)
KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    cost_usd: float | None
    exit_code: int | None
    raw: str
    duration_s: float


def review(cmd: tuple[str, ...], prompt: str, code_stdin: str, timeout_s: float) -> Verdict:
    """Run cmd + [prompt] with the code on stdin and judge its answer (never raises for its outcome)."""
    started = time.monotonic()
    argv = [*cmd, prompt]
    logger.info("overseer start command={} prompt_chars={} code_chars={}", cmd[0] if cmd else "", len(prompt), len(code_stdin))
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError:
        return _done(_verdict(False, f"overseer command not found: {cmd[0] if cmd else '(empty CLAUDE_CMD)'}", None, None, "", started))
    except PermissionError:
        return _done(_verdict(False, f"overseer command is not executable: {cmd[0]}", None, None, "", started))
    except (OSError, IndexError) as exc:
        return _done(_verdict(False, f"overseer command could not start: {exc}", None, None, "", started))

    try:
        stdout, stderr = proc.communicate(input=code_stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = _collect(proc)
        return _done(_verdict(False, f"overseer timed out after {timeout_s:g} s (CLAUDE_TIMEOUT_S)", None, proc.returncode, stdout, started))
    return _done(judge(stdout, stderr, proc.returncode, started))


def judge(stdout: str, stderr: str, exit_code: int, started: float) -> Verdict:
    """Turn the command's output into a Verdict (plain text or --output-format json)."""
    envelope = _json_envelope(stdout)
    cost: float | None = None
    text = stdout
    if envelope is not None:
        raw_cost = envelope.get("total_cost_usd", envelope.get("cost_usd"))
        cost = float(raw_cost) if isinstance(raw_cost, (int, float)) and not isinstance(raw_cost, bool) else None
        result = envelope.get("result")
        text = result if isinstance(result, str) else ""
        subtype = envelope.get("subtype")
        if envelope.get("is_error") is True or (isinstance(subtype, str) and subtype != "success"):
            detail = _flat(text) or _flat(stderr) or "no detail"
            return _verdict(False, f"overseer reported an error (subtype={subtype}): {detail}", cost, exit_code, stdout, started)
    if exit_code != 0:
        detail = _flat(stderr) or _flat(text) or "no output"
        return _verdict(False, f"overseer exited with code {exit_code}: {detail}", cost, exit_code, stdout, started)
    if not text.strip():
        return _verdict(False, "overseer gave no answer (empty output)", cost, exit_code, stdout, started)
    word, reason = parse_verdict(text)
    if word is None:
        return _verdict(False, f"overseer answer does not start with PASS or FAIL: {_flat(text)}", cost, exit_code, stdout, started)
    if word == "PASS":
        return _verdict(True, reason or "(no reason given)", cost, exit_code, stdout, started)
    return _verdict(False, reason or "overseer said FAIL without a reason", cost, exit_code, stdout, started)


def parse_verdict(text: str) -> tuple[str | None, str]:
    """('PASS'|'FAIL'|None, the sentence after the verdict word)."""
    body = text.lstrip(DECORATION)
    match = VERDICT.match(body)
    if match is None:
        return None, ""
    rest = body[match.end():].lstrip(DECORATION + ":.,;-–—)!")
    return match.group(1).upper(), _flat(rest)


def _json_envelope(stdout: str) -> dict[str, Any] | None:
    stripped = stdout.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    if isinstance(data, dict) and ("result" in data or "is_error" in data or data.get("type") == "result"):
        return data
    return None


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _collect(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        stdout, stderr = proc.communicate(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        return "", ""
    return stdout or "", stderr or ""


def _flat(text: str, limit: int = REASON_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _verdict(passed: bool, reason: str, cost: float | None, exit_code: int | None, raw: str, started: float) -> Verdict:
    return Verdict(passed=passed, reason=reason, cost_usd=cost, exit_code=exit_code, raw=raw, duration_s=time.monotonic() - started)


def _done(verdict: Verdict) -> Verdict:
    logger.info(
        "overseer {} in {:.1f}s exit={} cost_usd={}: {}",
        "PASS" if verdict.passed else "FAIL",
        verdict.duration_s,
        verdict.exit_code,
        verdict.cost_usd,
        verdict.reason,
    )
    return verdict
