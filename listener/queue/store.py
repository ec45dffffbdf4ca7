"""The store: the one owner of every query the builder runs on its database.

Each method runs one named query of sql/ (one statement per file, loaded once by
listener.queue.db.Queries) and returns typed values or plain rows. Nothing else in listener/
calls `.execute`, `.executemany` or `.copy`, or builds SQL (tests/unit/test_store_owns_sql.py
parses the package and fails otherwise). The exceptions, which are not queries on the builder's
database:

- Level 4's acceptance checks read the automation's own database (listener/sandbox/checks.py
  `sql_rows`, listener/sandbox/sqlrole.py, against SANDBOX_DATABASE_URL, in a read-only session);
- yoyo runs migrations/ (listener/ops/migrate.py hands it the files; it executes them itself).

A Store wraps one connection; several stores may share one (a worker's attempt store and its
rescuer's). The attempt methods (claims, steps, status moves with ownership checks, saving,
signing, finishing) are those of a worker's autocommit connection:

Every attempt holds a session advisory lock on the connection that claimed it, for as long as it
runs (agent_builder_lock_key(), migration 0006, is the one definition of the key). The lock dies
with the connection (a killed process, a lost host, a cut network), which is how the rescuer
(listener.queue.rescue) tells a dead attempt from a slow one. A claim whose lock another session
already holds (anyone who can connect can take advisory locks) is undone by the database and tried
again with the next attempt id: no attempt ever runs without its lock.

Every text an attempt stores goes through the store's Redactor (listener.redact), here and only
here: execution logs, errors, the overseer's reason and the acceptance checks are redacted and
control characters escaped; the prompt and the model output (code, kept as written) have only
secret values replaced. The generated files are kept byte for byte: they are the tested artifact,
hashed and deployed as they are (the model never sees a secret).

`record_results` is the one writer of agent_test_results rows (live endings, passing levels,
the rescuer, near-miss types).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

import psycopg
from loguru import logger
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from listener import signing
from listener.queue.db import Queries
from listener.queue.outcome import LevelResult, LostClaim, StepFailure
from listener.queue.records import Automation, Claim
from listener.queue.states import AttemptKind, Move, Outcome, ResultStatus
from listener.redact import Redactor

Row = dict[str, Any]

# Columns of agent_builds a build may fill in as it goes (what an approver reads).
ATTEMPT_FIELDS = frozenset({
    "prompt", "model_output", "files", "overseer_verdict", "overseer_reason", "overseer_cost_usd",
    "overseer_called_at", "acceptance_check", "image_id", "artifact_sha256", "error",
    "overseer_input_tokens", "overseer_output_tokens", "overseer_model",
})
JSON_FIELDS = frozenset({"files", "acceptance_check"})
CODE_FIELDS = frozenset({"prompt", "model_output"})  # secrets replaced, text otherwise as written
TEXT_FIELDS = frozenset({"overseer_reason", "error"})  # secrets replaced, control characters escaped
# What a build signature covers, besides the attempt id (listener.signing).
SIGNED_FIELDS = ("image_id", "artifact_sha256")
# A claim whose advisory lock is taken by someone else is undone and tried again with a new
# attempt id, at most this many times in one call (a squatter holding a run of future ids).
CLAIM_LOCK_TRIES = 20
REGISTRY_LOCK_CLASS = 1094861833  # 'AB09': the advisory-lock class of registry rows (migration 0009)
LEADER_LOCK_CLASS = 1094863940  # 'ABLD': the advisory-lock class of the leader (two-integer form, listener.queue.leader)
LEADER_LOCK_ID = 1
LEADER_APPLICATION = "agent-builder leader"  # the leader sessions' application name: this, a space, the worker's name


@dataclass(frozen=True)
class Finished:
    """What finishing an attempt did: whether it still owned its row, and any release backoff."""

    owned: bool
    retry_at: datetime | None = None


@dataclass(frozen=True)
class DeadAttemptLock:
    """sql/lock_dead_attempt.sql: got both row locks; a builder session still holds its advisory lock."""

    got: bool
    alive: bool


class Store:
    """Every query on the builder's database, on one connection."""

    def __init__(self, conn: psycopg.Connection[Any], queries: Queries | None = None, worker: str = "",
                 redactor: Redactor | None = None) -> None:
        self.conn = conn
        self.queries = queries if queries is not None else Queries.load()
        self.worker = worker
        self.redactor = redactor if redactor is not None else Redactor()
        self._installation: str | None = None
        # What each running attempt of this store recorded as its artifact: signed from here, not
        # from the database, so a value changed behind the builder's back is never signed.
        self._artifacts: dict[int, dict[str, Any]] = {}
        self._lock_holders_reported: set[str] = set()

    # -- running the named queries ----------------------------------------------------------
    # params None: the query is sent as written (no placeholders parsed, a '%' stays a '%').
    def _cursor(self, name: str, params: dict[str, Any] | None) -> psycopg.Cursor[Row]:
        cursor = self.conn.cursor(row_factory=dict_row)
        return cursor.execute(self.queries[name], params)

    def _one(self, name: str, params: dict[str, Any] | None = None) -> Row | None:
        return self._cursor(name, params if params is not None else {}).fetchone()

    def _all(self, name: str, params: dict[str, Any] | None = None) -> list[Row]:
        return self._cursor(name, params if params is not None else {}).fetchall()

    def _run(self, name: str, params: dict[str, Any] | None = None) -> None:
        self._cursor(name, params if params is not None else {})

    def transaction(self) -> AbstractContextManager[Any]:
        """One transaction on this store's connection (nested: a savepoint)."""
        return self.conn.transaction()

    # -- the installation -------------------------------------------------------------------
    @property
    def installation(self) -> str:
        """This database's installation identity (sql/installation_identity.sql), read once: on
        every container, image, network and label of its builder."""
        if self._installation is None:
            row = self._one("installation_identity")
            assert row is not None
            self._installation = str(row["installation"])
        return self._installation

    # -- claiming (one claim: sql/claim.sql, agent_builder_claim() of migration 0011) ---------
    def claim_next_build(self) -> Claim | None:
        return self.claim(AttemptKind.BUILD)

    def claim_build(self, automation_id: int) -> Claim | None:
        """The playbook's Step 1 for one given id (an explicit request ignores release backoff)."""
        return self.claim(AttemptKind.BUILD, automation_id)

    def claim_next_deploy(self, automation_id: int | None = None) -> Claim | None:
        return self.claim(AttemptKind.DEPLOY, automation_id)

    def claim(self, kind: AttemptKind, automation_id: int | None = None) -> Claim | None:
        params = {"kind": kind.value, "worker": self.worker, "automation_id": automation_id}
        for _ in range(CLAIM_LOCK_TRIES):
            try:
                row = self._one("claim", params)
            except psycopg.errors.LockNotAvailable as exc:
                # The claim statement failed as a whole: no attempt row, the automation untouched.
                self._report_lock_holder(exc)
                continue
            if row is None:
                return None
            return Claim(automation=Automation.from_row(row), build_id=int(row["build_id"]), kind=kind, worker=self.worker)
        logger.error("{} claims in a row were undone because another session holds agent-builder's advisory lock keys; "
                     "trying again at the next wake-up", CLAIM_LOCK_TRIES)
        return None

    def _report_lock_holder(self, exc: psycopg.errors.LockNotAvailable) -> None:
        holder = exc.diag.message_detail or "unknown holder"
        if holder not in self._lock_holders_reported:  # once per holder, not once per attempt id
            self._lock_holders_reported.add(holder)
            logger.warning("{}; trying the next attempt id ({})", exc.diag.message_primary, exc.diag.message_hint)

    def claim_refusal(self, automation_id: int) -> str:
        """Why the database did not let this automation be claimed now (agent_builder_claim_refusal(),
        migration 0011: the same definition of buildable the claim uses)."""
        row = self._one("claim_refusal", {"automation_id": automation_id})
        return str(row["reason"]) if row and row["reason"] else "another builder holds it right now"

    def claim_rejected_cleanup(self) -> tuple[Automation, int, str | None] | None:
        """A rejected automation whose tested build still needs cleaning up: (automation, build, image)."""
        row = self._one("claim_rejected_cleanup")
        if row is None:
            return None
        return Automation.from_row(row), int(row["build_id"]), row["image_id"]

    # -- while an attempt runs ----------------------------------------------------------------
    def advance(self, claim: Claim, step: str) -> None:
        if self._one("advance_step", {"build_id": claim.build_id, "step": step}) is None:
            raise LostClaim(f"attempt {claim.build_id} was ended by someone else")

    def move(self, claim: Claim, expected: str, new_status: str, step: str) -> None:
        row = self._one("transition", {
            "automation_id": claim.automation.id, "build_id": claim.build_id,
            "expected": str(expected), "new_status": str(new_status), "step": step,
        })
        if row is None:
            raise LostClaim(f"automation {claim.automation.id} is no longer {str(expected)!r} under attempt {claim.build_id}")

    def save(self, claim: Claim, **fields: Any) -> None:
        """Record what the attempt produced (prompt, model output, files, verdict, image …)."""
        unknown = set(fields) - ATTEMPT_FIELDS
        if unknown:
            raise ValueError(f"not an attempt field: {', '.join(sorted(unknown))}")
        params: dict[str, Any] = {name: None for name in ATTEMPT_FIELDS}
        for name, value in fields.items():
            params[name] = self._clean(name, value)
        params["build_id"] = claim.build_id
        if self._one("save_attempt", params) is None:
            raise LostClaim(f"attempt {claim.build_id} was ended by someone else")
        recorded = self._artifacts.setdefault(claim.build_id, {})
        recorded.update({name: fields[name] for name in SIGNED_FIELDS if fields.get(name) is not None})

    def sign(self, claim: Claim, key: str) -> None:
        """Sign the build with BUILDER_SIGNING_KEY: its id, and the image id and sha256 this store
        recorded for it. Refused (a level 0 failure) when the database no longer holds exactly those."""
        recorded = self._artifacts.get(claim.build_id, {})
        image_id, artifact_sha256 = recorded.get("image_id"), recorded.get("artifact_sha256")
        row = self._one("sign_attempt", {
            "build_id": claim.build_id, "image_id": image_id, "artifact_sha256": artifact_sha256,
            "signature": signing.sign(key, claim.build_id, image_id, artifact_sha256),
        })
        if row is None:
            raise StepFailure(level=0, step="sign", message=(
                f"build {claim.build_id} was not signed: it is no longer this worker's running attempt, or its recorded "
                "image id or sha256 differ from what this worker built and tested (changed in the database meanwhile)"))

    def _clean(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if name == "acceptance_check":
            return Jsonb(self.redactor.redact_tree(value))
        if name in JSON_FIELDS:
            return Jsonb(value)
        if name in CODE_FIELDS:
            return self.redactor.redact_code(str(value))
        if name in TEXT_FIELDS:
            return self.redactor.redact(value)
        return value

    def overseer_calls_today(self) -> int:
        row = self._one("overseer_calls_today")
        return int(row["calls"]) if row else 0

    def deploy_source(self, deploy_id: int) -> Row | None:
        """What a deployment deploys, with every condition it must meet (sql/deploy_source.sql)."""
        return self._one("deploy_source", {"deploy_id": deploy_id})

    # -- agent_test_results: the one writer ---------------------------------------------------
    def record_result(self, claim: Claim, result: LevelResult) -> None:
        self.record_results(claim.automation.id, claim.build_id, (result,))

    def record_results(self, automation_id: int, build_id: int | None, results: Iterable[LevelResult]) -> None:
        """One agent_test_results row per level result (logs redacted here)."""
        for result in results:
            self._run("insert_test_result", {
                "automation_id": automation_id, "build_id": build_id, "test_level": result.level,
                "status": (ResultStatus.PASS if result.passed else ResultStatus.FAIL).value,
                "execution_log": self.redactor.redact(result.log),
                "duration_ms": result.duration_ms,
            })

    # -- the end of a live attempt ------------------------------------------------------------
    def finish(self, claim: Claim, move: Move, *, error: str | None = None, retry_after_s: float | None = None,
               results: Sequence[LevelResult] = ()) -> Finished:
        """Apply a live ending's move: move the row, end the attempt and release its lock
        atomically, with its result rows (then in one transaction)."""
        params = {
            "automation_id": claim.automation.id, "build_id": claim.build_id, "expected": move.expected.value,
            "new_status": move.new_status.value, "outcome": move.outcome.stored,
            "error": None if error is None else self.redactor.redact(error),
            "retry_after_s": retry_after_s, "idea_status": move.idea_status,
            # a build's ending does not wait for its WAL flush; the outbox waits for it instead
            "asynchronous": claim.kind is AttemptKind.BUILD,
        }
        if not results:
            row = self._one("finish_attempt", params)
            owned = bool(row and row["finished"])
        else:
            with self.conn.transaction():
                row = self._one("finish_attempt", params)
                owned = bool(row and row["finished"])
                if owned:
                    self.record_results(claim.automation.id, claim.build_id, results)
        self._artifacts.pop(claim.build_id, None)
        return Finished(owned=owned, retry_at=row["retry_at"] if row else None)

    def durable_point(self, build_ids: Sequence[int]) -> set[int]:
        """Of these attempts, the ones whose ending is now on disk (sql/durable_point.sql: a
        durable commit that saw them ended). Those missing ended in no commit that survived."""
        row = self._one("durable_point", {"build_ids": list(build_ids)})
        return {int(build_id) for build_id in row["finished"]} if row else set()

    def release_streak(self, automation_id: int) -> int:
        """Attempts in a row released or crashed since the last decisive one (the backoff's exponent)."""
        row = self._one("release_streak", {"automation_id": automation_id})
        return int(row["streak"]) if row else 0

    def close_lost(self, claim: Claim, error: str) -> None:
        """End an attempt that lost its row, and give up its lock."""
        self.close_attempt(claim.build_id, Outcome.LOST, error)
        self._artifacts.pop(claim.build_id, None)
        self.unlock(claim)

    def close_attempt(self, build_id: int, outcome: Outcome, error: str) -> bool:
        """End an attempt that no longer owns its row; False when it had ended already."""
        return self._one("close_lost_attempt", {"build_id": build_id, "outcome": outcome.stored,
                                                "error": self.redactor.redact(error)}) is not None

    def unlock(self, claim: Claim) -> None:
        self._run("unlock_attempt", {"build_id": claim.build_id})

    # -- the rescuer ----------------------------------------------------------------------------
    def dead_attempts(self) -> list[Row]:
        """Attempts whose worker is gone, and in-flight rows with no attempt (sql/find_dead_attempts.sql)."""
        return self._all("find_dead_attempts")

    def lock_dead_attempt(self, build_id: int, automation_id: int) -> DeadAttemptLock:
        row = self._one("lock_dead_attempt", {"build_id": build_id, "automation_id": automation_id})
        return DeadAttemptLock(got=bool(row and row["got"]), alive=bool(row and row["alive"]))

    def rescue_row(self, automation_id: int, build_id: int | None, move: Move,
                   retry_after_s: float | None) -> Automation | None:
        """Apply a dead ending's move; None when the row moved on meanwhile."""
        row = self._one("rescue_row", {
            "automation_id": automation_id, "build_id": build_id, "expected": move.expected.value,
            "new_status": move.new_status.value, "retry_after_s": retry_after_s,
        })
        return None if row is None else Automation.from_row(row)

    def fail_near_miss_types(self) -> list[Automation]:
        """Ready rows of a type that is almost ours, set failed (sql/fail_near_miss_types.sql)."""
        return [Automation.from_row(row) for row in self._all("fail_near_miss_types")]

    # -- the listen loop -------------------------------------------------------------------------
    def listen(self, channel: str) -> None:
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def ping(self) -> None:
        """A round trip (the listen loop's liveness check)."""
        self._run("ping")

    # -- the listener registry (migration 0009) ---------------------------------------------------
    def register_listener(self, host: str, pid: int, worker: str, version: str, concurrency: int) -> int:
        """Forget dead rows, insert this listener's, and take its advisory lock (one transaction)."""
        with self.conn.transaction():
            self._run("registry_forget_dead", {"lock_class": REGISTRY_LOCK_CLASS})
            row = self._one("registry_insert", {"host": host, "pid": pid, "worker": worker, "version": version,
                                                "concurrency": concurrency})
            assert row is not None
            listener_id = int(row["id"])
            locked = self._one("registry_lock", {"lock_class": REGISTRY_LOCK_CLASS, "listener_id": listener_id})
            if not (locked and locked["locked"]):
                raise RuntimeError(f"registry lock of listener row {listener_id} is held by another session")
        return listener_id

    def heartbeat(self, listener_id: int, in_flight: int) -> None:
        self._run("registry_heartbeat", {"listener_id": listener_id, "in_flight": in_flight})

    def unregister_listener(self, listener_id: int) -> None:
        self._run("registry_delete", {"listener_id": listener_id})

    def live_listeners(self, host: str | None = None) -> list[Row]:
        return self._all("registry_live", {"host": host, "lock_class": REGISTRY_LOCK_CLASS,
                                           "leader_class": LEADER_LOCK_CLASS, "leader_id": LEADER_LOCK_ID,
                                           "leader_application": LEADER_APPLICATION})

    # -- the elected leader (listener.queue.leader) -----------------------------------------------
    def try_lead(self) -> bool:
        """Try the leader's session advisory lock (sql/leader_try_lock.sql); True while this session holds it."""
        row = self._one("leader_try_lock", {"lock_class": LEADER_LOCK_CLASS, "lock_id": LEADER_LOCK_ID})
        return bool(row and row["leading"])

    # -- alerts (migration 0007) -----------------------------------------------------------------
    def raise_alert(self, name: str, detail: str) -> bool:
        """Record that the outage `name` goes on; True only when this call opened it."""
        row = self._one("raise_alert", {"name": name, "detail": detail})
        return bool(row and row["opened"])

    def clear_alert(self, name: str) -> bool:
        """The outage is over; True when one was open."""
        return self._one("clear_alert", {"name": name}) is not None

    # -- one-tap links --------------------------------------------------------------------------------
    def use_approval_link(self, nonce: str, automation_id: int, build_id: int, action: str,
                          remote_addr: str | None) -> bool:
        """Spend a link's nonce (builder session); False: it was used before."""
        return self._one("use_approval_link", {"nonce": nonce, "automation_id": automation_id, "build_id": build_id,
                                               "action": action, "remote_addr": remote_addr}) is not None

    def decide_by_link(self, automation_id: int, build_id: int, new_status: str) -> Row | None:
        """The operator's UPDATE for a signed link (operator session); None: not this row's build."""
        return self._one("decide_by_link", {"automation_id": automation_id, "build_id": build_id,
                                            "new_status": str(new_status)})

    # -- the sandbox sweeps -----------------------------------------------------------------------------
    def attempts_over(self, build_ids: Iterable[int]) -> set[int]:
        return self._build_ids("attempts_over", build_ids)

    def images_unneeded(self, build_ids: Iterable[int]) -> set[int]:
        return self._build_ids("sandbox_images_unneeded", build_ids)

    def _build_ids(self, name: str, build_ids: Iterable[int]) -> set[int]:
        ids = sorted(set(build_ids))
        if not ids:
            return set()
        return {int(row["build_id"]) for row in self._all(name, {"build_ids": ids})}

    # -- operators' commands and reports ------------------------------------------------------------
    def automation(self, automation_id: int) -> Row | None:
        return self._one("automation_by_id", {"automation_id": automation_id})

    def add_idea(self, params: dict[str, Any]) -> Row:
        row = self._one("add_idea", params)
        assert row is not None
        return row

    def list_ideas(self, status: str | None) -> list[Row]:
        return self._all("list_ideas", {"status": status})

    def failed_ids(self) -> list[int]:
        return [int(r["id"]) for r in self._all("failed_ids")]

    def operator_set_status(self, automation_id: int, new_status: str, build_id: int | None = None) -> Row | None:
        """None: no such automation, not an operator's move from its status, or (with `build_id`) the
        row no longer points at that build."""
        return self._one("operator_set_status", {"automation_id": automation_id, "new_status": str(new_status),
                                                 "build_id": build_id})

    def prune_attempts(self, cutoff: datetime) -> dict[str, int]:
        with self.conn.transaction():
            row = self._one("prune_attempts", {"cutoff": cutoff})
        assert row is not None
        return {"attempts": int(row["attempts"]), "results": int(row["results"])}

    def status_counts(self) -> dict[str, int]:
        return {r["builder_status"]: r["automations"] for r in self._all("status_counts")}

    def in_flight(self) -> list[Row]:
        return self._all("status_in_flight")

    def recent_failures(self, limit: int) -> list[Row]:
        return self._all("status_recent_failures", {"limit": limit})

    def show(self, automation_id: int) -> dict[str, list[Row]]:
        params = {"automation_id": automation_id}
        return {"history": self._all("show_history", params), "results": self._all("show_results", params),
                "attempts": self._all("show_attempts", params)}

    # -- the review page (listener.approval.web) -------------------------------------------------
    def awaiting_approval(self, limit: int) -> list[Row]:
        """Rows awaiting approval with their age, oldest first (sql/web_awaiting.sql)."""
        return self._all("web_awaiting", {"limit": limit})

    def review_build(self, automation_id: int, build_id: int | None = None) -> Row | None:
        """The build a review page shows (sql/web_review_build.sql): `build_id`, or the one the row
        points at; None when that build is not this automation's."""
        return self._one("web_review_build", {"automation_id": automation_id, "build_id": build_id})

    def production_build(self, automation_id: int) -> Row | None:
        """The build now in production, for the diff (sql/web_production_build.sql)."""
        return self._one("web_production_build", {"automation_id": automation_id})

    def set_actor(self, actor: str) -> None:
        """The actor recorded in builder_status_history for this session's next changes (sql/web_actor.sql)."""
        self._run("web_actor", {"actor": actor})

    def log_events(self, automation_id: int) -> tuple[list[Row], list[Row], list[Row]]:
        """(history, attempts, results) for `logs`."""
        params = {"automation_id": automation_id}
        return self._all("logs_history", params), self._all("logs_attempts", params), self._all("logs_results", params)

    def metrics_totals(self) -> Row:
        return self._one("metrics_totals") or {}

    def server_version(self) -> str:
        row = self._one("server_version")
        return str(row["server_version"]) if row else "?"

    def session_roles(self) -> Row:
        row = self._one("session_roles")
        assert row is not None
        return row

    def role_members(self) -> dict[str, list[str]]:
        return {row["role"]: list(row["members"]) for row in self._cursor("role_members", None).fetchall()}

    def create_embedded_logins(self) -> None:
        self._cursor("embedded_logins", None)


def installation_of(conn: psycopg.Connection[Any], queries: Queries) -> str:
    """The identity every container, image, network and label of this database's builder carries."""
    return Store(conn, queries).installation
