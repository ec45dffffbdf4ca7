"""Every setting from the environment, validated once; secrets redacted when printed."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from listener.httpserver import join_address, split_address

DEFAULT_APPROLE_DIR = "/opt/appdata/docker/docker-compose/vault/approle"
# The default sandbox network is one per installation (two databases on one engine never share it);
# an explicit SANDBOX_NETWORK is used as written ({installation} is the only placeholder).
DEFAULT_SANDBOX_NETWORK = "agent-builder-sandbox-{installation}"
DEFAULT_WEB_ADDR = "127.0.0.1:8787"
SECRET_FIELDS = frozenset({"ntfy_token", "approval_secret", "builder_signing_key", "web_token"})
URL_FIELDS_WITH_PASSWORDS = frozenset({"database_url", "operator_database_url", "sandbox_database_url"})
MAX_CLAUDE_RETRIES = 5
IMAGE_REFERENCE = r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*"
NTFY_TOPIC = r"[-_A-Za-z0-9]{1,64}"  # what ntfy accepts as a topic name
# The variable a user sets for each field whose name is not simply the field's name in capitals.
ENV_NAMES = {"home": "AGENT_BUILDER_HOME", "approval_addr": "WEB_ADDR"}


def env_name(field_name: str) -> str:
    """The environment variable that sets `field_name` (AGENT_BUILDER_HOME for `home`)."""
    return ENV_NAMES.get(field_name, field_name.upper())


class ConfigError(ValueError):
    """One or more settings are invalid; the message names each variable and what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    home: Path
    ollama_url: str
    ollama_model: str
    ollama_timeout_s: float
    ollama_num_ctx: int
    ollama_temperature: float
    ollama_seed: int | None
    claude_cmd: tuple[str, ...]
    claude_timeout_s: float
    claude_max_retries: int
    overseer_model: str | None
    overseer_max_usd: float | None
    overseer_daily_limit: int | None
    repair_attempts: int
    ntfy_url: str | None
    ntfy_topic: str
    ntfy_token: str | None
    vault_addr: str | None
    vault_approle_dir: Path
    vault_secrets_path: str | None
    sandbox_base_image: str
    sandbox_network: str
    sandbox_timeout_s: float
    sandbox_database_url: str | None
    sandbox_agent_image: str
    sandbox_base_images: tuple[str, ...]
    sandbox_build_timeout_s: float
    sandbox_pip_index_url: str | None
    sandbox_pip_find_links: Path | None
    sandbox_memory: str
    sandbox_cpus: float
    sandbox_pids: int
    sandbox_log_bytes: int
    sandbox_runtime: str | None
    sandbox_keep_images: int
    sandbox_http_port: int
    sandbox_tmp_size: str
    sandbox_hold_s: float
    builder_concurrency: int
    poll_interval_s: float
    rescue_interval_s: float
    liveness_interval_s: float
    shutdown_grace_s: float
    release_backoff_base_s: float
    release_backoff_max_s: float
    build_handler: str
    deploy_handler: str
    log_format: str
    log_level: str
    prod_vault_approle_dir: Path
    prod_network: str
    prod_agents_dir: Path
    prod_run_mode: str
    prod_verify_s: float
    prod_stop_timeout_s: int
    prod_log_max_size: str
    prod_log_max_files: int
    prod_runtime: str | None
    approval_base_url: str | None
    approval_secret: str | None
    approval_addr: str
    approval_ttl_s: float
    web_token: str | None
    metrics_addr: str | None
    operator_database_url: str | None
    builder_signing_key: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        return _Reader(os.environ if env is None else env).settings()

    def redacted(self) -> dict[str, str]:
        """The effective configuration as text, safe to print or log, keyed by the variable names
        users set (AGENT_BUILDER_HOME, WEB_ADDR)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                text = ""
            elif f.name in SECRET_FIELDS:
                text = "***"
            elif f.name in URL_FIELDS_WITH_PASSWORDS:
                text = redact_url(str(value))
            elif isinstance(value, tuple):
                text = shlex.join(value)
            else:
                text = str(value)
            out[env_name(f.name)] = text
        return out


def size_bytes(size: str) -> int:
    """'512m' -> 536870912 (the forms `memory` accepts: digits and an optional b, k, m or g)."""
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = size.strip().lower()
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def redact_url(url: str) -> str:
    """Hide the password of a libpq URI (keyword/value strings are returned with password=*** )."""
    if "://" not in url:
        return " ".join("password=***" if part.startswith("password=") else part for part in url.split())
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _conninfo_ok(value: str) -> bool:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(value)
    except ProgrammingError:
        return False
    return True


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def number(self, name: str, default: float, convert: Callable[[str], Any], minimum: float) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = convert(value)
        except ValueError:
            kind = "an integer" if convert is int else "a number"
            self.problems.append(f"{name}={value!r}: must be {kind}")
            return default
        if parsed < minimum:
            self.problems.append(f"{name}={value!r}: must be at least {minimum:g}")
            return default
        return parsed

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in allowed:
            self.problems.append(f"{name}={value!r}: must be one of {', '.join(allowed)}")
            return default
        return value

    def memory(self, name: str, default: str) -> str:
        value = (self.raw(name) or default).lower()
        if not re.fullmatch(r"[0-9]+[bkmg]?", value):
            self.problems.append(f"{name}={value!r}: must be a size like 512m or 2g")
            return default
        return value

    def tmp_size(self, name: str, default: str) -> str:
        """A size like SANDBOX_MEMORY, at least 1m: a tmpfs of size 0 would have no limit at all."""
        value = self.memory(name, default)
        if size_bytes(value) < 1 << 20:
            self.problems.append(f"{name}={value!r}: must be at least 1m")
            return default
        return value

    def log_size(self, name: str, default: str) -> str:
        """A json-file log size (`max-size`): a positive number of bytes, or with k, m or g."""
        value = (self.raw(name) or default).lower()
        if not re.fullmatch(r"[1-9][0-9]*[kmg]?", value):
            self.problems.append(f"{name}={value!r}: must be a positive size like 10m, 512k or 1g")
            return default
        return value

    def runtime(self, name: str) -> str | None:
        """A Docker runtime name (runc, runsc, io.containerd.runc.v2), or None for the engine's default."""
        value = self.raw(name)
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", value):
            self.problems.append(f"{name}={value!r}: must be a Docker runtime name like runc or runsc")
            return None
        return value

    def image(self, name: str, default: str) -> str:
        """One image reference (no spaces, no scheme)."""
        value = self.text(name, default)
        if not re.fullmatch(IMAGE_REFERENCE, value):
            self.problems.append(f"{name}={value!r}: must be an image reference like python:3.12-slim")
            return default
        return value

    def handler(self, name: str, default: str) -> str:
        """A handler `module:function` (loaded, and its errors named, when the listener starts)."""
        value = self.text(name, default)
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value):
            self.problems.append(f"{name}={value!r}: must be module:function, e.g. {default}")
            return default
        return value

    def images(self, name: str) -> tuple[str, ...]:
        """A comma-separated list of image references (no spaces inside one, none empty)."""
        value = self.raw(name)
        if value is None:
            return ()
        items = tuple(item.strip() for item in value.split(","))
        bad = [item for item in items if not re.fullmatch(IMAGE_REFERENCE, item)]
        if bad:
            self.problems.append(f"{name}={value!r}: must be image references separated by commas, not {bad[0]!r}")
            return ()
        return items

    def directory(self, name: str) -> Path | None:
        value = self.raw(name)
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute():
            self.problems.append(f"{name}={value!r}: must be an absolute path (a local directory of wheels)")
            return None
        return path

    def url(self, name: str, default: str | None) -> str | None:
        value = self.raw(name) or default
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.problems.append(f"{name}={value!r}: must be an http:// or https:// URL")
        return value.rstrip("/")

    def database_url(self, name: str) -> str | None:
        value = self.raw(name)
        if value is not None and "://" in value and not value.startswith(("postgres://", "postgresql://")):
            self.problems.append(f"{name}: must be a libpq URI (postgresql://…), got scheme {value.split('://')[0]!r}")
        elif value is not None and not _conninfo_ok(value):  # the text is not echoed: it may hold a password
            self.problems.append(f"{name}: cannot be read as a libpq connection string: give a URI "
                                 "(postgresql://user@host:5432/db) or keywords (host=… dbname=… user=…)")
        return value

    def address(self, name: str, value: str | None) -> str | None:
        """'host:port' checked and written the one way (an empty host is 127.0.0.1), or None with
        the problem noted."""
        if value is None:
            return None
        try:
            host, port = split_address(value)
        except ValueError as exc:
            self.problems.append(f"{name}={value!r}: {exc}")
            return None
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                self.problems.append(f"{name}={value!r}: host {host!r} does not resolve ({exc})")
                return None
        return join_address(host, port)

    def web_addr(self) -> str:
        """WEB_ADDR, or its older name APPROVAL_ADDR; both set to different addresses is refused."""
        web = self.address("WEB_ADDR", self.raw("WEB_ADDR"))
        approval = self.address("APPROVAL_ADDR", self.raw("APPROVAL_ADDR"))
        if web is not None and approval is not None and web != approval:
            self.problems.append(f"WEB_ADDR={self.raw('WEB_ADDR')!r} and APPROVAL_ADDR={self.raw('APPROVAL_ADDR')!r} "
                                 "disagree: set one of them (APPROVAL_ADDR is the older name of WEB_ADDR)")
        return web or approval or DEFAULT_WEB_ADDR

    def settings(self) -> Settings:
        home = Path(self.text("AGENT_BUILDER_HOME", str(Path.home() / ".local/share/agent-builder"))).expanduser()
        claude_raw = self.text("CLAUDE_CMD", "claude -p")
        try:
            claude_cmd = tuple(shlex.split(claude_raw))
        except ValueError as exc:
            self.problems.append(f"CLAUDE_CMD={claude_raw!r}: cannot be split like a shell line ({exc})")
            claude_cmd = ("claude", "-p")
        if not claude_cmd:
            self.problems.append("CLAUDE_CMD: is empty")
        network = self.text("SANDBOX_NETWORK", DEFAULT_SANDBOX_NETWORK)
        if network == "host":
            self.problems.append("SANDBOX_NETWORK='host': sandboxes never share the host network; use a bridge network or 'none'")
        elif any(brace in network.replace("{installation}", "") for brace in "{}"):
            self.problems.append(f"SANDBOX_NETWORK={network!r}: the only placeholder allowed is {{installation}}")
        log_format = self.text("LOG_FORMAT", "text").lower()
        if log_format not in ("text", "json"):
            self.problems.append(f"LOG_FORMAT={log_format!r}: must be 'text' or 'json'")
        log_level = self.text("LOG_LEVEL", "INFO").upper()
        if log_level not in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"):
            self.problems.append(f"LOG_LEVEL={log_level!r}: must be DEBUG, INFO, WARNING or ERROR")
        daily = self.raw("OVERSEER_DAILY_LIMIT")
        max_usd = self.raw("OVERSEER_MAX_USD")
        overseer_max_usd = None if max_usd is None else self.number("OVERSEER_MAX_USD", 0.0, float, 0)
        if overseer_max_usd is not None and overseer_max_usd <= 0 and not any(p.startswith("OVERSEER_MAX_USD") for p in self.problems):
            self.problems.append(f"OVERSEER_MAX_USD={max_usd!r}: must be more than 0 (leave it unset for no cap)")
        retries = self.raw("CLAUDE_MAX_RETRIES")
        if retries is not None and retries.isdigit() and int(retries) > MAX_CLAUDE_RETRIES:
            self.problems.append(f"CLAUDE_MAX_RETRIES={retries!r}: must be at most {MAX_CLAUDE_RETRIES} "
                                 "(each retry of an unreachable API adds seconds to a build)")
        overseer_model = self.raw("OVERSEER_MODEL")
        if overseer_model is not None and (overseer_model.startswith("-") or any(ch.isspace() for ch in overseer_model)):
            self.problems.append(f"OVERSEER_MODEL={overseer_model!r}: must be one model name or alias (no spaces, not a flag)")
        ollama_model = self.text("OLLAMA_MODEL", "llama3.1:8b")
        if any(ch.isspace() for ch in ollama_model):
            self.problems.append(f"OLLAMA_MODEL={ollama_model!r}: must be one model name, e.g. llama3.1:8b")
        ntfy_topic = self.text("NTFY_TOPIC", "agent-builder")
        if not re.fullmatch(NTFY_TOPIC, ntfy_topic):
            self.problems.append(f"NTFY_TOPIC={ntfy_topic!r}: must be 1 to 64 letters, digits, - or _ (an ntfy topic)")
        http_port = self.number("SANDBOX_HTTP_PORT", 0, int, 0)
        if http_port > 65535:
            self.problems.append(f"SANDBOX_HTTP_PORT={http_port!r}: must be a port from 0 (any) to 65535")
            http_port = 0
        seed = self.raw("OLLAMA_SEED")
        approval_base = self.url("APPROVAL_BASE_URL", None)
        approval_secret = self.raw("APPROVAL_SECRET")
        if approval_secret is not None and len(approval_secret) < 16:
            self.problems.append("APPROVAL_SECRET: must be at least 16 characters")
        web_token = self.raw("WEB_TOKEN")
        if web_token is not None and len(web_token) < 16:
            self.problems.append("WEB_TOKEN: must be at least 16 characters (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
        database_url = self.database_url("DATABASE_URL")
        signing_key = self.raw("BUILDER_SIGNING_KEY")
        if signing_key is not None and len(signing_key) < 16:
            self.problems.append("BUILDER_SIGNING_KEY: must be at least 16 characters")
        sandbox_database_url = self.raw("SANDBOX_DATABASE_URL")
        if (sandbox_database_url is not None and "://" in sandbox_database_url
                and not sandbox_database_url.startswith(("postgres://", "postgresql://"))):
            self.problems.append("SANDBOX_DATABASE_URL: must be a libpq URI (postgresql://reader@host/db), got scheme "
                                 f"{sandbox_database_url.split('://')[0]!r}")
        elif sandbox_database_url is not None and not _conninfo_ok(sandbox_database_url):
            self.problems.append("SANDBOX_DATABASE_URL: cannot be read as a libpq connection string: give a URI "
                                 "(postgresql://reader@host/db) or keywords (host=… dbname=… user=…)")
        settings = Settings(
            database_url=database_url,
            home=home,
            ollama_url=self.url("OLLAMA_URL", "http://localhost:11434") or "",
            ollama_model=ollama_model,
            ollama_timeout_s=self.number("OLLAMA_TIMEOUT_S", 120.0, float, 1),
            ollama_num_ctx=self.number("OLLAMA_NUM_CTX", 8192, int, 512),
            ollama_temperature=self.number("OLLAMA_TEMPERATURE", 0.2, float, 0),
            ollama_seed=None if seed is None else self.number("OLLAMA_SEED", 0, int, 0),
            claude_cmd=claude_cmd,
            claude_timeout_s=self.number("CLAUDE_TIMEOUT_S", 180.0, float, 1),
            claude_max_retries=self.number("CLAUDE_MAX_RETRIES", 0, int, 0),
            overseer_model=overseer_model,
            overseer_max_usd=overseer_max_usd,
            overseer_daily_limit=None if daily is None else self.number("OVERSEER_DAILY_LIMIT", 0, int, 0),
            repair_attempts=self.number("REPAIR_ATTEMPTS", 2, int, 0),
            ntfy_url=self.url("NTFY_URL", None),
            ntfy_topic=ntfy_topic,
            ntfy_token=self.raw("NTFY_TOKEN"),
            vault_addr=self.url("VAULT_ADDR", None),
            vault_approle_dir=Path(self.text("VAULT_APPROLE_DIR", DEFAULT_APPROLE_DIR)),
            vault_secrets_path=self.raw("VAULT_SECRETS_PATH"),
            sandbox_base_image=self.image("SANDBOX_BASE_IMAGE", "python:3.12-slim"),
            sandbox_network=network,
            sandbox_timeout_s=self.number("SANDBOX_TIMEOUT_S", 300.0, float, 1),
            sandbox_database_url=sandbox_database_url,
            sandbox_agent_image=self.image("SANDBOX_AGENT_IMAGE", "agent-builder-claude:latest"),
            sandbox_base_images=self.images("SANDBOX_BASE_IMAGES"),
            sandbox_build_timeout_s=self.number("SANDBOX_BUILD_TIMEOUT_S", 300.0, float, 1),
            sandbox_pip_index_url=self.url("SANDBOX_PIP_INDEX_URL", None),
            sandbox_pip_find_links=self.directory("SANDBOX_PIP_FIND_LINKS"),
            sandbox_memory=self.memory("SANDBOX_MEMORY", "512m"),
            sandbox_cpus=self.number("SANDBOX_CPUS", 1.0, float, 0.05),
            sandbox_pids=self.number("SANDBOX_PIDS", 256, int, 16),
            sandbox_log_bytes=self.number("SANDBOX_LOG_BYTES", 1 << 20, int, 1024),
            sandbox_runtime=self.runtime("SANDBOX_RUNTIME"),
            sandbox_keep_images=self.number("SANDBOX_KEEP_IMAGES", 3, int, 1),
            sandbox_http_port=http_port,
            sandbox_tmp_size=self.tmp_size("SANDBOX_TMP_SIZE", "256m"),
            sandbox_hold_s=self.number("SANDBOX_HOLD_S", 60.0, float, 1),
            builder_concurrency=self.number("BUILDER_CONCURRENCY", 1, int, 1),
            poll_interval_s=self.number("POLL_INTERVAL_S", 30.0, float, 0.05),
            rescue_interval_s=self.number("RESCUE_INTERVAL_S", 2.0, float, 0.05),
            liveness_interval_s=self.number("LIVENESS_INTERVAL_S", 10.0, float, 0.1),
            shutdown_grace_s=self.number("SHUTDOWN_GRACE_S", 30.0, float, 0),
            release_backoff_base_s=self.number("RELEASE_BACKOFF_BASE_S", 30.0, float, 0),
            release_backoff_max_s=self.number("RELEASE_BACKOFF_MAX_S", 3600.0, float, 0),
            build_handler=self.handler("BUILD_HANDLER", "listener.build.pipeline:build"),
            deploy_handler=self.handler("DEPLOY_HANDLER", "listener.deploy.production:deploy"),
            log_format=log_format,
            log_level=log_level,
            prod_vault_approle_dir=Path(self.text("PROD_VAULT_APPROLE_DIR", DEFAULT_APPROLE_DIR + "-prod")),
            prod_network=self.text("PROD_NETWORK", "bridge"),
            prod_agents_dir=Path(self.text("PROD_AGENTS_DIR", str(home / "agents"))).expanduser(),
            prod_run_mode=self.choice("PROD_RUN_MODE", "auto", ("auto", "service", "job")),
            prod_verify_s=self.number("PROD_VERIFY_S", 5.0, float, 0.5),
            prod_stop_timeout_s=self.number("PROD_STOP_TIMEOUT_S", 10, int, 0),
            prod_log_max_size=self.log_size("PROD_LOG_MAX_SIZE", "10m"),
            prod_log_max_files=self.number("PROD_LOG_MAX_FILES", 3, int, 1),
            prod_runtime=self.runtime("PROD_RUNTIME") or self.raw("SANDBOX_RUNTIME"),
            approval_base_url=approval_base,
            approval_secret=approval_secret,
            approval_addr=self.web_addr(),
            approval_ttl_s=self.number("APPROVAL_TTL_S", 86400.0, float, 60),
            web_token=web_token,
            metrics_addr=self.address("METRICS_ADDR", self.raw("METRICS_ADDR")),
            operator_database_url=self.database_url("OPERATOR_DATABASE_URL"),
            builder_signing_key=signing_key,
        )
        if self.problems:
            raise ConfigError(self.problems)
        return settings
