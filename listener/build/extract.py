"""Find the generated files in a model's answer: our `=== FILE: x ===` markers, markdown fences
(small models add them even when told not to), or raw code with some prose around it."""

from __future__ import annotations

import ast
import hashlib
import re
import textwrap
from dataclasses import dataclass

from listener.queue.outcome import StepFailure

SHEBANG = "#!/usr/bin/env bash"
LOG_EXCERPT_CHARS = 2000

_MARKER = re.compile(
    r"^[ \t]*[*#`]*[ \t]*={2,}[ \t]*FILE[ \t]*:[ \t]*`?([^\s=*`]+)`?[ \t]*(?:\([^)\n]*\))?[ \t]*(?:={2,})?[ \t]*[*`]*[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^\s`{]*)[^\n]*$")
_PY_LANGS = frozenset({"python", "py", "python3", "py3"})
_SH_LANGS = frozenset({"bash", "sh", "shell", "zsh", "shellscript", "ksh"})
_DOCKER_LANGS = frozenset({"dockerfile", "docker", "containerfile"})
_UNTYPED_LANGS = frozenset({"", "text", "plaintext", "plain", "code"})
DOCKER_INSTRUCTIONS = frozenset(
    {
        "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
        "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
    }
)
_DOCKER_LINE = re.compile(r"^\s*([A-Za-z]+)(\s|$)")
_FROM_LINE = re.compile(r"^FROM\s+\S+", re.IGNORECASE)
_PYTHON_HINTS = re.compile(
    r"^\s*(import \w|from [\w.]+ import |def \w+\(|class \w+|if __name__|print\(|async def |@\w+)", re.MULTILINE
)
_BASH_HINTS = re.compile(
    r"^\s*(set -[euxo]|echo |printf |export \w|if \[|for \w+ in |while |function \w|\w+\(\) *\{|local |readonly |"
    r"claude |curl |exit \d|cd |source |\. /|case \S+ in|fi$|done$|esac$)|\$\{?\w",
    re.MULTILINE,
)
_PROSE_START = re.compile(
    r"^(here|here's|sure|certainly|okay|ok|below|this|the following|note|i |i've|i'll|let me|you can|"
    r"save|run|to run|usage|explanation|make sure|hope)\b",
    re.IGNORECASE,
)
# A sentence: a capitalised word, a lower-case word, at least five words, final punctuation.
_SENTENCE = re.compile(r"^[A-Z][a-z']*\s+[a-z][\w'-]*(?:\s+\S+){3,}[.:!?]$")
_FILE_HEADER = re.compile(
    r"^[ \t]*(?:#+|\*\*|//)?[ \t]*(?:file(?:name)?[ \t]*:[ \t]*)?`?(script\.py|main\.py|agent\.sh|dockerfile|requirements\.txt)`?"
    r"[ \t]*:?[ \t]*(?:\*\*)?[ \t]*:?[ \t]*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class GeneratedFiles:
    """The files of one build: the main program and, for scripts, an optional Dockerfile and an
    optional requirements.txt (third-party packages, installed from wheels)."""

    main_name: str  # 'script.py' or 'agent.sh'
    main: str
    dockerfile: str | None = None
    requirements: str | None = None

    def as_dict(self) -> dict[str, str]:
        files = {self.main_name: self.main}
        if self.dockerfile is not None:
            files["Dockerfile"] = self.dockerfile
        if self.requirements is not None:
            files["requirements.txt"] = self.requirements
        return files


@dataclass(frozen=True)
class _Block:
    lang: str  # the fence's info word, lower-cased ('' when none)
    text: str


def extract(output: str, automation_type: str) -> GeneratedFiles:
    """The files in a model's answer; StepFailure(level 1) when no usable code is in it."""
    text = output.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    want = "bash" if automation_type == "claude_agent" else "python"
    if not text.strip():
        raise _failure("the model's answer is empty", output)
    main, dockerfile, requirements = _from_markers(text, want)
    if main is None:
        main, dockerfile_found = _from_fences(text, want)
        dockerfile = dockerfile or dockerfile_found
    if main is None:
        main, dockerfile_raw = _from_raw(_outside_fences(text), want)
        dockerfile = dockerfile or dockerfile_raw
    if main is None or not main.strip():
        language = "bash script" if want == "bash" else "Python script"
        raise _failure(f"no {language} found in the model's answer (only prose or other code)", output)
    if want == "bash":
        return GeneratedFiles("agent.sh", _with_shebang(_tidy(main)), None)
    return GeneratedFiles("script.py", _tidy(main), _tidy(dockerfile) if dockerfile else None,
                          _tidy(requirements) if requirements else None)


def _failure(message: str, output: str) -> StepFailure:
    excerpt = output[:LOG_EXCERPT_CHARS]
    more = "" if len(output) <= LOG_EXCERPT_CHARS else f"\n… ({len(output) - LOG_EXCERPT_CHARS} more characters)"
    return StepFailure(
        level=1, step="extract", kind="level", message=message, log=f"model answer:\n{excerpt}{more}"
    )


def _tidy(code: str) -> str:
    lines = code.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    return textwrap.dedent("\n".join(lines)).rstrip() + "\n"


def _with_shebang(script: str) -> str:
    return script if script.startswith("#!") else f"{SHEBANG}\n{script}"


# --- markers -----------------------------------------------------------------------------------


def _from_markers(text: str, want: str) -> tuple[str | None, str | None, str | None]:
    """(main, Dockerfile, requirements.txt) from `=== FILE: name ===` sections."""
    matches = list(_MARKER.finditer(text))
    if not matches:
        return None, None, None
    main: str | None = None
    dockerfile: str | None = None
    requirements: str | None = None
    for i, match in enumerate(matches):
        name = match.group(1).strip().lower()
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        section = text[match.end() : end]
        if name.startswith("dockerfile") or name == "containerfile":
            dockerfile = dockerfile or _section_code(section, "dockerfile")
        elif want == "python" and name == "requirements.txt":
            requirements = requirements or _requirements_section(section)
        elif want == "python" and name.endswith(".py"):
            if main is None or name == "script.py":
                main = _section_code(section, "python")
        elif want == "bash" and (name.endswith(".sh") or name.endswith(".bash")):
            if main is None or name == "agent.sh":
                main = _section_code(section, "bash")
    return main, dockerfile, requirements


def _requirements_section(section: str) -> str | None:
    """A requirements.txt section: its lines without fences and surrounding prose."""
    lines = [line for line in section.split("\n") if not _FENCE_OPEN.match(line)]
    return _trim_prose("\n".join(lines)) or None


def _section_code(section: str, want: str) -> str | None:
    """A section's code: its best fenced block, else its text without stray fences and prose."""
    blocks = _fenced_blocks(section)
    if blocks:
        chosen = _pick(blocks, want)
        if chosen is not None:
            return chosen
    lines = [line for line in section.split("\n") if not _FENCE_OPEN.match(line)]
    return _trim_prose("\n".join(lines)) or None


# --- fences ------------------------------------------------------------------------------------


def _from_fences(text: str, want: str) -> tuple[str | None, str | None]:
    blocks = _fenced_blocks(text)
    if not blocks:
        return None, None
    dockerfile = None
    if want == "python":
        dockerfiles = [b.text for b in blocks if _kind(b) == "dockerfile"]
        dockerfile = max(dockerfiles, key=len) if dockerfiles else None
    return _pick(blocks, want), dockerfile


def _pick(blocks: list[_Block], want: str) -> str | None:
    """The largest block of the wanted kind, else the largest block of unknown kind."""
    kinds = [(_kind(b), b.text) for b in blocks]
    exact = [t for k, t in kinds if k == want]
    if exact:
        return max(exact, key=len)
    unknown = [t for k, t in kinds if k == "unknown" and t.strip()]
    return max(unknown, key=len) if unknown else None


def _kind(block: _Block) -> str:
    """'python', 'bash', 'dockerfile', 'other' (json, yaml...) or 'unknown'."""
    if block.lang in _DOCKER_LANGS or _looks_like_dockerfile(block.text):
        return "dockerfile"
    if block.lang in _PY_LANGS:
        return "python"
    if block.lang in _SH_LANGS:
        return "bash"
    if block.lang not in _UNTYPED_LANGS:
        return "other"
    return _guess_language(block.text)


def _fenced_blocks(text: str) -> list[_Block]:
    """Markdown fenced blocks, CommonMark-style: a closing fence is the same character, at least as
    long as the opening, alone on its line. A fence line inside an open triple-quoted Python string
    or an open shell quote/heredoc does not close the block. An unclosed block runs to the end
    (a line ending in the fence closes it first)."""
    lines = text.split("\n")
    blocks: list[_Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = len(opening.group(1)), opening.group(2), opening.group(3).lower()
        body: list[str] = []
        j = i + 1
        closed = False
        while j < len(lines):
            line = lines[j]
            stripped = line.strip()
            if stripped.startswith(fence[0]) and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                if not _inside_string("\n".join(body), lang):
                    closed = True
                    break
            body.append(line[indent:] if line[:indent].strip() == "" else line)
            j += 1
        if not closed:
            body = _close_at_trailing_fence(body, fence)
        blocks.append(_Block(lang, "\n".join(body)))
        i = j + 1
    return blocks


def _close_at_trailing_fence(body: list[str], fence: str) -> list[str]:
    for k, line in enumerate(body):
        stripped = line.rstrip()
        if stripped.endswith(fence) and stripped.strip(fence[0]).strip():
            return body[:k] + [stripped[: -len(fence)].rstrip()]
    return body


def _inside_string(code: str, lang: str) -> bool:
    if lang in _SH_LANGS:
        return _bash_open_quote(code)
    if lang in _PY_LANGS:
        return _python_open_triple_quote(code)
    return _python_open_triple_quote(code) if _guess_language(code) == "python" else _bash_open_quote(code)


def _python_open_triple_quote(code: str) -> bool:
    """Whether the code ends inside a triple-quoted string (comments and short strings skipped)."""
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if c == "#":
            nl = code.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif c in "\"'":
            if code.startswith(c * 3, i):
                end = _find_unescaped(code, c * 3, i + 3)
                if end < 0:
                    return True
                i = end + 3
            else:
                end = i + 1
                while end < n and code[end] not in (c, "\n"):
                    end += 2 if code[end] == "\\" else 1
                i = end + 1
        else:
            i += 1
    return False


def _find_unescaped(code: str, needle: str, start: int) -> int:
    i = start
    while True:
        found = code.find(needle, i)
        if found < 0:
            return -1
        backslashes = len(code[:found]) - len(code[:found].rstrip("\\"))
        if backslashes % 2 == 0:
            return found
        i = found + 1


_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")


def _bash_open_quote(code: str) -> bool:
    """Whether the code ends inside a quoted string or a heredoc (a rough shell lexer)."""
    quote: str | None = None
    heredoc: str | None = None
    for line in code.split("\n"):
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        i = 0
        while i < len(line):
            c = line[i]
            if quote == "'":
                if c == "'":
                    quote = None
            elif quote == '"':
                if c == "\\":
                    i += 1
                elif c == '"':
                    quote = None
            elif c == "#" and (i == 0 or line[i - 1] in " \t;"):
                break
            elif c == "\\":
                i += 1
            elif c in "'\"":
                quote = c
            elif line.startswith("<<", i) and not line.startswith("<<<", i):
                match = _HEREDOC.match(line, i)
                if match:
                    heredoc = match.group(2)
                    i = match.end() - 1
            i += 1
    return quote is not None or heredoc is not None


# --- raw text ----------------------------------------------------------------------------------


def _outside_fences(text: str) -> str:
    """The text with its (well-formed) fenced blocks taken out, for code written without fences."""
    kept: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i])
        if opening:
            fence = opening.group(2)
            j = i + 1
            while j < len(lines) and not (
                lines[j].strip().startswith(fence) and set(lines[j].strip()) == {fence[0]}
            ):
                j += 1
            if j < len(lines):
                i = j + 1
                continue
            i += 1  # a stray fence line: drop it, keep what follows
            continue
        kept.append(lines[i])
        i += 1
    return "\n".join(kept)


def _from_raw(text: str, want: str) -> tuple[str | None, str | None]:
    lines = text.split("\n")
    dockerfile = None
    if want == "python":
        lines, dockerfile = _split_raw_dockerfile(lines)
    code = _trim_prose("\n".join(lines))
    if not code or _guess_language(code) != want:
        return None, dockerfile
    return code, dockerfile


def _split_raw_dockerfile(lines: list[str]) -> tuple[list[str], str | None]:
    """Take a Dockerfile written inline (a FROM line followed by Docker instructions) out of the
    lines; a FROM inside an open Python triple-quoted string is left alone."""
    for start, line in enumerate(lines):
        if not _FROM_LINE.match(line) or _python_open_triple_quote("\n".join(lines[:start])):
            continue
        end = start + 1
        continued = line.rstrip().endswith("\\")
        while end < len(lines):
            current = lines[end]
            word = _DOCKER_LINE.match(current)
            if not (
                continued
                or not current.strip()
                or current.lstrip().startswith("#")
                or (word and word.group(1).upper() in DOCKER_INSTRUCTIONS and word.group(1).isupper())
            ):
                break
            continued = current.rstrip().endswith("\\")
            end += 1
        header = start - 1 if start > 0 and _is_file_header(lines[start - 1]) else start
        docker = "\n".join(lines[start:end]).strip()
        return lines[:header] + lines[end:], docker
    return lines, None


def _is_file_header(line: str) -> bool:
    return bool(_FILE_HEADER.match(line))


def _is_prose(line: str) -> bool:
    stripped = line.strip().strip("*").strip()
    if not stripped:
        return False
    if _is_file_header(line) or _FENCE_OPEN.match(line):
        return True
    if stripped.startswith(("#", "//")):
        return False
    if _SENTENCE.match(stripped) and not any(ch in stripped for ch in "=$;|{}"):
        return True  # "This script uses hvac (install it with pip)."
    if any(ch in stripped for ch in "=(){}[]$;|<>\"'`"):
        return False
    if _PROSE_START.match(stripped):
        return True
    words = stripped.split()
    return len(words) >= 4 and stripped[0].isupper() and stripped[-1] in ".:!?"


def _trim_prose(text: str) -> str:
    """Drop prose lines (and file-name headers) before the first and after the last code line."""
    lines = text.split("\n")
    while lines and (not lines[0].strip() or _is_prose(lines[0])):
        lines.pop(0)
    while lines and (not lines[-1].strip() or _is_prose(lines[-1])):
        lines.pop()
    return "\n".join(lines)


def _looks_like_dockerfile(text: str) -> bool:
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if re.match(r"^ARG\s", stripped, re.IGNORECASE):
            continue
        return bool(re.match(r"^FROM\s+\S+", stripped))
    return False


def _guess_language(text: str) -> str:
    """'python', 'bash', 'dockerfile', or 'unknown' for text that is not clearly either."""
    first = text.lstrip().split("\n", 1)[0]
    if first.startswith("#!"):
        if "python" in first:
            return "python"
        if re.search(r"\b(ba|z|k)?sh\b", first):
            return "bash"
    if _looks_like_dockerfile(text):
        return "dockerfile"
    if _parses_as_python_code(text):
        return "python"
    python_hints = len(_PYTHON_HINTS.findall(text))
    bash_hints = len(_BASH_HINTS.findall(text))
    if python_hints > bash_hints:
        return "python"
    if bash_hints > python_hints:
        return "bash"
    return "unknown"


def _parses_as_python_code(text: str) -> bool:
    """Valid Python that is more than a bare word or constant (which prose can also be)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # the last two: nesting beyond the parser's limits
        return False
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, (ast.Name, ast.Constant)))
        for node in tree.body
    )


def artifact_digest(files: GeneratedFiles) -> str:
    """sha256 over the files in a fixed order: what was tested is what gets deployed."""
    digest = hashlib.sha256()
    for name, text in sorted(files.as_dict().items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()
