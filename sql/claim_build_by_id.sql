-- The playbook's Step 1 for one given id: claim it only if it is buildable right now
-- (an explicit request ignores release backoff). No row back: another builder has it, or it is not ready.
WITH next AS (
    SELECT a.id
    FROM automation_ideas a
    WHERE a.id = %(automation_id)s
      AND a.type IN ('claude_agent', 'script')
      AND a.status = 'ready_to_build'
      AND a.builder_status = 'not_started'
      AND NOT EXISTS (SELECT 1 FROM agent_builds b WHERE b.automation_id = a.id AND b.finished_at IS NULL)
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
