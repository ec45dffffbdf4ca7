-- An operator's change of builder_status (approve, reject, retry): the same UPDATE a person would
-- type in SQL, limited to the operator's moves (agent_builder_operator_moves(); a superuser's
-- session may also make the builder's, which no operator command should). The state machine
-- trigger still decides. %(build_id)s NULL: whatever build the row points at; else only while it
-- points at that build (the review page decides on the build it showed). No row back: no such
-- automation, not an operator's move from its status, or no longer that build.
UPDATE automation_ideas
SET builder_status = %(new_status)s
WHERE id = %(automation_id)s
  AND coalesce(agent_builder_operator_moves() -> builder_status, '[]'::jsonb) ? %(new_status)s
  AND (%(build_id)s::bigint IS NULL OR builder_build_id = %(build_id)s::bigint)
RETURNING id, name, builder_status
