-- agent-builder 0012: the ready NOTIFY decided inside one PL/pgSQL trigger function, on the one
-- definition of buildable (0011), instead of in the triggers' WHEN clauses.
-- depends: 0011_one_claim
--
-- Why: a trigger's WHEN clause is compiled afresh for every statement that fires it, and the SQL
-- function agent_builder_buildable() is never inlined there, so each of them was set up and run
-- (twice, OLD and NEW) on every UPDATE of builder_status, by the builder too: about a fifth of a
-- build's database time. A PL/pgSQL function keeps its plans for the session, with
-- agent_builder_buildable() inlined into them. What notifies is unchanged: a row that becomes
-- buildable (inserted buildable, or updated from not buildable to buildable), once, at commit.
DO $do$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %1$I.agent_builder_notify_ready() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        BEGIN
            IF %1$I.agent_builder_buildable(NEW.type, NEW.status, NEW.builder_status)
               AND (TG_OP = 'INSERT' OR NOT %1$I.agent_builder_buildable(OLD.type, OLD.status, OLD.builder_status)) THEN
                PERFORM pg_notify('agent_builder_ready', NEW.id::text);
            END IF;
            RETURN NULL;
        END
        $fn$$f$, current_schema());
END
$do$;

DROP TRIGGER IF EXISTS agent_builder_ready_insert ON automation_ideas;
DROP TRIGGER IF EXISTS agent_builder_ready_update ON automation_ideas;
CREATE TRIGGER agent_builder_ready_insert
    AFTER INSERT ON automation_ideas
    FOR EACH ROW EXECUTE FUNCTION agent_builder_notify_ready();
CREATE TRIGGER agent_builder_ready_update
    AFTER UPDATE OF type, status, builder_status ON automation_ideas
    FOR EACH ROW EXECUTE FUNCTION agent_builder_notify_ready();
