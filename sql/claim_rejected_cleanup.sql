-- Take one rejected automation whose tested build has not been cleaned up yet, and mark it
-- cleaned (the caller then removes its sandbox image and notifies). SKIP LOCKED: one listener each.
WITH next AS (
    SELECT b.id
    FROM automation_ideas a
    JOIN agent_builds b ON b.id = a.builder_build_id
    WHERE a.builder_status = 'rejected' AND b.cleaned_at IS NULL
    ORDER BY a.id
    LIMIT 1
    FOR UPDATE OF b SKIP LOCKED
)
UPDATE agent_builds b
SET cleaned_at = now()
FROM next, automation_ideas a
WHERE b.id = next.id AND a.id = b.automation_id
RETURNING b.id AS build_id, b.image_id, a.id, a.name, a.type, a.status, a.priority, a.task_description,
          a.infrastructure_requirement, a.builder_status, a.acceptance_check
