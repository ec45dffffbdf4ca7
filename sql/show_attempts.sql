SELECT id AS build_id, kind, worker, claimed_at, step, finished_at, outcome, error,
       overseer_verdict, overseer_reason, overseer_cost_usd, image_id, artifact_sha256,
       acceptance_check, files
FROM agent_builds
WHERE automation_id = %(automation_id)s
ORDER BY id
