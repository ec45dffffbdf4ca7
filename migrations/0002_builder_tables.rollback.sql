-- Undo 0002.
DROP TABLE IF EXISTS builder_status_history;
DO $$ BEGIN PERFORM agent_builder_undo_table('agent_test_results'); END $$;
DROP INDEX IF EXISTS agent_test_results_automation_idx;
DROP INDEX IF EXISTS agent_test_results_build_idx;
DROP TABLE IF EXISTS agent_builds;
