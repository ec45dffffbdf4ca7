-- Undo 0006: the guards of 0003 come back exactly as they were; the triggers, functions, columns
-- and privileges 0006 added go (privileges that later migrations granted to these roles, on their
-- own tables, stay with those migrations). A group role is dropped only when 0006 created it (its comment
-- says so) and no other database still uses it (DROP ROLE refuses while any database holds a
-- privilege of it; a concurrent migration elsewhere locks the role first, see 0006).

DROP TRIGGER agent_builder_guard_update ON automation_ideas;
CREATE TRIGGER agent_builder_guard_update
    BEFORE UPDATE OF builder_status ON automation_ideas
    FOR EACH ROW EXECUTE FUNCTION agent_builder_guard_status();

-- The definitions of 0003.
CREATE OR REPLACE FUNCTION agent_builder_guard_status() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    known constant text[] := ARRAY['not_started', 'queued', 'building', 'failed', 'awaiting_approval',
                                   'approved', 'deploying', 'deployed', 'rejected'];
    is_builder boolean := coalesce(current_setting('agent_builder.actor', true), '') LIKE 'builder%';
    override boolean := lower(coalesce(current_setting('agent_builder.override', true), '')) IN ('on', 'true', '1', 'yes');
    allowed jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.builder_status := coalesce(NEW.builder_status, 'not_started');
        IF NOT NEW.builder_status = ANY (known) THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('agent-builder: unknown builder_status %L; known values: %s', NEW.builder_status, array_to_string(known, ', '));
        END IF;
        IF NEW.builder_status <> 'not_started' AND NOT override THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('agent-builder: a new automation starts with builder_status ''not_started'', not %L', NEW.builder_status),
                HINT = 'Insert without builder_status, or use the admin override: BEGIN; SET LOCAL agent_builder.override = ''on''; ...; COMMIT;';
        END IF;
        RETURN NEW;
    END IF;

    IF NEW.builder_status IS NOT DISTINCT FROM OLD.builder_status THEN
        RETURN NEW;
    END IF;
    IF NEW.builder_status IS NULL OR NOT NEW.builder_status = ANY (known) THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = format('agent-builder: unknown builder_status %L; known values: %s',
                             NEW.builder_status, array_to_string(known, ', '));
    END IF;
    IF override THEN
        RETURN NEW;
    END IF;
    -- A legacy or NULL value (a table that predates the builder) may be reset by anyone.
    IF (OLD.builder_status IS NULL OR NOT OLD.builder_status = ANY (known)) AND NEW.builder_status = 'not_started' THEN
        NEW.builder_retry_at := NULL;
        RETURN NEW;
    END IF;
    IF coalesce(agent_builder_operator_moves() -> OLD.builder_status, '[]') ? NEW.builder_status THEN
        IF NEW.builder_status = 'not_started' THEN
            NEW.builder_retry_at := NULL;  -- an operator's retry is not delayed by earlier backoff
        END IF;
        RETURN NEW;
    END IF;
    IF is_builder AND coalesce(agent_builder_builder_moves() -> OLD.builder_status, '[]') ? NEW.builder_status THEN
        RETURN NEW;
    END IF;

    allowed := agent_builder_operator_moves() -> OLD.builder_status;
    RAISE EXCEPTION USING ERRCODE = 'check_violation',
        MESSAGE = format('agent-builder: builder_status of automation %s cannot change from %L to %L. %s',
            NEW.id, OLD.builder_status, NEW.builder_status,
            CASE WHEN allowed IS NULL
                THEN format('From %L only the builder changes it; an operator may set approved or rejected on an awaiting_approval row, and not_started on a failed or rejected row.', OLD.builder_status)
                ELSE format('From %L an operator may set: %s.', OLD.builder_status,
                            (SELECT string_agg(quote_literal(v), ' or ') FROM jsonb_array_elements_text(allowed) AS v))
            END),
        HINT = 'For a repair by hand: BEGIN; SET LOCAL agent_builder.override = ''on''; UPDATE ...; COMMIT;';
END
$fn$;

CREATE OR REPLACE FUNCTION agent_builder_record_history() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO builder_status_history (automation_id, old_status, new_status, db_user, actor, build_id, override)
    VALUES (NEW.id,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.builder_status END,
            NEW.builder_status,
            current_user,
            nullif(current_setting('agent_builder.actor', true), ''),
            NEW.builder_build_id,
            lower(coalesce(current_setting('agent_builder.override', true), '')) IN ('on', 'true', '1', 'yes'));
    RETURN NULL;
END
$fn$;
GRANT EXECUTE ON FUNCTION agent_builder_record_history() TO PUBLIC;

DROP TRIGGER IF EXISTS agent_builder_history_append_only ON builder_status_history;
DROP TRIGGER IF EXISTS agent_builder_history_append_only_truncate ON builder_status_history;
DROP TRIGGER IF EXISTS agent_builder_builder_only ON agent_builds;
DROP TRIGGER IF EXISTS agent_builder_builder_only_truncate ON agent_builds;
DROP TRIGGER IF EXISTS agent_builder_stamp_build ON agent_builds;
DROP TRIGGER IF EXISTS agent_builder_builder_only ON agent_test_results;
DROP TRIGGER IF EXISTS agent_builder_builder_only_truncate ON agent_test_results;
DROP TRIGGER IF EXISTS agent_builder_builder_only ON approval_link_uses;
DROP TRIGGER IF EXISTS agent_builder_builder_only_truncate ON approval_link_uses;
DROP FUNCTION IF EXISTS agent_builder_history_append_only();
DROP FUNCTION IF EXISTS agent_builder_builder_only();
DROP FUNCTION IF EXISTS agent_builder_stamp_build();
DROP FUNCTION IF EXISTS agent_builder_claim_lock(bigint);
DROP FUNCTION IF EXISTS agent_builder_lock_holders(bigint);
DROP FUNCTION IF EXISTS agent_builder_lock_holders_all();
DROP FUNCTION IF EXISTS agent_builder_lock_key(bigint);
DROP FUNCTION IF EXISTS agent_builder_override_active();
DROP FUNCTION IF EXISTS agent_builder_is_admin();
DROP FUNCTION IF EXISTS agent_builder_is_operator();
DROP FUNCTION IF EXISTS agent_builder_is_builder();
ALTER TABLE agent_builds DROP COLUMN IF EXISTS built_by;
ALTER TABLE agent_builds DROP COLUMN IF EXISTS signature;

DO $do$
DECLARE
    role_name text;
    tbl text;
    seq text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['agent_builder_builder', 'agent_builder_operator', 'agent_builder_admin'] LOOP
        CONTINUE WHEN to_regrole(role_name) IS NULL;
        FOREACH tbl IN ARRAY ARRAY['automation_ideas', 'agent_builds', 'agent_test_results', 'approval_link_uses',
                                   'builder_status_history', 'agent_builder_schema_notes', 'agent_builder_migrations',
                                   '_yoyo_version', '_yoyo_migration', '_yoyo_log', 'yoyo_lock'] LOOP
            IF to_regclass(tbl) IS NOT NULL THEN
                EXECUTE format('REVOKE ALL ON %I FROM %I', tbl, role_name);
            END IF;
        END LOOP;
        FOREACH tbl IN ARRAY ARRAY['automation_ideas', 'agent_builds', 'agent_test_results'] LOOP
            seq := pg_get_serial_sequence(tbl, 'id');
            IF seq IS NOT NULL THEN
                EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', seq, role_name);
            END IF;
        END LOOP;
        IF coalesce(shobj_description(to_regrole(role_name), 'pg_authid'), '') LIKE 'agent-builder group role%' THEN
            BEGIN
                EXECUTE format('DROP ROLE %I', role_name);
            EXCEPTION
                WHEN dependent_objects_still_exist THEN
                    RAISE NOTICE 'agent-builder: role % is still used by another database; kept', role_name;
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'agent-builder: role % kept: % may not drop roles', role_name, session_user;
            END;
        END IF;
    END LOOP;
END
$do$;
