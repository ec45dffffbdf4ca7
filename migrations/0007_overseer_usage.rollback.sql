DROP TABLE IF EXISTS agent_builder_alerts;
ALTER TABLE agent_builds
    DROP COLUMN IF EXISTS overseer_input_tokens,
    DROP COLUMN IF EXISTS overseer_output_tokens,
    DROP COLUMN IF EXISTS overseer_model;
