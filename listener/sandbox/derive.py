"""Level 4 when the operator gave no acceptance_check: ask the model for checks with Ollama's
structured output (a JSON schema), validate them, and return the note for the Level 4 log."""

from __future__ import annotations

import json
from typing import Any

from loguru import logger

from listener.extract import GeneratedFiles
from listener.ollama import OllamaClient
from listener.outcome import StepFailure
from listener.records import Automation
from listener.sandbox.checks import KINDS, MAX_WAIT_S, validate_spec
from listener.sandbox.keeper import SANDBOX_WORKDIR
from listener.sandbox.urls import AUTOMATION_HOST, Target, parse, refusal

SPEC_CHARS = 4000
CODE_CHARS = 12000
LOG_CHARS = 2000

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
                },
                "required": ["kind"],
            },
        }
    },
    "required": ["checks"],
}

PROMPT = """You write acceptance checks for an automation that runs once in a test sandbox (a Docker container).
The checks verify the state the automation leaves behind after it ran. They never look at its printed output.
Use only these kinds, with exactly these fields:
- {{"kind": "file_exists", "path": "/tmp/result.json", "min_bytes": 1}}: a file the code writes, by absolute path (under /tmp or its working directory {workdir})
- {{"kind": "sql_rows", "query": "SELECT ... FROM ... WHERE ...", "min_rows": 1}}: rows the code writes to its database (one read-only SELECT)
- {{"kind": "http_request", "method": "POST", "path": "/report"}}: the code sends that request to the URL in the environment variable SANDBOX_HTTP_URL plus the path
- {{"kind": "http_status", "url": "http://{automation}:8080/health", "status": 200}}: a URL answered after the run, requested from the sandbox network: a service the code starts (its container is reachable as {automation}), or a server on that network the code creates or changes (never localhost or the builder's own machine)
- {{"kind": "container_running", "after_s": 5}}: only for a long-running service that must keep running
Choose one to three checks that prove this automation did its job, using the paths, queries and URLs the code really uses.
Answer with a JSON object {{"checks": [...]}} and nothing else.

Automation: {name} (type {type})
Specification:
{spec}

The code ({files}):
{code}
"""


def build_prompt(automation: Automation, files: GeneratedFiles, workdir: str = SANDBOX_WORKDIR) -> str:
    code = "\n\n".join(f"=== FILE: {name} ===\n{text}" for name, text in files.as_dict().items())
    return PROMPT.format(
        name=automation.label, type=automation.type or "script", workdir=workdir, automation=AUTOMATION_HOST,
        spec=(automation.task_description or "")[:SPEC_CHARS],
        files=", ".join(files.as_dict()), code=code[:CODE_CHARS],
    )


def derive_checks(ollama: OllamaClient, automation: Automation, files: GeneratedFiles) -> tuple[dict[str, Any], str]:
    """({"checks": [...]} validated, with defaults filled in; the sentence for the Level 4 log).
    Raises StepFailure(level 4) when the model's answer is not usable checks."""
    generation = ollama.generate(build_prompt(automation, files), fmt=SCHEMA)
    try:
        answer = json.loads(generation.text)
    except ValueError:
        raise _unusable("its answer is not JSON", generation.text) from None
    try:
        checks = validate_spec(answer)
    except StepFailure as failure:
        raise _unusable(failure.message.removeprefix("acceptance check unusable: "), generation.text) from None
    for index, check in enumerate(checks, start=1):
        if check["kind"] == "http_status" and (why := refusal(check["url"])) is not None:
            logger.warning("automation {}: model-derived check {} (http_status {}) refused: {}",
                           automation.id, index, _shown(check["url"]), why)
            raise _unusable(f"check {index} (http_status {_shown(check['url'])}) is refused: {why}; a model-derived "
                            "check never reaches the listener's host", generation.text)
    spec = {"checks": checks}
    note = ("acceptance checks derived by the model because acceptance_check is NULL: "
            + "; ".join(_describe(check) for check in checks))
    logger.info("automation {}: {}", automation.id, note)
    return spec, note


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
    return f"container_running after {check['after_s']:g} s"
