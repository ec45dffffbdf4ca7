"""Build overhead without the model: from the overseer's PASS to awaiting_approval, for a stdlib
script on a warm base image, with the time of every level.

Run on demand:  python bench/sandbox_bench.py [rounds]
Needs a Docker engine and the base image (`.ci/docker-up` makes both); uses TEST_DATABASE_URL when
set, else an embedded PostgreSQL. SANDBOX_BASE_IMAGE overrides the image.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from listener.queue.store import Store  # noqa: E402
from listener.config import Settings  # noqa: E402
from listener.queue.context import AttemptContext  # noqa: E402
from listener.queue.db import Queries, connect  # noqa: E402
from listener.build.extract import GeneratedFiles  # noqa: E402
from listener.queue.finish import Ending, run_attempt  # noqa: E402
from listener.clients.ntfy import Notifier  # noqa: E402
from listener.sandbox.levels import run_sandbox_levels  # noqa: E402
from tests.pg import test_server  # noqa: E402

SCRIPT = """import json, shutil
usage = shutil.disk_usage('/')
with open('/tmp/disk.json', 'w') as handle:
    json.dump({'total': usage.total, 'used': usage.used}, handle)
print('ok')
"""
CHECK = {"checks": [{"kind": "file_exists", "path": "/tmp/disk.json", "min_bytes": 10}]}


def main(rounds: int) -> None:
    image = os.environ.get("SANDBOX_BASE_IMAGE", "agent-builder-test-base:latest")
    with test_server() as server, tempfile.TemporaryDirectory() as home:
        server.create_template()
        url = server.new_database()
        settings = Settings.from_env({"DATABASE_URL": url, "SANDBOX_BASE_IMAGE": image,
                                      "SANDBOX_NETWORK": "agent-builder-bench", "AGENT_BUILDER_HOME": home,
                                      "VAULT_APPROLE_DIR": home})
        queries = Queries.load()
        totals: list[float] = []
        per_level: dict[int, list[float]] = {2: [], 3: [], 4: []}
        with connect(url, actor="builder:bench") as conn:
            for _ in range(rounds + 1):  # the first round warms the build cache and is not counted
                automation_id = conn.execute(
                    "INSERT INTO automation_ideas (name, type, status, task_description, acceptance_check)"
                    " VALUES ('bench', 'script', 'ready_to_build', 'disk report', %s) RETURNING id", (Jsonb(CHECK),)
                ).fetchone()["id"]
                store = Store(conn, queries, "bench")
                claim = store.claim_build(automation_id)
                ctx = AttemptContext(claim=claim, store=store, settings=settings, notifier=Notifier(None, "b"),
                                     stop=threading.Event())
                ctx.start_generation()
                files = GeneratedFiles(main_name="script.py", main=SCRIPT + f"# round {automation_id}\n", dockerfile=None)
                started = time.monotonic()
                ending = run_attempt(ctx, lambda c: run_sandbox_levels(c, files))
                elapsed = time.monotonic() - started
                if ending is not Ending.SUCCEEDED:
                    raise SystemExit(f"round failed: {ending}")
                rows = conn.execute("SELECT test_level, duration_ms FROM agent_test_results WHERE automation_id = %s",
                                    (automation_id,)).fetchall()
                if automation_id == 1:
                    continue
                totals.append(elapsed)
                for row in rows:
                    per_level[row["test_level"]].append(row["duration_ms"] / 1000)
        levels = ", ".join(f"level {n} {statistics.median(v):.2f} s" for n, v in per_level.items())
        print(f"overseer PASS -> awaiting_approval, stdlib script, warm base image, {rounds} rounds: "
              f"median {statistics.median(totals):.2f} s, max {max(totals):.2f} s ({levels})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
