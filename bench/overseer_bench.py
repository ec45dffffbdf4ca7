"""What one overseer review costs, measured at the API: the default invocation `claude -p "<prompt>"`
against the builder's own, with the real Claude Code CLI pointed at the stand-in Messages API.

Run on demand:  python bench/overseer_bench.py [reviews]
Needs the CLI: AGENT_BUILDER_CLAUDE_BIN, or it runs `bash .ci/claude-up` (npm, pinned version).

For every review it prints the Messages API requests, the input and output tokens the stand-in
reported (about 4 characters per token, over the system prompt, the messages and the tool
definitions), the bytes sent, the tools offered, and what the request carried beyond the code.
Two answers are scripted: a plain "PASS …", and an answer that first asks for a tool (Read of a
file in the working directory, then PASS), which the default invocation runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from listener.build.overseer import Overseer  # noqa: E402
from listener.build.prompt import review_text  # noqa: E402
from listener.queue.records import Automation  # noqa: E402
from tests.fakes.messages_api import Answer, FakeMessagesAPI  # noqa: E402
from tests.realcli.test_overseer_real_cli import SCRIPT  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CANARY = "CANARY-listener-file-4d2a"
SECRETS = {"DATABASE_URL": "postgresql://builder:bench-db-password@db/api", "APPROVAL_SECRET": "bench-approval-secret-123"}


@dataclass(frozen=True)
class Measured:
    requests: int
    other_requests: int
    input_tokens: int
    output_tokens: int
    bytes_sent: int
    tools: int
    extra_tokens: int  # (bytes of the requests - bytes of the code in them) / 4
    canary_sent: bool
    verdict: str


def claude_bin() -> str:
    path = os.environ.get("AGENT_BUILDER_CLAUDE_BIN", "").strip()
    if path:
        return path
    return subprocess.run(["bash", str(REPO / ".ci" / "claude-up")], capture_output=True, text=True,
                          check=True).stdout.strip()


def automation() -> Automation:
    return Automation(id=1, name="Disk report", type="script", status="ready_to_build", priority=1,
                      task_description="Every hour, write the disk usage of / as JSON to stdout, using Vault for secrets",
                      infrastructure_requirement="none", builder_status="building")


def measure(api: FakeMessagesAPI, code: str, verdict: str) -> Measured:
    messages = api.message_requests
    code_in_body = len(json.dumps(code)[1:-1].encode())
    sent = sum(r.size_bytes for r in messages)
    usage = api.reported_usage
    return Measured(
        requests=len(messages), other_requests=len(api.requests) - len(messages),
        input_tokens=sum(u["input_tokens"] for u in usage), output_tokens=sum(u["output_tokens"] for u in usage),
        bytes_sent=sent, tools=max((len(r.tools) for r in messages), default=0),
        extra_tokens=(sent - code_in_body * len(messages)) // 4, canary_sent=CANARY.encode() in api.all_bytes(),
        verdict=verdict)


def one_review(binary: str, ours: bool, tool_first: bool, home: Path, workdir: Path) -> Measured:
    text = review_text(automation(), {"script.py": SCRIPT})
    with FakeMessagesAPI() as api:
        if tool_first:
            api.queue(Answer.tool_use("Read", {"file_path": str(workdir / "notes.txt")}, text="Let me read the notes."))
        environ = {**os.environ, **SECRETS, "HOME": str(home), "ANTHROPIC_BASE_URL": api.url,
                   "ANTHROPIC_API_KEY": "sk-ant-bench-key"}
        if ours:
            overseer = Overseer(cmd=(binary, "-p"), timeout_s=60, environ=environ)
            verdict = overseer.review(text.prompt, text.stdin, overseer.readiness())
            outcome = "PASS" if verdict.passed else f"FAIL ({verdict.reason[:70]}…)"
        else:
            done = subprocess.run([binary, "-p", text.prompt], input=text.stdin, env=environ, cwd=workdir,
                                  capture_output=True, text=True, timeout=120, check=False)
            outcome = (done.stdout.strip().split() or ["(nothing)"])[0]
        return measure(api, text.stdin, outcome)


def main() -> int:
    reviews = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    binary = claude_bin()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"claude {version}, {reviews} review(s) per row, against the stand-in Messages API (4 chars/token)\n")
    header = (f"{'invocation':<34} {'answer':<18} {'requests':>8} {'other':>5} {'input tok':>9} {'output tok':>10} "
              f"{'bytes':>7} {'tools':>5} {'beyond code':>11} {'file sent':>9}  verdict")
    print(header)
    print("-" * len(header))
    for tool_first in (False, True):
        for ours in (False, True):
            rows: list[Measured] = []
            for _ in range(reviews):
                with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as workdir:
                    (Path(workdir) / "notes.txt").write_text(f"{CANARY}\n")
                    rows.append(one_review(binary, ours, tool_first, Path(home), Path(workdir)))
            median = {field: statistics.median(getattr(r, field) for r in rows)
                      for field in ("requests", "other_requests", "input_tokens", "output_tokens", "bytes_sent", "tools",
                                    "extra_tokens")}
            name = "ours (Overseer.review)" if ours else 'default: claude -p "<prompt>"'
            answer = "tool, then PASS" if tool_first else "PASS"
            print(f"{name:<34} {answer:<18} {median['requests']:>8g} {median['other_requests']:>5g} "
                  f"{median['input_tokens']:>9g} {median['output_tokens']:>10g} {median['bytes_sent']:>7g} "
                  f"{median['tools']:>5g} {median['extra_tokens']:>11g} {'yes' if any(r.canary_sent for r in rows) else 'no':>9}"
                  f"  {rows[-1].verdict}")
    print("\nrequests: Messages API requests per review; other: any other request to the API host;"
          "\ninput/output tok: per review, summed over its requests; beyond code: request bytes less the code, / 4;"
          "\nfile sent: a file of the working directory reached the API (the default invocation ran the Read tool).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
