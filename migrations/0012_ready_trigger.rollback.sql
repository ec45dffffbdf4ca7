-- Back to 0011: the ready triggers decide in their WHEN clauses.
DROP TRIGGER IF EXISTS agent_builder_ready_insert ON automation_ideas;
DROP TRIGGER IF EXISTS agent_builder_ready_update ON automation_ideas;
CREATE TRIGGER agent_builder_ready_insert
    AFTER INSERT ON automation_ideas
    FOR EACH ROW
    WHEN (agent_builder_buildable(NEW.type, NEW.status, NEW.builder_status))
    EXECUTE FUNCTION agent_builder_notify('agent_builder_ready');
CREATE TRIGGER agent_builder_ready_update
    AFTER UPDATE OF type, status, builder_status ON automation_ideas
    FOR EACH ROW
    WHEN (agent_builder_buildable(NEW.type, NEW.status, NEW.builder_status)
          AND NOT agent_builder_buildable(OLD.type, OLD.status, OLD.builder_status))
    EXECUTE FUNCTION agent_builder_notify('agent_builder_ready');
DROP FUNCTION IF EXISTS agent_builder_notify_ready();
