DROP INDEX IF EXISTS automation_ideas_near_miss_idx;

CREATE OR REPLACE FUNCTION agent_builder_builder_moves() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT '{"not_started": ["queued"],
             "queued": ["building", "not_started", "failed"],
             "building": ["awaiting_approval", "failed"],
             "approved": ["deploying", "failed"],
             "deploying": ["deployed", "failed"]}'::jsonb
$fn$;
