"""The installed Claude Code CLI as the overseer uses it: which options its `--help` lists, whether it
is logged in (`claude auth status`), and the one locked-down review command built from both.

Nothing here trusts a CLI version to behave like another: every flag the builder adds is looked up
in the installed version's `--help` (an option the parser accepts without listing it, such as
`--max-turns` in 2.1.x, is confirmed by a free parse probe), and a review is refused when one is
missing. The user's own flags from CLAUDE_CMD are parsed with the same option table, so that a flag
that takes a value (`--tools`, `--disallowedTools Bash`) can never swallow what follows it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator, Mapping

INTROSPECTION_TIMEOUT_S = 20.0
CLI_FIX = "install the claude CLI (npm install -g @anthropic-ai/claude-code@2) or set CLAUDE_CMD"

# The builder's own settings that share the CLAUDE_ prefix: never handed to the CLI.
BUILDER_SETTINGS = frozenset({"CLAUDE_CMD", "CLAUDE_TIMEOUT_S", "CLAUDE_MAX_RETRIES"})
# Passed through when set, besides ANTHROPIC_* and CLAUDE_*: what the CLI needs to run and to reach
# the API (a proxy, a private CA), and nothing else of the listener's environment.
PASSED_THROUGH = ("PATH", "HOME", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                  "no_proxy", "NODE_EXTRA_CA_CERTS")
PASSED_PREFIXES = ("ANTHROPIC_", "CLAUDE_")

# User flags from CLAUDE_CMD that are kept: they choose a model, an effort or a narrower CLI, and
# give the reviewer nothing. Every other option is left out (the builder sets its own, and the rest
# add tools, directories, sessions, settings, plugins or permissions), and says so in `check`.
KEPT_USER_OPTIONS = frozenset({
    "--model", "--fallback-model", "--effort", "--betas", "--disallowedTools", "--disallowed-tools",
    "--max-budget-usd", "--debug-file", "--bare", "--restricted", "--safe-mode", "--disable-slash-commands",
    "--exclude-dynamic-system-prompt-sections", "--no-chrome", "--system-prompt-snapshot",
})
PRINT_OPTION = ("-p", "--print")


class Arity(str, Enum):
    """How many values an option takes, as commander (the CLI's parser) reads them."""

    NONE = "none"  # a switch
    ONE = "one"  # <value>: the next word, whatever it is
    OPTIONAL = "optional"  # [value]: the next word unless it starts with '-'
    MANY = "many"  # <values...>: the next word, then every following word that does not start with '-'
    OPTIONAL_MANY = "optional-many"  # [values...]


@dataclass(frozen=True)
class CliOption:
    names: tuple[str, ...]
    arity: Arity
    listed: bool = True  # False: accepted by the parser, not shown by --help

    @property
    def name(self) -> str:
        return next((n for n in self.names if n.startswith("--")), self.names[0])


@dataclass(frozen=True)
class CliHelp:
    """What `claude --help` lists: options by every name, and the subcommands."""

    options: Mapping[str, CliOption]
    commands: frozenset[str]

    def option(self, name: str) -> CliOption | None:
        return self.options.get(name)

    def with_hidden(self, option: CliOption) -> "CliHelp":
        merged = dict(self.options)
        merged.update({name: option for name in option.names})
        return CliHelp(options=merged, commands=self.commands)


_VERSION = re.compile(r"\d+\.\d+\.\d+[\w.+-]*")
_OPTION_LINE = re.compile(r"^ {2}(-[^\s,]+(?:,\s+-[^\s,]+)*)(?:\s+(<[^>]+>|\[[^\]]+\]))?(?=\s|$)")
_COMMAND_LINE = re.compile(r"^ {2}([a-z][\w|-]*)(?=\s|$)")


def parse_help(text: str) -> CliHelp:
    """Options and subcommands from a commander-style help text."""
    options: dict[str, CliOption] = {}
    commands: set[str] = set()
    section = ""
    for line in text.splitlines():
        if line and not line.startswith(" "):
            section = line.strip().rstrip(":").lower()
            continue
        if section == "options":
            match = _OPTION_LINE.match(line)
            if match:
                names = tuple(n.strip() for n in match.group(1).split(","))
                option = CliOption(names=names, arity=_arity(match.group(2)))
                options.update({name: option for name in names})
        elif section == "commands":
            match = _COMMAND_LINE.match(line)
            if match:
                commands.update(match.group(1).split("|"))
    return CliHelp(options=options, commands=frozenset(commands))


def _arity(placeholder: str | None) -> Arity:
    if not placeholder:
        return Arity.NONE
    many = placeholder[1:-1].endswith("...")
    if placeholder.startswith("<"):
        return Arity.MANY if many else Arity.ONE
    return Arity.OPTIONAL_MANY if many else Arity.OPTIONAL


# -- the builder's flags ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewFlag:
    """One option the builder adds to every review, and what it guarantees."""

    name: str
    values: tuple[str, ...]
    purpose: str
    arity: Arity

    @property
    def words(self) -> tuple[str, ...]:
        return (self.name, *self.values)


def review_flags(system_prompt: str, model: str | None, max_usd: float | None) -> tuple[ReviewFlag, ...]:
    """The options of a tool-less, single-turn, stateless review, in the order they are given."""
    flags = [
        ReviewFlag("--print", (), "non-interactive: print the answer and exit", Arity.NONE),
        ReviewFlag("--output-format", ("json",), "a JSON result with the cost, tokens and model", Arity.ONE),
        ReviewFlag("--tools", ("",), "no tools at all (the no-tools guarantee)", Arity.MANY),
        ReviewFlag("--max-turns", ("1",), "one turn: one Messages API request", Arity.ONE),
        ReviewFlag("--no-session-persistence", (), "no session saved to disk", Arity.NONE),
        ReviewFlag("--strict-mcp-config", (), "no MCP servers (none given with --mcp-config)", Arity.NONE),
        ReviewFlag("--setting-sources", ("",), "no user, project or local settings (hooks, CLAUDE.md, permissions)",
                   Arity.ONE),
        ReviewFlag("--system-prompt", (system_prompt,), "our short system prompt instead of the agent's", Arity.ONE),
    ]
    if model:
        flags.append(ReviewFlag("--model", (model,), "the model of OVERSEER_MODEL", Arity.ONE))
    if max_usd is not None:
        flags.append(ReviewFlag("--max-budget-usd", (f"{max_usd:g}",), "the cost cap of OVERSEER_MAX_USD", Arity.ONE))
    return tuple(flags)


# -- the installed CLI ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaudeCli:
    """An installed claude: how to run it, its version, what its --help lists."""

    program: tuple[str, ...]
    path: str
    version: str
    help: CliHelp


@dataclass(frozen=True)
class CliProblem:
    """Why the CLI cannot be used for a review, and how to fix it."""

    message: str
    fix: str = CLI_FIX


@dataclass(frozen=True)
class FlagCheck:
    """Every builder flag looked up in the installed CLI."""

    missing: tuple[ReviewFlag, ...]
    unlisted: tuple[str, ...]  # accepted by the parser, not listed in --help
    help: CliHelp


@dataclass(frozen=True)
class LoginState:
    logged_in: bool
    method: str | None
    detail: str  # for a person: how it is logged in, or why it is not


def split_command(cmd: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(program, user options): the program is every word before the first option, so that a
    wrapper such as `env X=1 claude -p` works; the options are the user's extra flags."""
    for index, word in enumerate(cmd):
        if word.startswith("-"):
            return tuple(cmd[:index]), tuple(cmd[index:])
    return tuple(cmd), ()


@contextmanager
def scratch_directory(root: Path | None = None) -> Iterator[Path]:
    """An empty, private working directory for one CLI run, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="agent-builder-claude-", dir=str(root) if root else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def cli_environment(source: Mapping[str, str], *, api_timeout_ms: int, max_retries: int) -> dict[str, str]:
    """The CLI's environment: PATH, HOME, ANTHROPIC_*/CLAUDE_* (the builder's own settings left out),
    the proxy and CA variables; then the builder's bounds on traffic, retries and time."""
    env = {name: value for name, value in source.items()
           if (name in PASSED_THROUGH or name.startswith(PASSED_PREFIXES)) and name not in BUILDER_SETTINGS}
    env.update({
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no title request, no update check, no telemetry
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_CLAUDE_MDS": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(max_retries),  # an unreachable API fails in seconds, not minutes
        "API_TIMEOUT_MS": str(api_timeout_ms),
    })
    return env


def _run(argv: list[str], env: Mapping[str, str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str] | str:
    try:
        return subprocess.run(argv, env=dict(env), cwd=str(cwd), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, encoding="utf-8", errors="replace", timeout=timeout_s, check=False,
                              start_new_session=True)
    except FileNotFoundError:
        return f"{argv[0]!r} was not found"
    except PermissionError:
        return f"{argv[0]!r} is not executable"
    except subprocess.TimeoutExpired:
        return f"`{' '.join(argv[-2:])}` did not finish within {timeout_s:g} s"
    except OSError as exc:
        return f"{argv[0]!r} could not start: {exc}"


def inspect_cli(program: tuple[str, ...], env: Mapping[str, str], cwd: Path) -> ClaudeCli | CliProblem:
    """Find the program, ask its version and read its --help (both free: no API request)."""
    if not program:
        return CliProblem("CLAUDE_CMD names no program", "set CLAUDE_CMD, e.g. 'claude -p'")
    path = shutil.which(program[0], path=env.get("PATH"))
    if path is None:
        return CliProblem(f"{program[0]!r} (CLAUDE_CMD) is not on PATH")
    runnable = [path, *program[1:]]
    version = _run([*runnable, "--version"], env, cwd, INTROSPECTION_TIMEOUT_S)
    if isinstance(version, str):
        return CliProblem(f"{program[0]} --version: {version}")
    if version.returncode != 0:
        return CliProblem(f"{program[0]} --version exited {version.returncode}: {_flat(version.stderr or version.stdout)}")
    shown = _run([*runnable, "--help"], env, cwd, INTROSPECTION_TIMEOUT_S)
    if isinstance(shown, str):
        return CliProblem(f"{program[0]} --help: {shown}")
    help_ = parse_help(shown.stdout)
    if shown.returncode != 0 or not help_.options:
        return CliProblem(f"{program[0]} --help lists no options (exit {shown.returncode}): is this the Claude Code CLI?")
    first = (version.stdout.strip().splitlines() or ["unknown version"])[0]
    number = _VERSION.search(first)
    return ClaudeCli(program=(path, *program[1:]), path=path, version=number.group(0) if number else first[:80],
                     help=help_)


def check_flags(cli: ClaudeCli, flags: tuple[ReviewFlag, ...], env: Mapping[str, str], cwd: Path) -> FlagCheck:
    """Each flag must be listed by --help, or be accepted by the CLI's parser (a free probe)."""
    help_ = cli.help
    missing: list[ReviewFlag] = []
    unlisted: list[str] = []
    for flag in flags:
        if help_.option(flag.name) is not None:
            continue
        if _parser_accepts(cli, flag, env, cwd):
            help_ = help_.with_hidden(CliOption(names=(flag.name,), arity=flag.arity, listed=False))
            unlisted.append(flag.name)
        else:
            missing.append(flag)
    return FlagCheck(missing=tuple(missing), unlisted=tuple(unlisted), help=help_)


def _parser_accepts(cli: ClaudeCli, flag: ReviewFlag, env: Mapping[str, str], cwd: Path) -> bool:
    """Run `claude -p FLAG VALUE -- probe` logged out (an empty HOME, no credentials) and pointed at a
    closed port: the parser either refuses the option ("unknown option") or the CLI stops at the
    missing login. Neither reaches any API, so the probe is free."""
    with scratch_directory() as home:
        probe_env = {
            "PATH": env.get("PATH", os.defpath),
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "ANTHROPIC_BASE_URL": _closed_local_url(),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "API_TIMEOUT_MS": "2000",
        }
        done = _run([*cli.program, "-p", *flag.words, "--", "probe"], probe_env, cwd, INTROSPECTION_TIMEOUT_S)
    if isinstance(done, str):
        return False
    return "unknown option" not in (done.stderr + done.stdout)


def _closed_local_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def login_state(cli: ClaudeCli, env: Mapping[str, str], cwd: Path) -> LoginState:
    """`claude auth status` (free: it reads the local login and makes no API request)."""
    if "auth" not in cli.help.commands:
        return LoginState(False, None, f"claude {cli.version} has no `auth status` command, so its login cannot be "
                                       "verified")
    done = _run([*cli.program, "auth", "status"], env, cwd, INTROSPECTION_TIMEOUT_S)
    if isinstance(done, str):
        return LoginState(False, None, f"claude auth status: {done}")
    try:
        status = json.loads(done.stdout)
    except ValueError:
        status = None
    if not isinstance(status, dict) or not isinstance(status.get("loggedIn"), bool):
        if done.returncode == 0:
            return LoginState(True, None, _flat(done.stdout) or "logged in (claude auth status exited 0)")
        return LoginState(False, None, f"claude auth status exited {done.returncode}: "
                                       f"{_flat(done.stdout + ' ' + done.stderr) or 'no detail'}")
    method = status.get("authMethod") if isinstance(status.get("authMethod"), str) else None
    if not status["loggedIn"]:
        return LoginState(False, method, "claude auth status reports loggedIn: false")
    source = status.get("apiKeySource")
    detail = f"logged in ({method or 'unknown method'}" + (f" from {source}" if isinstance(source, str) else "") + ")"
    return LoginState(True, method, detail)


# -- the user's flags ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserFlags:
    kept: tuple[str, ...]
    ignored: tuple[str, ...]  # one line per option left out, with why


def normalise_user_flags(words: tuple[str, ...], help_: CliHelp, owned: frozenset[str]) -> UserFlags:
    """Read the user's flags as the CLI's parser would, keep the harmless ones complete, leave out the
    rest. `owned` are the options the builder sets itself (its own value wins)."""
    kept: list[str] = []
    ignored: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            ignored.append(f"{' '.join(words[index:])}: the builder gives the prompt itself")
            break
        if not word.startswith("-") or word == "-":
            ignored.append(f"{word!r}: not an option (the builder gives the prompt itself)")
            index += 1
            continue
        name, has_inline, _ = word.partition("=") if word.startswith("--") else (word, "", "")
        option = help_.option(name)
        if option is None:
            ignored.append(f"{name}: not an option of this claude (--help)")
            index += 1
            continue
        group, index, complete = _take(words, index, option, bool(has_inline))
        if not complete:
            ignored.append(f"{name}: has no value")
        elif set(option.names) & set(PRINT_OPTION):
            pass  # the builder adds --print itself
        elif set(option.names) & owned:
            ignored.append(f"{_shown(name, group)}: the builder sets {option.name} itself")
        elif not set(option.names) & KEPT_USER_OPTIONS:
            ignored.append(f"{_shown(name, group)}: not allowed for a review (it would give the reviewer tools, "
                           "files, settings or a session)")
        else:
            kept.extend(group)
    return UserFlags(kept=tuple(kept), ignored=tuple(ignored))


def _shown(name: str, group: list[str]) -> str:
    """The option as a person may see it in `check` and the logs: its name and how many values
    (never the values, which may hold a key or a settings object)."""
    values = len(group) - 1 if "=" not in group[0] else 1
    return name if values == 0 else f"{name} (with {values} value{'s' if values != 1 else ''})"


def _take(words: tuple[str, ...], index: int, option: CliOption, inline: bool) -> tuple[list[str], int, bool]:
    """The words of one option from words[index], as commander consumes them."""
    group = [words[index]]
    index += 1
    arity = option.arity
    if arity is Arity.NONE:
        return group, index, True
    if inline:
        if arity in (Arity.ONE, Arity.OPTIONAL):
            return group, index, True
    elif arity in (Arity.ONE, Arity.MANY):
        if index >= len(words):
            return group, index, False
        group.append(words[index])
        index += 1
        if arity is Arity.ONE:
            return group, index, True
    elif arity is Arity.OPTIONAL:
        if index < len(words) and not words[index].startswith("-"):
            group.append(words[index])
            index += 1
        return group, index, True
    while index < len(words) and not words[index].startswith("-"):
        group.append(words[index])
        index += 1
    return group, index, True


def _flat(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
