"""Sandbox text is data, never a channel: secret values out of every text the builder keeps or sends.

Text from a sandbox (its output, the requests it made), from the model (code, the overseer's
reason) or from an unexpected exception may carry the value of a secret the builder knows, and
control characters that rewrite a terminal or a log viewer. Every sink (the store's writes, log
lines, notifications, command output, the one-tap page) passes its text through one Redactor:

* the value of every secret the builder knows is replaced by ``[redacted]``, wherever it appears,
  case-insensitively and also in its URL-encoded (any percent-encoding, up to three times), JSON-
  and HTML-escaped forms. Values shorter than MIN_SECRET_CHARS are not treated as secrets: they
  would shred ordinary text (a four-letter password redacted in every word that contains it).
  Vault token shapes (``hvs.…``, ``hvb.…``, ``s.`` + 24) are redacted even when nobody registered
  them: a sandbox's own login makes tokens the builder never sees;
* control characters other than newline and tab (C0, DEL, C1: ANSI escapes start with ESC or
  CSI), Unicode format characters (bidi overrides and isolates, zero-width characters, the BOM),
  line/paragraph separators and lone surrogates become visible escapes: ``\\x1b``, ``\\u202e``.

The secrets: the sandbox and production AppRole role-id and secret-id (read from their files,
re-read when a file changes: a stat on every use, and a fresh read at least every REREAD_S; a
rotated value stays a secret), the settings that are secrets (config.SECRET_FIELDS: the ntfy
token, APPROVAL_SECRET, and any later one added there), the passwords in DATABASE_URL and
SANDBOX_DATABASE_URL (URI and key=value forms) and PGPASSWORD, and what the builder obtains at
run time (Vault tokens, the values it reads from Vault), registered with add().

What it cannot do: recognise a secret the code transformed (base64, reversed, split in two, cut by
a length limit) or one it never knew (a value the automation fetched from Vault itself).
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

from psycopg.conninfo import conninfo_to_dict

from listener.config import SECRET_FIELDS, URL_FIELDS_WITH_PASSWORDS, Settings

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 6
MAX_RUNTIME_SECRETS = 512  # Vault tokens and values read at run time; the oldest are forgotten first
REREAD_S = 5.0  # AppRole files are read again at least this often, even when stat shows no change
APPROLE_FILES = ("role-id", "secret-id")
ONE_LINE_CHARS = 500

# Vault tokens by shape (case-sensitive): service/batch/recovery tokens (hvs./hvb./hvr.) and the
# legacy s.<24> (mixed case with a digit, as preflight's secret scan has it).
TOKEN_SHAPES = (r"(?-i:\bhv[sbr]\.[A-Za-z0-9_-]{20,}"
                r"|(?<![\w.])[sbr]\.(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])[A-Za-z0-9]{24}\b)")
# Runs of non-space text holding percent escapes: decoded and searched for secrets.
PERCENT_RUN = re.compile(r"[^\s%]*(?:%[0-9A-Fa-f]{2}[^\s%]*)+")
# Characters that are escaped: C0 controls except \t and \n, DEL, C1 controls, the format (Cf),
# line/paragraph separator (Zl, Zp) and surrogate (Cs) code points. tests/unit/test_redact.py
# checks this class against unicodedata for every code point.
UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)
CODE_UNSAFE = re.compile("[\x00\ud800-\udfff]")  # what no text column can hold (NUL, lone surrogates)


@dataclass(frozen=True)
class Secret:
    value: str
    kind: str  # what it is, for people: 'sandbox AppRole secret-id', 'APPROVAL_SECRET', …


def escape_controls(text: str) -> str:
    """Every unsafe character as a visible escape (\\x1b, \\u202e, \\U000e0041); \\n and \\t stay."""
    return UNSAFE.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    point = ord(match.group(0))
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def connection_passwords(conninfo: str) -> list[str]:
    """The password(s) a libpq connection string carries, as written and as libpq reads them
    (URI userinfo, ?password=…, key=value with quotes and backslash escapes)."""
    found: list[str] = []
    if "://" in conninfo:
        try:
            parts = urlsplit(conninfo)
            if parts.password:
                found += [parts.password, unquote(parts.password)]
            found += [value for key, value in parse_qsl(parts.query) if key == "password"]
        except ValueError:
            pass
    else:
        for match in re.finditer(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", conninfo):
            raw = match.group(1)
            found.append(raw)
            if raw.startswith("'"):
                found.append(re.sub(r"\\(.)", r"\1", raw[1:-1]))
    try:
        password = conninfo_to_dict(conninfo).get("password")
        if password:
            found.append(str(password))
    except Exception:  # noqa: BLE001 - a string libpq cannot parse: what was found above stands
        pass
    return list(dict.fromkeys(value for value in found if value))


def _forms(value: str) -> set[str]:
    """The value and the encodings of it that cost nothing to look for."""
    return {value, json.dumps(value)[1:-1], html.escape(value, quote=True), html.escape(value, quote=False),
            quote(value, safe=""), quote(value), quote_plus(value)}


@dataclass(frozen=True)
class _Compiled:
    secrets: tuple[Secret, ...]
    pattern: re.Pattern[str]


@dataclass
class _FileState:
    signature: tuple[int, ...] | None
    secret: Secret | None
    read_at: float


@dataclass
class Redactor:
    """Knows the secrets; redact() makes any text safe to store, log, print or send.

    Thread-safe: the secrets are an immutable snapshot swapped under a lock when they change.
    """

    fixed: tuple[Secret, ...] = ()
    approle_dirs: tuple[tuple[Path, str], ...] = ()  # (directory, 'sandbox' or 'production')
    min_chars: int = MIN_SECRET_CHARS
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _runtime: "OrderedDict[str, str]" = field(default_factory=OrderedDict, repr=False, compare=False)
    _files: dict[Path, _FileState] = field(default_factory=dict, repr=False, compare=False)
    _compiled: _Compiled | None = field(default=None, repr=False, compare=False)
    _approle_files: tuple[tuple[Path, str, str], ...] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> "Redactor":
        """Every secret the settings name; the AppRole files are read (and re-read) when used."""
        env = os.environ if environ is None else environ
        fixed: list[Secret] = []
        for name in sorted(SECRET_FIELDS):
            value = getattr(settings, name, None)
            if isinstance(value, str) and value:
                fixed.append(Secret(value, name.upper()))
        for name in sorted(URL_FIELDS_WITH_PASSWORDS):
            url = getattr(settings, name, None)
            if isinstance(url, str) and url:
                fixed += [Secret(password, f"the password in {name.upper()}") for password in connection_passwords(url)]
        if env.get("PGPASSWORD"):
            fixed.append(Secret(env["PGPASSWORD"], "PGPASSWORD"))
        dirs = ((settings.vault_approle_dir, "sandbox"), (settings.prod_vault_approle_dir, "production"))
        return cls(fixed=tuple(fixed), approle_dirs=dirs)

    # -- what it knows ---------------------------------------------------------------------------
    def add(self, value: str | None, kind: str) -> None:
        """Register a secret obtained at run time (a Vault token, a value read from Vault)."""
        if not value or len(value) < self.min_chars:
            return
        with self._lock:
            if self._remember(value, kind):
                self._compiled = None

    def _remember(self, value: str, kind: str) -> bool:
        """Called with the lock held; True when the value is new."""
        if value in self._runtime:
            self._runtime.move_to_end(value)
            return False
        self._runtime[value] = kind
        while len(self._runtime) > MAX_RUNTIME_SECRETS:
            self._runtime.popitem(last=False)
        return True

    def secrets(self) -> tuple[Secret, ...]:
        """The secrets known right now (AppRole files checked first)."""
        return self._current().secrets

    def snapshot(self) -> "Redactor":
        """A redactor fixed on the secrets known now: many texts of one record (a notification,
        a row, a tree) redacted for one look at the AppRole files instead of one per text."""
        return _Snapshot(self, self._current())

    # -- the sinks' functions --------------------------------------------------------------------
    def redact(self, text: Any) -> str:
        """Secrets replaced, control characters escaped: for logs, stored logs, messages, output."""
        return escape_controls(self.replace_secrets(text))

    def redact_code(self, text: str | None) -> str | None:
        """For code and prompts, which are kept as written: secrets replaced; only what a text
        column cannot hold (NUL, lone surrogates) is escaped."""
        if text is None:
            return None
        return CODE_UNSAFE.sub(_escape_char, self.replace_secrets(text))

    def one_line(self, text: Any, limit: int = ONE_LINE_CHARS) -> str:
        """Redacted, on one line, at most `limit` characters: a reason in a notification.
        Redaction comes first, so a cut never leaves half a secret."""
        flat = " ".join(self.redact(text).split()) or "(no detail)"
        return flat if len(flat) <= limit else flat[: limit - 1] + "…"

    def redact_tree(self, value: Any) -> Any:
        """redact() on every string of a JSON-like value (dict keys too); other values unchanged."""
        if isinstance(value, str):
            return self.redact(value)
        return self.snapshot()._tree(value)

    def redact_record(self, value: Mapping[str, Any]) -> dict[str, Any]:
        """redact_tree() of one mapping (a row, a report)."""
        return self.snapshot()._record(value)

    def redact_rows(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """redact_tree() of rows."""
        snapshot = self.snapshot()
        return [snapshot._record(row) for row in rows]

    def _tree(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return self._record(value)
        if isinstance(value, (list, tuple)):
            return [self._tree(item) for item in value]
        return value

    def _record(self, value: Mapping[str, Any]) -> dict[str, Any]:
        return {self.redact(k) if isinstance(k, str) else k: self._tree(v) for k, v in value.items()}

    def replace_secrets(self, text: Any) -> str:
        shown = "" if text is None else str(text)
        if not shown:
            return shown
        pattern = self._current().pattern
        if "%" in shown:
            shown = PERCENT_RUN.sub(lambda m: self._decoded_run(m.group(0), pattern), shown)
        return pattern.sub(REDACTED, shown)

    @staticmethod
    def _decoded_run(run: str, pattern: re.Pattern[str]) -> str:
        """A percent-encoded run that hides a secret comes back decoded, with the secret redacted."""
        for decode in (unquote, unquote_plus):
            decoded = run
            for _ in range(3):  # encoded up to three times over
                step = decode(decoded)
                if step == decoded:
                    break
                decoded = step
                if pattern.search(decoded):
                    return pattern.sub(REDACTED, decoded)
        return run

    # -- the snapshot ----------------------------------------------------------------------------
    def _current(self) -> _Compiled:
        with self._lock:
            if self._check_files() or self._compiled is None:
                secrets = [*self.fixed, *(s.secret for s in self._files.values() if s.secret is not None),
                           *(Secret(value, kind) for value, kind in self._runtime.items())]
                self._compiled = _compile(secrets, self.min_chars)
            return self._compiled

    def _check_files(self) -> bool:
        """Stat every AppRole file; read the ones that changed (or were read REREAD_S ago).
        Called with the lock held."""
        changed = False
        now = time.monotonic()
        if self._approle_files is None:
            self._approle_files = tuple((Path(directory) / name, role, name)
                                        for directory, role in self.approle_dirs for name in APPROLE_FILES)
        for path, role, name in self._approle_files:
            signature = _signature(path)
            state = self._files.get(path)
            if state is not None and state.signature == signature and now - state.read_at < REREAD_S:
                continue
            secret = _read_secret(path, f"{role} AppRole {name}") if signature is not None else None
            if state is None or state.secret != secret:
                changed = True
                if state is not None and state.secret is not None:  # rotated: the old value stays a secret
                    self._remember(state.secret.value, f"previous {state.secret.kind}")
            self._files[path] = _FileState(signature, secret, now)
        return changed


class _Snapshot(Redactor):
    """Redactor.snapshot(): the secrets of one moment. A secret added through it reaches the
    redactor it came from (and this snapshot)."""

    def __init__(self, origin: Redactor, compiled: _Compiled) -> None:
        super().__init__(min_chars=origin.min_chars)
        self._origin = origin
        self._compiled = compiled

    def _current(self) -> _Compiled:
        assert self._compiled is not None
        return self._compiled

    def snapshot(self) -> Redactor:
        return self

    def add(self, value: str | None, kind: str) -> None:
        self._origin.add(value, kind)
        self._compiled = self._origin._current()


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_secret(path: Path, kind: str) -> Secret | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return Secret(value, kind) if value else None


def _compile(secrets: Iterable[Secret], min_chars: int) -> _Compiled:
    kept = tuple(s for s in dict.fromkeys(secrets) if len(s.value) >= min_chars)
    forms = sorted({form for s in kept for form in _forms(s.value)}, key=lambda f: (-len(f), f))
    alternatives = [re.escape(form) for form in forms] + [TOKEN_SHAPES]
    return _Compiled(secrets=kept, pattern=re.compile("|".join(alternatives), re.IGNORECASE))
