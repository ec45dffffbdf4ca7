"""The claim: playbook filter and order, SKIP LOCKED, one statement, and it uses its index."""

from __future__ import annotations

import json
import random
import re


from listener.queue.db import connect
from tests.helpers import builder_status, force_status, insert_idea


def claim(conn, queries, worker: str = "w1"):
    return conn.execute(queries["claim"], {"kind": "build", "automation_id": None, "worker": worker}).fetchone()


def test_claims_in_priority_then_id_order(operator, builder_conn, queries) -> None:
    rng = random.Random(7)
    expected = []
    for _ in range(40):
        priority = rng.choice([None, 1, 2, 3, 5])
        automation_id = insert_idea(operator, priority=priority, type=rng.choice(["script", "claude_agent"]))
        expected.append((priority is None, priority or 0, automation_id))
    # Rows outside the playbook's filter are never claimed.
    insert_idea(operator, priority=0, type="n8n_workflow")
    insert_idea(operator, priority=0, status="idea")
    deployed = insert_idea(operator, priority=0)
    force_status(operator, deployed, "deployed")

    claimed = []
    while (row := claim(builder_conn, queries)) is not None:
        claimed.append(row["id"])
        assert row["builder_status"] == "queued" and row["locked"] is True
    assert claimed == [automation_id for _, _, automation_id in sorted(expected)]


def test_claim_records_the_attempt_and_points_the_row_at_it(operator, builder_conn, queries) -> None:
    automation_id = insert_idea(operator)
    row = claim(builder_conn, queries, worker="host:42")
    attempt = operator.execute("SELECT * FROM agent_builds WHERE id = %s", (row["build_id"],)).fetchone()
    assert attempt["automation_id"] == automation_id and attempt["worker"] == "host:42"
    assert attempt["kind"] == "build" and attempt["finished_at"] is None
    idea = operator.execute("SELECT builder_build_id FROM automation_ideas WHERE id = %s", (automation_id,)).fetchone()
    assert idea["builder_build_id"] == row["build_id"]


def test_skip_locked_gives_concurrent_claimers_different_rows(operator, db_url, queries) -> None:
    first = insert_idea(operator, priority=1)
    second = insert_idea(operator, priority=2)
    with connect(db_url, actor="builder:a", autocommit=False) as a, connect(db_url, actor="builder:b") as b:
        row_a = claim(a, queries, worker="a")  # transaction left open
        row_b = claim(b, queries, worker="b")
        assert (row_a["id"], row_b["id"]) == (first, second)
        a.rollback()
    assert builder_status(operator, first) == "not_started"


def test_released_row_waits_for_its_backoff(operator, builder_conn, queries) -> None:
    automation_id = insert_idea(operator)
    row = claim(builder_conn, queries)
    done = builder_conn.execute(queries["finish_attempt"], {
        "automation_id": automation_id, "build_id": row["build_id"], "expected": "queued",
        "new_status": "not_started", "retry_after_s": 60, "outcome": "released", "error": "vault blip",
        "idea_status": None, "asynchronous": True,
    }).fetchone()
    assert done["finished"] == 1 and done["retry_at"] is not None
    assert claim(builder_conn, queries) is None
    # An explicit request by id ignores the backoff.
    again = builder_conn.execute(queries["claim"], {"kind": "build", "automation_id": automation_id, "worker": "w"}).fetchone()
    assert again["id"] == automation_id


def test_a_row_with_an_unfinished_attempt_is_not_claimed_again(operator, builder_conn, queries) -> None:
    automation_id = insert_idea(operator)
    claim(builder_conn, queries)
    force_status(operator, automation_id, "not_started")  # a repair by hand while the attempt still runs
    assert claim(builder_conn, queries) is None


def test_finish_refuses_a_worker_that_lost_its_claim(operator, builder_conn, queries) -> None:
    automation_id = insert_idea(operator)
    old = claim(builder_conn, queries)
    builder_conn.execute(queries["close_lost_attempt"], {"build_id": old["build_id"], "outcome": "crashed", "error": "rescued"})
    force_status(operator, automation_id, "not_started")
    new = claim(builder_conn, queries)
    assert new["build_id"] != old["build_id"]
    stale = builder_conn.execute(queries["transition"], {
        "automation_id": automation_id, "build_id": old["build_id"], "expected": "queued", "new_status": "building",
        "step": "generate",
    }).fetchone()
    assert stale is None
    assert builder_status(operator, automation_id) == "queued"


def test_claim_plan_uses_the_partial_index(operator, builder_conn, queries) -> None:
    operator.execute(
        "INSERT INTO automation_ideas (name, type, status, priority, task_description)"
        " SELECT 'idea ' || g, CASE WHEN g % 2 = 0 THEN 'script' ELSE 'n8n_workflow' END,"
        " CASE WHEN g % 50 = 0 THEN 'ready_to_build' ELSE 'idea' END, g % 7, 'spec' FROM generate_series(1, 20000) g"
    )
    operator.execute("ANALYZE automation_ideas")
    # The one claim, for each of its kinds: every read of automation_ideas is an index scan, and the
    # next build is found through the buildable index (agent_builder_buildable(), migration 0011).
    for params, index in (({"kind": "build", "automation_id": None}, "automation_ideas_buildable_idx"),
                          ({"kind": "build", "automation_id": 4242}, "automation_ideas_pkey"),
                          ({"kind": "deploy", "automation_id": None}, "automation_ideas_approved_idx")):
        for prepared in (False, True):  # a custom plan, and the generic plan of a prepared statement
            plan = claim_plan(builder_conn, queries, {**params, "worker": "w"}, prepared)
            scans = [node for node in plan_nodes(plan) if node.get("Relation Name") == "automation_ideas"]
            assert scans, "the plan does not read automation_ideas"
            assert all(node["Node Type"] != "Seq Scan" for node in scans), (params, json.dumps(scans, indent=1))
            assert any(node.get("Index Name") == index for node in scans), (params, json.dumps(scans, indent=1))


def claim_plan(conn, queries, params: dict, generic: bool) -> dict:
    if not generic:
        return conn.execute("EXPLAIN (FORMAT JSON) " + queries["claim"], params).fetchone()["QUERY PLAN"][0]["Plan"]
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    text = re.sub(r"%\((\w+)\)s", number, queries["claim"]).replace("%%", "%")
    types = {"kind": "text", "automation_id": "bigint", "worker": "text"}
    conn.execute("SET plan_cache_mode = force_generic_plan")
    try:
        conn.execute(f"PREPARE claim_plan_test ({', '.join(types[n] for n in names)}) AS {text}")
        values = ", ".join("NULL" if params[n] is None else f"'{params[n]}'" for n in names)
        return conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE claim_plan_test ({values})").fetchone()["QUERY PLAN"][0]["Plan"]
    finally:
        conn.execute("DEALLOCATE claim_plan_test")
        conn.execute("RESET plan_cache_mode")


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)
