"""Reading the installed CLI's --help (the real 2.1.332 text), parsing a user's CLAUDE_CMD flags the
way the CLI's parser does, the reduced environment, and the overseer's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.build.claude_cli import (Arity, cli_environment, normalise_user_flags, parse_help, review_flags,
                                 split_command)
from listener.config import ConfigError, Settings

HELP = parse_help((Path(__file__).resolve().parents[1] / "fakes" / "claude-help-2.1.332.txt").read_text())
OWNED = frozenset(flag.name for flag in review_flags("system", None, None))


@pytest.mark.parametrize(("name", "arity", "names"), [
    ("-p", Arity.NONE, ("-p", "--print")),
    ("--print", Arity.NONE, ("-p", "--print")),
    ("--tools", Arity.MANY, ("--tools",)),
    ("--allowed-tools", Arity.MANY, ("--allowedTools", "--allowed-tools")),
    ("--disallowedTools", Arity.MANY, ("--disallowedTools", "--disallowed-tools")),
    ("--output-format", Arity.ONE, ("--output-format",)),
    ("--system-prompt", Arity.ONE, ("--system-prompt",)),
    ("--setting-sources", Arity.ONE, ("--setting-sources",)),
    ("--strict-mcp-config", Arity.NONE, ("--strict-mcp-config",)),
    ("--no-session-persistence", Arity.NONE, ("--no-session-persistence",)),
    ("--max-budget-usd", Arity.ONE, ("--max-budget-usd",)),
    ("--debug", Arity.OPTIONAL, ("-d", "--debug")),
    ("-r", Arity.OPTIONAL, ("-r", "--resume")),
])
def test_help_options_and_their_values(name: str, arity: Arity, names: tuple[str, ...]) -> None:
    option = HELP.option(name)
    assert option is not None and option.arity is arity and option.names == names


def test_help_does_not_list_max_turns_and_lists_the_auth_command() -> None:
    assert HELP.option("--max-turns") is None  # hidden in 2.1.x: the builder confirms it with a probe
    assert {"auth", "mcp", "plugin", "plugins", "stop", "kill"} <= HELP.commands
    assert HELP.option("Usage:") is None and HELP.option("auth") is None


def test_every_builder_flag_but_max_turns_is_listed() -> None:
    missing = [flag.name for flag in review_flags("s", "m", 1.0) if HELP.option(flag.name) is None]
    assert missing == ["--max-turns"]


@pytest.mark.parametrize(("words", "kept", "ignored"), [
    ((), (), ()),
    (("-p",), (), ()),
    (("--tools",), (), ("--tools: has no value",)),
    (("--disallowedTools",), (), ("--disallowedTools: has no value",)),
    (("--disallowedTools", "Bash", "Edit"), ("--disallowedTools", "Bash", "Edit"), ()),
    (("--disallowedTools=Bash",), ("--disallowedTools=Bash",), ()),
    (("--model", "opus", "--effort", "low"), ("--model", "opus", "--effort", "low"), ()),
    (("--model",), (), ("--model: has no value",)),
    # a value that starts with a dash is still the value of an option that needs one, as in the CLI
    (("--fallback-model", "-x"), ("--fallback-model", "-x"), ()),
    (("--tools", "Bash", "Read"), (), ("--tools (with 2 values): the builder sets --tools itself",)),
    (("--tools", "--disallowedTools", "Bash"), (), ("--tools (with 2 values): the builder sets --tools itself",)),
    (("-d", "--bare"), ("--bare",), ("-d: not allowed for a review (it would give the reviewer tools, files, settings or a session)",)),
    (("--resume", "abc"), (), ("--resume (with 1 value): not allowed for a review (it would give the reviewer tools, files, settings or a session)",)),
    (("-pc",), (), ("-pc: not an option of this claude (--help)",)),
    (("--no-such-flag", "x"), (), ("--no-such-flag: not an option of this claude (--help)",
                                   "'x': not an option (the builder gives the prompt itself)")),
    (("--", "a prompt"), (), ("-- a prompt: the builder gives the prompt itself",)),
])
def test_user_flags_are_read_like_the_cli_reads_them(words: tuple[str, ...], kept: tuple[str, ...],
                                                     ignored: tuple[str, ...]) -> None:
    flags = normalise_user_flags(words, HELP, OWNED)
    assert flags.kept == kept
    assert flags.ignored == ignored


def test_the_builders_model_and_cap_win_over_the_users() -> None:
    owned = frozenset(flag.name for flag in review_flags("s", "haiku", 0.1))
    flags = normalise_user_flags(("--model", "opus", "--max-budget-usd", "9"), HELP, owned)
    assert flags.kept == () and len(flags.ignored) == 2


@pytest.mark.parametrize(("cmd", "program", "words"), [
    (("claude", "-p"), ("claude",), ("-p",)),
    (("claude",), ("claude",), ()),
    (("env", "X=1", "/opt/claude", "-p", "--model", "x"), ("env", "X=1", "/opt/claude"), ("-p", "--model", "x")),
    (("npx", "@anthropic-ai/claude-code", "-p"), ("npx", "@anthropic-ai/claude-code"), ("-p",)),
])
def test_the_program_is_every_word_before_the_first_option(cmd, program, words) -> None:
    assert split_command(cmd) == (program, words)


def test_the_environment_keeps_only_what_the_cli_needs() -> None:
    source = {
        "PATH": "/usr/bin", "HOME": "/home/b", "LANG": "C.UTF-8", "ANTHROPIC_API_KEY": "sk-ant-x",
        "ANTHROPIC_BASE_URL": "https://proxy", "CLAUDE_CONFIG_DIR": "/cfg", "CLAUDE_CODE_MAX_RETRIES": "99",
        "CLAUDE_CMD": "claude -p", "CLAUDE_TIMEOUT_S": "180", "CLAUDE_MAX_RETRIES": "1", "HTTPS_PROXY": "http://p:3128",
        "DATABASE_URL": "postgresql://u:pw@h/db", "APPROVAL_SECRET": "s" * 20, "NTFY_TOKEN": "tk", "VAULT_TOKEN": "hvs.x",
        "VAULT_ADDR": "http://v", "AWS_SECRET_ACCESS_KEY": "a", "OLLAMA_URL": "http://o", "PYTHONPATH": "/x",
    }
    env = cli_environment(source, api_timeout_ms=144000, max_retries=0)
    assert env == {
        "PATH": "/usr/bin", "HOME": "/home/b", "ANTHROPIC_API_KEY": "sk-ant-x", "ANTHROPIC_BASE_URL": "https://proxy",
        "CLAUDE_CONFIG_DIR": "/cfg", "HTTPS_PROXY": "http://p:3128",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_CLAUDE_MDS": "1", "CLAUDE_CODE_MAX_RETRIES": "0",
        "API_TIMEOUT_MS": "144000",
    }


def test_overseer_settings() -> None:
    settings = Settings.from_env({"OVERSEER_MODEL": "claude-haiku-4-5", "OVERSEER_MAX_USD": "0.05", "CLAUDE_MAX_RETRIES": "2"})
    assert (settings.overseer_model, settings.overseer_max_usd, settings.claude_max_retries) == ("claude-haiku-4-5", 0.05, 2)
    defaults = Settings.from_env({})
    assert (defaults.overseer_model, defaults.overseer_max_usd, defaults.claude_max_retries) == (None, None, 0)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("OVERSEER_MAX_USD", "0", "OVERSEER_MAX_USD='0': must be more than 0"),
    ("OVERSEER_MAX_USD", "cheap", "OVERSEER_MAX_USD='cheap': must be a number"),
    ("OVERSEER_MODEL", "--tools Bash", "OVERSEER_MODEL='--tools Bash': must be one model name"),
    ("CLAUDE_MAX_RETRIES", "9", "CLAUDE_MAX_RETRIES='9': must be at most 5"),
    ("CLAUDE_MAX_RETRIES", "-1", "CLAUDE_MAX_RETRIES='-1': must be"),
])
def test_bad_overseer_settings_are_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({variable: value})
    assert any(problem.startswith(message) for problem in error.value.problems), error.value.problems
