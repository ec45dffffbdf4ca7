-- agent-builder 0003: the builder_status state machine, its history and the NOTIFY triggers.
-- depends: 0002_builder_tables
--
-- Operators may make the changes in agent_builder_operator_moves() from any client. The builder
-- (a session whose agent_builder.actor setting starts with 'builder') may also make the moves in
-- agent_builder_builder_moves(). Everything else is refused with a message that says what is
-- allowed. Repairs by hand: BEGIN; SET LOCAL agent_builder.override = 'on'; UPDATE ...; COMMIT;

CREATE OR REPLACE FUNCTION agent_builder_operator_moves() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT '{"awaiting_approval": ["approved", "rejected"],
             "failed": ["not_started"],
             "rejected": ["not_started"]}'::jsonb
$fn$;

CREATE OR REPLACE FUNCTION agent_builder_builder_moves() RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT '{"not_started": ["queued"],
             "queued": ["building", "not_started", "failed"],
             "building": ["awaiting_approval", "failed"],
             "approved": ["deploying", "failed"],
             "deploying": ["deployed", "failed"]}'::jsonb
$fn$;

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

CREATE TRIGGER agent_builder_guard_insert
    BEFORE INSERT ON automation_ideas
    FOR EACH ROW EXECUTE FUNCTION agent_builder_guard_status();
CREATE TRIGGER agent_builder_guard_update
    BEFORE UPDATE OF builder_status ON automation_ideas
    FOR EACH ROW EXECUTE FUNCTION agent_builder_guard_status();

-- History: every change, from any client, with the database user.
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

CREATE TRIGGER agent_builder_history_insert
    AFTER INSERT ON automation_ideas
    FOR EACH ROW EXECUTE FUNCTION agent_builder_record_history();
CREATE TRIGGER agent_builder_history_update
    AFTER UPDATE OF builder_status ON automation_ideas
    FOR EACH ROW WHEN (OLD.builder_status IS DISTINCT FROM NEW.builder_status)
    EXECUTE FUNCTION agent_builder_record_history();

-- NOTIFY with just the id, on commit, when a row becomes buildable or decided.
CREATE OR REPLACE FUNCTION agent_builder_notify() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], NEW.id::text);
    RETURN NULL;
END
$fn$;

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
CREATE TRIGGER agent_builder_decided_update
    AFTER UPDATE OF builder_status ON automation_ideas
    FOR EACH ROW
    WHEN (NEW.builder_status IN ('approved', 'rejected') AND OLD.builder_status IS DISTINCT FROM NEW.builder_status)
    EXECUTE FUNCTION agent_builder_notify('agent_builder_approval');

-- The claim's index: the playbook's predicate and order.
CREATE INDEX automation_ideas_buildable_idx ON automation_ideas (priority ASC NULLS LAST, id ASC)
    WHERE type IN ('claude_agent', 'script') AND status = 'ready_to_build' AND builder_status = 'not_started';
CREATE INDEX automation_ideas_approved_idx ON automation_ideas (id) WHERE builder_status = 'approved';
-- Rows a builder owns right now: what the rescuer looks at.
CREATE INDEX automation_ideas_in_flight_idx ON automation_ideas (id)
    WHERE builder_status IN ('queued', 'building', 'deploying');
