-- Claim the next buildable automation in one statement: the playbook's filter and order, skipping
-- rows another builder holds, rows in release backoff, and rows with an unfinished attempt.
-- Records the attempt, points the row at it, and takes the attempt's session advisory lock on
-- this connection (held while the build runs; the rescuer treats an attempt without it as dead).
-- When another session already holds that key, the statement fails (lock_not_available) and the
-- whole claim is undone: no attempt runs without its lock.
WITH next AS (
    SELECT a.id
    FROM automation_ideas a
    WHERE a.type IN ('claude_agent', 'script')
      AND a.status = 'ready_to_build'
      AND a.builder_status = 'not_started'
      AND (a.builder_retry_at IS NULL OR a.builder_retry_at <= now())
      AND NOT EXISTS (SELECT 1 FROM agent_builds b WHERE b.automation_id = a.id AND b.finished_at IS NULL)
    ORDER BY a.priority ASC NULLS LAST, a.id ASC
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), attempt AS (
    INSERT INTO agent_builds (automation_id, kind, worker, step)
    SELECT id, 'build', %(worker)s, 'claimed' FROM next
    RETURNING id, automation_id
), claimed AS (
    UPDATE automation_ideas a
    SET builder_status = 'queued', builder_build_id = attempt.id
    FROM attempt
    WHERE a.id = attempt.automation_id
    RETURNING a.id, a.name, a.type, a.status, a.priority, a.task_description,
              a.infrastructure_requirement, a.builder_status, a.acceptance_check
)
SELECT claimed.*, attempt.id AS build_id,
       agent_builder_claim_lock(attempt.id) AS locked  -- or the statement fails and the claim is undone
FROM claimed JOIN attempt ON attempt.automation_id = claimed.id
