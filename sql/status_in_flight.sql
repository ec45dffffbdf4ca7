-- Attempts running now: step, age and worker.
SELECT b.id AS build_id, b.automation_id, a.name, b.kind, b.step, b.worker,
       extract(epoch FROM now() - b.claimed_at)::float8 AS age_s,
       extract(epoch FROM now() - b.step_at)::float8 AS step_age_s
FROM agent_builds b
LEFT JOIN automation_ideas a ON a.id = b.automation_id
WHERE b.finished_at IS NULL
ORDER BY b.claimed_at
