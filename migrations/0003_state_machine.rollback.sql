-- Undo 0003.
DROP INDEX IF EXISTS automation_ideas_buildable_idx;
DROP INDEX IF EXISTS automation_ideas_approved_idx;
DROP INDEX IF EXISTS automation_ideas_in_flight_idx;
DROP TRIGGER IF EXISTS agent_builder_ready_insert ON automation_ideas;
DROP TRIGGER IF EXISTS agent_builder_ready_update ON automation_ideas;
DROP TRIGGER IF EXISTS agent_builder_decided_update ON automation_ideas;
DROP TRIGGER IF EXISTS agent_builder_history_insert ON automation_ideas;
DROP TRIGGER IF EXISTS agent_builder_history_update ON automation_ideas;
DROP TRIGGER IF EXISTS agent_builder_guard_insert ON automation_ideas;
DROP TRIGGER IF EXISTS agent_builder_guard_update ON automation_ideas;
DROP FUNCTION IF EXISTS agent_builder_notify();
DROP FUNCTION IF EXISTS agent_builder_record_history();
DROP FUNCTION IF EXISTS agent_builder_guard_status();
DROP FUNCTION IF EXISTS agent_builder_operator_moves();
DROP FUNCTION IF EXISTS agent_builder_builder_moves();
