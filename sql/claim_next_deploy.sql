-- Claim the next approved automation for production deployment (same shape as a build claim).
-- A NULL automation_id means any approved row, in id order.
WITH next AS (
    SELECT a.id, a.builder_build_id AS source_build_id
    FROM automation_ideas a
    WHERE a.builder_status = 'approved'
      AND (%(automation_id)s::bigint IS NULL OR a.id = %(automation_id)s::bigint)
      AND NOT EXISTS (SELECT 1 FROM agent_builds b WHERE b.automation_id = a.id AND b.finished_at IS NULL)
    ORDER BY a.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), attempt AS (
    INSERT INTO agent_builds (automation_id, kind, worker, step, source_build_id)
    SELECT id, 'deploy', %(worker)s, 'claimed', source_build_id FROM next
    RETURNING id, automation_id
), claimed AS (
    UPDATE automation_ideas a
    SET builder_status = 'deploying', builder_build_id = attempt.id
    FROM attempt
    WHERE a.id = attempt.automation_id
    RETURNING a.id, a.name, a.type, a.status, a.priority, a.task_description,
              a.infrastructure_requirement, a.builder_status, a.acceptance_check
)
SELECT claimed.*, attempt.id AS build_id,
       agent_builder_claim_lock(attempt.id) AS locked  -- or the statement fails and the claim is undone
FROM claimed JOIN attempt ON attempt.automation_id = claimed.id
