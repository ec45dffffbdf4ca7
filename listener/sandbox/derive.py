"""Level 4 when the operator gave no acceptance_check: ask the model for checks, with Ollama's
structured output (a JSON schema), validate them, and say so in the Level 4 log."""

from __future__ import annotations

import json
from typing import Any

from listener.extract import GeneratedFiles
from listener.ollama import OllamaClient
from listener.outcome import StepFailure
from listener.records import Automation
from listener.sandbox.checks import KINDS, validate_spec

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "checks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": list(KINDS)},
                    "path": {"type": "string"},
                    "min_bytes": {"type": "integer"},
                    "query": {"type": "string"},
                    "min_rows": {"type": "integer"},
                    "url": {"type": "string"},
                    "status": {"type": "integer"},
                    "method": {"type": "string"},
                    "after_s": {"type": "number"},
                },
                "required": ["kind"],
            },
        }
    },
    "required": ["checks"],
}

PROMPT = """You write acceptance checks for an automation that just ran once in a test sandbox.
The checks look at the state the automation leaves behind, never at its printed output.
Kinds of checks (use only these, with these fields):
- file_exists: {{"kind": "file_exists", "path": "/abs/path", "min_bytes": 1}} a file the code writes (under /tmp or its working directory)
- sql_rows: {{"kind": "sql_rows", "query": "SELECT ...", "min_rows": 1}} rows the code writes to the sandbox database
- http_status: {{"kind": "http_status", "url": "http://...", "status": 200}} a URL the code makes answer
- http_request: {{"kind": "http_request", "method": "POST", "path": "/something"}} the code called $SANDBOX_HTTP_URL + path
- container_running: {{"kind": "container_running", "after_s": 5}} only for a long-running service
Answer with a JSON object {{"checks": [...]}} holding the checks that prove this automation did its job.

Automation: {name} ({type})
Specification: {spec}

The code:
{code}
"""


def derive_checks(ollama: OllamaClient, automation: Automation, files: GeneratedFiles) -> tuple[dict[str, Any], str]:
    prompt = PROMPT.format(name=automation.label, type=automation.type or "script",
                           spec=(automation.task_description or "")[:4000], code=files.main[:12000])
    generation = ollama.generate(prompt, fmt=SCHEMA)
    try:
        spec = json.loads(generation.text)
    except ValueError:
        raise StepFailure(level=4, step="level4", kind="level",
                          message="acceptance_check is NULL and the model's derived checks are not JSON",
                          log=generation.text[:2000]) from None
    try:
        validate_spec(spec)
    except StepFailure as failure:
        raise StepFailure(level=4, step="level4", kind="level",
                          message=f"acceptance_check is NULL and the model's derived checks are unusable: {failure.message}",
                          log=generation.text[:2000]) from None
    checks = ", ".join(check["kind"] for check in spec["checks"])
    return spec, f"acceptance checks derived by the model because acceptance_check is NULL ({checks}); recorded with the build"
