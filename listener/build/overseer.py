"""The overseer (Step 4): the one paid `claude -p` review of the generated code, and nothing else.

The builder owns the invocation. CLAUDE_CMD names the program and any extra flags; the builder adds
what a single review needs (JSON output, no tools, one turn, no session, no MCP servers, no user or
project settings, its own short system prompt, the optional OVERSEER_MODEL and OVERSEER_MAX_USD),
then `--` and the prompt; the code goes on stdin. Every one of those flags is looked up in the
installed CLI first (listener.build.claude_cli), and a review is refused, failed closed, when one is
missing. The process runs in an empty temporary directory with an environment reduced to PATH,
HOME, ANTHROPIC_*/CLAUDE_* (and proxy settings), with its retries and API timeout bounded.

It fails closed: a Verdict passes only when the command exits 0, its JSON result reports no error,
the answer's first word is PASS and the answer does not also say FAIL. Every other outcome is a
failed Verdict whose reason says which; nothing here raises for them.

Verdict rule: the answer is cleaned like untrusted text (NFKC, invisible characters removed,
look-alike letters folded); leading whitespace and markdown decoration (* _ # > ` ~) are skipped;
the next word must be PASS or FAIL in any case, followed by the end of the text, whitespace, or one
of : . , ; - – — ) * _ ` !  So "**PASS**: ok" and "pass - ok" count, while "PASSED", "PASSING",
"PASS?" or "Verdict: PASS" do not (an answer without a verdict). A PASS whose answer also contains
FAIL (or fails, failed, failing, failure) anywhere is a FAIL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from loguru import logger

from listener.build.claude_cli import (ClaudeCli, CliProblem, FlagCheck, LoginState, ReviewFlag, UserFlags, check_flags,
                                 cli_environment, inspect_cli, login_state, normalise_user_flags, review_flags,
                                 scratch_directory, split_command)
from listener.config import Settings
from listener.build.prompt import OVERSEER_SYSTEM_PROMPT, clean_text, skeleton

REASON_CHARS = 500
DECORATION = "*_#>`~ \t\r\n"
VERDICT = re.compile(r"(PASS|FAIL)(?=$|[\s:.,;\-–—)*_`!])", re.IGNORECASE)
ALSO_FAIL = re.compile(r"\bFAIL(?:S|ED|ING|URES?)?\b", re.IGNORECASE)
KILL_WAIT_S = 5.0
# The CLI's own request timeout is a little shorter than CLAUDE_TIMEOUT_S, so that a hung API ends
# with the CLI's own error (and its JSON result) before the builder has to kill it.
API_TIMEOUT_SHARE = 0.8


@dataclass(frozen=True)
class Usage:
    """What the one review cost, from the CLI's JSON result."""

    input_tokens: int | None = None  # all input: plain, cache writes and cache reads
    output_tokens: int | None = None
    model: str | None = None
    cost_usd: float | None = None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    usage: Usage
    exit_code: int | None
    raw: str
    duration_s: float

    @property
    def cost_usd(self) -> float | None:
        return self.usage.cost_usd


@dataclass(frozen=True)
class Readiness:
    """Whether a review can run now: the CLI, its flags, its login. `problem` None means ready."""

    problem: str | None
    fix: str = ""
    cli: ClaudeCli | None = None
    flags: FlagCheck | None = None
    login: LoginState | None = None
    user_flags: UserFlags | None = None

    @property
    def ready(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        """One line for `check` and the logs."""
        if self.cli is None:
            return self.problem or "claude: unknown"
        parts = [f"{self.cli.path} (claude {self.cli.version})"]
        if self.flags is not None:
            if self.flags.missing:
                parts.append("missing review flag(s): " + ", ".join(f.name for f in self.flags.missing))
            else:
                unlisted = f"; accepted though not in --help: {', '.join(self.flags.unlisted)}" if self.flags.unlisted else ""
                parts.append(f"review flags ok{unlisted}")
        if self.login is not None:
            parts.append(self.login.detail if self.login.logged_in else f"NOT logged in: {self.login.detail}")
        if self.user_flags is not None and self.user_flags.ignored:
            parts.append("CLAUDE_CMD flags left out: " + "; ".join(self.user_flags.ignored))
        return "; ".join(parts)


@dataclass(frozen=True)
class Overseer:
    """One configured reviewer: CLAUDE_CMD, the bounds, the model and cost cap, the environment."""

    cmd: tuple[str, ...]
    timeout_s: float
    model: str | None = None
    max_usd: float | None = None
    max_retries: int = 0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)  # holds secrets
    scratch_root: Path | None = None  # where the temporary working directories go (default: the system's)

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> "Overseer":
        return cls(cmd=settings.claude_cmd, timeout_s=settings.claude_timeout_s, model=settings.overseer_model,
                   max_usd=settings.overseer_max_usd, max_retries=settings.claude_max_retries,
                   environ=dict(os.environ if environ is None else environ))

    @property
    def program(self) -> tuple[str, ...]:
        return split_command(self.cmd)[0]

    def environment(self) -> dict[str, str]:
        api_timeout_ms = max(1000, int(self.timeout_s * 1000 * API_TIMEOUT_SHARE))
        return cli_environment(self.environ, api_timeout_ms=api_timeout_ms, max_retries=self.max_retries)

    def flags(self) -> tuple[ReviewFlag, ...]:
        return review_flags(OVERSEER_SYSTEM_PROMPT, self.model, self.max_usd)

    def owned_options(self) -> frozenset[str]:
        names = {flag.name for flag in self.flags()} | {"--mcp-config", "--system-prompt-file", "--append-system-prompt",
                                                         "--append-system-prompt-file", "--input-format"}
        return frozenset(names)

    def readiness(self, *, check_login: bool = True) -> Readiness:
        """Free checks (no API request): the program runs, --help has every review flag, and (when
        asked) `claude auth status` reports a login."""
        env = self.environment()
        with scratch_directory(self.scratch_root) as cwd:
            cli = inspect_cli(self.program, env, cwd)
            if isinstance(cli, CliProblem):
                return Readiness(problem=cli.message, fix=cli.fix)
            flag_check = check_flags(cli, self.flags(), env, cwd)
            user = normalise_user_flags(split_command(self.cmd)[1], flag_check.help, self.owned_options())
            if flag_check.missing:
                first = flag_check.missing[0]
                names = ", ".join(f.name for f in flag_check.missing)
                return Readiness(
                    problem=(f"claude {cli.version} lacks {names} ({first.purpose}): the review is refused "
                             "rather than run without it"),
                    fix="install a Claude Code CLI whose --help lists it (npm install -g @anthropic-ai/claude-code@2)",
                    cli=cli, flags=flag_check, user_flags=user)
            if not check_login:
                return Readiness(problem=None, cli=cli, flags=flag_check, user_flags=user)
            login = login_state(cli, env, cwd)
        if not login.logged_in:
            return Readiness(problem=f"overseer not logged in: {login.detail}",
                             fix="log the claude CLI in as the listener's user (claude auth login), or set ANTHROPIC_API_KEY",
                             cli=cli, flags=flag_check, login=login, user_flags=user)
        return Readiness(problem=None, cli=cli, flags=flag_check, login=login, user_flags=user)

    def argv(self, readiness: Readiness, prompt: str) -> list[str]:
        """program, the user's kept flags, the builder's flags, `--`, the prompt."""
        assert readiness.cli is not None and readiness.user_flags is not None
        words = [word for flag in self.flags() for word in flag.words]
        return [*readiness.cli.program, *readiness.user_flags.kept, *words, "--", prompt]

    def review(self, prompt: str, code_stdin: str, readiness: Readiness | None = None) -> Verdict:
        """Run the one review (never raises for its outcome). Without a ready Readiness from the
        free checks, they run first (login left to the CLI) and a problem fails the review closed."""
        started = time.monotonic()
        if readiness is None or not readiness.ready or readiness.cli is None:
            readiness = self.readiness(check_login=False)
        if not readiness.ready:
            return _done(_verdict(False, f"overseer not run: {readiness.problem}", Usage(), None, "", started))
        argv = self.argv(readiness, prompt)
        env = self.environment()
        logger.info("overseer start: {} (+ {} review flags, -- and the prompt) prompt_chars={} code_chars={} env={}",
                    " ".join([readiness.cli.path, *readiness.user_flags.kept]) if readiness.cli and readiness.user_flags else "",
                    len(self.flags()), len(prompt), len(code_stdin), ",".join(sorted(env)))
        with scratch_directory(self.scratch_root) as cwd:
            return _done(_run_review(argv, env, cwd, code_stdin, self.timeout_s, started))


def _run_review(argv: list[str], env: dict[str, str], cwd: Path, code_stdin: str, timeout_s: float,
                started: float) -> Verdict:
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, encoding="utf-8", errors="replace", start_new_session=True,
                                cwd=str(cwd), env=env)
    except FileNotFoundError:
        return _verdict(False, f"overseer command not found: {argv[0]}", Usage(), None, "", started)
    except PermissionError:
        return _verdict(False, f"overseer command is not executable: {argv[0]}", Usage(), None, "", started)
    except OSError as exc:
        return _verdict(False, f"overseer command could not start: {exc}", Usage(), None, "", started)
    try:
        stdout, stderr = proc.communicate(input=code_stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, _ = _collect(proc)
        return _verdict(False, f"overseer timed out after {timeout_s:g} s (CLAUDE_TIMEOUT_S)", Usage(), proc.returncode,
                        stdout, started)
    return judge(stdout, stderr, proc.returncode, started)


def judge(stdout: str, stderr: str, exit_code: int, started: float) -> Verdict:
    """Turn the command's output into a Verdict (the JSON result, or plain text)."""
    envelope = _json_envelope(stdout)
    usage = Usage()
    text = stdout
    if envelope is not None:
        usage = usage_of(envelope)
        result = envelope.get("result")
        text = result if isinstance(result, str) else ""
        subtype = envelope.get("subtype")
        if envelope.get("is_error") is True or (isinstance(subtype, str) and subtype != "success"):
            return _verdict(False, _error_reason(envelope, text, stderr), usage, exit_code, stdout, started)
    if exit_code != 0:
        detail = _flat(stderr) or _flat(text) or "no output"
        return _verdict(False, f"overseer exited with code {exit_code}: {detail}", usage, exit_code, stdout, started)
    if not text.strip():
        return _verdict(False, "overseer gave no answer (empty output)", usage, exit_code, stdout, started)
    word, reason = parse_verdict(text)
    if word is None:
        return _verdict(False, f"overseer answer does not start with PASS or FAIL: {_flat(text)}", usage, exit_code,
                        stdout, started)
    if word == "FAIL":
        return _verdict(False, reason or "overseer said FAIL without a reason", usage, exit_code, stdout, started)
    also = ALSO_FAIL.search(skeleton(clean_text(text)))
    if also is not None:
        return _verdict(False, f"overseer answer starts with PASS but also says {also.group(0)!r}, so it counts as "
                               f"FAIL: {_flat(text)}", usage, exit_code, stdout, started)
    return _verdict(True, reason or "(no reason given)", usage, exit_code, stdout, started)


def parse_verdict(text: str) -> tuple[str | None, str]:
    """('PASS'|'FAIL'|None, the sentence after the verdict word), on the cleaned answer."""
    cleaned = clean_text(text)
    folded = skeleton(cleaned)
    start = len(folded) - len(folded.lstrip(DECORATION))
    match = VERDICT.match(folded, start)
    if match is None:
        return None, ""
    rest = cleaned[match.end():].lstrip(DECORATION + ":.,;-–—)!")
    return match.group(1).upper(), _flat(rest)


def usage_of(envelope: Mapping[str, Any]) -> Usage:
    """Tokens, model and cost from a `--output-format json` result. modelUsage (per model) is
    preferred: the top-level usage is zero in some error results that were nonetheless billed."""
    cost = _number(envelope.get("total_cost_usd", envelope.get("cost_usd")))
    per_model = envelope.get("modelUsage")
    if isinstance(per_model, dict) and per_model:
        models = [name for name in per_model if isinstance(name, str)]
        inputs = outputs = 0
        for entry in per_model.values():
            if isinstance(entry, dict):
                inputs += sum(_int(entry.get(k)) for k in ("inputTokens", "cacheReadInputTokens", "cacheCreationInputTokens"))
                outputs += _int(entry.get("outputTokens"))
        return Usage(input_tokens=inputs, output_tokens=outputs, model=",".join(models) or None, cost_usd=cost)
    usage = envelope.get("usage")
    if isinstance(usage, dict):
        inputs = sum(_int(usage.get(k)) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))
        model = envelope.get("model") if isinstance(envelope.get("model"), str) else None
        return Usage(input_tokens=inputs, output_tokens=_int(usage.get("output_tokens")), model=model, cost_usd=cost)
    return Usage(cost_usd=cost)


def _error_reason(envelope: Mapping[str, Any], text: str, stderr: str) -> str:
    subtype = envelope.get("subtype")
    status = envelope.get("api_error_status")
    errors = envelope.get("errors")
    detail = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else ""
    detail = _flat(" ".join(part for part in (text, detail) if part)) or _flat(stderr) or "no detail"
    where = f"API error {status}" if isinstance(status, int) else f"subtype={subtype}"
    reason = f"overseer reported an error ({where}): {detail}"
    if envelope.get("stop_reason") == "tool_use":
        reason += "; the model asked for a tool, which a review never runs"
    return reason


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


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
        if proc.poll() is None:
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


def _verdict(passed: bool, reason: str, usage: Usage, exit_code: int | None, raw: str, started: float) -> Verdict:
    return Verdict(passed=passed, reason=reason, usage=usage, exit_code=exit_code, raw=raw,
                   duration_s=time.monotonic() - started)


def _done(verdict: Verdict) -> Verdict:
    usage = verdict.usage
    logger.info("overseer {} in {:.1f}s exit={} tokens in={} out={} model={} cost_usd={}: {}",
                "PASS" if verdict.passed else "FAIL", verdict.duration_s, verdict.exit_code, usage.input_tokens,
                usage.output_tokens, usage.model, usage.cost_usd, verdict.reason)
    return verdict
