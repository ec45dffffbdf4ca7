"""Claims on one worker connection: claim, step, status moves with ownership checks, finish, release.

Every attempt holds a session advisory lock on the connection that claimed it, for as long as it
runs. The lock dies with the connection (a killed process, a lost host, a cut network), which is
how the rescuer (listener.queue.rescue) tells a dead attempt from a slow one. A claim whose lock another
session already holds (anyone who can connect can take advisory locks) is undone by the database
and tried again with the next attempt id: no attempt ever runs without its lock.

Every text an attempt stores goes through the store's Redactor (listener.redact), here and only
here: execution logs, errors, the overseer's reason and the acceptance checks are redacted and
control characters escaped; the prompt and the model output (code, kept as written) have only
secret values replaced. The generated files are kept byte for byte: they are the tested artifact,
hashed and deployed as they are (the model never sees a secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from loguru import logger
from psycopg.types.json import Jsonb

from listener import signing
from listener.queue.db import Queries
from listener.queue.outcome import LevelResult, LostClaim, StepFailure
from listener.queue.records import Automation, Claim
from listener.redact import Redactor

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


@dataclass(frozen=True)
class Finished:
    """What finishing an attempt did: whether it still owned its row, and any release backoff."""

    owned: bool
    retry_at: datetime | None = None


def backoff_seconds(streak: int, base_s: float, max_s: float) -> float:
    """Release backoff: the first release retries at once, then base, 2*base, 4*base … up to max."""
    if streak <= 0:
        return 0.0
    return min(max_s, base_s * 2.0 ** (streak - 1))


def installation_of(conn: psycopg.Connection[dict[str, Any]], queries: Queries) -> str:
    """The identity every container, image, network and label of this database's builder carries."""
    row = conn.execute(queries["installation_identity"], {}).fetchone()
    assert row is not None
    return str(row["installation"])


class AttemptStore:
    """The database side of attempts, on one autocommit connection owned by one worker."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]], queries: Queries, worker: str,
                 redactor: Redactor | None = None) -> None:
        self.conn = conn
        self.queries = queries
        self.worker = worker
        self.redactor = redactor if redactor is not None else Redactor()
        self._installation: str | None = None
        # What each running attempt of this store recorded as its artifact: signed from here, not
        # from the database, so a value changed behind the builder's back is never signed.
        self._artifacts: dict[int, dict[str, Any]] = {}
        self._lock_holders_reported: set[str] = set()

    @property
    def installation(self) -> str:
        """This database's installation identity (sql/installation_identity.sql), read once."""
        if self._installation is None:
            self._installation = installation_of(self.conn, self.queries)
        return self._installation

    # -- claiming ---------------------------------------------------------------------------
    def claim_next_build(self) -> Claim | None:
        return self._claim("claim_next_build", {"worker": self.worker}, "build")

    def claim_build(self, automation_id: int) -> Claim | None:
        return self._claim("claim_build_by_id", {"worker": self.worker, "automation_id": automation_id}, "build")

    def claim_next_deploy(self, automation_id: int | None = None) -> Claim | None:
        return self._claim("claim_next_deploy", {"worker": self.worker, "automation_id": automation_id}, "deploy")

    def _claim(self, query: str, params: dict[str, Any], kind: str) -> Claim | None:
        for _ in range(CLAIM_LOCK_TRIES):
            try:
                row = self.conn.execute(self.queries[query], params).fetchone()
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

    def claim_rejected_cleanup(self) -> tuple[Automation, int, str | None] | None:
        """A rejected automation whose tested build still needs cleaning up: (automation, build, image)."""
        row = self.conn.execute(self.queries["claim_rejected_cleanup"], {}).fetchone()
        if row is None:
            return None
        return Automation.from_row(row), int(row["build_id"]), row["image_id"]

    # -- while it runs ----------------------------------------------------------------------
    def advance(self, claim: Claim, step: str) -> None:
        row = self.conn.execute(self.queries["advance_step"], {"build_id": claim.build_id, "step": step}).fetchone()
        if row is None:
            raise LostClaim(f"attempt {claim.build_id} was ended by someone else")

    def move(self, claim: Claim, expected: str, new_status: str, step: str) -> None:
        row = self.conn.execute(self.queries["transition"], {
            "automation_id": claim.automation.id, "build_id": claim.build_id,
            "expected": expected, "new_status": new_status, "step": step,
        }).fetchone()
        if row is None:
            raise LostClaim(f"automation {claim.automation.id} is no longer {expected!r} under attempt {claim.build_id}")

    def save(self, claim: Claim, **fields: Any) -> None:
        """Record what the attempt produced (prompt, model output, files, verdict, image …)."""
        unknown = set(fields) - ATTEMPT_FIELDS
        if unknown:
            raise ValueError(f"not an attempt field: {', '.join(sorted(unknown))}")
        params: dict[str, Any] = {name: None for name in ATTEMPT_FIELDS}
        for name, value in fields.items():
            params[name] = self._clean(name, value)
        params["build_id"] = claim.build_id
        if self.conn.execute(self.queries["save_attempt"], params).fetchone() is None:
            raise LostClaim(f"attempt {claim.build_id} was ended by someone else")
        recorded = self._artifacts.setdefault(claim.build_id, {})
        recorded.update({name: fields[name] for name in SIGNED_FIELDS if fields.get(name) is not None})

    def sign(self, claim: Claim, key: str) -> None:
        """Sign the build with BUILDER_SIGNING_KEY: its id, and the image id and sha256 this store
        recorded for it. Refused (a level 0 failure) when the database no longer holds exactly those."""
        recorded = self._artifacts.get(claim.build_id, {})
        image_id, artifact_sha256 = recorded.get("image_id"), recorded.get("artifact_sha256")
        row = self.conn.execute(self.queries["sign_attempt"], {
            "build_id": claim.build_id, "image_id": image_id, "artifact_sha256": artifact_sha256,
            "signature": signing.sign(key, claim.build_id, image_id, artifact_sha256),
        }).fetchone()
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
        row = self.conn.execute(self.queries["overseer_calls_today"], {}).fetchone()
        return int(row["calls"]) if row else 0

    def record_result(self, claim: Claim, result: LevelResult) -> None:
        self.conn.execute(self.queries["insert_test_result"], {
            "automation_id": claim.automation.id, "build_id": claim.build_id,
            "test_level": result.level, "status": "pass" if result.passed else "fail",
            "execution_log": self.redactor.redact(result.log), "duration_ms": result.duration_ms,
        })

    # -- the end ----------------------------------------------------------------------------
    def finish(self, claim: Claim, *, expected: str, new_status: str, outcome: str, error: str | None = None,
               retry_after_s: float | None = None, idea_status: str | None = None,
               result: LevelResult | None = None) -> Finished:
        """Move the row, end the attempt and release its lock atomically (with the result row when
        one is given: then in one transaction)."""
        params = {
            "automation_id": claim.automation.id, "build_id": claim.build_id, "expected": expected,
            "new_status": new_status, "outcome": outcome, "error": None if error is None else self.redactor.redact(error),
            "retry_after_s": retry_after_s, "idea_status": idea_status,
        }
        if result is None:
            row = self.conn.execute(self.queries["finish_attempt"], params).fetchone()
            owned = bool(row and row["finished"])
        else:
            with self.conn.transaction():
                row = self.conn.execute(self.queries["finish_attempt"], params).fetchone()
                owned = bool(row and row["finished"])
                if owned:
                    self.record_result(claim, result)
        self._artifacts.pop(claim.build_id, None)
        return Finished(owned=owned, retry_at=row["retry_at"] if row else None)

    def release_backoff(self, claim: Claim, base_s: float, max_s: float) -> float:
        row = self.conn.execute(self.queries["release_streak"], {"automation_id": claim.automation.id}).fetchone()
        return backoff_seconds(int(row["streak"]) if row else 0, base_s, max_s)

    def close_lost(self, claim: Claim, error: str) -> None:
        """End an attempt that lost its row, and give up its lock."""
        self.conn.execute(self.queries["close_lost_attempt"], {"build_id": claim.build_id, "outcome": "failed",
                                                               "error": self.redactor.redact(error)})
        self._artifacts.pop(claim.build_id, None)
        self.unlock(claim)

    def unlock(self, claim: Claim) -> None:
        self.conn.execute(self.queries["unlock_attempt"], {"build_id": claim.build_id})
