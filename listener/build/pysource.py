"""Python source read by the standard tokenizer (tokenize): its string literals, what each is
bound to, and its comments. The secret scan (preflight.py) reads generated Python through this.

A literal is every string the tokenizer sees: plain, raw, bytes, f-strings (one STRING token
before Python 3.12, FSTRING_START … FSTRING_END from 3.12 on; read from the source either way),
triple-quoted over several lines, and implicitly concatenated pieces taken together.
"""

from __future__ import annotations

import ast
import io
import token
import tokenize
from dataclasses import dataclass
from typing import NamedTuple

# The tokens that open and close an f-string (3.12+) or a t-string (3.14+); absent before.
_OPENERS = frozenset(t for t in (getattr(token, "FSTRING_START", None), getattr(token, "TSTRING_START", None))
                     if t is not None)
_CLOSERS = frozenset(t for t in (getattr(token, "FSTRING_END", None), getattr(token, "TSTRING_END", None))
                     if t is not None)
_SKIPPED = frozenset({token.NL, token.INDENT, token.DEDENT, token.COMMENT, token.ENCODING})
_ASSIGN = frozenset({"=", ":="})


@dataclass(frozen=True)
class Literal:
    """One string literal (adjacent pieces joined)."""

    line: int  # where it starts
    prefix: str  # the first piece's prefix, lower case: "", "r", "b", "rb", "f", "rf", "u"…
    value: str  # the text it denotes; an f-string's is its text between the quotes, as written
    target: str | None  # the name it is bound to (NAME = , NAME: T = , NAME= in a call, "key": , x["key"] = )
    pieces: tuple[tuple[int, str], ...]  # each piece's first line and source (prefix and quotes included)

    @property
    def formatted(self) -> bool:
        return "f" in self.prefix or "t" in self.prefix

    def source_lines(self) -> list[tuple[int, str]]:
        """The literal's source, line by line, with each line's number."""
        return [(line + offset, text) for line, piece in self.pieces
                for offset, text in enumerate(piece.split("\n"))]


@dataclass(frozen=True)
class Comment:
    line: int
    text: str  # with its '#'
    alone: bool  # the only thing on its line (not after code)


@dataclass(frozen=True)
class PythonSource:
    literals: tuple[Literal, ...]
    comments: tuple[Comment, ...]


class _Tok(NamedTuple):
    kind: int  # a token type; STRING also for a whole f-string
    text: str
    line: int


def read_python(source: str) -> PythonSource | None:
    """The literals and comments of `source`; None when the tokenizer cannot read it (the
    syntax check reports why; callers fall back to reading lines)."""
    starts = [0]
    for line in io.StringIO(source):
        starts.append(starts[-1] + len(line))

    def offset(position: tuple[int, int]) -> int:
        row, column = position
        return starts[row - 1] + column if row - 1 < len(starts) else len(source)

    significant: list[_Tok] = []
    comments: list[Comment] = []
    depth, opened = 0, (0, 0)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _OPENERS:
                if depth == 0:
                    opened = tok.start
                depth += 1
                continue
            if tok.type in _CLOSERS:
                depth -= 1
                if depth == 0:
                    significant.append(_Tok(token.STRING, source[offset(opened):offset(tok.end)], opened[0]))
                continue
            if depth:
                continue  # inside an f-string: its pieces and replacement fields
            if tok.type == token.COMMENT:
                row, column = tok.start  # alone: nothing but blanks before it on its line
                before = source[starts[row - 1]:starts[row - 1] + column] if row - 1 < len(starts) else ""
                comments.append(Comment(row, tok.string, alone=not before.strip()))
                continue
            if tok.type in _SKIPPED:
                continue
            significant.append(_Tok(tok.type, tok.string, tok.start[0]))
    except (tokenize.TokenError, SyntaxError):
        return None
    return PythonSource(_literals(significant), tuple(comments))


def _literals(toks: list[_Tok]) -> tuple[Literal, ...]:
    found: list[Literal] = []
    i = 0
    while i < len(toks):
        if toks[i].kind != token.STRING:
            i += 1
            continue
        j = i
        while j + 1 < len(toks) and toks[j + 1].kind == token.STRING:
            j += 1
        pieces = tuple((toks[k].line, toks[k].text) for k in range(i, j + 1))
        found.append(Literal(line=toks[i].line, prefix=_prefix(pieces[0][1]),
                             value="".join(_value(text) for _, text in pieces), target=_target(toks, _grouped(toks, i, j)),
                             pieces=pieces))
        i = j + 1
    return tuple(found)


def _grouped(toks: list[_Tok], first: int, last: int) -> int:
    """Where the expression of the literal toks[first..last] starts: before the parentheses
    around it, as in password = ("abc" "def")."""
    while (first >= 1 and last + 1 < len(toks) and toks[first - 1].text == "(" and toks[last + 1].text == ")"
           and toks[first - 1].kind == token.OP and toks[last + 1].kind == token.OP
           and (first < 2 or toks[first - 2].kind == token.OP)):  # not a call: f("abc")
        first, last = first - 1, last + 1
    return first


def _prefix(text: str) -> str:
    return text[: len(text) - len(text.lstrip("rRbBuUfFtT"))].lower()


def _body(text: str) -> str:
    """The text between the quotes."""
    rest = text[len(_prefix(text)):]
    quote = rest[:3] if rest[:3] in ('"""', "'''") else rest[:1]
    return rest[len(quote):len(rest) - len(quote)]


def _value(text: str) -> str:
    """What a piece denotes: evaluated (bytes as latin-1), an f-string's text as written."""
    if "f" in _prefix(text) or "t" in _prefix(text):
        return _body(text)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return _body(text)
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _target(toks: list[_Tok], i: int) -> str | None:
    """The name the literal at toks[i] is bound to, read backwards from it."""
    if i < 1 or toks[i - 1].kind != token.OP:
        return None
    operator, k = toks[i - 1].text, i - 2
    if k < 0:
        return None
    if operator == ":":
        before = toks[k]
        if before.kind == token.STRING:  # {"password": "..."}
            return _value(before.text)
        return _dotted(toks, _dotted_start(toks, k), k) if before.kind == token.NAME else None
    if operator not in _ASSIGN:
        return None
    if toks[k].kind == token.OP and toks[k].text == "]":  # x["password"] = … or NAME: T[…] = …
        opening = _matching_open(toks, k)
        if opening is None:
            return None
        inside = toks[opening + 1:k]
        if len(inside) == 1 and inside[0].kind == token.STRING and not _annotation_before(toks, opening):
            return _value(inside[0].text)
        k = opening - 1
        if k < 0 or toks[k].kind != token.NAME:
            return None
    if toks[k].kind != token.NAME:
        return None
    start = _dotted_start(toks, k)
    if start >= 2 and toks[start - 1].kind == token.OP and toks[start - 1].text == ":" and toks[start - 2].kind == token.NAME:
        # NAME: annotation = "…": the name is before the colon
        end = start - 2
        return _dotted(toks, _dotted_start(toks, end), end)
    return _dotted(toks, start, k)


def _annotation_before(toks: list[_Tok], opening: int) -> bool:
    """Whether the subscript opening at toks[opening] belongs to an annotation (NAME: T[…] =)."""
    k = opening - 1
    if k < 0 or toks[k].kind != token.NAME:
        return False
    start = _dotted_start(toks, k)
    return start >= 1 and toks[start - 1].kind == token.OP and toks[start - 1].text == ":"


def _matching_open(toks: list[_Tok], close: int) -> int | None:
    depth = 0
    for k in range(close, -1, -1):
        if toks[k].kind == token.OP and toks[k].text in ")]}":
            depth += 1
        elif toks[k].kind == token.OP and toks[k].text in "([{":
            depth -= 1
            if depth == 0:
                return k
        elif toks[k].kind == token.NEWLINE:
            return None
    return None


def _dotted_start(toks: list[_Tok], end: int) -> int:
    """The first token of the dotted name a.b.c that ends at toks[end] (a NAME)."""
    start = end
    while start >= 2 and toks[start - 1].kind == token.OP and toks[start - 1].text == "." and toks[start - 2].kind == token.NAME:
        start -= 2
    return start


def _dotted(toks: list[_Tok], start: int, end: int) -> str:
    return "".join(toks[k].text for k in range(start, end + 1))
