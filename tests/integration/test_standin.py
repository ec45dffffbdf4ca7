"""The claude stand-in of agent sandboxes: its record format, and the script itself run with bash
against the real recording endpoint (on 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from listener.sandbox.checks import RunState, evaluate, validate_spec
from listener.sandbox.recorder import Recorder
from listener.sandbox.standin import DEFAULT_REPLY, SCRIPT, ClaudeCall, parse_call, reply_environment


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    path = tmp_path / "claude"
    path.write_text(SCRIPT)
    path.chmod(0o755)
    return path


def test_the_record_format_is_parsed_exactly() -> None:
    body = b"arg 2\n-p\narg 5\na\nb c\nenv 4\nPATH\nstdin 3\nx\ny\n"
    assert parse_call(body) == ClaudeCall(argv=["-p", "a\nb c"], env_names=["PATH"], stdin="x\ny")


@pytest.mark.parametrize("body", [b"arg 9\n-p\n", b"arg x\n-p\n", b"value 2\nab\n", b"arg 2\n-pX", b"arg 2"])
def test_a_malformed_record_is_no_call(body: bytes) -> None:
    assert parse_call(body) is None


def test_the_reply_comes_from_the_check_or_is_the_default() -> None:
    assert reply_environment([])["AGENT_BUILDER_CLAUDE_REPLY"] == DEFAULT_REPLY
    env = reply_environment([{"kind": "claude_called", "reply": 'say "hi"\n'}])
    assert env["AGENT_BUILDER_CLAUDE_REPLY"] == 'say "hi"\n'
    assert json.loads(env["AGENT_BUILDER_CLAUDE_REPLY_JSON"])["result"] == 'say "hi"\n'


def test_the_stand_in_records_argv_stdin_and_only_the_names_of_the_environment(standin: Path) -> None:
    checks = validate_spec({"checks": [{"kind": "claude_called", "args_include": ["-p"], "reply": "42 % full"}]})
    with Recorder("127.0.0.1") as recorder:
        token = recorder.open_run()
        env = {"PATH": "/usr/bin:/bin", "SANDBOX_HTTP_URL": recorder.url_for(token, "127.0.0.1"),
               "SOME_SECRET": "value-never-recorded", **reply_environment(checks)}
        state = RunState(container=None, recorder=recorder, run_token=token, sandbox_database_url=None)
        [before] = evaluate(checks, state)
        text = subprocess.run([str(standin), "-p", "Summarise it"], input=b"df output\n", env=env, capture_output=True,
                              timeout=30, check=True)
        as_json = subprocess.run([str(standin), "-p", "x", "--output-format", "json"], env=env, capture_output=True,
                                 stdin=subprocess.DEVNULL, timeout=30, check=True)
        [after] = evaluate(checks, state)
        calls = [r.call for r in recorder.requests_for(token)]
    assert text.stdout == b"42 % full\n" and text.stderr == b""
    assert json.loads(as_json.stdout)["result"] == "42 % full"
    assert calls[0] == ClaudeCall(argv=["-p", "Summarise it"], env_names=calls[0].env_names, stdin="df output\n")
    assert {"PATH", "SANDBOX_HTTP_URL", "SOME_SECRET"} <= set(calls[0].env_names)
    assert "value-never-recorded" not in repr(calls) and "LC_ALL" not in calls[0].env_names
    assert not before.passed and before.detail.startswith("0 call(s) of the claude stand-in with -p")
    assert after.passed and after.detail.startswith("2 call(s) of the claude stand-in with -p among its arguments")
    assert "value-never-recorded" not in after.detail


def test_without_a_recording_endpoint_it_still_answers_and_the_check_says_why(standin: Path) -> None:
    done = subprocess.run([str(standin), "-p", "x"], env={"PATH": "/usr/bin:/bin", "SANDBOX_HTTP_URL": "http://127.0.0.1:9/t"},
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode == 0 and done.stdout.decode().strip() == DEFAULT_REPLY
    assert b"could not be recorded" in done.stderr
    [result] = evaluate(validate_spec({"checks": [{"kind": "claude_called"}]}),
                        RunState(container=None, recorder=None, run_token="", sandbox_database_url=None))
    assert not result.passed and "SANDBOX_NETWORK=none" in result.detail
