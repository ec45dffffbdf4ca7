-- The latest failed attempts with their reason.
SELECT b.id AS build_id, b.automation_id, a.name, b.kind, b.step, b.outcome, b.error, b.finished_at
FROM agent_builds b
LEFT JOIN automation_ideas a ON a.id = b.automation_id
WHERE b.outcome IN ('failed', 'crashed')
ORDER BY b.finished_at DESC
LIMIT %(limit)s
