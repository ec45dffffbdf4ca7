"""The review page: a small server-rendered web UI on the one-tap endpoint's server (WEB_ADDR).

- `/` the overview: counts by builder_status, awaiting approval with their age, builds in flight
  with step and age, the live listeners, recent failures.
- `/a/<id>` one automation: spec, timeline, the generated files (highlighted), the diff against
  the version in production, each level's log, the acceptance checks with both evaluations, the
  overseer's verdict with tokens and cost, and Approve / Reject / Retry buttons.
- `POST /a/<id>/<approve|reject|retry>` the operator's UPDATE (listener/ops/commands.py
  `operator_change`, as the CLI), through the operator session, bound to the build the page showed,
  CSRF-protected.

Who may see and press what (`Access`): a signed, expiring review link (action 'view', the one-tap
HMAC scheme, listener/approval/links.py) authorises the page of its automation and build and its
buttons only. Everything else needs WEB_TOKEN (Authorization: Bearer or Basic, the header
X-Agent-Builder-Token, or the cookie set by /login) when one is set; without one the server must
be bound to loopback (`exposure_problem`, checked before the listener starts) and a request that
came through a proxy (X-Forwarded-For, Forwarded, X-Real-IP) is refused.

Every text read from the database goes through the Redactor (inspect.show_report/status_report do
it) and every page is rendered by Jinja2 with autoescape: sandbox and model output is data."""

from __future__ import annotations

import base64
import binascii
import difflib
import enum
import gzip
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from email.message import Message
from importlib import resources
from typing import Any, Mapping
from urllib.parse import parse_qs, quote, urlsplit

import psycopg
from jinja2 import Environment, PackageLoader, StrictUndefined
from loguru import logger
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_for_filename, guess_lexer
from pygments.util import ClassNotFound

from listener.approval.links import VIEW, ApprovalServer, Link, LinkError, verify
from listener.config import Settings
from listener.httpserver import Limits, Response, TextHandler, is_loopback, split_address
from listener.ops import inspect
from listener.ops.commands import operator_change
from listener.queue.db import OperatorSessionError, Queries
from listener.queue.registry import live_listeners
from listener.queue.store import Store
from listener.redact import Redactor

COOKIE = "agent_builder_web"
TOKEN_HEADER = "X-Agent-Builder-Token"
FORWARDED_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
CSRF_TTL_S = 2 * 3600
MAX_FORM_BYTES = 16 * 1024
HIGHLIGHT_CACHE = 64  # highlighted files kept (the key is the path and the content's sha256)
HIGHLIGHT_MAX_CHARS = 256 * 1024  # a larger file is shown as plain (escaped) text
LOG_MAX_CHARS = 64 * 1024  # of each level's log on the page (the rest: agent-builder show)
GZIP_MIN_BYTES = 1024
LIVE_REFRESH_S = 10
RECENT_FAILURES = 10
AWAITING_LIMIT = 50
PAGE_PATH = re.compile(r"^/a/(\d{1,18})$")
ACTION_PATH = re.compile(r"^/a/(\d{1,18})/(approve|reject|retry)$")
STATIC = {"style.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),  # a review link's key never leaves in a Referer
    ("X-Frame-Options", "DENY"),
)


class WebSetupError(RuntimeError):
    """The review server cannot start as configured; the message says what to set."""


def serves_web(settings: Settings) -> bool:
    """The review server runs when one-tap links (APPROVAL_SECRET) or WEB_TOKEN are configured."""
    return bool(settings.approval_secret or settings.web_token)


def exposure_problem(settings: Settings) -> str | None:
    """Why the review server must not start: the overview has no WEB_TOKEN and the address is not
    loopback. None when it may."""
    if not serves_web(settings) or settings.web_token:
        return None
    host, port = split_address(settings.approval_addr)
    if is_loopback(host):
        return None
    return (f"WEB_ADDR={settings.approval_addr} is not a loopback address and WEB_TOKEN is not set: the review "
            "overview would be open to everyone who can reach it. Set WEB_TOKEN (at least 16 characters; e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(24))') or bind WEB_ADDR to 127.0.0.1:" f"{port}")


# -- who may see and press what -----------------------------------------------------------------

class AccessKind(enum.Enum):
    TOKEN = "token"  # WEB_TOKEN given: everything
    LOOPBACK = "loopback"  # no WEB_TOKEN, a loopback-only server: everything
    LINK = "link"  # a signed review link: one automation's page for one build, and its buttons


@dataclass(frozen=True)
class Access:
    kind: AccessKind
    link: Link | None = None
    key: str | None = None  # the link's token, carried by the page's forms

    @property
    def everything(self) -> bool:
        return self.kind is not AccessKind.LINK

    @property
    def identity(self) -> str:
        """What the CSRF token is bound to."""
        return f"link:{self.link.nonce}" if self.link is not None else self.kind.value

    @property
    def actor(self) -> str:
        return "web-link" if self.kind is AccessKind.LINK else "web"


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    login: bool = False  # offer /login (and ask for basic auth)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Message
    form: Mapping[str, str] = field(default_factory=dict)
    client: str | None = None

    @property
    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, eq, value = part.strip().partition("=")
            if eq:
                jar[name] = value
        return jar


def loopback_host(host_header: str | None) -> bool:
    """Whether a Host header names this machine's loopback (a literal address or localhost)."""
    if not host_header:
        return False
    text = host_header.strip().lower()
    host = text[1:text.index("]")] if text.startswith("[") and "]" in text else text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return host == "localhost." or is_loopback(host)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Gate:
    """Decides access and makes and checks CSRF tokens. `csrf_key` is derived from APPROVAL_SECRET
    when set (tokens survive a restart), else random per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        secret = settings.approval_secret
        self.csrf_key = (hmac.new(secret.encode(), b"agent-builder review page csrf", hashlib.sha256).digest()
                         if secret else secrets.token_bytes(32))
        self.cookie_value = (hmac.new(settings.web_token.encode(), b"agent-builder review page cookie",
                                      hashlib.sha256).hexdigest() if settings.web_token else None)

    # who is asking
    def operator(self, request: Request) -> Access | Refusal:
        token = self.settings.web_token
        if token is None:
            if any(request.headers.get(name) for name in FORWARDED_HEADERS):
                return Refusal(403, "forbidden: this request came through a proxy and WEB_TOKEN is not set; set WEB_TOKEN "
                                    "to serve the overview beyond this machine")
            if not loopback_host(request.headers.get("Host")):  # DNS rebinding: another site's name for 127.0.0.1
                return Refusal(403, "forbidden: without WEB_TOKEN the overview answers only to a loopback Host "
                                    "(127.0.0.1, [::1], localhost); set WEB_TOKEN to serve it under another name")
            return Access(AccessKind.LOOPBACK)
        if self._has_token(request, token):
            return Access(AccessKind.TOKEN)
        return Refusal(401, "the overview needs WEB_TOKEN: log in, or send it as a bearer token, with basic auth, "
                            f"or in the {TOKEN_HEADER} header", login=True)

    def _has_token(self, request: Request, token: str) -> bool:
        given: list[str] = []
        auth = request.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            given.append(value.strip())
        elif scheme.lower() == "basic":
            try:
                given.append(base64.b64decode(value.strip(), validate=True).decode().partition(":")[2])
            except (binascii.Error, UnicodeDecodeError):
                pass
        if request.headers.get(TOKEN_HEADER):
            given.append(str(request.headers.get(TOKEN_HEADER)))
        if any(hmac.compare_digest(g.encode(), token.encode()) for g in given):
            return True
        cookie = request.cookies.get(COOKIE)
        return bool(cookie and self.cookie_value and hmac.compare_digest(cookie.encode(), self.cookie_value.encode()))

    def page(self, request: Request, automation_id: int, key: str | None) -> Access | Refusal:
        """A page (and its buttons): a review link when one is given (and then only that one),
        else what the overview needs."""
        if key is None:
            return self.operator(request)
        if not self.settings.approval_secret:
            return Refusal(403, "forbidden: review links are not set up (APPROVAL_SECRET)")
        try:
            link = verify(self.settings.approval_secret, key, actions=(VIEW,))
        except LinkError as exc:
            return Refusal(403, f"forbidden: {exc}")
        if link.automation_id != automation_id:
            return Refusal(403, "forbidden: this link is for another automation's page")
        return Access(AccessKind.LINK, link=link, key=key)

    # CSRF: a token the page's forms carry, bound to who sees it, the automation and the build
    def csrf(self, access: Access, automation_id: int, build_id: int, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + CSRF_TTL_S)
        if access.link is not None:
            expires = min(expires, access.link.expires)
        return f"{expires}.{self._csrf_mac(access, automation_id, build_id, expires)}"

    def csrf_ok(self, access: Access, automation_id: int, build_id: int, token: str | None) -> bool:
        if not token:
            return False
        expires_text, _, mac = token.partition(".")
        if not expires_text.isdigit() or int(expires_text) < time.time():
            return False
        expected = self._csrf_mac(access, automation_id, build_id, int(expires_text))
        return hmac.compare_digest(mac.encode(), expected.encode())

    def _csrf_mac(self, access: Access, automation_id: int, build_id: int, expires: int) -> str:
        scope = f"csrf|{access.identity}|{automation_id}|{build_id}|{expires}".encode()
        return _b64(hmac.new(self.csrf_key, scope, hashlib.sha256).digest())


# -- what the pages show ------------------------------------------------------------------------

@dataclass(frozen=True)
class FileView:
    path: str
    html: Markup
    lines: int


@dataclass(frozen=True)
class DiffView:
    production_build: int | None  # None: nothing in production yet
    identical: bool
    lines: tuple[tuple[str, str], ...]  # (css class, text)


@dataclass(frozen=True)
class LevelView:
    level: int
    status: str  # pass, fail, not run
    duration_ms: int | None
    log: str
    cut: bool
    evaluations: tuple[str, ...] = ()


_FORMATTER = HtmlFormatter(cssclass="hl", nowrap=False)


def highlighted(path: str, content: str) -> FileView:
    """One generated file as highlighted HTML (Pygments escapes it); plain escaped text when it is
    too large to highlight quickly."""
    lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
    if len(content) > HIGHLIGHT_MAX_CHARS:
        return FileView(path, Markup("<pre>") + content + Markup("</pre>"), lines)
    try:
        lexer = get_lexer_for_filename(path.rsplit("/", 1)[-1], stripnl=False)
    except ClassNotFound:
        try:
            lexer = guess_lexer(content, stripnl=False)
        except ClassNotFound:
            lexer = TextLexer(stripnl=False)
    return FileView(path, Markup(highlight(content, lexer, _FORMATTER)), lines)


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=2)


def file_diff(production: Mapping[str, Any] | None, production_build: int | None, files: Mapping[str, Any],
              build_id: int) -> DiffView:
    """A unified diff of every file (difflib), production first."""
    if production is None:
        return DiffView(None, False, ())
    out: list[tuple[str, str]] = []
    for path in sorted(set(production) | set(files)):
        old = _text(production[path]).splitlines() if path in production else []
        new = _text(files[path]).splitlines() if path in files else []
        for line in difflib.unified_diff(old, new, f"production (build {production_build})/{path}",
                                         f"build {build_id}/{path}", lineterm=""):
            kind = ("file" if line.startswith(("---", "+++")) else "hunk" if line.startswith("@@")
                    else "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx")
            out.append((kind, line))
    return DiffView(production_build, not out, tuple(out))


def level_views(results: list[dict[str, Any]], build_id: int | None) -> list[LevelView]:
    """Levels 1-4 of the build (its latest result of each), 'not run' where none; a Level 0 result
    (a failure outside the levels) first when there is one."""
    latest: dict[int, dict[str, Any]] = {}
    for r in results:
        if build_id is not None and r["build_id"] == build_id:
            latest[int(r["test_level"])] = r
    views = []
    for level in ([0] if 0 in latest else []) + [1, 2, 3, 4]:
        found = latest.get(level)
        if found is None:
            views.append(LevelView(level, "not run", None, "", False))
            continue
        r = found
        log = r["execution_log"] or ""
        evaluations = tuple(inspect.level_4_evaluations(log)) if level == 4 else ()
        views.append(LevelView(level, r["status"], r["duration_ms"], log[:LOG_MAX_CHARS], len(log) > LOG_MAX_CHARS,
                               evaluations))
    return views


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None and hasattr(value, "strftime") else "-"


def templates() -> Environment:
    env = Environment(loader=PackageLoader("listener.approval", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["age"] = inspect.age
    env.filters["when"] = _when
    env.filters["json"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return env


def stylesheet() -> bytes:
    """The package's style.css and Pygments' classes for the highlighting, one file."""
    own = resources.files("listener.approval").joinpath("static/style.css").read_text(encoding="utf-8")
    pygments_css: str = _FORMATTER.get_style_defs(".hl")
    return (own + "\n" + pygments_css + "\n").encode()


# -- the application ----------------------------------------------------------------------------

Connection = psycopg.Connection[dict[str, Any]]


class ReviewApp:
    """Request → Response for everything but /decide/ (the one-tap links). Database work goes
    through `server.with_sessions` (the approval server's connections, one request at a time)."""

    def __init__(self, server: ApprovalServer, settings: Settings, queries: Queries, redactor: Redactor) -> None:
        self.server = server
        self.settings = settings
        self.queries = queries
        self.redactor = redactor
        self.gate = Gate(settings)
        self.env = templates()
        self.css = stylesheet()
        self.css_etag = '"' + hashlib.sha256(self.css).hexdigest()[:16] + '"'
        self._highlighted: OrderedDict[str, FileView] = OrderedDict()  # a build's files never change
        self._highlight_lock = threading.Lock()

    def highlighted(self, path: str, content: str) -> FileView:
        """highlighted(), remembered for the last HIGHLIGHT_CACHE files (Pygments takes tens of ms
        for a file of a few hundred lines; a page is opened again and again while it waits)."""
        key = hashlib.sha256(f"{path}\0{content}".encode()).hexdigest()
        with self._highlight_lock:
            if (cached := self._highlighted.get(key)) is not None:
                self._highlighted.move_to_end(key)
                return cached
        view = highlighted(path, content)
        with self._highlight_lock:
            self._highlighted[key] = view
            while len(self._highlighted) > HIGHLIGHT_CACHE:
                self._highlighted.popitem(last=False)
        return view

    # routing
    def handle(self, request: Request) -> Response:
        try:
            response = self._route(request)
        except OperatorSessionError as exc:
            response = self._message(503, f"the review page cannot decide: {exc}")
        except psycopg.OperationalError:
            response = self._message(503, "the database is unreachable; try again")
        except psycopg.Error as exc:  # an unmigrated database, say: one line, never a traceback
            logger.warning("review page: database error: {}", self.redactor.one_line(str(exc)))
            response = self._message(500, f"database error: {exc.diag.message_primary or type(exc).__name__}")
        return self._finish(request, response)

    def _route(self, request: Request) -> Response:
        path = request.path
        if request.method in ("GET", "HEAD"):
            if path == "/":
                return self._overview(request)
            if (page := PAGE_PATH.match(path)) is not None:
                return self._page(request, int(page.group(1)))
            if path == "/login":
                return self._render(200, "login.html", {"problem": None})
            if path.startswith("/static/") and path[len("/static/"):] in STATIC:
                return self._static(request, path[len("/static/"):])
            return self._message(404, "not found")
        if request.method == "POST":
            if (action := ACTION_PATH.match(path)) is not None:
                return self._act(request, int(action.group(1)), action.group(2))
            if path == "/login":
                return self._login(request)
        return self._message(403, "forbidden")

    def _finish(self, request: Request, response: Response) -> Response:
        headers = list(response.headers) + list(SECURITY_HEADERS)
        if not any(name == "Cache-Control" for name, _ in response.headers):
            headers.append(("Cache-Control", "no-store"))
        body = response.body
        if len(body) >= GZIP_MIN_BYTES and "gzip" in (request.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers += [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
        return Response(response.status, body, response.content_type, tuple(headers))

    def _render(self, status: int, template: str, context: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Response:
        html = self.env.get_template(template).render({"live_refresh": None, **context})
        return Response(status, html.encode(), headers=headers)

    def _message(self, status: int, text: str, *, login: bool = False) -> Response:
        # a Bearer challenge: browsers show the page (its /login form) instead of their own prompt;
        # basic auth sent by a client or a proxy is still accepted
        headers = (("WWW-Authenticate", 'Bearer realm="agent-builder"'),) if status == 401 else ()
        return self._render(status, "message.html", {"status": status, "text": self.redactor.redact(text), "login": login},
                            headers)

    def _refused(self, refusal: Refusal) -> Response:
        logger.info("review page refused: {}", refusal.message)
        return self._message(refusal.status, refusal.message, login=refusal.login)

    def _static(self, request: Request, name: str) -> Response:
        headers = (("Cache-Control", "public, max-age=86400"), ("ETag", self.css_etag))
        if request.headers.get("If-None-Match") == self.css_etag:
            return Response(304, b"", STATIC[name], headers)
        return Response(200, self.css, STATIC[name], headers)

    # the overview
    def _overview(self, request: Request) -> Response:
        access = self.gate.operator(request)
        if isinstance(access, Refusal):
            return self._refused(access)

        def read(conn: Connection, _operator: Connection | None) -> dict[str, Any]:
            status = inspect.status_report(conn, self.queries, self.redactor, failures=RECENT_FAILURES)
            awaiting = Store(conn, self.queries).awaiting_approval(AWAITING_LIMIT)
            listeners = [asdict(item) for item in live_listeners(conn, self.queries)]
            return {**status, "awaiting": self.redactor.redact_tree(awaiting),
                    "listeners": self.redactor.redact_tree(listeners)}

        data = self.server.with_sessions(read, operator=False)
        live = request.query.get("live") == "1"
        return self._render(200, "overview.html", {**data, "live": live,
                                                   "live_refresh": LIVE_REFRESH_S if live else None})

    # one automation
    def _page(self, request: Request, automation_id: int, notice: str | None = None, notice_ok: bool = True,
              status: int = 200) -> Response:
        key = request.query.get("k") or request.form.get("k") or None
        access = self.gate.page(request, automation_id, key)
        if isinstance(access, Refusal):
            return self._refused(access)
        view = self.server.with_sessions(lambda conn, _op: self._read_page(conn, automation_id, access), operator=False)
        if isinstance(view, Refusal):
            return self._refused(view)
        if view is None:
            return self._message(404, f"there is no automation with id {automation_id}")
        buttons = []
        if view["attempt_id"] is not None and view["points_here"]:
            csrf = self.gate.csrf(access, automation_id, view["attempt_id"])
            state = view["automation"]["builder_status"]
            if state == "awaiting_approval":
                buttons = [("approve", "Approve", csrf), ("reject", "Reject", csrf)]
            elif state in ("failed", "rejected"):
                buttons = [("retry", "Retry", csrf)]
        live = request.query.get("live") == "1"
        here = f"/a/{automation_id}" + (f"?k={quote(key)}" if key else "")
        return self._render(status, "automation.html", {
            **view, "access": access, "buttons": buttons, "key": key, "notice": notice, "notice_ok": notice_ok,
            "here": here, "live": live, "live_refresh": LIVE_REFRESH_S if live else None,
        })

    def _read_page(self, conn: Connection, automation_id: int, access: Access) -> dict[str, Any] | Refusal | None:
        link_build = access.link.build_id if access.link is not None else None
        report = inspect.show_report(conn, self.queries, automation_id, self.redactor)
        if report is None:
            return Refusal(403, "forbidden") if access.link is not None else None
        store = Store(conn, self.queries)
        target = store.review_build(automation_id, link_build)
        if target is None and link_build is not None:
            return Refusal(403, "forbidden: this link's build is not this automation's")
        automation = report["automation"]
        attempt_id = target["attempt_id"] if target else None
        build_id = target["build_id"] if target else None
        build = next((b for b in report["attempts"] if b["build_id"] == build_id), None)
        files: dict[str, Any] = (build or {}).get("files") or {}
        production = store.production_build(automation_id)
        production = self.redactor.redact_tree(production) if production else None
        diff = (file_diff(production["files"] or {} if production else None,
                          production["build_id"] if production else None, files, build_id)
                if build_id is not None else None)
        return {
            "automation": automation, "history": report["history"], "build": build, "build_id": build_id,
            "attempt_id": attempt_id, "points_here": attempt_id is not None and automation["builder_build_id"] == attempt_id,
            "files": [self.highlighted(path, _text(files[path])) for path in sorted(files)],
            "diff": diff, "production": production,
            "levels": level_views(report["results"], build_id),
            "usage": inspect.overseer_usage(build) if build and build.get("overseer_verdict") else None,
            "acceptance": (build or {}).get("acceptance_check") or automation.get("acceptance_check"),
            "attempts": report["attempts"],
        }

    # the buttons
    def _act(self, request: Request, automation_id: int, command: str) -> Response:
        key = request.form.get("k") or None
        access = self.gate.page(request, automation_id, key)
        if isinstance(access, Refusal):
            return self._refused(access)
        build_text = request.form.get("build", "")
        if not build_text.isdigit():
            return self._page(request, automation_id, "nothing was changed: the form names no build", False, 400)
        build_id = int(build_text)
        if access.link is not None and not self._link_covers(automation_id, access.link, build_id):
            return self._refused(Refusal(403, "forbidden: this link does not cover that build"))
        if not self.gate.csrf_ok(access, automation_id, build_id, request.form.get("csrf")):
            logger.warning("review page: {} of automation {} refused: missing or invalid CSRF token", command, automation_id)
            return self._page(request, automation_id, "nothing was changed: the form's CSRF token is missing, invalid or "
                                                       "expired; reload the page and press again", False, 403)

        def decide(_conn: Connection, operator: Connection | None) -> Any:
            assert operator is not None
            store = Store(operator, self.queries)
            store.set_actor(access.actor)
            try:
                return operator_change(operator, self.queries, command, automation_id, build_id)
            finally:
                store.set_actor("one-tap")

        change = self.server.with_sessions(decide)
        if change.done:
            logger.bind(automation_id=automation_id).info("review page: {} of build {} ({})", command, build_id,
                                                          access.kind.value)
        else:
            logger.bind(automation_id=automation_id).info("review page: {} of build {} refused: {}", command, build_id,
                                                          self.redactor.one_line(change.message))
        return self._page(request, automation_id, self.redactor.redact(change.message), change.done,
                          200 if change.done else 409)

    def _link_covers(self, automation_id: int, link: Link, build_id: int) -> bool:
        """A link's buttons act on the attempt of the link's build (the build itself, or the
        deployment the row now points at for it)."""
        if build_id == link.build_id:
            return True
        row = self.server.with_sessions(lambda conn, _op: Store(conn, self.queries).review_build(automation_id, build_id),
                                        operator=False)
        return row is not None and row["build_id"] == link.build_id

    # logging in with WEB_TOKEN (a cookie for browsers)
    def _login(self, request: Request) -> Response:
        token = self.settings.web_token
        given = request.form.get("token", "")
        if token is None:
            return self._message(404, "WEB_TOKEN is not set: nothing to log in to")
        if not hmac.compare_digest(given.encode(), token.encode()):
            logger.info("review page: a wrong WEB_TOKEN was given at /login")
            return self._render(401, "login.html", {"problem": "that is not the WEB_TOKEN"})
        secure = ((self.settings.approval_base_url or "").startswith("https:")
                  or request.headers.get("X-Forwarded-Proto") == "https")
        assert self.gate.cookie_value is not None
        cookie = (f"{COOKIE}={self.gate.cookie_value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=604800"
                  + ("; Secure" if secure else ""))
        return Response(303, b"", "text/plain; charset=utf-8", (("Location", "/"), ("Set-Cookie", cookie)))


class ReviewServer(ApprovalServer):
    """The one-tap endpoint (POST /decide/<token>) and the review pages, one bounded server on
    WEB_ADDR. Refuses to be made when `exposure_problem` names one."""

    def __init__(self, settings: Settings, dsn: str, queries: Queries, redactor: Redactor | None = None,
                 limits: Limits = Limits()) -> None:
        problem = exposure_problem(settings)
        if problem is not None:
            raise WebSetupError(problem)
        super().__init__(settings, dsn, queries, redactor, limits)
        self.app = ReviewApp(self, settings, queries, self.redactor)

    def start(self) -> None:
        super().start()
        logger.info("review pages on {} ({})", self.http.address,
                    "overview with WEB_TOKEN" if self.settings.web_token else "overview for this machine only, no WEB_TOKEN")

    def _handler(self) -> type[TextHandler]:
        outer = self
        base = super()._handler()

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if urlsplit(self.path).path.startswith("/decide/"):
                    super().do_GET()
                    return
                self._serve("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve("HEAD")

            def do_POST(self) -> None:  # noqa: N802
                if urlsplit(self.path).path.startswith("/decide/"):
                    super().do_POST()
                    return
                self._serve("POST")

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = {name: values[0] for name, values in parse_qs(parts.query).items()}
                form: dict[str, str] = {}
                if method == "POST":
                    length_text = self.headers.get("Content-Length") or "0"
                    if not length_text.isdigit() or int(length_text) > MAX_FORM_BYTES:
                        self.send(outer.app._finish(_EMPTY, outer.app._message(413, "the form is too large")))
                        return
                    body = self.rfile.read(int(length_text)) if int(length_text) else b""
                    form = {name: values[0] for name, values in parse_qs(body.decode("utf-8", "replace")).items()}
                request = Request(method, parts.path, query, self.headers, form, self.client_address[0])
                self.send(outer.app.handle(request), head_only=method == "HEAD")

        return Handler


_EMPTY = Request("GET", "/", {}, Message())
