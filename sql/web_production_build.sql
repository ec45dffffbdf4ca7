-- The build now in production for an automation: the build its latest successful deployment
-- deployed, with its files. No row: nothing of it is in production yet.
SELECT b.id AS build_id, b.files, b.artifact_sha256, b.image_id, d.id AS deploy_id, d.finished_at AS deployed_at
FROM agent_builds d
JOIN agent_builds b ON b.id = d.source_build_id AND b.automation_id = d.automation_id
WHERE d.automation_id = %(automation_id)s AND d.kind = 'deploy' AND d.outcome = 'succeeded'
ORDER BY d.id DESC
LIMIT 1
