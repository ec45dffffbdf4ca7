-- Undo 0001: drop only what 0001 added (the whole table if 0001 created it).
DO $$ BEGIN PERFORM agent_builder_undo_table('automation_ideas'); END $$;
DROP FUNCTION IF EXISTS agent_builder_add_missing_columns(text, text[]);
DROP FUNCTION IF EXISTS agent_builder_undo_table(text);
DROP TABLE IF EXISTS agent_builder_schema_notes;
