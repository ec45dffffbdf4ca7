"""Level 4 when the operator gave no acceptance_check: ask the model for checks with Ollama's
structured output (a JSON schema), validate them, and return the note for the Level 4 log."""

from __future__ import annotations

import json
import posixpath
from typing import Any

from loguru import logger

from listener.build.extract import GeneratedFiles
from listener.build.ollama import OllamaClient
from listener.queue.outcome import StepFailure
from listener.queue.records import Automation
from listener.sandbox.checks import KINDS, MAX_WAIT_S, validate_spec
from listener.sandbox.image import APP_DIR, DEPS_DIR
from listener.sandbox.keeper import KEEPER_DIR, SANDBOX_WORKDIR
from listener.sandbox.urls import AUTOMATION_HOST, Target, parse, refusal

SPEC_CHARS = 4000
CODE_CHARS = 12000
LOG_CHARS = 2000

# Paths a derived file_exists may never name: they are the system's, or the image's own.
SYSTEM_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sys", "/dev",
               "/boot", "/var/lib", "/var/cache", "/var/log", "/opt", "/root", "/home", "/run", "/srv", "/mnt",
               "/media", KEEPER_DIR)
WRITABLE_DIRS = ("/tmp", SANDBOX_WORKDIR)  # everything else is read-only in the sandbox

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "checks": {
            "type": "array",
            "minItems": 1,
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": list(KINDS)},
                    "path": {"type": "string"},
                    "min_bytes": {"type": "integer", "minimum": 0},
                    "query": {"type": "string"},
                    "min_rows": {"type": "integer", "minimum": 1},
                    "url": {"type": "string"},
                    "status": {"type": "integer"},
                    "method": {"type": "string"},
                    "after_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_S},
                    "min_calls": {"type": "integer", "minimum": 1},
                    "args_include": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["kind"],
            },
        }
    },
    "required": ["checks"],
}

PROMPT = """You write acceptance checks for an automation that runs once in a test sandbox (a Docker container).
The checks verify the state the automation creates or changes when it runs: each must be false before it ran
and true after. They never look at its printed output, at files of the image itself (its code under {app}, its
dependencies), or at system files (/etc, /usr, /proc, ...): those exist before the run and prove nothing.
Use only these kinds, with exactly these fields:
- {{"kind": "file_exists", "path": "/tmp/result.json", "min_bytes": 1}}: a file the code writes, by absolute path (under /tmp or its working directory {workdir}; nothing else is writable)
- {{"kind": "sql_rows", "query": "SELECT ... FROM ... WHERE ...", "min_rows": 1}}: rows the code writes to its database (one read-only SELECT)
- {{"kind": "http_request", "method": "POST", "path": "/report"}}: the code sends that request to the URL in the environment variable SANDBOX_HTTP_URL plus the path
- {{"kind": "http_status", "url": "http://{automation}:8080/health", "status": 200}}: a URL answered after the run, requested from the sandbox network: a service the code starts (its container is reachable as {automation}), or a server on that network the code creates or changes (never localhost or the builder's own machine)
- {{"kind": "container_running", "after_s": 5}}: only for a long-running service that must keep running
{agent}Choose one to three checks that prove this automation did its job, using the paths, queries and URLs the code really uses.
Answer with a JSON object {{"checks": [...]}} and nothing else.

Automation: {name} (type {type})
Specification:
{spec}

The code ({files}):
{code}
"""


AGENT_KIND = ('- {{"kind": "claude_called", "min_calls": 1, "args_include": ["-p"]}}: the script calls the claude CLI '
              "(in the sandbox a recording stand-in answers it); add a file_exists or http_request check for what the "
              "script does with the answer\n")


def schema_for(automation_type: str) -> dict[str, Any]:
    """The structured-output schema: claude_called only for claude_agent rows."""
    kinds = [kind for kind in KINDS if kind != "claude_called" or automation_type == "claude_agent"]
    schema: dict[str, Any] = json.loads(json.dumps(SCHEMA))
    schema["properties"]["checks"]["items"]["properties"]["kind"]["enum"] = kinds
    return schema


def build_prompt(automation: Automation, files: GeneratedFiles, workdir: str = SANDBOX_WORKDIR) -> str:
    code = "\n\n".join(f"=== FILE: {name} ===\n{text}" for name, text in files.as_dict().items())
    agent = AGENT_KIND.format() if automation.type == "claude_agent" else ""
    return PROMPT.format(
        name=automation.label, type=automation.type or "script", workdir=workdir, automation=AUTOMATION_HOST,
        app=APP_DIR, agent=agent,
        spec=(automation.task_description or "")[:SPEC_CHARS],
        files=", ".join(files.as_dict()), code=code[:CODE_CHARS],
    )


def derive_checks(ollama: OllamaClient, automation: Automation, files: GeneratedFiles) -> tuple[dict[str, Any], str]:
    """({"checks": [...]} validated, with defaults filled in, the rejected ones left out; the
    sentence for the Level 4 log, naming the rejected checks and why). Raises StepFailure(level 4)
    when the model's answer is not usable checks, or every check it gave was rejected."""
    generation = ollama.generate(build_prompt(automation, files), fmt=schema_for(automation.type or ""))
    try:
        answer = json.loads(generation.text)
    except ValueError:
        raise _unusable("its answer is not JSON", generation.text) from None
    try:
        checks = validate_spec(answer)
    except StepFailure as failure:
        raise _unusable(failure.message.removeprefix("acceptance check unusable: "), generation.text) from None
    kept, rejected = [], []
    for index, check in enumerate(checks, start=1):
        why = rejection(check, automation.type or "", files)
        if why is None:
            kept.append(check)
            continue
        logger.warning("automation {}: model-derived check {} ({}) rejected: {}", automation.id, index, _describe(check), why)
        rejected.append(f"check {index} ({_describe_short(check)}) is refused: {why}")
    if not kept:
        raise _unusable("every check was rejected: " + "; ".join(rejected), generation.text)
    spec = {"checks": kept}
    note = ("acceptance checks derived by the model because acceptance_check is NULL: "
            + "; ".join(_describe(check) for check in kept))
    if rejected:
        note += "\nrejected derived checks (they do not describe the automation's effect): " + "; ".join(rejected)
    logger.info("automation {}: {}", automation.id, note)
    return spec, note


def rejection(check: dict[str, Any], automation_type: str, files: GeneratedFiles) -> str | None:
    """Why a model-derived check cannot prove the automation's effect, None when it may."""
    kind = check["kind"]
    if kind == "http_status" and (why := refusal(check["url"])) is not None:
        return f"{why}; a model-derived check never reaches the listener's host"
    if kind == "claude_called" and automation_type != "claude_agent":
        return "claude_called is for claude_agent automations only"
    if kind != "file_exists":
        return None
    path = posixpath.normpath(check["path"])
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if _under(path, (APP_DIR, DEPS_DIR)):
        return f"{path} is a file of the image itself (the builder copied it in): it exists before the run"
    if _under(path, SYSTEM_DIRS):
        return f"{path} is a system file: it exists (or not) whatever the automation does"
    if not _under(path, WRITABLE_DIRS):
        return (f"{path} is outside /tmp and the working directory {SANDBOX_WORKDIR}: the sandbox's root filesystem "
                "is read-only, so only the image could have put it there")
    first = path.removeprefix(SANDBOX_WORKDIR + "/").split("/")[0] if _under(path, (SANDBOX_WORKDIR,)) else None
    if first is not None and first in {*files.as_dict(), posixpath.basename(DEPS_DIR)}:
        return (f"{path} is a file of the image itself (linked into {SANDBOX_WORKDIR} from the image's working "
                "directory): it exists before the run")
    return None


def _under(path: str, directories: tuple[str, ...]) -> bool:
    return any(path == directory or path.startswith(directory + "/") for directory in directories)


def _describe_short(check: dict[str, Any]) -> str:
    if check["kind"] == "http_status":
        return f"http_status {_shown(check['url'])}"
    if check["kind"] == "file_exists":
        return f"file_exists {check['path']}"
    return str(check["kind"])


def _unusable(reason: str, text: str) -> StepFailure:
    return StepFailure(level=4, step="level4", kind="level", log=text[:LOG_CHARS],
                       message=f"acceptance_check is NULL and the checks the model derived are unusable: {reason}")


def _shown(url: str) -> str:
    """The URL without credentials (as the checks show it)."""
    target = parse(url)
    return target.shown if isinstance(target, Target) else url


def _describe(check: dict[str, Any]) -> str:
    kind = check["kind"]
    if kind == "file_exists":
        return f"file_exists {check['path']} (≥ {check['min_bytes']} bytes)"
    if kind == "sql_rows":
        return f"sql_rows ≥ {check['min_rows']} row(s) from {' '.join(check['query'].split())[:120]}"
    if kind == "http_status":
        return f"http_status {_shown(check['url'])} → {check['status']}"
    if kind == "http_request":
        return f"http_request {check['method']} SANDBOX_HTTP_URL{check['path']}"
    if kind == "claude_called":
        with_args = f" with {' '.join(check['args_include'])}" if check["args_include"] else ""
        return f"claude_called ≥ {check['min_calls']} call(s){with_args}"
    return f"container_running after {check['after_s']:g} s"
