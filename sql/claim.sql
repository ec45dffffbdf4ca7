-- The one claim, for every kind (%(kind)s 'build' or 'deploy') in one statement: pick the row,
-- record the attempt, point the row at it, and take the attempt's session advisory lock on this
-- connection (held while the attempt runs; the rescuer treats an attempt without it as dead).
-- When another session already holds that key, the statement fails (lock_not_available) and the
-- whole claim is undone: no attempt runs without its lock.
-- What is picked, SKIP LOCKED (rows another builder holds are passed over), never a row with an
-- unfinished attempt; only the branch of the kind asked for runs (the others are cut by their
-- one-time filter):
--   build, no id: the next buildable row (agent_builder_buildable(), migration 0011: its partial
--                 index gives the order) whose release backoff is over;
--   build, an id: that row, when buildable (an explicit request ignores release backoff);
--   deploy:       the next approved row (or the one given), in id order.
-- A build claim commits without waiting for its WAL flush (synchronous_commit off for this
-- transaction only): a server crash can lose only the claim itself, whose session and advisory
-- lock die with it, so the row is simply claimable again. The attempt's next write (its first
-- step) is a durable commit, which flushes the claim's WAL with its own, before anything the
-- attempt does that must not repeat (the paid review). A deploy claim stays durable.
WITH next_build AS (
    SELECT a.id, NULL::bigint AS source_build_id
    FROM automation_ideas a
    WHERE %(kind)s::text = 'build' AND %(automation_id)s::bigint IS NULL
      AND agent_builder_buildable(a.type, a.status, a.builder_status)
      AND (a.builder_retry_at IS NULL OR a.builder_retry_at <= now())
      AND NOT EXISTS (SELECT 1 FROM agent_builds b WHERE b.automation_id = a.id AND b.finished_at IS NULL)
    ORDER BY a.priority ASC NULLS LAST, a.id ASC
    LIMIT 1
    FOR UPDATE OF a SKIP LOCKED
), build_by_id AS (
    SELECT a.id, NULL::bigint AS source_build_id
    FROM automation_ideas a
    WHERE %(kind)s::text = 'build' AND a.id = %(automation_id)s::bigint
      AND agent_builder_buildable(a.type, a.status, a.builder_status)
      AND NOT EXISTS (SELECT 1 FROM agent_builds b WHERE b.automation_id = a.id AND b.finished_at IS NULL)
    FOR UPDATE OF a SKIP LOCKED
), next_deploy AS (
    SELECT a.id, a.builder_build_id AS source_build_id
    FROM automation_ideas a
    WHERE %(kind)s::text = 'deploy' AND a.builder_status = 'approved'
      AND (%(automation_id)s::bigint IS NULL OR a.id = %(automation_id)s::bigint)
      AND NOT EXISTS (SELECT 1 FROM agent_builds b WHERE b.automation_id = a.id AND b.finished_at IS NULL)
    ORDER BY a.id
    LIMIT 1
    FOR UPDATE OF a SKIP LOCKED
), next AS (
    SELECT * FROM next_build UNION ALL SELECT * FROM build_by_id UNION ALL SELECT * FROM next_deploy
), attempt AS (
    INSERT INTO agent_builds (automation_id, kind, worker, step, source_build_id)
    SELECT id, %(kind)s::text, %(worker)s, 'claimed', source_build_id FROM next
    RETURNING id, automation_id
), claimed AS (
    UPDATE automation_ideas a
    SET builder_status = CASE WHEN %(kind)s::text = 'deploy' THEN 'deploying' ELSE 'queued' END,
        builder_build_id = attempt.id
    FROM attempt
    WHERE a.id = attempt.automation_id
    RETURNING a.id, a.name, a.type, a.status, a.priority, a.task_description,
              a.infrastructure_requirement, a.builder_status, a.acceptance_check
)
SELECT claimed.*, attempt.id AS build_id,
       agent_builder_claim_lock(attempt.id) AS locked,  -- or the statement fails and the claim is undone
       CASE WHEN %(kind)s::text = 'build' THEN set_config('synchronous_commit', 'off', true) END AS commit_mode
FROM claimed JOIN attempt ON attempt.automation_id = claimed.id
