"""Checks derived by the model when acceptance_check is NULL: a real HTTP call to the fake Ollama,
which must carry a JSON schema as Ollama's structured-output `format`."""

from __future__ import annotations

import json

import pytest

from listener.build.extract import GeneratedFiles
from listener.build.ollama import OllamaClient
from listener.queue.outcome import StepFailure
from listener.queue.records import Automation
from listener.sandbox.derive import derive_checks, schema_for
from tests.fakes.ollama_server import FakeOllama

AUTOMATION = Automation(id=7, name="Disk usage report", type="script", status="ready_to_build", priority=1,
                        task_description="Write the disk usage of / to /tmp/disk.json and POST it to the hub.",
                        infrastructure_requirement=None, builder_status="building", acceptance_check=None)
FILES = GeneratedFiles("script.py", "import json, os, shutil, urllib.request\n"
                                    "json.dump(shutil.disk_usage('/')._asdict(), open('/tmp/disk.json', 'w'))\n")


def _client(fake: FakeOllama) -> OllamaClient:
    return OllamaClient(fake.url, "llama3.1:8b", timeout_s=10)


def test_valid_structured_answer_becomes_the_spec(fake_ollama: FakeOllama) -> None:
    fake_ollama.queue_texts(json.dumps({"checks": [
        {"kind": "file_exists", "path": "/tmp/disk.json"},
        {"kind": "http_request", "path": "/report"},
    ]}))
    spec, note = derive_checks(_client(fake_ollama), AUTOMATION, FILES)
    assert spec == {"checks": [
        {"kind": "file_exists", "path": "/tmp/disk.json", "min_bytes": 1},
        {"kind": "http_request", "path": "/report", "method": "POST"},
    ]}
    assert note.startswith("acceptance checks derived by the model because acceptance_check is NULL: ")
    assert "file_exists /tmp/disk.json" in note and "http_request POST SANDBOX_HTTP_URL/report" in note

    [request] = fake_ollama.requests_to("POST", "/api/generate")
    body = request.json
    assert body["format"] == schema_for("script")
    assert "claude_called" not in body["format"]["properties"]["checks"]["items"]["properties"]["kind"]["enum"]
    assert body["format"]["properties"]["checks"]["items"]["properties"]["kind"]["enum"] == [
        "file_exists", "sql_rows", "http_status", "http_request", "container_running"]
    prompt = body["prompt"]
    assert "Disk usage report" in prompt and "/tmp/disk.json" in prompt
    assert "SANDBOX_HTTP_URL" in prompt and "never look at its printed output" in prompt


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("the file /tmp/disk.json should exist", "its answer is not JSON"),
        ('{"checks": []}', "empty"),
        ('{"checks": [{"kind": "stdout_contains", "text": "ok"}]}', "unknown kind 'stdout_contains'"),
        ('{"checks": [{"kind": "file_exists", "path": "disk.json"}]}', 'needs an absolute "path"'),
        ('{"checks": [{"kind": "http_status", "url": "http://localhost:8080/"}]}', "localhost names the listener's machine"),
        ('{"checks": [{"kind": "sql_rows", "query": "SELECT pg_read_file(\u0027/etc/hostname\u0027)"}]}',
         "pg_* functions are never allowed"),
    ],
)
def test_unusable_answers_fail_level_4_clearly(fake_ollama: FakeOllama, answer: str, reason: str) -> None:
    fake_ollama.queue_texts(answer)
    with pytest.raises(StepFailure) as caught:
        derive_checks(_client(fake_ollama), AUTOMATION, FILES)
    failure = caught.value
    assert (failure.level, failure.step, failure.kind) == (4, "level4", "level")
    assert failure.message.startswith("acceptance_check is NULL and the checks the model derived are unusable: ")
    assert reason in failure.message
    assert failure.log == answer
    assert "format" in fake_ollama.requests_to("POST", "/api/generate")[0].json


LOOPBACK_SPELLINGS = [
    ("http://0:8080/", "0.0.0.0, the unspecified address"),
    ("http://2130706433/", "127.0.0.1, a loopback address"),
    ("http://0x7f000001/", "127.0.0.1, a loopback address"),
    ("http://017700000001/", "127.0.0.1, a loopback address"),
    ("http://127.1/", "127.0.0.1, a loopback address"),
    ("http://127.0.0.1:8787/decide/x", "127.0.0.1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "an IPv6 form of 127.0.0.1"),
    ("http://[::1]/", "the loopback address"),
    ("http://[::]/", "the unspecified address"),
    ("http://[::1%25lo]/", "the loopback address"),
    ("http://[fe80::1%25eth0]:8080/", "a link-local address"),
    ("http://user@127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://user:secret@localhost:11434/api/tags", "localhost names the listener's machine"),
    ("http://localhost./", "localhost names the listener's machine"),
    ("http://ntfy.localhost/agent-builder/json", "ntfy.localhost names the listener's machine"),
    ("http://host.docker.internal:8788/", "host.docker.internal names the listener's machine, the Docker host"),
    ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 is a link-local address (cloud metadata"),
    ("http://[::ffff:a9fe:a9fe]/latest/", "an IPv6 form of 169.254.169.254"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata service"),
]


@pytest.mark.parametrize(("url", "reason"), LOOPBACK_SPELLINGS)
def test_a_derived_http_status_at_the_listeners_host_is_refused_with_the_reason(
        fake_ollama: FakeOllama, log_lines: list[str], url: str, reason: str) -> None:
    answer = json.dumps({"checks": [{"kind": "file_exists", "path": "/tmp/disk.json"},
                                    {"kind": "http_status", "url": url, "status": 200}]})
    fake_ollama.queue_texts(answer)
    spec, note = derive_checks(_client(fake_ollama), AUTOMATION, FILES)
    assert spec == {"checks": [{"kind": "file_exists", "path": "/tmp/disk.json", "min_bytes": 1}]}  # the rest is kept
    rejected = note.split("rejected derived checks (they do not describe the automation's effect): ", 1)[1]
    assert rejected.startswith("check 2 (http_status ")
    assert "is refused: " in rejected and reason in rejected
    assert rejected.endswith("a model-derived check never reaches the listener's host")
    assert "secret" not in note  # credentials are never shown
    assert any("model-derived check 2" in line and "rejected" in line for line in log_lines)


@pytest.mark.parametrize(("path", "reason"), [
    ("/app/script.py", "/app/script.py is a file of the image itself"),
    ("/app/deps/requests/__init__.py", "is a file of the image itself"),
    ("/work/script.py", "linked into /work from the image's working directory"),
    ("/work/deps/x", "linked into /work from the image's working directory"),
    ("/etc/passwd", "/etc/passwd is a system file"),
    ("/proc/1/status", "is a system file"),
    ("/var/lib/dpkg/status", "is a system file"),
    ("/usr/../etc/hostname", "/etc/hostname is a system file"),
    ("/data/out.json", "the sandbox's root filesystem is read-only"),
])
def test_a_derived_check_on_a_file_that_exists_before_the_run_is_rejected(fake_ollama: FakeOllama, path: str,
                                                                          reason: str) -> None:
    fake_ollama.queue_texts(json.dumps({"checks": [{"kind": "file_exists", "path": path}]}))
    with pytest.raises(StepFailure) as caught:
        derive_checks(_client(fake_ollama), AUTOMATION, FILES)
    message = caught.value.message
    assert message.startswith("acceptance_check is NULL and the checks the model derived are unusable: every check "
                              "was rejected: check 1 (file_exists ")
    assert reason in message


def test_a_derived_check_on_a_file_the_automation_writes_is_kept(fake_ollama: FakeOllama) -> None:
    fake_ollama.queue_texts(json.dumps({"checks": [{"kind": "file_exists", "path": "/work/report.json"},
                                                   {"kind": "file_exists", "path": "/etc/passwd"}]}))
    spec, note = derive_checks(_client(fake_ollama), AUTOMATION, FILES)
    assert [c["path"] for c in spec["checks"]] == ["/work/report.json"]
    assert "check 2 (file_exists /etc/passwd) is refused: /etc/passwd is a system file" in note


def test_claude_called_is_offered_to_agents_only(fake_ollama: FakeOllama) -> None:
    from listener.sandbox.derive import build_prompt

    agent = AUTOMATION.__class__(**{**AUTOMATION.__dict__, "type": "claude_agent"})
    files = GeneratedFiles(main_name="agent.sh", main="#!/bin/bash\nclaude -p hi > /tmp/a\n", dockerfile=None)
    assert "claude_called" in schema_for("claude_agent")["properties"]["checks"]["items"]["properties"]["kind"]["enum"]
    assert '"kind": "claude_called"' in build_prompt(agent, files)
    assert '"kind": "claude_called"' not in build_prompt(AUTOMATION, FILES)
    fake_ollama.queue_texts(json.dumps({"checks": [{"kind": "claude_called", "args_include": ["-p"]},
                                                   {"kind": "file_exists", "path": "/tmp/a"}]}))
    spec, note = derive_checks(_client(fake_ollama), agent, files)
    assert spec["checks"][0] == {"kind": "claude_called", "min_calls": 1, "args_include": ["-p"]}
    assert "claude_called ≥ 1 call(s) with -p" in note


def test_a_derived_service_check_names_the_automations_container(fake_ollama: FakeOllama) -> None:
    fake_ollama.queue_texts(json.dumps({"checks": [{"kind": "container_running", "after_s": 3},
                                                   {"kind": "http_status", "url": "http://automation:8080/health"}]}))
    spec, note = derive_checks(_client(fake_ollama), AUTOMATION, FILES)
    assert spec["checks"][1] == {"kind": "http_status", "url": "http://automation:8080/health", "status": 200}
    assert "http_status http://automation:8080/health → 200" in note
    prompt = fake_ollama.requests_to("POST", "/api/generate")[0].json["prompt"]
    assert "reachable as automation" in prompt and "requested from the sandbox network" in prompt


def test_the_derivation_prompt_names_the_sandbox_working_directory() -> None:
    from listener.build.extract import GeneratedFiles
    from listener.queue.records import Automation
    from listener.sandbox.derive import build_prompt

    automation = Automation(id=1, name="n", type="script", status="ready_to_build", priority=None,
                            task_description="write a report", infrastructure_requirement=None, builder_status="building")
    prompt = build_prompt(automation, GeneratedFiles(main_name="script.py", main="print(1)\n", dockerfile=None))
    assert "under /tmp or its working directory /work" in prompt
