-- agent-builder 0010: rows whose type is almost one the builder builds ('Script', 'bash',
-- ' script', 'claude-agent', NULL) are told about instead of waiting forever: the builder may move
-- them not_started -> failed (listener/rescue.py, sql/fail_near_miss_types.sql), with a level 0
-- result that names the allowed types and one notification.
-- depends: 0009_listener_registry

CREATE OR REPLACE FUNCTION agent_builder_builder_moves() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT '{"not_started": ["queued", "failed"],
             "queued": ["building", "not_started", "failed"],
             "building": ["awaiting_approval", "failed"],
             "approved": ["deploying", "failed"],
             "deploying": ["deployed", "failed"]}'::jsonb
$fn$;

-- What the rescuer looks at every RESCUE_INTERVAL_S: ready rows of a type that is not ours.
CREATE INDEX automation_ideas_near_miss_idx ON automation_ideas (id)
    WHERE status = 'ready_to_build' AND builder_status = 'not_started'
      AND (type IS NULL OR type NOT IN ('claude_agent', 'script'));
