-- What /metrics reports from the database: the queue and the paid overseer calls (cost, tokens).
SELECT
    (SELECT count(*) FROM automation_ideas
      WHERE agent_builder_buildable(type, status, builder_status)) AS queue_buildable,  -- migration 0011
    (SELECT count(*) FROM automation_ideas WHERE builder_status = 'approved') AS queue_approved,
    (SELECT count(*) FROM agent_builds WHERE finished_at IS NULL) AS in_flight,
    (SELECT count(*) FROM agent_builds WHERE overseer_called_at IS NOT NULL) AS overseer_calls,
    (SELECT coalesce(sum(overseer_cost_usd), 0)::float8 FROM agent_builds) AS overseer_cost_usd,
    (SELECT coalesce(sum(overseer_input_tokens), 0)::float8 FROM agent_builds) AS overseer_input_tokens,
    (SELECT coalesce(sum(overseer_output_tokens), 0)::float8 FROM agent_builds) AS overseer_output_tokens
