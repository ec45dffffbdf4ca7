"""A model-written Dockerfile, interpreted: never handed to Docker.

`parse` reads the text (parser directives, continuation lines, comments, JSON and shell forms)
and refuses what a confined build cannot allow: a base image outside the allow-list, a second
FROM, `COPY --from`, a URL to fetch, a path outside the build context, and every instruction
that is not FROM, COPY, ADD, RUN, ENV, WORKDIR, CMD, ENTRYPOINT, EXPOSE, LABEL, USER, ARG (plus
the harmless MAINTAINER and HEALTHCHECK NONE). `plan` then resolves it against the base image's
configuration and the context's files into steps the builder executes (listener/sandbox/image.py).
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from listener.sandbox.naming import LABEL_PREFIX

SHELL = ("/bin/sh", "-c")
REQUIREMENTS_FILE = "requirements.txt"
FINAL_USER = "65534:65534"
ALLOWED = frozenset({"FROM", "COPY", "ADD", "RUN", "ENV", "WORKDIR", "CMD", "ENTRYPOINT", "EXPOSE", "LABEL",
                     "USER", "ARG", "MAINTAINER", "HEALTHCHECK"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")
_HEREDOC_BODY = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][\w]*)\1")  # a heredoc's end word, to skip its body
_FLAG = re.compile(r"^--([a-z][a-z-]{0,29})(?:=(.*))?$")
_PORT = re.compile(r"^[0-9]{1,5}(/(tcp|udp|sctp))?$")
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^git@")
_HEREDOC = re.compile(r"^<<-?\s*['\"]?[A-Za-z_]")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
MAX_INSTRUCTIONS = 200


class DockerfileError(ValueError):
    """A Dockerfile the builder refuses. The message is the builder's sentence naming the line and
    the instruction; `detail` holds the model's own words it is about (a URL, a path, an image)."""

    def __init__(self, line: int, keyword: str, message: str, detail: str = "") -> None:
        self.line, self.keyword, self.detail = line, keyword, detail
        where = f"Dockerfile line {line}" if line else "Dockerfile"
        shown = keyword if re.fullmatch(r"[A-Z]{1,20}", keyword) else "an instruction" if keyword else ""
        super().__init__(f"{where}: {shown + ' ' if shown else ''}{message}")


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str  # upper case
    text: str  # the arguments, continuation lines joined
    written: str = ""  # the keyword as written (for messages)


@dataclass(frozen=True)
class Dockerfile:
    base: str  # as written (after ARG substitution)
    instructions: tuple[Instruction, ...]  # after FROM, in order
    pre_from_args: Mapping[str, str]


# -- the steps the builder runs ---------------------------------------------------------------------

@dataclass(frozen=True)
class CopyStep:
    line: int
    files: tuple[tuple[str, str, int | None], ...]  # (context path, absolute image path, mode or None: keep)
    summary: str


@dataclass(frozen=True)
class RunStep:
    line: int
    argv: tuple[str, ...]
    environment: tuple[str, ...]  # KEY=value, the image's ENV and the ARGs at this point
    workdir: str
    summary: str


@dataclass(frozen=True)
class WorkdirStep:
    line: int
    path: str


@dataclass
class ImageConfig:
    """The configuration the final image gets (the base image's, changed by the Dockerfile)."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    exposed: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_image(cls, config: Mapping[str, Any]) -> "ImageConfig":
        """From a Docker image's `Config` (image inspect)."""
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in config.get("Env") or [])
        return cls(env=env, workdir=config.get("WorkingDir") or "", cmd=_list_or_none(config.get("Cmd")),
                   entrypoint=_list_or_none(config.get("Entrypoint")), exposed=dict(config.get("ExposedPorts") or {}),
                   labels=dict(config.get("Labels") or {}))

    def env_list(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.env.items()]


@dataclass(frozen=True)
class Plan:
    base: str
    steps: tuple[CopyStep | RunStep | WorkdirStep, ...]
    config: ImageConfig
    requirements: tuple[str, ...]  # from `RUN pip install …` lines (validated later, like requirements.txt)
    notes: tuple[str, ...]


# -- reading ------------------------------------------------------------------------------------------

def logical_lines(text: str) -> Iterator[Instruction]:
    """Instructions with continuation lines joined; comments, blank lines and heredoc bodies
    (RUN <<EOF … EOF) left out; the `escape` parser directive honoured (other directives, e.g.
    `syntax`, are comments here). The one Dockerfile reader: preflight and the builder both use it."""
    lines = text.replace("\r\n", "\n").split("\n")
    escape = "\\"
    start = 0
    while start < len(lines) and (directive := _DIRECTIVE.match(lines[start].strip())):
        if directive.group(1).lower() == "escape" and directive.group(2) in ("\\", "`"):
            escape = directive.group(2)
        start += 1
    i = start
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        first, parts = i + 1, [stripped]
        while parts[-1].endswith(escape) and i + 1 < len(lines):
            parts[-1] = parts[-1][: -len(escape)].rstrip()
            i += 1
            while i + 1 < len(lines) and (not lines[i].strip() or lines[i].strip().startswith("#")):
                i += 1
            following = lines[i].strip()
            parts.append("" if following.startswith("#") else following)
        joined = " ".join(p for p in parts if p)
        for marker in _HEREDOC_BODY.finditer(joined):  # skip the body; the builder refuses heredocs by the RUN line
            i += 1
            while i < len(lines) and lines[i].strip() != marker.group(2):
                i += 1
        keyword, _, rest = joined.partition(" ")
        yield Instruction(first, keyword.upper(), rest.strip(), keyword)
        i += 1


def parse(text: str, allowed_bases: Sequence[str]) -> Dockerfile:
    """The Dockerfile's base and instructions, or DockerfileError for anything refused."""
    instructions = list(logical_lines(text))
    if not instructions:
        raise DockerfileError(0, "", "is empty")
    if len(instructions) > MAX_INSTRUCTIONS:
        raise DockerfileError(0, "", f"has {len(instructions)} instructions, more than {MAX_INSTRUCTIONS}")
    args: dict[str, str] = {}
    base: str | None = None
    body: list[Instruction] = []
    for ins in instructions:
        _check_keyword(ins)
        if ins.keyword == "FROM":
            if base is not None:
                raise DockerfileError(ins.line, "FROM", "again: multi-stage builds are refused (one FROM, one of "
                                      "the allowed base images)")
            base = _base_image(ins, args, allowed_bases)
        elif base is None:
            if ins.keyword != "ARG":
                raise DockerfileError(ins.line, ins.keyword, "comes before FROM (only ARG may)")
            args.update(_arg(ins, args, {}))
        else:
            _check_instruction(ins)
            body.append(ins)
    if base is None:
        raise DockerfileError(0, "", "has no FROM instruction")
    return Dockerfile(base=base, instructions=tuple(body), pre_from_args=args)


def _check_keyword(ins: Instruction) -> None:
    if ins.keyword not in ALLOWED:
        raise DockerfileError(ins.line, ins.keyword, "is refused: a sandbox build accepts only "
                              "FROM, COPY, ADD, RUN, ENV, WORKDIR, CMD, ENTRYPOINT, EXPOSE, LABEL, USER and ARG",
                              ins.keyword)
    if not ins.text:
        raise DockerfileError(ins.line, ins.keyword, "needs arguments")


def _check_instruction(ins: Instruction) -> None:
    """Refusals that need no context: checked before anything is looked up or runs."""
    if ins.keyword == "HEALTHCHECK" and ins.text.strip().upper() != "NONE":
        raise DockerfileError(ins.line, "HEALTHCHECK", "with a command is refused (only HEALTHCHECK NONE)")
    if ins.keyword in ("COPY", "ADD"):
        flags, sources, _ = _copy_words(ins, {})
        if "from" in flags:
            raise DockerfileError(ins.line, ins.keyword, "--from is refused: files come from the build context only")
        for source in sources:
            if _URL.match(source):
                raise DockerfileError(ins.line, ins.keyword, "of a URL is refused (a build never fetches anything)", source)
    if ins.keyword == "RUN":
        flags, _ = _flags(ins, ins.text)
        if flags:
            raise DockerfileError(ins.line, "RUN", f"--{next(iter(flags))} is refused")
        if _HEREDOC.match(ins.text):
            raise DockerfileError(ins.line, "RUN", "heredocs are not supported")


def _base_image(ins: Instruction, args: Mapping[str, str], allowed: Sequence[str]) -> str:
    flags, rest = _flags(ins, ins.text)
    if flags:
        raise DockerfileError(ins.line, "FROM", f"--{next(iter(flags))} is refused")
    words = split_words(rest, args, ins)
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
        raise DockerfileError(ins.line, "FROM", "must be `FROM image` (or `FROM image AS name`)", rest)
    image = words[0]
    if normalize_reference(image) not in {normalize_reference(a) for a in allowed}:
        raise DockerfileError(ins.line, "FROM", f"names an image that is not an allowed base image (allowed: "
                              f"{', '.join(allowed)}; SANDBOX_BASE_IMAGE, SANDBOX_BASE_IMAGES)", image)
    return image


def normalize_reference(reference: str) -> str:
    """`python:3.12-slim`, `library/python:3.12-slim` and `docker.io/library/python:3.12-slim` are
    one image; an untagged name means `:latest`."""
    name = reference.strip()
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.startswith("library/") and name.count("/") == 1:
        name = name[len("library/"):]
    last = name.rsplit("/", 1)[-1]
    if "@" not in name and ":" not in last:
        name += ":latest"
    return name


# -- words, quotes and variables -------------------------------------------------------------------------

def substitute(text: str, env: Mapping[str, str]) -> str:
    """$name, ${name}, ${name:-word}, ${name:+word} from `env` (unset: empty), as Docker does."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        current = env.get(name, "")
        if match.group(2) == ":-":
            return current or match.group(3)
        if match.group(2) == ":+":
            return match.group(3) if current else ""
        return current
    return _VARIABLE.sub(value, text)


def split_words(text: str, env: Mapping[str, str], ins: Instruction, split: bool = True) -> list[str]:
    """Docker's word rules: whitespace separates words (unless split=False), '…' is literal,
    "…" and bare text have their variables substituted, a backslash escapes the next character."""
    words: list[str] = []
    current: list[str] = []
    started = False
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace() and split:
            if started:
                words.append("".join(current))
                current, started = [], False
            i += 1
            continue
        started = True
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise DockerfileError(ins.line, ins.keyword, "has an unclosed ' quote")
            current.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            i = _double_quoted(text, i + 1, env, current, ins)
        elif c == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
        elif c == "$":
            i = _variable(text, i, env, current)
        else:
            current.append(c)
            i += 1
    if started:
        words.append("".join(current))
    return words


def _double_quoted(text: str, i: int, env: Mapping[str, str], out: list[str], ins: Instruction) -> int:
    while i < len(text):
        c = text[i]
        if c == '"':
            return i + 1
        if c == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$':
            out.append(text[i + 1])
            i += 2
        elif c == "$":
            i = _variable(text, i, env, out)
        else:
            out.append(c)
            i += 1
    raise DockerfileError(ins.line, ins.keyword, 'has an unclosed " quote')


def _variable(text: str, i: int, env: Mapping[str, str], out: list[str]) -> int:
    match = _VARIABLE.match(text, i)
    if not match:
        out.append("$")
        return i + 1
    out.append(substitute(match.group(0), env))
    return match.end()


def _flags(ins: Instruction, text: str) -> tuple[dict[str, str], str]:
    """Leading --name[=value] flags and the rest of the text."""
    flags: dict[str, str] = {}
    rest = text
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        match = _FLAG.match(word)
        if not match:
            raise DockerfileError(ins.line, ins.keyword, "has a malformed flag", word)
        flags[match.group(1)] = match.group(2) or ""
        rest = rest.lstrip()
    return flags, rest


def _json_list(text: str) -> list[str] | None:
    """The exec (JSON) form, or None when the text is the shell form."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _command(ins: Instruction) -> list[str]:
    exec_form = _json_list(ins.text)
    return exec_form if exec_form is not None else [*SHELL, ins.text]


def _copy_words(ins: Instruction, env: Mapping[str, str]) -> tuple[dict[str, str], list[str], str]:
    flags, rest = _flags(ins, ins.text)
    exec_form = _json_list(rest)
    words = [substitute(w, env) for w in exec_form] if exec_form is not None else split_words(rest, env, ins)
    if len(words) < 2:
        raise DockerfileError(ins.line, ins.keyword, "needs at least one source and a destination")
    return flags, words[:-1], words[-1]


def _pairs(ins: Instruction, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """ENV / LABEL: key=value pairs, or the old `KEY value with spaces` form."""
    words = split_words(ins.text, env, ins)
    if words and "=" not in words[0]:
        legacy = split_words(ins.text.split(None, 1)[1] if len(words) > 1 else "", env, ins, split=False)
        return [(words[0], legacy[0] if legacy else "")]
    pairs = []
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise DockerfileError(ins.line, ins.keyword, "expects key=value pairs", word)
        pairs.append((key, value))
    return pairs


def _arg(ins: Instruction, env: Mapping[str, str], outer: Mapping[str, str]) -> dict[str, str]:
    """ARG name[=default]: no build arguments are ever passed, so the value is the default (or the
    pre-FROM default for a name declared again after FROM, or empty)."""
    values = {}
    for word in split_words(ins.text, env, ins):
        name, equals, default = word.partition("=")
        if not _ARG_NAME.match(name):
            raise DockerfileError(ins.line, "ARG", "has an invalid name", name)
        values[name] = default if equals else outer.get(name, "")
    return values


def _list_or_none(value: object) -> list[str] | None:
    return list(value) if isinstance(value, list) else None


# -- planning -------------------------------------------------------------------------------------------

@dataclass
class _State:
    config: ImageConfig
    args: dict[str, str]
    outer_args: Mapping[str, str]
    context: Mapping[str, int]  # context path -> mode on disk
    steps: list[CopyStep | RunStep | WorkdirStep] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cmd_set: bool = False

    def scope(self) -> dict[str, str]:
        return {**self.args, **self.config.env}


def plan(dockerfile: Dockerfile, base_config: Mapping[str, Any], context: Mapping[str, int]) -> Plan:
    """The steps and final configuration, resolved against the base image's `Config` and the
    context (its files and their modes); `RUN pip install …` becomes requirements."""
    state = _State(config=ImageConfig.of_image(base_config), args={}, outer_args=dockerfile.pre_from_args,
                   context=context)
    for ins in dockerfile.instructions:
        _HANDLERS[ins.keyword](state, ins)
    return Plan(base=dockerfile.base, steps=tuple(state.steps), config=state.config,
                requirements=tuple(state.requirements), notes=tuple(state.notes))


def _on_arg(state: _State, ins: Instruction) -> None:
    state.args.update(_arg(ins, state.scope(), state.outer_args))


def _on_env(state: _State, ins: Instruction) -> None:
    for key, value in _pairs(ins, state.scope()):
        state.config.env[key] = value


def _on_label(state: _State, ins: Instruction) -> None:
    for key, value in _pairs(ins, state.scope()):
        if key.startswith(LABEL_PREFIX):
            raise DockerfileError(ins.line, "LABEL", f"{LABEL_PREFIX}.* is refused: those labels belong to the builder", key)
        state.config.labels[key] = value


def _on_workdir(state: _State, ins: Instruction) -> None:
    words = split_words(ins.text, state.scope(), ins, split=False)
    path = posixpath.normpath(posixpath.join(state.config.workdir or "/", words[0] if words else ""))
    state.config.workdir = path
    state.steps.append(WorkdirStep(ins.line, path))


def _on_cmd(state: _State, ins: Instruction) -> None:
    state.config.cmd = _command(ins)
    state.cmd_set = True


def _on_entrypoint(state: _State, ins: Instruction) -> None:
    state.config.entrypoint = _command(ins)
    if not state.cmd_set:  # as Docker: a new ENTRYPOINT drops the base image's CMD
        state.config.cmd = None


def _on_expose(state: _State, ins: Instruction) -> None:
    for port in split_words(ins.text, state.scope(), ins):
        if not _PORT.match(port):
            raise DockerfileError(ins.line, "EXPOSE", "needs ports like 8080 or 8080/udp", port)
        state.config.exposed[port if "/" in port else f"{port}/tcp"] = {}


def _on_user(state: _State, ins: Instruction) -> None:
    state.notes.append(f"line {ins.line}: USER {ins.text} noted; RUN steps run as root without capabilities "
                       f"and the image always runs as {FINAL_USER}")


def _on_ignored(state: _State, ins: Instruction) -> None:
    state.notes.append(f"line {ins.line}: {ins.keyword} {ins.text} ignored".rstrip())


def _on_run(state: _State, ins: Instruction) -> None:
    argv = _command(ins)
    pip = pip_requirements(ins, REQUIREMENTS_FILE in state.context)
    if pip is not None:
        state.requirements.extend(pip)
        state.notes.append(f"line {ins.line}: RUN {ins.text} became requirements (installed from wheels, no pip in the build)")
        return
    environment = {**state.args, **state.config.env}
    state.steps.append(RunStep(ins.line, tuple(argv), tuple(f"{k}={v}" for k, v in environment.items()),
                               state.config.workdir or "/", _short(f"RUN {ins.text}")))


def _on_copy(state: _State, ins: Instruction) -> None:
    flags, sources, dest = _copy_words(ins, state.scope())
    if ins.keyword == "ADD":
        state.notes.append(f"line {ins.line}: ADD copies like COPY (no URL is fetched, no archive extracted)")
    unknown = set(flags) - {"chown", "chmod"}
    if unknown:
        raise DockerfileError(ins.line, ins.keyword, f"--{sorted(unknown)[0]} is refused")
    mode = _mode(ins, flags.get("chmod"))
    if "chown" in flags:
        state.notes.append(f"line {ins.line}: --chown ignored (files in the image belong to root, read-only to the app)")
    matched = [item for source in sources for item in _context_matches(ins, source, state.context)]
    target = posixpath.join(state.config.workdir or "/", dest)
    into_directory = (dest == "." or dest.endswith(("/", "/.")) or len(matched) > 1
                      or any(relative for _, relative in matched))
    files = []
    for path, relative in matched:
        if into_directory:
            image_path = posixpath.join(target, relative or posixpath.basename(path))
        else:
            image_path = target
        files.append((path, posixpath.normpath(image_path), mode))
    if any(image_path == "/" for _, image_path, _ in files):
        raise DockerfileError(ins.line, ins.keyword, "cannot copy a file onto /")
    state.steps.append(CopyStep(ins.line, tuple(files), _short(f"{ins.keyword} {ins.text}")))


def _mode(ins: Instruction, text: str | None) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise DockerfileError(ins.line, ins.keyword, "--chmod must be octal, like 0644", text)
    return int(text, 8) & 0o755  # never setuid, setgid, sticky or world-writable


def _context_matches(ins: Instruction, source: str, context: Mapping[str, int]) -> list[tuple[str, str]]:
    """(context path, path relative to the copied directory or '') for one COPY source."""
    if _URL.match(source):
        raise DockerfileError(ins.line, ins.keyword, "of a URL is refused (a build never fetches anything)", source)
    normalized = posixpath.normpath(source.replace("\\", "/").lstrip("/") or ".")
    if normalized == ".." or normalized.startswith("../"):
        raise DockerfileError(ins.line, ins.keyword, "names a path outside the build context", source)
    if normalized == ".":
        return [(path, path) for path in sorted(context)]
    if any(ch in normalized for ch in "*?["):
        found = [(path, "") for path in sorted(context) if fnmatch.fnmatchcase(path, normalized)]
    elif normalized in context:
        found = [(normalized, "")]
    else:
        prefix = normalized + "/"
        found = [(path, path[len(prefix):]) for path in sorted(context) if path.startswith(prefix)]
    if not found:
        raise DockerfileError(ins.line, ins.keyword, "names a file that is not in the build context "
                              f"(it holds: {', '.join(sorted(context)) or 'nothing'})", source)
    return found


def pip_requirements(ins: Instruction, has_requirements_file: bool) -> list[str] | None:
    """`RUN pip install a b==1` (pip, pip3, python -m pip; `&&`-joined) as requirement strings, or
    None when the RUN is something else. `-r requirements.txt` refers to the generated file, which
    is always used; any other pip option is refused (a build has no network to run pip)."""
    if _json_list(ins.text) is not None:
        return None
    commands = [part.strip() for part in ins.text.split("&&")]
    parsed = [_pip_install_words(ins, command) for command in commands]
    if not any(words is not None for words in parsed):
        return None
    if any(words is None for words in parsed):
        raise DockerfileError(ins.line, "RUN", "mixes pip install with other commands: builds have no network; "
                              "declare dependencies in requirements.txt and keep other commands in their own RUN")
    return [item for words in parsed for item in _pip_arguments(ins, words or [], has_requirements_file)]


_PIP = re.compile(r"^(?:(?:/usr/(?:local/)?bin/)?(?:pip3?|pip3\.\d+)|(?:/usr/(?:local/)?bin/)?python3?(?:\.\d+)? -m pip)\s+install(\s|$)")
_PIP_IGNORED = frozenset({"--no-cache-dir", "-U", "--upgrade", "-q", "--quiet", "--user", "--no-compile",
                          "--disable-pip-version-check", "--root-user-action=ignore", "--break-system-packages",
                          "--no-warn-script-location", "--prefer-binary", "--only-binary=:all:"})


def _pip_install_words(ins: Instruction, command: str) -> list[str] | None:
    match = _PIP.match(command)
    if not match:
        return None
    try:
        return shlex.split(command[match.end():])
    except ValueError as exc:
        raise DockerfileError(ins.line, "RUN", "pip install line does not parse", str(exc)) from None


def _pip_arguments(ins: Instruction, words: list[str], has_requirements_file: bool) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-r", "--requirement") and i + 1 < len(words) and posixpath.basename(words[i + 1]) == REQUIREMENTS_FILE:
            if not has_requirements_file:
                raise DockerfileError(ins.line, "RUN", f"pip install -r: the answer has no {REQUIREMENTS_FILE}", words[i + 1])
            i += 2  # the generated requirements.txt: the builder installs it anyway
            continue
        if word in _PIP_IGNORED:
            i += 1
            continue
        if word.startswith("-"):
            raise DockerfileError(ins.line, "RUN", "pip install with an option is refused: builds have no network and "
                                  "install only wheels of the packages named in requirements.txt", word)
        out.append(word)
        i += 1
    return out


def _short(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


_HANDLERS = {
    "ARG": _on_arg, "ENV": _on_env, "LABEL": _on_label, "WORKDIR": _on_workdir, "CMD": _on_cmd,
    "ENTRYPOINT": _on_entrypoint, "EXPOSE": _on_expose, "USER": _on_user, "RUN": _on_run, "COPY": _on_copy,
    "ADD": _on_copy, "MAINTAINER": _on_ignored, "HEALTHCHECK": _on_ignored,
}
