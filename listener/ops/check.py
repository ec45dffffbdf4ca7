"""`agent-builder check`: one line per dependency, each failure with the fix. `listen` runs the
same checks at start: a broken database stops it, anything else only warns. A check that works
but found something unsafe says so as a warning (`warn`); warnings do not change the exit code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

import httpx
import psycopg
from psycopg.rows import dict_row

from listener.config import Settings
from listener.ops.migrate import pending_migrations
from listener.queue.store import Store


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False  # listen refuses to start when a required check fails
    warning: bool = False  # ok, but unsafe as configured: `fix` says what to change


def check_database(settings: Settings) -> Check:
    if settings.database_url is None:
        return Check("database", False, "DATABASE_URL is not set", "set DATABASE_URL to a libpq URI", required=True)
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
            server = Store(conn).server_version()
        pending = pending_migrations(settings.database_url)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Check("database", False, " ".join(str(exc).split())[:300],
                     "check DATABASE_URL, that PostgreSQL runs and accepts this user", required=True)
    if pending:
        return Check("database", False, f"PostgreSQL {server}; {len(pending)} migration(s) pending: {', '.join(pending)}",
                     "run: agent-builder migrate", required=True)
    return Check("database", True, f"PostgreSQL {server}, schema up to date")


def check_roles(settings: Settings) -> Check:
    """The listener's login: a builder member (required), and neither a superuser nor an operator or
    admin, nor the owner of the builder's tables (each only warns: allowed, but then the database
    cannot tell the builder from the people who approve its work)."""
    from listener.queue.db import Queries, SessionRoles

    if settings.database_url is None:
        return Check("roles", False, "DATABASE_URL is not set", "set DATABASE_URL to a libpq URI", required=True)
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5, row_factory=dict_row) as conn:
            roles = SessionRoles.of(conn, Queries.load())
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Check("roles", False, " ".join(str(exc).split())[:300], "see the database check", required=True)
    login = roles.login
    if not roles.migrated:
        return Check("roles", False, "this database has no agent-builder roles yet (migration 0006_roles is pending)",
                     "run: agent-builder migrate", required=True)
    if not roles.builder:
        return Check("roles", False, f"the listener's login {login} is not a member of agent_builder_builder: "
                     "it can neither claim nor record builds", f"as a superuser run: GRANT agent_builder_builder TO {login};",
                     required=True)
    warnings, fixes = [], []
    if roles.superuser:
        warnings.append(f"{login} is a superuser: it passes every role check, approving its own builds included")
        fixes.append("connect the listener as a login of its own: CREATE ROLE agent_builder_listener LOGIN PASSWORD '...' "
                     "IN ROLE agent_builder_builder; and point DATABASE_URL at it")
    else:
        groups = [name for name, member in (("agent_builder_operator", roles.operator), ("agent_builder_admin", roles.admin))
                  if member]
        if groups:
            warnings.append(f"{login} is also a member of {' and '.join(groups)}: the builder could approve its own builds")
            fixes.append("; ".join(f"REVOKE {group} FROM {login};" for group in groups))
        if roles.owns:
            warnings.append(f"{login} owns (or acts as the owner of) {', '.join(roles.owns)}: an owner can disable "
                            "the triggers that guard them")
            fixes.append("migrate as another role, e.g. ALTER TABLE ... OWNER TO <that role>;")
    if warnings:
        return Check("roles", True, "; ".join(warnings), " ".join(fixes), warning=True)
    return Check("roles", True, f"the listener's login {login} is a builder (not an operator, admin or superuser)")


def check_sandbox_database(settings: Settings) -> Check:
    """The role of SANDBOX_DATABASE_URL (Level 4 sql_rows) can only read. A powerful role is a
    required failure: `listen` refuses to start with it."""
    from listener.queue.db import Queries
    from listener.sandbox.sqlrole import FIX, inspect_role, login_of, sql_failure

    url = settings.sandbox_database_url
    if url is None:
        return Check("sandbox-db", True, "SANDBOX_DATABASE_URL is not set: sql_rows checks cannot run (they fail saying so)")
    queries = Queries.load()
    listener_role = None
    if settings.database_url is not None:
        try:
            with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
                listener_role = login_of(conn, queries)
        except psycopg.Error:
            listener_role = None  # the database check reports it
    try:
        with psycopg.connect(url, connect_timeout=5, application_name="agent-builder-check") as conn:
            conn.read_only = True
            powers = inspect_role(conn, queries, listener_role)
            conn.rollback()
    except psycopg.Error as exc:
        return Check("sandbox-db", False, sql_failure(exc, "could not connect to SANDBOX_DATABASE_URL"),
                     "check SANDBOX_DATABASE_URL and that its role may log in")
    if not powers.read_only:
        return Check("sandbox-db", False, f"SANDBOX_DATABASE_URL's {powers.describe()}: Level 4 sql_rows checks "
                     "must run with a role that can only read", FIX, required=True)
    return Check("sandbox-db", True, f"SANDBOX_DATABASE_URL's {powers.describe()}")


def check_ollama(settings: Settings) -> Check:
    from listener.build.ollama import OllamaClient
    from listener.queue.outcome import StepFailure

    try:
        models = OllamaClient(settings.ollama_url, settings.ollama_model, timeout_s=10).list_models()
    except StepFailure as exc:
        return Check("ollama", False, exc.message, f"start Ollama at OLLAMA_URL={settings.ollama_url}")
    if settings.ollama_model not in models and f"{settings.ollama_model}:latest" not in models:
        return Check("ollama", False, f"{settings.ollama_url} has no model {settings.ollama_model}",
                     f"run: ollama pull {settings.ollama_model}")
    return Check("ollama", True, f"{settings.ollama_url} serves {settings.ollama_model}")


def check_claude(settings: Settings) -> Check:
    """The overseer's CLI: it runs, its --help has every review flag (the no-tools guarantee among
    them), and `claude auth status` reports a login. All free: no API request."""
    from listener.build.overseer import Overseer

    readiness = Overseer.from_settings(settings).readiness()
    if not readiness.ready:
        cli = readiness.cli
        detail = str(readiness.problem) if cli is None else f"{cli.path} (claude {cli.version}): {readiness.problem}"
        return Check("claude", False, detail, readiness.fix)
    return Check("claude", True, f"{readiness.summary()}; checking costs no credits")


def check_vault(settings: Settings) -> Check:
    from listener.clients.vault import VaultClient, VaultError

    if settings.vault_addr is None:
        return Check("vault", False, "VAULT_ADDR is not set: builds cannot prove the sandbox AppRole works",
                     "set VAULT_ADDR (and VAULT_APPROLE_DIR)")
    try:
        VaultClient(settings.vault_addr, settings.vault_approle_dir).login()
    except VaultError as exc:
        return Check("vault", False, str(exc), f"check VAULT_ADDR and the files in {settings.vault_approle_dir}")
    return Check("vault", True, f"AppRole login to {settings.vault_addr} works")


def check_ntfy(settings: Settings) -> Check:
    if settings.ntfy_url is None:
        return Check("ntfy", False, "NTFY_URL is not set: notifications are only logged", "set NTFY_URL")
    try:
        answer = httpx.get(f"{settings.ntfy_url}/v1/health", timeout=5)
    except httpx.HTTPError as exc:
        return Check("ntfy", False, f"{settings.ntfy_url} unreachable: {exc}", "check NTFY_URL and that ntfy runs")
    if answer.status_code >= 500:
        return Check("ntfy", False, f"{settings.ntfy_url} answered {answer.status_code}", "check the ntfy server")
    detail = f"{settings.ntfy_url} answers (topic {settings.ntfy_topic}; nothing was published)"
    if settings.approval_secret and settings.approval_base_url:
        return _check_topic_protected(settings, detail)
    return Check("ntfy", True, detail)


TOPIC_FIX = ("protect the topic with an access token (ntfy ACL: deny anonymous read, NTFY_TOKEN for the builder) "
             "or turn one-tap off (unset APPROVAL_SECRET)")


def _check_topic_protected(settings: Settings, detail: str) -> Check:
    """With one-tap approval on, the READY messages carry Approve links: whoever reads the topic
    can approve. Ask ntfy, anonymously, for the topic's cached messages (the body is not read)."""
    assert settings.ntfy_url is not None
    url = f"{settings.ntfy_url}/{quote(settings.ntfy_topic, safe='')}/json"
    try:
        with httpx.stream("GET", url, params={"poll": "1"}, timeout=5) as answer:
            status = answer.status_code
    except httpx.HTTPError as exc:
        return Check("ntfy", True, f"{detail}; could not tell whether the topic can be read without a token ({exc})",
                     TOPIC_FIX, warning=True)
    if status in (401, 403):
        return Check("ntfy", True, f"{detail}; the topic cannot be read without a token "
                     f"(an anonymous read answered {status})")
    if status == 200:
        return Check("ntfy", True, f"{detail}; one-tap approval is on and the topic can be read without a token: "
                     "anyone who can read the topic can approve", TOPIC_FIX, warning=True)
    return Check("ntfy", True, f"{detail}; could not tell whether the topic can be read without a token "
                 f"(an anonymous read answered {status})", TOPIC_FIX, warning=True)


def check_docker(settings: Settings) -> Check:
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=10)
        version = client.version().get("Version", "?")
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Check("docker", False, f"no Docker engine: {' '.join(str(exc).split())[:200]}",
                     "start Docker, or set DOCKER_HOST; see README 'Security model'")
    missing = []
    images = list(dict.fromkeys([settings.sandbox_base_image, settings.sandbox_agent_image, *settings.sandbox_base_images]))
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
        except docker.errors.APIError as exc:
            missing.append(f"{image} ({exc})")
    if missing:
        return Check("docker", False, f"engine {version}; image(s) missing: {', '.join(missing)}",
                     "docker pull them, or build docker/claude-agent.Dockerfile as agent-builder-claude:latest")
    return Check("docker", True, f"engine {version}; images {', '.join(images)}")


ALL_CHECKS: tuple[Callable[[Settings], Check], ...] = (
    check_database, check_roles, check_sandbox_database, check_ollama, check_claude, check_vault, check_ntfy,
    check_docker)


def run_checks(settings: Settings) -> list[Check]:
    return [check(settings) for check in ALL_CHECKS]


def render(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        mark = "FAIL" if not check.ok else "warn" if check.warning else "ok  "
        show_fix = (not check.ok or check.warning) and check.fix
        lines.append(f"{mark} {check.name:<9} {check.detail}" + (f"\n     {'':<9} fix: {check.fix}" if show_fix else ""))
    return "\n".join(lines)
