-- agent-builder 0011: one definition of "buildable", shared by the claim (sql/claim.sql), the
-- metrics (sql/metrics_totals.sql), the ready triggers, the claim's partial index and the reason
-- `build-once <id>` gives (sql/claim_refusal.sql): SQL says why a row is not claimable.
-- depends: 0010_near_miss_types

-- The types the builder builds.
CREATE OR REPLACE FUNCTION agent_builder_built_type(type text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$ SELECT coalesce(type IN ('claude_agent', 'script'), false) $fn$;

-- Why a row with these values cannot be built (NULL: it is buildable, as far as the row says), and
-- buildable itself, defined by that reason. Made with the schema written into their bodies: an
-- index's expressions are evaluated with search_path = pg_catalog, pg_temp (PostgreSQL 17+), and
-- a function that sets its own search_path is never inlined (the claim's plan needs it inlined).
DO $do$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %1$I.agent_builder_unbuildable_reason(type text, status text, builder_status text)
        RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
            SELECT CASE
                WHEN builder_status IS DISTINCT FROM 'not_started'
                    THEN 'another builder has it or it was built already (builder_status is ' || quote_nullable(builder_status) || ')'
                WHEN status IS DISTINCT FROM 'ready_to_build'
                    THEN 'it is not ready (status is ' || quote_nullable(status) || ', not ''ready_to_build'')'
                WHEN NOT %1$I.agent_builder_built_type(type)
                    THEN 'its type ' || quote_nullable(type) || ' is not one the builder builds (script, claude_agent)'
            END
        $fn$$f$, current_schema());
    -- The one definition of buildable (release backoff and a running attempt aside: the claim adds those).
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %1$I.agent_builder_buildable(type text, status text, builder_status text)
        RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
            SELECT %1$I.agent_builder_unbuildable_reason(type, status, builder_status) IS NULL
        $fn$$f$, current_schema());
END
$do$;

-- The triggers and indexes of 0003 and 0010, on that definition.
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

DROP INDEX IF EXISTS automation_ideas_buildable_idx;
CREATE INDEX automation_ideas_buildable_idx ON automation_ideas (priority ASC NULLS LAST, id ASC)
    WHERE agent_builder_buildable(type, status, builder_status);
DROP INDEX IF EXISTS automation_ideas_near_miss_idx;
CREATE INDEX automation_ideas_near_miss_idx ON automation_ideas (id)
    WHERE status = 'ready_to_build' AND builder_status = 'not_started' AND NOT agent_builder_built_type(type);
