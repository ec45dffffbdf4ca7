-- Back to 0010: the predicate written out in the triggers and indexes again.
DROP TRIGGER IF EXISTS agent_builder_ready_insert ON automation_ideas;
DROP TRIGGER IF EXISTS agent_builder_ready_update ON automation_ideas;
CREATE TRIGGER agent_builder_ready_insert
    AFTER INSERT ON automation_ideas
    FOR EACH ROW
    WHEN (NEW.type IN ('claude_agent', 'script') AND NEW.status = 'ready_to_build' AND NEW.builder_status = 'not_started')
    EXECUTE FUNCTION agent_builder_notify('agent_builder_ready');
CREATE TRIGGER agent_builder_ready_update
    AFTER UPDATE OF type, status, builder_status ON automation_ideas
    FOR EACH ROW
    WHEN (NEW.type IN ('claude_agent', 'script') AND NEW.status = 'ready_to_build' AND NEW.builder_status = 'not_started'
          AND (OLD.type IN ('claude_agent', 'script') AND OLD.status = 'ready_to_build' AND OLD.builder_status = 'not_started') IS NOT TRUE)
    EXECUTE FUNCTION agent_builder_notify('agent_builder_ready');

DROP INDEX IF EXISTS automation_ideas_buildable_idx;
CREATE INDEX automation_ideas_buildable_idx ON automation_ideas (priority ASC NULLS LAST, id ASC)
    WHERE type IN ('claude_agent', 'script') AND status = 'ready_to_build' AND builder_status = 'not_started';
DROP INDEX IF EXISTS automation_ideas_near_miss_idx;
CREATE INDEX automation_ideas_near_miss_idx ON automation_ideas (id)
    WHERE status = 'ready_to_build' AND builder_status = 'not_started'
      AND (type IS NULL OR type NOT IN ('claude_agent', 'script'));

DROP FUNCTION IF EXISTS agent_builder_buildable(text, text, text);
DROP FUNCTION IF EXISTS agent_builder_unbuildable_reason(text, text, text);
DROP FUNCTION IF EXISTS agent_builder_built_type(text);
