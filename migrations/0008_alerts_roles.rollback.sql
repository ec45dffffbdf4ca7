-- Undo 0008: the guard, and the privileges 0008 granted (those 0007 granted stay with 0007).
DROP TRIGGER IF EXISTS agent_builder_builder_only ON agent_builder_alerts;
DROP TRIGGER IF EXISTS agent_builder_builder_only_truncate ON agent_builder_alerts;
DO $do$
DECLARE
    item jsonb;
BEGIN
    FOR item IN SELECT jsonb_array_elements(detail) FROM agent_builder_schema_notes WHERE note = '0008 granted on agent_builder_alerts' LOOP
        IF to_regrole(item ->> 0) IS NOT NULL THEN
            EXECUTE format('REVOKE %s ON agent_builder_alerts FROM %I', item ->> 1, item ->> 0);
        END IF;
    END LOOP;
    DELETE FROM agent_builder_schema_notes WHERE note = '0008 granted on agent_builder_alerts';
END
$do$;
