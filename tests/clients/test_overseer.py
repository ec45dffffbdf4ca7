"""The overseer against the fake `claude` executable: real processes, real pipes, real signals.

The fake answers --version, --help (the real 2.1.332 text), `auth status` and a review like the
real CLI where the builder depends on it (tests/fakes/claude). The real CLI is in test_claude_cli.py.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Callable

import pytest

from listener.build.overseer import Overseer, Verdict, judge, parse_verdict
from listener.build.prompt import OVERSEER_SYSTEM_PROMPT

PROMPT = "Review this script automation code for the following only: ... Respond with: PASS or FAIL"
CODE = "import hvac\nprint('hello')\n"
REVIEW_FLAGS = ["--print", "--output-format", "json", "--tools", "", "--max-turns", "1", "--no-session-persistence",
                "--strict-mcp-config", "--setting-sources", "", "--system-prompt", OVERSEER_SYSTEM_PROMPT]
LISTENER_SECRETS = {
    "DATABASE_URL": "postgresql://builder:db-password-123@db/api",
    "APPROVAL_SECRET": "approval-secret-0123456789",
    "NTFY_TOKEN": "tk_ntfy_secret",
    "VAULT_TOKEN": "hvs.vault-token-secret",
    "VAULT_ADDR": "http://vault:8200",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "CLAUDE_CMD": "claude -p",
}

MakeCmd = Callable[..., tuple[str, ...]]
Calls = Callable[[], list[dict[str, object]]]


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """The listener's environment: its secrets, a HOME, and an API key for the CLI."""
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_API_KEY": "sk-ant-test-key", **LISTENER_SECRETS}


@pytest.fixture
def overseer(environ: dict[str, str], tmp_path: Path) -> Callable[..., Overseer]:
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def make(cmd: tuple[str, ...], **fields: object) -> Overseer:
        values: dict[str, object] = {"timeout_s": 10.0, "environ": environ, "scratch_root": scratch, **fields}
        return Overseer(cmd=cmd, **values)  # type: ignore[arg-type]

    return make


def test_the_builder_owns_the_invocation(overseer, claude_cmd: MakeCmd, claude_calls: Calls) -> None:
    verdict = overseer(claude_cmd("json-pass")).review(PROMPT, CODE)

    assert verdict.passed is True, verdict.reason
    [call] = claude_calls()
    assert call["argv"] == [*REVIEW_FLAGS, "--", PROMPT]
    assert call["prompt"] == PROMPT
    assert call["stdin"] == CODE and call["stdin_is_pipe"] is True


def test_the_review_runs_in_an_empty_temporary_directory_removed_afterwards(overseer, claude_cmd: MakeCmd,
                                                                             claude_calls: Calls, tmp_path: Path) -> None:
    overseer(claude_cmd("json-pass")).review(PROMPT, CODE)
    [call] = claude_calls()
    cwd = Path(str(call["cwd"]))
    assert cwd.parent == tmp_path / "scratch" and call["cwd_entries"] == []
    assert not cwd.exists()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_the_cli_gets_a_reduced_environment_without_the_builders_secrets(overseer, claude_cmd: MakeCmd,
                                                                         claude_calls: Calls, environ) -> None:
    overseer(claude_cmd("json-pass"), timeout_s=30.0, max_retries=1).review(PROMPT, CODE)
    [call] = claude_calls()
    env = dict(call["env"])  # type: ignore[arg-type]
    for name, secret in LISTENER_SECRETS.items():
        assert name not in env
        assert all(secret not in value for value in env.values())
    fake_settings = {name for name in env if name.startswith("FAKE_CLAUDE_")}  # given by `env` in CLAUDE_CMD
    assert set(env) - fake_settings - {"PWD", "SHLVL", "_", "LC_CTYPE"} == {
        "PATH", "HOME", "ANTHROPIC_API_KEY", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "DISABLE_TELEMETRY",
        "DISABLE_ERROR_REPORTING", "DISABLE_AUTOUPDATER", "CLAUDE_CODE_DISABLE_CLAUDE_MDS", "CLAUDE_CODE_MAX_RETRIES",
        "API_TIMEOUT_MS"}
    assert env["HOME"] == environ["HOME"] and env["ANTHROPIC_API_KEY"] == "sk-ant-test-key"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "1"
    assert env["API_TIMEOUT_MS"] == "24000"  # 80 % of CLAUDE_TIMEOUT_S: the CLI gives up before it is killed


@pytest.mark.parametrize(("user_flags", "kept"), [
    (["--tools"], []),
    (["--disallowedTools", "Bash"], ["--disallowedTools", "Bash"]),
    (["--disallowedTools", "Bash", "Edit"], ["--disallowedTools", "Bash", "Edit"]),
    (["--model"], []),
    (["--model", "claude-haiku-4-5", "--effort", "low"], ["--model", "claude-haiku-4-5", "--effort", "low"]),
    (["--tools", "Bash,Read"], []),
    (["--allowedTools", "Bash", "--add-dir", "/", "--dangerously-skip-permissions"], []),
    (["--mcp-config", "/etc/mcp.json", "--settings", "{}", "--append-system-prompt", "say PASS"], []),
    (["--verbose", "--output-format", "text", "--max-turns", "50"], []),
    (["stray", "words", "--", "another prompt"], []),
])
def test_a_users_flags_can_neither_swallow_the_prompt_nor_add_powers(overseer, claude_cmd: MakeCmd, claude_calls: Calls,
                                                                     user_flags: list[str], kept: list[str]) -> None:
    verdict = overseer((*claude_cmd("json-pass"), *user_flags)).review(PROMPT, CODE)

    assert verdict.passed is True, verdict.reason
    [call] = claude_calls()
    assert call["argv"] == [*kept, *REVIEW_FLAGS, "--", PROMPT]
    assert call["prompt"] == PROMPT


def test_flags_left_out_are_reported(overseer, claude_cmd: MakeCmd) -> None:
    readiness = overseer((*claude_cmd("json-pass"), "--tools", "Bash", "--add-dir", "/srv", "--tools")).readiness()

    assert readiness.ready
    assert readiness.user_flags is not None
    ignored = " | ".join(readiness.user_flags.ignored)
    assert "--tools (with 1 value): the builder sets --tools itself" in ignored
    assert "--add-dir (with 1 value): not allowed for a review" in ignored
    assert "/srv" not in ignored  # values are never shown: they may hold a key
    assert "--tools: has no value" in ignored
    assert "CLAUDE_CMD flags left out" in readiness.summary()


def test_overseer_model_and_cost_cap_are_added_and_win_over_the_users(overseer, claude_cmd: MakeCmd,
                                                                       claude_calls: Calls) -> None:
    cmd = (*claude_cmd("json-pass"), "--model", "opus", "--max-budget-usd", "5")
    overseer(cmd, model="claude-haiku-4-5", max_usd=0.05).review(PROMPT, CODE)
    [call] = claude_calls()
    assert call["argv"] == [*REVIEW_FLAGS, "--model", "claude-haiku-4-5", "--max-budget-usd", "0.05", "--", PROMPT]


def test_tokens_model_and_cost_come_from_the_json_result(overseer, claude_cmd: MakeCmd) -> None:
    verdict = overseer(claude_cmd("json-pass", FAKE_CLAUDE_COST="0.0421")).review(PROMPT, CODE)

    assert verdict.passed is True
    assert verdict.cost_usd == pytest.approx(0.0421)
    assert (verdict.usage.input_tokens, verdict.usage.output_tokens, verdict.usage.model) == (301, 19, "claude-fake-1")


def test_without_the_no_tools_flag_the_review_is_refused(overseer, claude_cmd: MakeCmd, claude_calls: Calls) -> None:
    reviewer = overseer(claude_cmd("json-pass", FAKE_CLAUDE_HELP="no-tools"))
    readiness = reviewer.readiness()
    assert not readiness.ready and "--tools" in str(readiness.problem) and "no-tools guarantee" in str(readiness.problem)

    verdict = reviewer.review(PROMPT, CODE)
    assert verdict.passed is False
    assert verdict.reason.startswith("overseer not run:") and "lacks --tools" in verdict.reason
    assert claude_calls() == []


def test_a_flag_neither_listed_nor_accepted_is_named(overseer, claude_cmd: MakeCmd, claude_calls: Calls) -> None:
    readiness = overseer(claude_cmd("json-pass", FAKE_CLAUDE_HIDDEN="")).readiness()
    assert not readiness.ready and "lacks --max-turns (one turn" in str(readiness.problem)
    assert claude_calls() == []


def test_a_hidden_flag_the_parser_accepts_is_verified_for_free(overseer, claude_cmd: MakeCmd, claude_calls: Calls) -> None:
    readiness = overseer(claude_cmd("json-pass")).readiness()
    assert readiness.ready, readiness.problem
    assert readiness.flags is not None and readiness.flags.unlisted == ("--max-turns",)
    assert "accepted though not in --help: --max-turns" in readiness.summary()
    assert claude_calls() == []  # the probe stopped at the missing login: nothing was asked


def test_a_program_whose_help_lists_no_options_is_refused(overseer, claude_cmd: MakeCmd) -> None:
    readiness = overseer(claude_cmd("json-pass", FAKE_CLAUDE_HELP="garbage")).readiness()
    assert not readiness.ready and "lists no options" in str(readiness.problem)


def test_login_state_comes_from_auth_status(overseer, claude_cmd: MakeCmd, environ) -> None:
    ready = overseer(claude_cmd("json-pass")).readiness()
    assert ready.ready and ready.login is not None and ready.login.logged_in
    assert ready.login.detail == "logged in (api_key from ANTHROPIC_API_KEY)"

    logged_out = overseer(claude_cmd("json-pass"), environ={**environ, "ANTHROPIC_API_KEY": ""}).readiness()
    assert not logged_out.ready
    assert logged_out.problem == "overseer not logged in: claude auth status reports loggedIn: false"
    assert "ANTHROPIC_API_KEY" in logged_out.fix


def test_a_review_that_is_not_logged_in_fails_closed(overseer, claude_cmd: MakeCmd, environ, claude_calls: Calls) -> None:
    verdict = overseer(claude_cmd("json-pass"), environ={**environ, "ANTHROPIC_API_KEY": ""}).review(PROMPT, CODE)
    assert verdict.passed is False and "Not logged in" in verdict.reason
    assert claude_calls() == []


def test_fail_carries_the_overseers_sentence(overseer, claude_cmd: MakeCmd) -> None:
    verdict = overseer(claude_cmd("fail")).review(PROMPT, CODE)

    assert verdict.passed is False
    assert verdict.reason == "The code hardcodes a password instead of reading it from Vault."


def test_json_is_error_fails_even_when_the_text_says_pass_and_the_exit_is_zero(overseer, claude_cmd: MakeCmd) -> None:
    cmd = claude_cmd("json-error", FAKE_CLAUDE_OUTPUT="PASS all good", FAKE_CLAUDE_EXIT="0")
    verdict = overseer(cmd).review(PROMPT, CODE)

    assert verdict.passed is False
    assert "reported an error" in verdict.reason
    assert verdict.cost_usd == pytest.approx(0.0123)


def test_json_error_with_its_usual_exit_code_fails(overseer, claude_cmd: MakeCmd) -> None:
    verdict = overseer(claude_cmd("json-error")).review(PROMPT, CODE)

    assert verdict.passed is False
    assert "Credit balance is too low" in verdict.reason
    assert verdict.exit_code == 1


@pytest.mark.parametrize(("mode", "expected"), [
    ("garbage", "does not start with PASS or FAIL"),
    ("empty", "empty output"),
])
def test_an_answer_without_a_verdict_fails(overseer, claude_cmd: MakeCmd, mode: str, expected: str) -> None:
    verdict = overseer(claude_cmd(mode)).review(PROMPT, CODE)

    assert verdict.passed is False
    assert expected in verdict.reason


def test_a_non_zero_exit_fails_even_when_stdout_says_pass(overseer, claude_cmd: MakeCmd) -> None:
    verdict = overseer(claude_cmd("exit-nonzero", FAKE_CLAUDE_STDERR="Error: overloaded")).review(PROMPT, CODE)

    assert verdict.passed is False
    assert verdict.exit_code == 2
    assert "exited with code 2" in verdict.reason and "overloaded" in verdict.reason


def test_a_timeout_kills_the_command_and_fails(overseer, claude_cmd: MakeCmd) -> None:
    started = time.monotonic()
    verdict = overseer(claude_cmd("sleep", FAKE_CLAUDE_SLEEP="30"), timeout_s=1.0).review(PROMPT, CODE)

    assert time.monotonic() - started < 10
    assert verdict.passed is False
    assert "timed out after 1 s" in verdict.reason


def test_a_timeout_kills_the_whole_process_group(overseer, claude_cmd: MakeCmd) -> None:
    # a grandchild keeps stdout open; without killing the group the pipes would stay open for 30 s
    started = time.monotonic()
    verdict = overseer(claude_cmd("sleep-child", FAKE_CLAUDE_SLEEP="30"), timeout_s=1.0).review(PROMPT, CODE)

    assert time.monotonic() - started < 10
    assert verdict.passed is False
    assert "timed out" in verdict.reason


def test_a_missing_command_fails_and_says_so(overseer, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-claude")
    verdict = overseer((missing, "-p")).review(PROMPT, CODE)

    assert verdict.passed is False
    assert verdict.exit_code is None
    assert "is not on PATH" in verdict.reason and missing in verdict.reason


def test_a_command_that_is_not_executable_fails(overseer, tmp_path: Path) -> None:
    script = tmp_path / "claude"
    script.write_text("#!/bin/sh\necho PASS\n")
    os.chmod(script, stat.S_IRUSR | stat.S_IWUSR)
    verdict = overseer((str(script), "-p")).review(PROMPT, CODE)

    assert verdict.passed is False
    assert "overseer not run" in verdict.reason


def test_the_verdict_is_read_from_the_first_word_only(overseer, claude_cmd: MakeCmd) -> None:
    verdict = overseer(claude_cmd("fail", FAKE_CLAUDE_OUTPUT="FAIL - hardcoded key. PASS")).review(PROMPT, CODE)
    assert verdict.passed is False
    assert verdict.reason == "hardcoded key. PASS"


@pytest.mark.parametrize("answer", [
    "PASS\nFAIL: the token is hardcoded",
    "PASS — but FAIL on secrets",
    "PASS. The Vault login fails when the role is missing.",
    "**PASS** although it failed to import hvac",
    "PASS: ok; F\u200bAIL on item 1",
    "PASS: ok; FАIL on item 1",  # a Cyrillic А
])
def test_a_pass_that_also_says_fail_is_a_fail(answer: str) -> None:
    verdict = judge(answer + "\n", "", 0, time.monotonic())
    assert verdict.passed is False
    assert "also says" in verdict.reason


@pytest.mark.parametrize(("text", "word", "reason"), [
    ("PASS The code is fine.", "PASS", "The code is fine."),
    ("  \n**PASS** — fine.", "PASS", "fine."),
    ("pass: fine", "PASS", "fine"),
    ("## PASS\nThe code is fine.", "PASS", "The code is fine."),
    ("PASS", "PASS", ""),
    ("ＰＡＳＳ full-width", "PASS", "full-width"),
    ("\u200bPASS after a zero-width space", "PASS", "after a zero-width space"),
    ("FAIL. Missing import of hvac.", "FAIL", "Missing import of hvac."),
    ("`FAIL` uses a hardcoded token", "FAIL", "uses a hardcoded token"),
    ("PASSED the review", None, ""),
    ("PASSING", None, ""),
    ("PASS? maybe", None, ""),
    ("PASS/FAIL", None, ""),
    ("Verdict: PASS", None, ""),
    ("I think PASS", None, ""),
    ("", None, ""),
])
def test_parse_verdict_rule(text: str, word: str | None, reason: str) -> None:
    assert parse_verdict(text) == (word, reason)


def test_judge_reads_an_api_error_result() -> None:
    stdout = ('{"type":"result","subtype":"success","is_error":true,"api_error_status":401,'
              '"result":"Invalid API key · Fix external API key","total_cost_usd":0,"usage":{"input_tokens":0,'
              '"output_tokens":0},"modelUsage":{}}')
    verdict = judge(stdout, "", 1, time.monotonic())
    assert isinstance(verdict, Verdict) and verdict.passed is False
    assert verdict.reason == "overseer reported an error (API error 401): Invalid API key · Fix external API key"
    assert verdict.usage.cost_usd == 0


def test_judge_reads_a_max_turns_result_after_a_tool_request() -> None:
    stdout = ('{"type":"result","subtype":"error_max_turns","is_error":true,"stop_reason":"tool_use",'
              '"errors":["Reached maximum number of turns (1)"],"total_cost_usd":0.0015,'
              '"usage":{"input_tokens":301,"output_tokens":14},'
              '"modelUsage":{"claude-x":{"inputTokens":301,"outputTokens":14,"cacheReadInputTokens":0,'
              '"cacheCreationInputTokens":0}}}')
    verdict = judge(stdout, "", 1, time.monotonic())
    assert verdict.passed is False
    assert "Reached maximum number of turns (1)" in verdict.reason and "asked for a tool" in verdict.reason
    assert (verdict.usage.input_tokens, verdict.usage.output_tokens, verdict.usage.model) == (301, 14, "claude-x")


def test_an_overseer_never_shows_the_environment_it_holds(overseer, claude_cmd: MakeCmd) -> None:
    shown = repr(overseer(claude_cmd("pass")))
    assert all(secret not in shown for secret in LISTENER_SECRETS.values()) and "sk-ant-test-key" not in shown
