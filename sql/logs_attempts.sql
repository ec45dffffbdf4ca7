-- `agent-builder logs`: one automation's attempts, with the time of their current step.
SELECT id AS build_id, kind, worker, claimed_at, step, step_at, finished_at, outcome, error,
       overseer_verdict, overseer_reason, overseer_called_at, overseer_cost_usd
FROM agent_builds
WHERE automation_id = %(automation_id)s
ORDER BY id
