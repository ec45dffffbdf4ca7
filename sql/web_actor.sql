-- The actor name recorded in builder_status_history for this session's next changes (a label,
-- never trusted: the login decides what a session may do). The review page's buttons say 'web…'.
SELECT set_config('agent_builder.actor', %(actor)s, false) AS actor
