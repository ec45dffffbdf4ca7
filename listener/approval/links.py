"""One-tap approval: signed, expiring, single-use links on the READY notification, and the small
HTTP endpoint that performs the same UPDATE an operator would (so the trigger, the state machine
and the history apply unchanged, with the actor 'one-tap').

The listener's own login is a builder and never approves: the UPDATE goes through an operator
session (OPERATOR_DATABASE_URL, the embedded default's operator login, or DATABASE_URL when its
login is an operator), and the history records that login. Spending the link's nonce is a write to
the builder's table approval_link_uses, made on the listener's own connection."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, TypeVar
from urllib.parse import urlsplit

import psycopg
from loguru import logger

from listener.config import Settings
from listener.queue.db import OperatorSessionError, Queries, connect, operator_connect
from listener.queue.states import BuilderStatus
from listener.queue.store import Store
from listener.httpserver import BackgroundServer, Limits, TextHandler
from listener.redact import Redactor

T = TypeVar("T")
ACTIONS = {"approve": BuilderStatus.APPROVED, "reject": BuilderStatus.REJECTED}
VIEW = "view"  # a link that opens one build's review page (listener/approval/web.py) and authorises its buttons


class LinkError(Exception):
    """A link that does not verify: forged, expired, malformed. The endpoint answers 403."""


@dataclass(frozen=True)
class Link:
    action: str
    automation_id: int
    build_id: int
    expires: int
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: str, link: Link) -> str:
    payload = json.dumps({"a": link.action, "id": link.automation_id, "b": link.build_id, "exp": link.expires,
                          "n": link.nonce}, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify(secret: str, token: str, now: float | None = None, actions: Collection[str] = tuple(ACTIONS)) -> Link:
    """The link's content when its signature holds, it has not expired and its action is one of
    `actions` (by default a decision: a review page's link never decides by itself)."""
    try:
        payload_part, mac_part = token.split(".", 1)
        payload = _unb64(payload_part)
        mac = _unb64(mac_part)
    except (ValueError, TypeError):
        raise LinkError("malformed link") from None
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise LinkError("bad signature")
    try:
        data = json.loads(payload)
        link = Link(action=str(data["a"]), automation_id=int(data["id"]), build_id=int(data["b"]),
                    expires=int(data["exp"]), nonce=str(data["n"]))
    except (ValueError, KeyError, TypeError):
        raise LinkError("malformed link") from None
    if link.action not in actions:
        raise LinkError("unknown action")
    if (time.time() if now is None else now) > link.expires:
        raise LinkError("expired link")
    return link


def approval_actions(settings: Settings, automation_id: int, build_id: int) -> tuple[dict[str, Any], ...]:
    """ntfy `http` action buttons Approve and Reject, when one-tap approval is configured."""
    if not settings.approval_base_url or not settings.approval_secret:
        return ()
    expires = int(time.time() + settings.approval_ttl_s)
    buttons = []
    for action, label in (("approve", "Approve"), ("reject", "Reject")):
        token = sign(settings.approval_secret, Link(action, automation_id, build_id, expires, secrets.token_urlsafe(12)))
        buttons.append({"action": "http", "label": label, "url": f"{settings.approval_base_url}/decide/{token}",
                        "method": "POST", "clear": True})
    return tuple(buttons)


def review_link(settings: Settings, automation_id: int, build_id: int) -> str | None:
    """The READY notification's click: the build's review page through a signed, expiring link
    bound to that automation and build (the same HMAC scheme as the buttons), when configured."""
    if not settings.approval_base_url or not settings.approval_secret:
        return None
    expires = int(time.time() + settings.approval_ttl_s)
    token = sign(settings.approval_secret, Link(VIEW, automation_id, build_id, expires, secrets.token_urlsafe(12)))
    return f"{settings.approval_base_url}/a/{automation_id}?k={token}"


@dataclass(frozen=True)
class Decision:
    status: int
    message: str


def decide(builder: psycopg.Connection[dict[str, Any]], operator: psycopg.Connection[dict[str, Any]],
           queries: Queries, secret: str, token: str, remote_addr: str | None) -> Decision:
    """Verify a link, spend its nonce (builder session) and perform its UPDATE (operator session).

    The operator's transaction runs inside the builder's: a refused or failed UPDATE leaves the
    nonce unspent; the nonce is committed right after the decision (should that one commit fail,
    the link can be tapped again, and the state machine refuses a second decision).
    """
    try:
        link = verify(secret, token)
    except LinkError as exc:
        return Decision(403, f"forbidden: {exc}")
    try:
        with builder.transaction():
            spent = Store(builder, queries).use_approval_link(link.nonce, link.automation_id, link.build_id,
                                                              link.action, remote_addr)
            if not spent:
                return Decision(403, "forbidden: this link was already used")
            with operator.transaction():
                row = Store(operator, queries).decide_by_link(link.automation_id, link.build_id, ACTIONS[link.action])
                if row is None:
                    raise _Refused("forbidden: the link is not for this automation's current build")
    except _Refused as refused:
        return Decision(403, str(refused))
    except (psycopg.errors.CheckViolation, psycopg.errors.InsufficientPrivilege) as exc:
        return Decision(403, f"forbidden: {exc.diag.message_primary}")
    logger.bind(automation_id=link.automation_id).info("one-tap {} of build {}", link.action, link.build_id)
    return Decision(200, f"automation {link.automation_id}: builder_status is now {row['builder_status']}")


class _Refused(Exception):
    pass


def decision_page(decision: Decision, redactor: Redactor) -> str:
    """The one-tap page: the decision's text redacted (it may quote a database error) and
    HTML-escaped, in a page that runs nothing."""
    text = html.escape(redactor.redact(decision.message), quote=False)
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>agent-builder</title></head>\n"
            f"<body><p>{text}</p></body></html>\n")


class ApprovalServer:
    """POST /decide/<token> → 200 or 403; anything else → 403. Served by a BoundedHTTPServer
    (request timeout, connection cap) from a daemon thread."""

    def __init__(self, settings: Settings, dsn: str, queries: Queries, redactor: Redactor | None = None,
                 limits: Limits = Limits()) -> None:
        self.redactor = redactor if redactor is not None else Redactor.from_settings(settings)
        self.settings = settings
        self.dsn = dsn
        self.queries = queries
        self.lock = threading.Lock()
        self.conn: psycopg.Connection[dict[str, Any]] | None = None  # the listener's own (builder) session
        self.operator: psycopg.Connection[dict[str, Any]] | None = None  # the session that decides
        self._reported: str | None = None
        self.http = BackgroundServer(settings.approval_addr, self._handler(), "approvals", limits)

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> None:
        self.http.start()
        logger.info("one-tap approval endpoint on {} (links point at {})", self.http.address,
                    self.settings.approval_base_url)
        with self.lock:  # say at start, not at the first tap, when no operator session can be had
            try:
                self.operator = operator_connect(self.settings.operator_database_url, self.dsn, self.queries,
                                                 actor="one-tap", application="agent-builder approvals (operator)")
            except OperatorSessionError as exc:
                self._reported = str(exc)
                logger.error("one-tap approval cannot decide: {}", exc)
            except psycopg.OperationalError:
                pass  # the database is down: the first tap connects again

    def stop(self) -> None:
        self.http.stop()
        self._close()

    def _close(self) -> None:
        for conn in (self.conn, self.operator):
            if conn is not None:
                conn.close()
        self.conn = self.operator = None

    def _decide(self, token: str, remote: str | None) -> Decision:
        secret = self.settings.approval_secret
        if secret is None:
            return Decision(403, "forbidden: one-tap approval is not set up (APPROVAL_SECRET)")

        def work(conn: psycopg.Connection[dict[str, Any]], operator: psycopg.Connection[dict[str, Any]] | None) -> Decision:
            assert operator is not None
            return decide(conn, operator, self.queries, secret, token, remote)

        try:
            return self.with_sessions(work)
        except OperatorSessionError as exc:
            return Decision(503, f"one-tap approval is not set up: {exc}")
        except psycopg.OperationalError:
            return Decision(503, "the database is unreachable; try again")

    def with_sessions(self, work: Callable[[psycopg.Connection[dict[str, Any]], psycopg.Connection[dict[str, Any]] | None], T],
                      *, operator: bool = True) -> T:
        """Run `work` with the listener's own session and (when `operator`) the operator session
        that decides, one request at a time; a lost connection is opened again once. Raises
        OperatorSessionError (logged once per cause) and psycopg.OperationalError (the second loss)."""
        with self.lock:  # one pair of connections, one request at a time: reviews and taps are rare
            for attempt in (1, 2):
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = connect(self.dsn, actor="one-tap", application="agent-builder approvals")
                    if operator and (self.operator is None or self.operator.closed):
                        self.operator = operator_connect(self.settings.operator_database_url, self.dsn, self.queries,
                                                         actor="one-tap", application="agent-builder approvals (operator)")
                    return work(self.conn, self.operator if operator else None)
                except OperatorSessionError as exc:
                    if self._reported != str(exc):
                        self._reported = str(exc)
                        logger.error("one-tap approval cannot decide: {}", exc)
                    raise
                except psycopg.OperationalError as exc:
                    self._close()
                    if attempt == 2:
                        logger.warning("approval endpoint cannot reach the database: {}", exc)
                        raise
        raise AssertionError("unreachable")

    def _handler(self) -> type[TextHandler]:
        outer = self

        class Handler(TextHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                path = urlsplit(self.path).path
                if not path.startswith("/decide/"):
                    self._answer(Decision(403, "forbidden"))
                    return
                self._answer(outer._decide(path[len("/decide/"):], self.client_address[0]))

            def do_GET(self) -> None:  # noqa: N802
                self._answer(Decision(403, "forbidden: use the notification's buttons (POST)"))

            def _answer(self, decision: Decision) -> None:
                self.send_text(decision.status, decision_page(decision, outer.redactor), "text/html; charset=utf-8")

        return Handler
