-- agent-builder 0008: the builder's alerts (0007) are the builder's like its other tables (0006):
-- written only by builder sessions, read by operators and admins. Whichever of 0006 and 0007 an
-- installation applied first, this comes after both. The privileges 0007 already granted (it does
-- when the roles exist) are left as they are; those granted here are noted, so that the rollback
-- removes exactly them.
-- depends: 0006_roles 0007_overseer_usage
DO $do$
DECLARE
    wanted constant text[][] := ARRAY[['agent_builder_builder', 'SELECT'], ['agent_builder_builder', 'INSERT'],
                                      ['agent_builder_builder', 'UPDATE'], ['agent_builder_operator', 'SELECT'],
                                      ['agent_builder_admin', 'SELECT']];
    granted jsonb := '[]'::jsonb;
    i int;
BEGIN
    FOR i IN 1 .. array_length(wanted, 1) LOOP
        IF NOT EXISTS (SELECT 1 FROM aclexplode(coalesce((SELECT relacl FROM pg_class WHERE oid = 'agent_builder_alerts'::regclass),
                                                          '{}'::aclitem[])) AS acl
                       WHERE acl.grantee = to_regrole(wanted[i][1]) AND acl.privilege_type = wanted[i][2]) THEN
            EXECUTE format('GRANT %s ON agent_builder_alerts TO %I', wanted[i][2], wanted[i][1]);
            granted := granted || jsonb_build_array(jsonb_build_array(wanted[i][1], wanted[i][2]));
        END IF;
    END LOOP;
    INSERT INTO agent_builder_schema_notes (note, detail) VALUES ('0008 granted on agent_builder_alerts', granted);
END
$do$;
CREATE TRIGGER agent_builder_builder_only BEFORE INSERT OR UPDATE OR DELETE ON agent_builder_alerts
    FOR EACH ROW EXECUTE FUNCTION agent_builder_builder_only();
CREATE TRIGGER agent_builder_builder_only_truncate BEFORE TRUNCATE ON agent_builder_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION agent_builder_builder_only();
