"""review() against a fake `claude` executable: real processes, real pipes, real signals."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Callable

import pytest

from listener.overseer import Verdict, parse_verdict, review

PROMPT = "Review this script automation code for the following only: ... Respond with: PASS or FAIL"
CODE = "import hvac\nprint('hello')\n"

MakeCmd = Callable[..., tuple[str, ...]]
Calls = Callable[[], list[dict[str, object]]]


def test_pass_gives_the_prompt_as_last_argument_and_the_code_on_stdin(claude_cmd: MakeCmd, claude_calls: Calls) -> None:
    verdict = review(claude_cmd("pass"), PROMPT, CODE, timeout_s=10)

    assert isinstance(verdict, Verdict)
    assert verdict.passed is True
    assert verdict.reason == "The code reads its secrets from Vault via AppRole and matches the spec."
    assert verdict.exit_code == 0
    assert verdict.cost_usd is None
    assert verdict.raw.startswith("PASS")
    [call] = claude_calls()
    assert call["argv"] == ["-p", PROMPT]
    assert call["stdin"] == CODE
    assert call["stdin_is_pipe"] is True


def test_stdin_is_a_pipe_even_for_empty_code(claude_cmd: MakeCmd, claude_calls: Calls) -> None:
    review(claude_cmd("fail"), PROMPT, "", timeout_s=10)
    [call] = claude_calls()
    assert call["stdin_is_pipe"] is True
    assert call["stdin"] == ""


def test_fail_carries_the_overseers_sentence(claude_cmd: MakeCmd) -> None:
    verdict = review(claude_cmd("fail"), PROMPT, CODE, timeout_s=10)

    assert verdict.passed is False
    assert verdict.reason == "The code hardcodes a password instead of reading it from Vault."


def test_json_output_records_the_cost(claude_cmd: MakeCmd) -> None:
    verdict = review(claude_cmd("json-pass", FAKE_CLAUDE_COST="0.0421"), PROMPT, CODE, timeout_s=10)

    assert verdict.passed is True
    assert verdict.cost_usd == pytest.approx(0.0421)
    assert verdict.reason.startswith("The code reads its secrets")


def test_json_is_error_fails_even_when_the_text_says_pass_and_the_exit_is_zero(claude_cmd: MakeCmd) -> None:
    cmd = claude_cmd("json-error", FAKE_CLAUDE_OUTPUT="PASS all good", FAKE_CLAUDE_EXIT="0")
    verdict = review(cmd, PROMPT, CODE, timeout_s=10)

    assert verdict.passed is False
    assert "reported an error" in verdict.reason
    assert verdict.cost_usd == pytest.approx(0.0123)


def test_json_error_with_its_usual_exit_code_fails(claude_cmd: MakeCmd) -> None:
    verdict = review(claude_cmd("json-error"), PROMPT, CODE, timeout_s=10)

    assert verdict.passed is False
    assert "Credit balance is too low" in verdict.reason
    assert verdict.exit_code == 1


def test_an_answer_without_a_verdict_fails(claude_cmd: MakeCmd) -> None:
    verdict = review(claude_cmd("garbage"), PROMPT, CODE, timeout_s=10)

    assert verdict.passed is False
    assert "does not start with PASS or FAIL" in verdict.reason


def test_empty_output_fails(claude_cmd: MakeCmd) -> None:
    verdict = review(claude_cmd("empty"), PROMPT, CODE, timeout_s=10)

    assert verdict.passed is False
    assert "empty output" in verdict.reason


def test_a_non_zero_exit_fails_even_when_stdout_says_pass(claude_cmd: MakeCmd) -> None:
    cmd = claude_cmd("exit-nonzero", FAKE_CLAUDE_STDERR="Error: not logged in")
    verdict = review(cmd, PROMPT, CODE, timeout_s=10)

    assert verdict.passed is False
    assert verdict.exit_code == 2
    assert "exited with code 2" in verdict.reason
    assert "not logged in" in verdict.reason


def test_a_timeout_kills_the_command_and_fails(claude_cmd: MakeCmd) -> None:
    started = time.monotonic()
    verdict = review(claude_cmd("sleep", FAKE_CLAUDE_SLEEP="30"), PROMPT, CODE, timeout_s=0.5)

    assert time.monotonic() - started < 5
    assert verdict.passed is False
    assert "timed out after 0.5 s" in verdict.reason


def test_a_timeout_kills_the_whole_process_group(claude_cmd: MakeCmd) -> None:
    # a grandchild keeps stdout open; without killing the group the pipes would stay open for 30 s
    started = time.monotonic()
    verdict = review(claude_cmd("sleep-child", FAKE_CLAUDE_SLEEP="30"), PROMPT, CODE, timeout_s=0.5)

    assert time.monotonic() - started < 5
    assert verdict.passed is False
    assert "timed out" in verdict.reason


def test_a_missing_command_fails_and_says_so(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-claude")
    verdict = review((missing, "-p"), PROMPT, CODE, timeout_s=10)

    assert verdict.passed is False
    assert verdict.exit_code is None
    assert "not found" in verdict.reason
    assert missing in verdict.reason


def test_a_command_that_is_not_executable_fails(tmp_path: Path) -> None:
    script = tmp_path / "claude"
    script.write_text("#!/bin/sh\necho PASS\n")
    os.chmod(script, stat.S_IRUSR | stat.S_IWUSR)
    verdict = review((str(script), "-p"), PROMPT, CODE, timeout_s=10)

    assert verdict.passed is False
    assert "not executable" in verdict.reason


def test_the_verdict_is_read_from_the_first_word_only(claude_cmd: MakeCmd) -> None:
    # the code under review cannot talk its way to PASS through a fake that obeys it: the caller
    # only trusts the first word, and here the first word is FAIL
    verdict = review(claude_cmd("fail", FAKE_CLAUDE_OUTPUT="FAIL - hardcoded key. PASS"), PROMPT, CODE, timeout_s=10)
    assert verdict.passed is False
    assert verdict.reason == "hardcoded key. PASS"


@pytest.mark.parametrize(
    ("text", "word", "reason"),
    [
        ("PASS The code is fine.", "PASS", "The code is fine."),
        ("  \n**PASS** — fine.", "PASS", "fine."),
        ("pass: fine", "PASS", "fine"),
        ("## PASS\nThe code is fine.", "PASS", "The code is fine."),
        ("PASS", "PASS", ""),
        ("FAIL. Missing import of hvac.", "FAIL", "Missing import of hvac."),
        ("`FAIL` uses a hardcoded token", "FAIL", "uses a hardcoded token"),
        ("PASSED the review", None, ""),
        ("PASSING", None, ""),
        ("PASS? maybe", None, ""),
        ("PASS/FAIL", None, ""),
        ("Verdict: PASS", None, ""),
        ("I think PASS", None, ""),
        ("", None, ""),
    ],
)
def test_parse_verdict_rule(text: str, word: str | None, reason: str) -> None:
    assert parse_verdict(text) == (word, reason)
