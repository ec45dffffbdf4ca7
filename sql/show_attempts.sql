SELECT id AS build_id, kind, worker, claimed_at, step, finished_at, outcome, error,
       overseer_verdict, overseer_reason, overseer_cost_usd, overseer_input_tokens,
       overseer_output_tokens, overseer_model, image_id, artifact_sha256,
       acceptance_check, files
FROM agent_builds
WHERE automation_id = %(automation_id)s
ORDER BY id
