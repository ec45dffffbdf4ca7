"""`agent-builder check`: one line per dependency, each failure with the fix, in two groups.

Required: what a build needs (the database and its roles, Ollama and the model, the claude CLI
logged in, Docker and the base images, and once VAULT_ADDR is set the AppRole login and AppRole
files the sandbox user can read): a failure is FAIL and the exit code 1. Optional: the claude_agent
image, ntfy, Vault (unset), metrics, the Level 4 database: a failure is WARN, the exit code stays 0.
A check that works but found something unsafe is WARN as well. `listen` runs the same checks at start: a broken
database (or a login that is not a builder, or a powerful SANDBOX_DATABASE_URL role) stops it,
anything else is logged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

import os
import socket
import stat
from pathlib import Path

import httpx
import psycopg
from psycopg.rows import dict_row

from listener.approval.web import exposure_problem, serves_web
from listener.config import Settings
from listener.ops.migrate import pending_migrations
from listener.queue.store import Store


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False  # listen refuses to start when this check fails
    warning: bool = False  # ok, but unsafe as configured: `fix` says what to change
    optional: bool = False  # a build does not need it: a failure is a WARN and leaves the exit code alone

    @property
    def mark(self) -> str:
        if self.ok:
            return "WARN" if self.warning else "ok"
        return "WARN" if self.optional else "FAIL"

    @property
    def fails(self) -> bool:
        """Counts against the exit code: a required dependency is missing or broken."""
        return not self.ok and not self.optional


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
        return Check("sandbox-db", True, "SANDBOX_DATABASE_URL is not set: sql_rows checks cannot run (they fail saying so)",
                     optional=True)
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
                     "check SANDBOX_DATABASE_URL and that its role may log in", optional=True)
    if not powers.read_only:
        return Check("sandbox-db", False, f"SANDBOX_DATABASE_URL's {powers.describe()}: Level 4 sql_rows checks "
                     "must run with a role that can only read", FIX, required=True)
    return Check("sandbox-db", True, f"SANDBOX_DATABASE_URL's {powers.describe()}", optional=True)


def check_ollama(settings: Settings) -> Check:
    from listener.build.ollama import OllamaClient

    problem = OllamaClient(settings.ollama_url, settings.ollama_model, timeout_s=10).model_problem()
    if problem is not None:
        return Check("ollama", False, *problem)
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
        return Check("vault", False, "VAULT_ADDR is not set: automations get no secrets from Vault",
                     "set VAULT_ADDR (and VAULT_APPROLE_DIR) when automations need secrets", optional=True)
    # Once set, every build logs in before generating (and is released while that fails): required.
    try:
        VaultClient(settings.vault_addr, settings.vault_approle_dir).login()
    except VaultError as exc:
        return Check("vault", False, str(exc), f"check VAULT_ADDR and the files in {settings.vault_approle_dir}")
    return Check("vault", True, f"AppRole login to {settings.vault_addr} works")


SANDBOX_UID = SANDBOX_GID = 65534  # the sandbox and production user (nobody:nogroup), listener.sandbox.engine
APPROLE_FILES = ("role-id", "secret-id")


def readable_by(info: os.stat_result, uid: int, gid: int, *, need: int) -> bool:
    """Whether a user uid:gid (no other groups) has the permission `need` (4 read, 1 search) on a
    file with this stat, as the kernel decides it: the owner bits, else the group's, else others'."""
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == uid:
        return bool(mode & (need << 6))
    if info.st_gid == gid:
        return bool(mode & (need << 3))
    return bool(mode & need)


def approle_problems(directory: Path, uid: int = SANDBOX_UID, gid: int = SANDBOX_GID) -> list[str]:
    """What keeps the sandbox user from reading the AppRole files of `directory` (mounted read-only,
    as it is, into every sandbox and production container)."""
    try:
        info = directory.stat()
    except OSError as exc:
        return [f"{directory}: {exc.strerror or exc}"]
    if not stat.S_ISDIR(info.st_mode):
        return [f"{directory} is not a directory"]
    problems = []
    if not readable_by(info, uid, gid, need=1):
        problems.append(f"the directory {directory} (mode {stat.S_IMODE(info.st_mode):o}, owner {info.st_uid}:{info.st_gid}) "
                        f"cannot be entered by uid {uid}")
    for name in APPROLE_FILES:
        file = directory / name
        try:
            if file.is_symlink() and not file.resolve().is_relative_to(directory.resolve()):
                problems.append(f"{file} is a symlink out of the directory: inside a container it points at nothing")
                continue
            file_info = file.stat()
        except OSError as exc:
            problems.append(f"{file}: {exc.strerror or exc}")
            continue
        if not readable_by(file_info, uid, gid, need=4):
            problems.append(f"{file} (mode {stat.S_IMODE(file_info.st_mode):o}, owner {file_info.st_uid}:{file_info.st_gid}) "
                            f"cannot be read by uid {uid}")
    return problems


def check_approle(settings: Settings) -> Check:
    """The sandbox runs as 65534 with VAULT_APPROLE_DIR mounted: files it cannot read make every
    automation that uses Vault fail at run time, after the paid review. Required once VAULT_ADDR is
    set; the production directory too when it exists."""
    if settings.vault_addr is None:
        return Check("approle", True, "VAULT_ADDR is not set: no AppRole files are mounted", optional=True)
    problems = approle_problems(settings.vault_approle_dir)
    if settings.prod_vault_approle_dir.exists():
        problems += approle_problems(settings.prod_vault_approle_dir)
    if problems:
        return Check("approle", False, "; ".join(problems),
                     f"let uid {SANDBOX_UID} read them, e.g. chmod 0755 on the directory and 0644 on role-id and secret-id, "
                     f"or chgrp {SANDBOX_GID} and chmod 0750/0640 (VAULT_APPROLE_DIR, PROD_VAULT_APPROLE_DIR)")
    checked = [str(settings.vault_approle_dir)] + ([str(settings.prod_vault_approle_dir)]
                                                   if settings.prod_vault_approle_dir.exists() else [])
    return Check("approle", True, f"role-id and secret-id in {', '.join(checked)} are readable by uid {SANDBOX_UID}")


def check_ntfy(settings: Settings) -> Check:
    if settings.ntfy_url is None:
        return Check("ntfy", False, "NTFY_URL is not set: notifications (READY included) are only logged",
                     "set NTFY_URL (and NTFY_TOPIC)", optional=True)
    try:
        answer = httpx.get(f"{settings.ntfy_url}/v1/health", timeout=5)
    except httpx.HTTPError as exc:
        return Check("ntfy", False, f"{settings.ntfy_url} unreachable: {exc}", "check NTFY_URL and that ntfy runs",
                     optional=True)
    if answer.status_code >= 500:
        return Check("ntfy", False, f"{settings.ntfy_url} answered {answer.status_code}", "check the ntfy server",
                     optional=True)
    detail = f"{settings.ntfy_url} answers (topic {settings.ntfy_topic}; nothing was published)"
    if settings.approval_secret and settings.approval_base_url:
        return _check_topic_protected(settings, detail)
    return Check("ntfy", True, detail, optional=True)


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
                     TOPIC_FIX, warning=True, optional=True)
    if status in (401, 403):
        return Check("ntfy", True, f"{detail}; the topic cannot be read without a token "
                     f"(an anonymous read answered {status})", optional=True)
    if status == 200:
        return Check("ntfy", True, f"{detail}; one-tap approval is on and the topic can be read without a token: "
                     "anyone who can read the topic can approve", TOPIC_FIX, warning=True, optional=True)
    return Check("ntfy", True, f"{detail}; could not tell whether the topic can be read without a token "
                 f"(an anonymous read answered {status})", TOPIC_FIX, warning=True, optional=True)


def check_docker(settings: Settings) -> Check:
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=10)
        version = client.version().get("Version", "?")
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Check("docker", False, f"no Docker engine: {' '.join(str(exc).split())[:200]}",
                     "start Docker, or set DOCKER_HOST; see README 'Security model'")
    missing, fixes = [], []
    named = [("SANDBOX_BASE_IMAGE", settings.sandbox_base_image),
             *(("SANDBOX_BASE_IMAGES", image) for image in settings.sandbox_base_images)]
    images = list(dict.fromkeys(image for _, image in named))
    for variable, image in named:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(f"{variable}={image}")
            fixes.append(image_fix(variable, image))
        except docker.errors.APIError as exc:
            missing.append(f"{variable}={image} ({exc})")
    if missing:
        return Check("docker", False, f"engine {version}; image(s) missing (builds never pull): {', '.join(missing)}",
                     "; ".join(dict.fromkeys(fixes)))
    return Check("docker", True, f"engine {version}; images {', '.join(images)}")


def check_agent_image(settings: Settings) -> Check:
    """SANDBOX_AGENT_IMAGE, which only claude_agent builds start from: optional. Without it a
    claude_agent build is released before Step 3 with a PAUSED notification (listener.sandbox.ready);
    scripts build as usual."""
    import docker
    import docker.errors

    image = settings.sandbox_agent_image
    try:
        docker.from_env(timeout=10).images.get(image)
    except docker.errors.ImageNotFound:
        return Check("agent-image", False, f"SANDBOX_AGENT_IMAGE={image} is not on the engine: claude_agent builds wait "
                     "(released before Step 3, PAUSED); scripts are not affected",
                     image_fix("SANDBOX_AGENT_IMAGE", image), optional=True)
    except Exception as exc:  # noqa: BLE001 - the engine's own check (docker) says more
        return Check("agent-image", False, f"cannot look for SANDBOX_AGENT_IMAGE={image}: {' '.join(str(exc).split())[:160]}",
                     "see the docker line", optional=True)
    return Check("agent-image", True, f"SANDBOX_AGENT_IMAGE={image} (claude_agent builds)", optional=True)


def image_fix(variable: str, image: str) -> str:
    if variable == "SANDBOX_AGENT_IMAGE":
        return (f"docker build -t {image} - < docker/claude-agent.Dockerfile (needed by claude_agent builds), "
                "or set SANDBOX_AGENT_IMAGE")
    return f"docker pull {image}, or set {variable} to an image the engine has"


def bind_problem(variable: str, address: str) -> str | None:
    """None when `address` (host:port, already validated) can be listened on now; else why not."""
    from listener.httpserver import split_address

    host, port = split_address(address)
    try:
        with socket.create_server((host, port)):
            return None
    except OSError as exc:
        return f"cannot listen on {variable}={address}: {os.strerror(exc.errno) if exc.errno else exc}"


def listen_addresses(settings: Settings) -> list[tuple[str, str]]:
    """The addresses `listen` binds: METRICS_ADDR when set, WEB_ADDR when the review server runs
    (APPROVAL_SECRET or WEB_TOKEN set: listener.approval.web.serves_web)."""
    found = [("METRICS_ADDR", settings.metrics_addr)] if settings.metrics_addr else []
    if serves_web(settings):
        found.append(("WEB_ADDR", settings.approval_addr))
    return [(variable, address) for variable, address in found if address]


def _answers_healthz(address: str) -> int | None:
    try:
        return httpx.get(f"http://{address}/healthz", timeout=3).status_code
    except httpx.HTTPError:
        return None


def check_metrics(settings: Settings) -> Check:
    """METRICS_ADDR: off when unset; when set, the address must be free to listen on, or already
    answered by a listener's /healthz (the listener this check is about)."""
    if settings.metrics_addr is None:
        return Check("metrics", True, "METRICS_ADDR is not set: no /metrics endpoint", optional=True)
    problem = bind_problem("METRICS_ADDR", settings.metrics_addr)
    if problem is None:
        return Check("metrics", True, f"METRICS_ADDR={settings.metrics_addr} is free: the listener serves /metrics there",
                     optional=True)
    status = _answers_healthz(settings.metrics_addr) if "in use" in problem else None
    if status in (200, 503):
        return Check("metrics", True, f"{settings.metrics_addr} is served by a running listener (/healthz answered "
                     f"{status}); a second listener on this host needs another METRICS_ADDR", optional=True)
    return Check("metrics", False, problem, "choose a free address for METRICS_ADDR, or unset it", optional=True)


def check_review_page(settings: Settings) -> Check:
    """The review server (WEB_ADDR): off unless APPROVAL_SECRET or WEB_TOKEN is set; on a
    non-loopback address it needs WEB_TOKEN (`listen` refuses to start otherwise), and the
    address must be free (or already a listener's)."""
    if not serves_web(settings):
        return Check("review-page", True, "APPROVAL_SECRET and WEB_TOKEN are not set: no review page, no one-tap "
                     "buttons", optional=True)
    exposed = exposure_problem(settings)
    if exposed is not None:
        return Check("review-page", False, exposed, "set WEB_TOKEN, or bind WEB_ADDR to 127.0.0.1")
    access = "WEB_TOKEN required for the overview" if settings.web_token else "loopback only"
    problem = bind_problem("WEB_ADDR", settings.approval_addr)
    if problem is not None and "in use" in problem and _answers_healthz(settings.approval_addr) is not None:
        return Check("review-page", True, f"WEB_ADDR={settings.approval_addr} already answers HTTP (a running "
                     f"listener?); a second listener on this host needs another WEB_ADDR ({access})")
    if problem is not None:
        return Check("review-page", False, problem, "choose a free address for WEB_ADDR")
    return Check("review-page", True, f"WEB_ADDR={settings.approval_addr} is free: the listener serves the review "
                 f"page there ({access})")


def check_base_image(settings: Settings) -> Check:
    """The engine and the image a script build starts from (what a first build needs of Docker)."""
    from listener.sandbox.ready import base_image_problem

    problem = base_image_problem(settings, "script")
    if problem is None:
        return Check("docker", True, f"the engine has SANDBOX_BASE_IMAGE={settings.sandbox_base_image}")
    detail, _, fix = problem.partition("; fix: ")
    return Check("docker", False, detail, fix or "start Docker, or set DOCKER_HOST")


FIRST_BUILD_NEEDS: tuple[Callable[[Settings], Check], ...] = (check_ollama, check_claude, check_base_image)


def first_build_needs(settings: Settings) -> list[Check]:
    """What the first build of a script needs besides the database (Ollama and the model, claude
    logged in, Docker with SANDBOX_BASE_IMAGE): printed by the embedded first run."""
    return [check(settings) for check in FIRST_BUILD_NEEDS]


ALL_CHECKS: tuple[Callable[[Settings], Check], ...] = (
    check_database, check_roles, check_ollama, check_claude, check_docker, check_agent_image, check_vault, check_approle,
    check_ntfy, check_metrics, check_review_page, check_sandbox_database)

EXIT_READY, EXIT_MISSING = 0, 1  # `check`: every required dependency works / one or more is missing


def run_checks(settings: Settings) -> list[Check]:
    return [check(settings) for check in ALL_CHECKS]


def exit_code(checks: list[Check]) -> int:
    return EXIT_MISSING if any(check.fails for check in checks) else EXIT_READY


def render(checks: list[Check]) -> str:
    required = [check for check in checks if not check.optional]
    optional = [check for check in checks if check.optional]
    lines = []
    for title, group in (("required (a build needs each):", required),
                         ("optional (WARN leaves the exit code alone):", optional)):
        if not group:
            continue
        lines.append(title)
        for check in group:
            show_fix = (not check.ok or check.warning) and check.fix
            lines.append(f"{check.mark:<4} {check.name:<9} {check.detail}"
                         + (f"\n     {'':<9} fix: {check.fix}" if show_fix else ""))
    failing = sum(check.fails for check in checks)
    lines.append(f"{failing} required check(s) failed: exit code {EXIT_MISSING}" if failing
                 else f"every required check passed: exit code {EXIT_READY}")
    return "\n".join(lines)
