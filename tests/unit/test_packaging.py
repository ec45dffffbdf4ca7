"""The container packaging: Dockerfile, docker/claude-agent.Dockerfile, both compose files.

No registry is needed. The compose files are validated by the compose CLI itself when one is
installed (`docker compose config -q` or `docker-compose config -q`: parses, interpolates, checks the
schema; pulls nothing), and always structurally here (with PyYAML when it is installed, a text check
otherwise). The Dockerfiles are parsed here: non-root USER, HEALTHCHECK, ENTRYPOINT, and every file
they COPY exists and is not excluded by .dockerignore.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from listener.config import ConfigError, Settings

try:
    import yaml
except ImportError:  # the structural checks then fall back to text
    yaml = None

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
AGENT_DOCKERFILE = ROOT / "docker" / "claude-agent.Dockerfile"
COMPOSE_FILES = {
    "docker-compose.yml": {"postgres", "listener"},
    "docker-compose.test.yml": {"postgres", "vault", "ntfy", "ollama"},
}
ROOT_USERS = {"root", "0", "root:root", "0:0", "root:0", "0:root"}
# Environment the listener gets that listener/config.py does not read (the docker SDK, the claude CLI).
LISTENER_ENV_EXTRAS = {"DOCKER_HOST", "ANTHROPIC_API_KEY"}

needs_yaml = pytest.mark.skipif(yaml is None, reason="PyYAML is not installed (pip install pyyaml); the text checks still ran")


# -- helpers: compose --------------------------------------------------------------------------------

def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        try:
            probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is not None and probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


_TOKEN = re.compile(r"\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*|)")
_BRACED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*)|(:?\?)(.*))?$", re.S)


def _interpolations(text: str) -> Iterator[tuple[str, str | None, str]]:
    """(name, operator or None, the whole token) for every interpolation; $$ escapes are skipped."""
    for match in _TOKEN.finditer(text):
        body = match.group(1)
        if body == "$":
            continue
        if body.startswith("{"):
            inner = _BRACED.match(body[1:-1])
            if inner is None:
                yield body, "invalid", match.group(0)
                continue
            yield inner.group(1), inner.group(2) or inner.group(4), match.group(0)
        else:
            yield body, None, match.group(0)


def _resolve(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's interpolation of ${NAME:-default} / ${NAME-default}, $$ → $ (enough for these files)."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        body = match.group(1)
        if body == "$":
            return "$"
        inner = _BRACED.match(body[1:-1]) if body.startswith("{") else None
        name = inner.group(1) if inner else body
        value = env.get(name)
        if inner and inner.group(2) == ":-" and not value:
            return inner.group(3)
        if inner and inner.group(2) == "-" and value is None:
            return inner.group(3)
        return value or ""

    return _TOKEN.sub(replace, text)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _uncommented(text: str) -> str:
    """The file without YAML comments (naive: these files put no '#' inside values)."""
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def _load(name: str) -> dict[str, Any]:
    assert yaml is not None
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


def _env_mapping(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item.partition("=")[0]: (item.partition("=")[2] if "=" in item else None) for item in env}
    return {key: None if value is None else str(value) for key, value in env.items()}


def _volumes(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Short-syntax volumes as (source, target, mode), after resolving the defaults."""
    out = []
    for entry in service.get("volumes") or []:
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        parts = _resolve(entry).split(":")
        out.append((parts[0], parts[1] if len(parts) > 1 else parts[0], parts[2] if len(parts) > 2 else "rw"))
    return out


def _config_variables() -> set[str]:
    source = (ROOT / "listener" / "config.py").read_text(encoding="utf-8")
    return set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source))


# -- the compose CLI ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_compose_cli_accepts_the_file(name: str) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed; the structural checks still ran")
    # A clean environment: the defaults in the file are what is validated, not this shell's settings.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "DOCKER_CONFIG") if key in os.environ}
    done = subprocess.run([*cli, "-f", name, "config", "-q"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cli)} -f {name} config -q:\n{done.stdout}\n{done.stderr}"


# -- structure, without PyYAML -----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_compose_text_is_safe_and_every_variable_has_a_default(name: str) -> None:
    text = _uncommented((ROOT / name).read_text(encoding="utf-8"))
    assert not re.search(r"^\s*privileged:\s*['\"]?true", text, re.M | re.I), "no privileged containers"
    assert not re.search(r"^\s*(network_mode|pid|ipc):\s*['\"]?host", text, re.M), "nothing shares the host's namespaces"
    problems = [token for var, op, token in _interpolations(text) if op not in (":-", "-")]
    assert not problems, f"every ${{VAR}} needs a default (${{VAR:-default}}); these have none: {problems}"
    for service in COMPOSE_FILES[name]:
        assert re.search(rf"^  {re.escape(service)}:\s*$", text, re.M), f"service {service} is missing"
    assert "healthcheck:" in text


# -- structure, with PyYAML -------------------------------------------------------------------------

@needs_yaml
@pytest.mark.parametrize("name", sorted(COMPOSE_FILES))
def test_compose_services_are_confined_and_healthchecked(name: str) -> None:
    doc = _load(name)
    services: dict[str, Any] = doc["services"]
    assert COMPOSE_FILES[name] <= set(services), f"{name} lacks {COMPOSE_FILES[name] - set(services)}"
    for string in _strings(doc):
        for _var, op, token in _interpolations(string):
            assert op in (":-", "-"), f"{name}: {token} has no default"

    # One-shots (run, exit, no healthcheck): what others wait for to complete, or restart: "no".
    one_shots = {dep for svc in services.values() for dep, how in _depends(svc).items()
                 if how == "service_completed_successfully"}
    one_shots |= {sname for sname, svc in services.items() if svc.get("restart") in ("no", False)}
    for sname, svc in services.items():
        assert svc.get("privileged") is not True, f"{sname} is privileged"
        for key in ("network_mode", "pid", "ipc", "userns_mode"):
            assert str(svc.get(key, "")) != "host", f"{sname} has {key}: host"
        assert not set(svc.get("cap_add") or []) & {"ALL", "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"}, sname
        for published in svc.get("ports") or []:
            assert ":" in str(published), f"{sname}: publish with an explicit host port/address: {published!r}"
        if sname in one_shots:
            assert svc.get("restart", "no") in ("no", False), f"one-shot {sname} must not restart"
        elif "build" in svc:
            assert "HEALTHCHECK" in _instruction_names(_final_stage(DOCKERFILE)), f"{sname}: its image needs a HEALTHCHECK"
        else:
            assert "healthcheck" in svc, f"{sname} has no healthcheck"
        for dep, how in _depends(svc).items():
            assert dep in services, f"{sname} depends on unknown {dep}"
            if how == "service_healthy":
                assert "healthcheck" in services[dep] or "build" in services[dep], f"{dep} cannot become healthy"


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {dep: "service_started" for dep in deps}
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in deps.items()}


@needs_yaml
def test_listener_service_is_wired_for_the_service() -> None:
    services = _load("docker-compose.yml")["services"]
    listener = services["listener"]
    assert listener["build"] in (".", {"context": "."})
    assert listener.get("restart") == "unless-stopped"
    assert _depends(listener).get("postgres") == "service_healthy"
    assert listener.get("init") is True, "an init reaps the overseer's grandchildren"
    grace = str(listener.get("stop_grace_period", "10s"))
    assert grace.endswith("s") and int(grace[:-1]) > 30, "longer than SHUTDOWN_GRACE_S (30 s)"

    # Migrations run before the listener starts (a one-shot migrate service, or in the command).
    migrate = services.get("migrate")
    if migrate is not None:
        assert _depends(listener).get("migrate") == "service_completed_successfully"
        assert migrate.get("command") in (["migrate"], "migrate")
    else:
        assert "migrate" in json.dumps([listener.get("command"), listener.get("entrypoint")])

    volumes = _volumes(listener)
    assert ("/var/run/docker.sock", "/var/run/docker.sock", "rw") in volumes, "the engine's socket"
    env = _env_mapping(listener)
    for variable in ("VAULT_APPROLE_DIR", "PROD_VAULT_APPROLE_DIR"):
        path = _resolve(env[variable] or "")
        assert path.startswith("/"), variable
        # The engine resolves bind mounts on its host: the same path inside the listener and outside.
        assert (path, path, "ro") in volumes, f"{variable} ({path}) must be mounted read-only at the same path"
    agents = _resolve(env["PROD_AGENTS_DIR"] or "")
    assert (agents, agents, "rw") in volumes

    # The published recording port is the one the listener listens on.
    port = _resolve(env["SANDBOX_HTTP_PORT"] or "")
    assert any(str(p).endswith(f":{port}:{port}") for p in listener["ports"])
    assert any(str(p).endswith(":8787") for p in listener["ports"]), "APPROVAL_ADDR's port"
    assert _resolve(env["APPROVAL_ADDR"] or "").endswith(":8787")


@needs_yaml
def test_listener_environment_is_what_the_config_reads_and_is_valid() -> None:
    services = _load("docker-compose.yml")["services"]
    known = _config_variables() | LISTENER_ENV_EXTRAS
    for sname in ("listener", "migrate"):
        if sname not in services:
            continue
        env = _env_mapping(services[sname])
        unknown = set(env) - known
        assert not unknown, f"{sname} sets variables nothing reads (typos?): {sorted(unknown)}"
        resolved = {key: _resolve(value) for key, value in env.items() if value is not None}
        try:
            settings = Settings.from_env(resolved)
        except ConfigError as exc:
            pytest.fail(f"{sname}'s default environment is refused by listener.config: {exc}")
        assert settings.database_url and "@postgres:5432/" in settings.database_url
    settings = Settings.from_env({k: _resolve(v) for k, v in _env_mapping(services["listener"]).items() if v is not None})
    assert settings.sandbox_http_port != 0, "a fixed port, so it can be published"
    assert settings.sandbox_network != "host"


@needs_yaml
def test_test_stack_binds_to_localhost_and_sets_vault_up() -> None:
    services = _load("docker-compose.test.yml")["services"]
    for sname, svc in services.items():
        for published in svc.get("ports") or []:
            assert _resolve(str(published)).startswith("127.0.0.1:"), f"{sname} publishes beyond localhost: {published}"
    vault = services["vault"]
    assert "-dev" in vault["command"] and _env_mapping(vault).get("VAULT_DEV_ROOT_TOKEN_ID")
    init = services["vault-init"]
    assert _depends(init) == {"vault": "service_healthy"}
    script = _resolve("\n".join(init["command"]))
    for needed in ("auth enable approle", "kv-v2", "role-id", "secret-id"):
        assert needed in script, f"vault-init does not {needed}"
    if shutil.which("sh"):
        done = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"vault-init's script does not parse: {done.stderr}"


# -- helpers: Dockerfiles ----------------------------------------------------------------------------

def _instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) in order; continuation lines joined, comment lines dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name} ends inside a continued line"
    return out


def _final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = _instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _instruction_names(instructions: list[tuple[str, str]]) -> list[str]:
    return [keyword for keyword, _ in instructions]


def _last(instructions: list[tuple[str, str]], keyword: str) -> str | None:
    found = [args for kw, args in instructions if kw == keyword]
    return found[-1] if found else None


def _exec_form(args: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return shlex.split(args)
    assert isinstance(value, list)
    return value


def _dockerignore() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line.lstrip("/") for line in lines if line and not line.startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    import fnmatch

    ignored = False
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        pattern = pattern.rstrip("/")
        candidates = [pattern, pattern.replace("**/", "")]
        if any(fnmatch.fnmatch(prefix, p) for prefix in prefixes for p in candidates):
            ignored = not negate
    return ignored


def _copy_sources(instructions: list[tuple[str, str]]) -> list[str]:
    sources = []
    for keyword, args in instructions:
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        sources += words[:-1]
    return sources


# -- the listener's Dockerfile -----------------------------------------------------------------------

def test_dockerfile_runs_as_non_root_with_healthcheck_and_entrypoint() -> None:
    final = _final_stage(DOCKERFILE)
    user = _last(final, "USER")
    assert user is not None and user.split()[0] not in ROOT_USERS, f"final USER must be non-root, is {user!r}"
    healthcheck = _last(final, "HEALTHCHECK")
    assert healthcheck is not None and healthcheck.upper() != "NONE"
    assert "agent-builder" in healthcheck and " CMD " in f" {healthcheck} "
    healthcheck_command = healthcheck.split(" CMD ", 1)[1]
    assert healthcheck_command.split()[1] in ("healthcheck",) or "healthz" in healthcheck_command
    assert _exec_form(_last(final, "ENTRYPOINT") or "") == ["agent-builder"]
    assert _exec_form(_last(final, "CMD") or "") == ["listen"]


def test_dockerfile_base_is_python_312_slim() -> None:
    instructions = _instructions(DOCKERFILE)
    args = dict(arg.partition("=")[::2] for kw, arg in instructions if kw == "ARG" and "=" in arg)
    bases = [_resolve(arg.split()[0], args) for kw, arg in instructions if kw == "FROM"]
    assert bases and all(base == "python:3.12-slim" for base in bases), bases


def test_every_file_the_dockerfiles_copy_exists_and_is_in_the_context() -> None:
    patterns = _dockerignore()
    sources = _copy_sources(_instructions(DOCKERFILE))
    assert sources, "the Dockerfile copies the project"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    # claude-agent.Dockerfile is built without a context (`docker build - < …`): it copies nothing.
    assert _copy_sources(_instructions(AGENT_DOCKERFILE)) == []


def test_dockerfile_copies_everything_the_package_is_built_from() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= set(pyproject["tool"]["setuptools"].get("package-dir", {}).values())
    copied = {source.rstrip("/") for source in _copy_sources(_instructions(DOCKERFILE))}
    assert needed <= copied, f"not copied: {sorted(needed - copied)}"
    install = " ".join(args for kw, args in _instructions(DOCKERFILE) if kw == "RUN")
    assert re.search(r"pip install (\S+ )*\.(\s|$)", install) and "-e ." not in install, "a non-editable install"


def test_dockerignore_keeps_tests_and_git_out_of_the_image() -> None:
    patterns = _dockerignore()
    for path in (".git", "tests", "build", "agent_builder.egg-info", "listener/__pycache__/x.pyc"):
        assert _ignored(path, patterns), path
    for path in ("listener/ops/cli.py", "sql/transition.sql", "migrations/0001_automation_ideas.sql", "README.md"):
        assert not _ignored(path, patterns), path


# -- the claude_agent sandbox image ------------------------------------------------------------------

def _agent_image_build_user() -> str:
    """The user a Dockerfile starting `FROM agent-builder-claude` builds as, before its own USER lines."""
    final = _final_stage(AGENT_DOCKERFILE)
    onbuild_users = [args.split(None, 1)[1] for kw, args in final
                     if kw == "ONBUILD" and args.upper().startswith("USER ")]
    if onbuild_users:
        return onbuild_users[-1]
    return _last(final, "USER") or "root"


def _user_of_first_run(derived: str, inherited: str) -> str | None:
    user = inherited
    for line in derived.splitlines():
        keyword, _, args = line.strip().partition(" ")
        if keyword.upper() == "USER":
            user = args.strip()
        elif keyword.upper() == "RUN":
            return user
    return None


def test_agent_image_has_bash_and_the_claude_cli_and_a_non_root_default() -> None:
    text = AGENT_DOCKERFILE.read_text(encoding="utf-8")
    final = _final_stage(AGENT_DOCKERFILE)
    assert "npm install -g" in text and "@anthropic-ai/claude-code" in text
    assert re.search(r"apt-get install[^\n]*\bbash\b", text), "bash is installed explicitly"
    user = _last(final, "USER")
    assert user is not None and user not in ROOT_USERS
    env = " ".join(args for kw, args in final if kw == "ENV")
    assert "HOME=" in env, "the sandbox user (65534) needs a writable HOME for claude"


def test_builds_on_top_of_the_agent_image_run_their_run_line_as_root() -> None:
    # What listener/sandbox/levels.py writes today for a claude_agent (checked against the real
    # function below when it imports).
    derived = ("FROM agent-builder-claude:latest\nCOPY agent.sh /app/agent.sh\n"
               "RUN chmod 0755 /app/agent.sh && chown -R 65534:65534 /app\nWORKDIR /app\n")
    assert _user_of_first_run(derived, _agent_image_build_user()) in ROOT_USERS


def test_the_real_derived_dockerfile_builds_on_the_agent_image(tmp_path: Path) -> None:
    try:
        from listener.build.extract import GeneratedFiles
        from listener.sandbox.levels import write_context
    except ImportError as exc:
        pytest.skip(f"listener.sandbox.levels does not import yet: {exc}")
    write_context(tmp_path, GeneratedFiles("agent.sh", "#!/bin/bash\necho hi\n"), "claude_agent",
                  "python:3.12-slim", "agent-builder-claude:latest")
    derived = (tmp_path / "Dockerfile").read_text(encoding="utf-8")
    assert derived.startswith("FROM agent-builder-claude:latest")
    user = _user_of_first_run(derived, _agent_image_build_user())
    assert user is None or user in ROOT_USERS, f"the derived build's RUN would run as {user!r} and fail to chown"
