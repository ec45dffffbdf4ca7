"""`sql_rows` queries: one plain, read-only SELECT with no power.

A tokenizer that reads SQL the way PostgreSQL's lexer does (quotes with '' escapes, E'' strings
with backslash escapes, dollar quotes, nested block comments, quoted identifiers, U&'' and U&""
forms) finds every function call: a name followed by `(` that is not a keyword construct (`IN (`,
`EXISTS (`, `VALUES (`, `ANY (`, `ARRAY(`, `CAST(`, `OVER (`, a subquery `(SELECT …`), not a type
modifier (`::numeric(10,2)`, `AS varchar(20)`) and not an alias's column list (`AS t(a, b)`,
`) v(a)`). Each call must be one of ALLOWED_FUNCTIONS; schema-qualified calls and `pg_*` are
always refused. The statement must be a single SELECT (or WITH … SELECT): no data-modifying CTE,
no INTO, no FOR UPDATE/SHARE, no COPY, no LOCK, no `;` chain, no parameters.

The accepted query is sent with every allowed function qualified as `pg_catalog.<name>`, so a
function of the same name in another schema (made by whoever can write the sandbox database) is
never the one called. The session forces standard_conforming_strings on, so the server reads
'…' the way this tokenizer does.

The role that runs it is the other half (checked at `check`, at start and before each query): no
superuser, no server-file or signal roles.
"""

from __future__ import annotations

from dataclasses import dataclass

# The pure functions a query may call (documented in the README). Keep it small: each one reads
# only its arguments (and the clock), never a file, a setting, a name or a piece of SQL.
ALLOWED_FUNCTIONS: tuple[str, ...] = (
    "count", "sum", "avg", "min", "max",
    "coalesce", "nullif", "greatest", "least",
    "lower", "upper", "length", "abs", "round",
    "now", "date_trunc", "date_part", "extract", "age",
    "jsonb_array_length", "array_length",
)
# Grammar constructs that look like calls: they are sent as written (`pg_catalog.coalesce` does not exist).
_SYNTAX_FUNCTIONS = frozenset({"coalesce", "nullif", "greatest", "least", "extract"})

# Reserved (or "cannot be a function name") keywords after which `(` opens an expression, a list
# or a subquery, never a call.
_NOT_CALLS = frozenset({
    "all", "and", "any", "array", "as", "asymmetric", "between", "case", "cast", "distinct", "else",
    "except", "exists", "from", "group", "having", "in", "intersect", "lateral", "limit", "not",
    "offset", "on", "or", "row", "select", "some", "symmetric", "then", "union", "using", "values",
    "when", "where", "with",
})
# Type names (keywords that cannot be function names) whose `(` is a type modifier: numeric(10,2).
_TYPE_KEYWORDS = frozenset({"bit", "char", "character", "dec", "decimal", "float", "interval", "nchar",
                            "numeric", "time", "timestamp", "varchar"})
# Unreserved keywords that are constructs only right after certain tokens.
_CONTEXTUAL = {
    "by": frozenset({"order", "group", "partition"}),
    "over": frozenset({")"}),
    "filter": frozenset({")"}),
    "materialized": frozenset({"as", "not"}),
    "varying": frozenset({"character", "char", "bit", "national"}),
}
_REFUSED_WORDS = {
    "insert": "INSERT (data-modifying statements are refused)",
    "update": "UPDATE (data-modifying statements and FOR UPDATE are refused)",
    "delete": "DELETE (data-modifying statements are refused)",
    "merge": "MERGE (data-modifying statements are refused)",
    "truncate": "TRUNCATE",
    "into": "INTO (SELECT … INTO creates a table)",
    "copy": "COPY",
    "lock": "LOCK",
    "for": "FOR (row locks such as FOR UPDATE / FOR SHARE)",
    "operator": "OPERATOR(…) (an operator named by schema)",
    "call": "CALL",
    "execute": "EXECUTE",
    "do": "DO",
    "set": "SET",
    "returning": "RETURNING",
}
_SPECIAL_STRING_PREFIXES = frozenset({"e", "b", "x", "n"})
_BASE_DIGITS = {"0x": "0123456789abcdef", "0o": "01234567", "0b": "01"}


@dataclass(frozen=True)
class Token:
    kind: str  # word, quoted, string, number, param, op, punct, semicolon
    text: str
    start: int
    end: int

    @property
    def word(self) -> str:
        """A bare word folded to lower case ("" for other tokens)."""
        return self.text.lower() if self.kind == "word" else ""

    @property
    def name(self) -> str:
        """The identifier it denotes: a bare word folded, a quoted identifier unquoted."""
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "quoted" and self.text.startswith('"'):
            return self.text[1:-1].replace('""', '"')
        return self.text  # U&"…": compared as written, so it never equals an allowed name


@dataclass(frozen=True)
class Accepted:
    statement: str  # as written, without trailing semicolons (what the spec keeps)
    query: str  # as sent to the server: the statement with allowed functions pg_catalog-qualified
    functions: tuple[str, ...]


class _LexError(Exception):
    pass


def _is_ident_start(ch: str) -> bool:
    return ch.isalpha() or ch == "_" or ord(ch) >= 128


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) >= 128


def tokenize(sql: str) -> list[Token]:
    """The significant tokens of `sql` (whitespace and comments dropped); raises _LexError on an
    unterminated string, quoted identifier, dollar quote or comment."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
        elif sql.startswith("/*", i):
            i = _block_comment_end(sql, i)
        elif ch == "'":
            end = _quoted_end(sql, i, "'", backslashes=False)
            tokens.append(Token("string", sql[i:end], i, end))
            i = end
        elif ch == '"':
            end = _quoted_end(sql, i, '"', backslashes=False)
            if end - i == 2:
                raise _LexError('a zero-length quoted identifier ("")')
            tokens.append(Token("quoted", sql[i:end], i, end))
            i = end
        elif ch == "$":
            i = _dollar(sql, i, tokens)
        elif ch.isdigit() or (ch == "." and i + 1 < n and sql[i + 1].isdigit()):
            end = _number_end(sql, i)
            if end < n and _is_ident_char(sql[end]):
                raise _LexError(f"a number directly followed by letters ({sql[i:end + 1]!r}…)")
            tokens.append(Token("number", sql[i:end], i, end))
            i = end
        elif _is_ident_start(ch):
            end = i + 1
            while end < n and _is_ident_char(sql[end]):
                end += 1
            word = sql[i:end].lower()
            if word == "u" and sql.startswith("&'", end):
                close = _quoted_end(sql, end + 1, "'", backslashes=False)
                tokens.append(Token("string", sql[i:close], i, close))
                i = close
            elif word == "u" and sql.startswith('&"', end):
                close = _quoted_end(sql, end + 1, '"', backslashes=False)
                tokens.append(Token("quoted", sql[i:close], i, close))
                i = close
            elif word in _SPECIAL_STRING_PREFIXES and end < n and sql[end] == "'":
                close = _quoted_end(sql, end, "'", backslashes=word == "e")
                tokens.append(Token("string", sql[i:close], i, close))
                i = close
            else:
                tokens.append(Token("word", sql[i:end], i, end))
                i = end
        elif ch == ";":
            tokens.append(Token("semicolon", ";", i, i + 1))
            i += 1
        elif sql.startswith("::", i):
            tokens.append(Token("punct", "::", i, i + 2))
            i += 2
        elif ch in "()[],.":
            tokens.append(Token("punct", ch, i, i + 1))
            i += 1
        else:
            end = i + 1
            while end < n and sql[end] in "+-*/<>=~!@#%^&|`?:" and not sql.startswith(("--", "/*"), end):
                end += 1
            tokens.append(Token("op", sql[i:end], i, end))
            i = end
    return tokens


def _block_comment_end(sql: str, i: int) -> int:
    depth, i = 1, i + 2  # PostgreSQL block comments nest
    while depth:
        nxt_open, nxt_close = sql.find("/*", i), sql.find("*/", i)
        if nxt_close == -1:
            raise _LexError("an unterminated /* comment")
        if nxt_open != -1 and nxt_open < nxt_close:
            depth, i = depth + 1, nxt_open + 2
        else:
            depth, i = depth - 1, nxt_close + 2
    return i


def _quoted_end(sql: str, i: int, quote: str, *, backslashes: bool) -> int:
    """The index after the closing quote of the literal opened at sql[i]."""
    j, n = i + 1, len(sql)
    while j < n:
        ch = sql[j]
        if backslashes and ch == "\\":
            j += 2
        elif ch == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
            else:
                return j + 1
        else:
            j += 1
    raise _LexError(f"an unterminated {'string' if quote == chr(39) else 'quoted identifier'}")


def _dollar(sql: str, i: int, tokens: list[Token]) -> int:
    j = i + 1
    if j < len(sql) and sql[j].isdigit():
        while j < len(sql) and sql[j].isdigit():
            j += 1
        tokens.append(Token("param", sql[i:j], i, j))
        return j
    if j < len(sql) and _is_ident_start(sql[j]):
        while j < len(sql) and _is_ident_char(sql[j]) and sql[j] != "$":
            j += 1
    if j < len(sql) and sql[j] == "$":
        tag = sql[i:j + 1]
        close = sql.find(tag, j + 1)
        if close == -1:
            raise _LexError(f"an unterminated dollar quote {tag}")
        tokens.append(Token("string", sql[i:close + len(tag)], i, close + len(tag)))
        return close + len(tag)
    tokens.append(Token("op", "$", i, i + 1))
    return i + 1


def _number_end(sql: str, i: int) -> int:
    n = len(sql)
    digits = _BASE_DIGITS.get(sql[i:i + 2].lower())
    if digits and i + 2 < n and sql[i + 2].lower() in digits:  # 0x1F, 0o17, 0b101 (PostgreSQL 16)
        j = i + 2
        while j < n and (sql[j].lower() in digits or sql[j] == "_"):
            j += 1
        return j
    j = i
    while j < n and (sql[j].isdigit() or sql[j] == "_"):
        j += 1
    if j < n and sql[j] == "." and not sql.startswith("..", j):
        j += 1
        while j < n and (sql[j].isdigit() or sql[j] == "_"):
            j += 1
    if j < n and sql[j] in "eE":
        k = j + 1
        if k < n and sql[k] in "+-":
            k += 1
        if k < n and sql[k].isdigit():
            j = k
            while j < n and sql[j].isdigit():
                j += 1
    return j


def check_select(query: str) -> Accepted | str:
    """The query to send, or why it is refused (an error as a value, never raised)."""
    if not isinstance(query, str) or not query.strip():
        return 'needs a "query", a SELECT statement'
    try:
        tokens = tokenize(query)
    except _LexError as exc:
        return f"cannot be read: {exc}"
    while tokens and tokens[-1].kind == "semicolon":
        tokens.pop()
    statements = 1 + sum(1 for t in tokens if t.kind == "semicolon") if tokens else 0
    if statements != 1:
        return f"must be a single SELECT statement, found {statements} statements"
    first = next((t for t in tokens if t.text != "("), None)
    if first is None or first.word not in ("select", "with"):
        shown = first.text.upper() if first is not None and first.kind == "word" else "empty" if first is None else first.text
        return f"must be a SELECT (or WITH ... SELECT) statement, not {shown}"
    for token in tokens:
        if token.kind == "param":
            return f"has a parameter {token.text}: write the value into the query"
        if token.word in _REFUSED_WORDS:
            return f"uses {_REFUSED_WORDS[token.word]}: only a plain read-only SELECT is allowed"
    calls: list[int] = []
    for index, token in enumerate(tokens):
        if token.kind not in ("word", "quoted") or index + 1 >= len(tokens) or tokens[index + 1].text != "(":
            continue
        refused = _call_refusal(tokens, index)
        if refused == "":
            continue
        if refused is not None:
            return refused
        calls.append(index)
    return Accepted(statement=query[:tokens[-1].end].strip(), query=_rewrite(query, tokens, calls),
                    functions=tuple(tokens[i].name for i in calls))


def _call_refusal(tokens: list[Token], index: int) -> str | None:
    """For `name (` at tokens[index]: "" when it is no call, None for an allowed call, else why not."""
    token = tokens[index]
    first = index  # start of a qualified name a.b.c
    while first >= 2 and tokens[first - 1].text == "." and tokens[first - 2].kind in ("word", "quoted"):
        first -= 2
    before = tokens[first - 1] if first >= 1 else None
    after = tokens[index + 2] if index + 2 < len(tokens) else None
    if before is not None and (before.text == "::" or before.word == "as"):
        return ""  # a type modifier (x::numeric(10,2), CAST(x AS varchar(9))) or an alias's column list
    qualified = ".".join(t.name for t in tokens[first:index + 1:2])
    if first < index:
        return f"calls {qualified}(): schema-qualified function calls are refused"
    if token.kind == "word":
        word = token.word
        if word in _NOT_CALLS or word in _TYPE_KEYWORDS:
            return ""
        if word in _CONTEXTUAL and before is not None and (before.word or before.text) in _CONTEXTUAL[word]:
            return ""
        if word == "join" and after is not None and after.word in ("select", "with"):
            return ""  # JOIN (SELECT …)
        if before is not None and before.text == ")" and word not in ALLOWED_FUNCTIONS:
            return ""  # FROM (VALUES …) v(a, b): an alias's column list
    name = token.name
    if name.lower().startswith("pg_"):
        return f"calls {name}(): pg_* functions are never allowed"
    if name not in ALLOWED_FUNCTIONS:
        return (f"calls {name}(), which is not in the allow-list of pure functions "
                f"({', '.join(ALLOWED_FUNCTIONS)})")
    return None


def _rewrite(query: str, tokens: list[Token], calls: list[int]) -> str:
    """The statement without trailing semicolons, with allowed functions qualified by pg_catalog."""
    end = tokens[-1].end
    pieces: list[str] = []
    position = 0
    for index in calls:
        token = tokens[index]
        if token.name in _SYNTAX_FUNCTIONS:
            continue
        pieces.append(query[position:token.start])
        pieces.append(f"pg_catalog.{token.name}")
        position = token.end
    pieces.append(query[position:end])
    return "".join(pieces).strip()
