"""The `claude` stand-in of claude_agent sandboxes: no real model, no credentials, no credits.

The builder puts it into every claude_agent image (levels.write_context, through the confined
builder) at STANDIN_PATH, first on PATH. Each invocation is recorded: the stand-in POSTs its argv,
its stdin (at most STDIN_BYTES) and the *names* of its environment variables (never their values)
to the run's recording endpoint under RECORD_PATH (SANDBOX_HTTP_URL + /_claude), then prints a
canned reply (REPLY_VARIABLE, set per run from the `claude_called` check's "reply"; the JSON form
of `--output-format json` in REPLY_JSON_VARIABLE) and exits 0. Level 4 `claude_called` reads the
recorded calls (listener/sandbox/checks.py).

It is bash with /dev/tcp, so it needs nothing the keeper does not already need (bash, coreutils).
With SANDBOX_NETWORK=none it cannot record: it still answers, says so on stderr, and the
`claude_called` check fails with that reason.

The body it sends is a list of fields, each `<name> <byte length>\\n<bytes>\\n`, names `arg`,
`env` and `stdin`: nothing in it needs quoting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

STANDIN_DIR = "/opt/agent-builder/bin"
STANDIN_PATH = f"{STANDIN_DIR}/claude"
STANDIN_FILE = "agent-builder-claude"  # its name in the build context
RECORD_PATH = "/_claude"  # reserved under SANDBOX_HTTP_URL (http_request checks may not use it)
REPLY_VARIABLE = "AGENT_BUILDER_CLAUDE_REPLY"
REPLY_JSON_VARIABLE = "AGENT_BUILDER_CLAUDE_REPLY_JSON"
DEFAULT_REPLY = "A canned answer from the agent-builder claude stand-in (a sandbox test run: no model was asked)."
STDIN_BYTES = 65536
MAX_REPLY_CHARS = 65536
CONTENT_TYPE = "application/x-agent-builder-claude-call"

SCRIPT = r"""#!/bin/bash
# agent-builder's stand-in for the claude CLI in sandbox runs (listener/sandbox/standin.py):
# records this invocation (argv, stdin, the names of the environment variables: never their values)
# at SANDBOX_HTTP_URL/_claude and prints a canned reply. No model, no credentials, no network beyond
# the recording endpoint.
LC_ALL=C  # byte lengths (not exported: the recorded names are the caller's)
body=""
field() { body+="$1 ${#2}"$'\n'"$2"$'\n'; }
for arg in "$@"; do field arg "$arg"; done
for name in $(compgen -e); do field env "$name"; done
input=""
if [[ ! -t 0 ]]; then
    { input=$(head -c STDIN_BYTES; cat >/dev/null; printf x); } 2>/dev/null
    input=${input%x}
fi
field stdin "$input"
recorded=0
url=${SANDBOX_HTTP_URL-}
if [[ $url == http://* ]]; then
    rest=${url#http://}
    hostport=${rest%%/*}
    base=""
    if [[ $rest == */* ]]; then base=/${rest#*/}; fi
    host=${hostport%:*} port=${hostport##*:}
    host=${host#[} host=${host%]}
    status=""
    if { printf 'POST %s/_claude HTTP/1.0\r\nHost: %s\r\nContent-Type: CONTENT_TYPE\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
             "${base%/}" "$hostport" "${#body}" "$body" >&3 && IFS= read -r -t 10 status <&3; } 3<>"/dev/tcp/$host/$port"; then
        if [[ $status == HTTP/1.?" 200"* ]]; then recorded=1; fi
    fi 2>/dev/null
fi
if (( ! recorded )); then
    echo "claude (agent-builder sandbox stand-in): this call could not be recorded at SANDBOX_HTTP_URL" >&2
fi
json=0 previous=""
for arg in "$@"; do
    if [[ $arg == --output-format=json || ( $previous == --output-format && $arg == json ) ]]; then json=1; fi
    previous=$arg
done
if [[ ${1-} == --version || ${1-} == -v ]]; then
    echo "2.1.0 (Claude Code; agent-builder sandbox stand-in)"
elif (( json )); then
    printf '%s\n' "${AGENT_BUILDER_CLAUDE_REPLY_JSON-}"
else
    printf '%s\n' "${AGENT_BUILDER_CLAUDE_REPLY-DEFAULT_REPLY}"
fi
exit 0
""".replace("STDIN_BYTES", str(STDIN_BYTES)).replace("CONTENT_TYPE", CONTENT_TYPE).replace("DEFAULT_REPLY", DEFAULT_REPLY)


@dataclass(frozen=True)
class ClaudeCall:
    """One recorded invocation of the stand-in."""

    argv: list[str] = field(default_factory=list)
    env_names: list[str] = field(default_factory=list)
    stdin: str = ""


def parse_call(body: bytes) -> ClaudeCall | None:
    """The invocation in a stand-in's request body; None when the body is not one (malformed)."""
    fields: dict[str, list[str]] = {"arg": [], "env": [], "stdin": []}
    position = 0
    while position < len(body):
        end = body.find(b"\n", position)
        if end < 0:
            return None
        name, _, length_text = body[position:end].decode("ascii", errors="replace").partition(" ")
        if name not in fields or not length_text.isdigit():
            return None
        length = int(length_text)
        start = end + 1
        if start + length + 1 > len(body) or body[start + length:start + length + 1] != b"\n":
            return None
        fields[name].append(body[start:start + length].decode("utf-8", errors="replace"))
        position = start + length + 1
    return ClaudeCall(argv=fields["arg"], env_names=fields["env"], stdin="".join(fields["stdin"]))


def reply_environment(checks: list[dict[str, Any]]) -> dict[str, str]:
    """The run's canned reply (the first claude_called check's "reply", else DEFAULT_REPLY) in the
    two forms the stand-in prints: text, and the result object of `--output-format json`."""
    reply = next((c["reply"] for c in checks if c.get("kind") == "claude_called" and c.get("reply") is not None),
                 DEFAULT_REPLY)
    result = {"type": "result", "subtype": "success", "is_error": False, "result": reply, "num_turns": 1,
              "total_cost_usd": 0, "session_id": "agent-builder-sandbox-stand-in"}
    return {REPLY_VARIABLE: reply, REPLY_JSON_VARIABLE: json.dumps(result, ensure_ascii=False)}
