-- agent-builder 0006: roles, not conventions. Who may do what is decided by role membership of the
-- session user, never by a setting a client can change.
-- depends: 0005_rejection_cleanup
--
--   agent_builder_builder   the listener's sessions: the only writer of agent_builds,
--                           agent_test_results, approval_link_uses and the builder_* columns
--   agent_builder_operator  adds and edits ideas, marks them ready, approves / rejects / retries,
--                           reads everything
--   agent_builder_admin     the repair override (SET LOCAL agent_builder.override = 'on')
--
-- Superusers are members of every role. Membership is checked for session_user (the login that
-- authenticated), so neither SET ROLE nor a SECURITY DEFINER function changes the answer.
-- The roles are cluster-wide: they are created here when missing (a concurrent migration of another
-- database may create them at the same moment) and marked as agent-builder's with a comment; the
-- rollback drops a role only when it carries that mark and no other database still uses it.

-- -- The group roles -------------------------------------------------------------------------------
DO $do$
DECLARE
    wanted constant text[] := ARRAY['agent_builder_builder', 'agent_builder_operator', 'agent_builder_admin'];
    role_name text;
    tries int;
BEGIN
    FOREACH role_name IN ARRAY wanted LOOP
        tries := 0;
        LOOP
            tries := tries + 1;
            BEGIN
                IF to_regrole(role_name) IS NULL THEN
                    EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
                    EXECUTE format('COMMENT ON ROLE %I IS %L', role_name,
                                   'agent-builder group role (created by agent-builder migrate; dropped by the last migrate --rollback that no longer needs it)');
                END IF;
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- it exists, or another database's migration created it just now
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                        MESSAGE = format('agent-builder: migrate creates the group role %s and the login %s may not create roles', role_name, session_user),
                        HINT = 'Run migrate as a superuser or a role with CREATEROLE, or create the three roles first as a superuser: '
                               'CREATE ROLE agent_builder_builder NOLOGIN; CREATE ROLE agent_builder_operator NOLOGIN; CREATE ROLE agent_builder_admin NOLOGIN;';
            END;
            -- A privilege on the role locks it against a concurrent DROP ROLE (a rollback in
            -- another database) until this transaction ends; if it vanished in between, create it again.
            BEGIN
                EXECUTE format('GRANT SELECT ON agent_builder_schema_notes TO %I', role_name);
                EXIT;
            EXCEPTION WHEN undefined_object THEN
                IF tries >= 5 THEN
                    RAISE;
                END IF;
            END;
        END LOOP;
    END LOOP;
END
$do$;

-- -- Table privileges -------------------------------------------------------------------------------
-- What each role needs to do its work. The triggers below decide the rest, whatever privileges
-- another role was given (GRANT ALL ON ALL TABLES included).
DO $do$
DECLARE
    tbl text;
    seq text;
BEGIN
    EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON agent_builds, agent_test_results, approval_link_uses TO agent_builder_builder';
    EXECUTE 'GRANT SELECT, UPDATE ON automation_ideas TO agent_builder_builder';
    EXECUTE 'GRANT SELECT ON builder_status_history TO agent_builder_builder';
    EXECUTE 'GRANT SELECT, INSERT, UPDATE ON automation_ideas TO agent_builder_operator, agent_builder_admin';
    EXECUTE 'GRANT SELECT ON agent_builds, agent_test_results, approval_link_uses, builder_status_history TO agent_builder_operator, agent_builder_admin';
    FOREACH tbl IN ARRAY ARRAY['agent_builds', 'agent_test_results'] LOOP
        seq := pg_get_serial_sequence(tbl, 'id');
        IF seq IS NOT NULL THEN
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO agent_builder_builder', seq);
        END IF;
    END LOOP;
    seq := pg_get_serial_sequence('automation_ideas', 'id');
    IF seq IS NOT NULL THEN
        EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO agent_builder_operator, agent_builder_admin', seq);
    END IF;
    -- `check` and `listen` read the migration level (yoyo's tables) as the listener's login.
    FOREACH tbl IN ARRAY ARRAY['agent_builder_migrations', '_yoyo_version', '_yoyo_migration', '_yoyo_log', 'yoyo_lock'] LOOP
        IF to_regclass(tbl) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON %I TO agent_builder_builder, agent_builder_operator, agent_builder_admin', tbl);
        END IF;
    END LOOP;
END
$do$;

-- -- Who is this session ----------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION agent_builder_is_builder() RETURNS boolean
LANGUAGE sql STABLE AS $fn$ SELECT pg_has_role(session_user, 'agent_builder_builder', 'MEMBER') $fn$;

CREATE OR REPLACE FUNCTION agent_builder_is_operator() RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT pg_has_role(session_user, 'agent_builder_operator', 'MEMBER') OR pg_has_role(session_user, 'agent_builder_admin', 'MEMBER')
$fn$;

CREATE OR REPLACE FUNCTION agent_builder_is_admin() RETURNS boolean
LANGUAGE sql STABLE AS $fn$ SELECT pg_has_role(session_user, 'agent_builder_admin', 'MEMBER') $fn$;

-- The admin override: false when not asked for; true when asked for by an admin member; refused
-- (with the reason) when asked for by anyone else.
CREATE OR REPLACE FUNCTION agent_builder_override_active() RETURNS boolean
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    IF lower(coalesce(current_setting('agent_builder.override', true), '')) NOT IN ('on', 'true', '1', 'yes') THEN
        RETURN false;
    END IF;
    IF agent_builder_is_admin() THEN
        RETURN true;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('agent-builder: agent_builder.override is set, but session user %s is not a member of agent_builder_admin: the repair override is for admins only', session_user),
        HINT = format('Repair as an admin (GRANT agent_builder_admin TO %s;, run by a superuser), or without the override if the change is one an operator may make.', session_user);
END
$fn$;

-- -- Advisory locks of attempts ----------------------------------------------------------------------
-- The one place the lock key of an attempt is defined (the bigint form of the advisory lock
-- functions: pg_locks shows it as classid = high 32 bits, objid = low 32 bits, objsubid = 1).
CREATE OR REPLACE FUNCTION agent_builder_lock_key(build_id bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$ SELECT (424242::bigint << 32) | (build_id & 4294967295) $fn$;

-- Every granted advisory lock of the bigint form in this database, with its key, its holder and
-- whether that session's login is a builder member. Only a lock held by a builder session proves a
-- live attempt; any other holder is a squatter.
CREATE OR REPLACE FUNCTION agent_builder_lock_holders_all()
RETURNS TABLE (key bigint, pid integer, login name, application text, builder boolean)
LANGUAGE sql STABLE AS $fn$
    SELECT (l.classid::bigint << 32) | l.objid::bigint, l.pid, r.rolname, a.application_name,
           coalesce(pg_has_role(r.oid, 'agent_builder_builder', 'MEMBER'), false)
    FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    LEFT JOIN pg_roles r ON r.oid = a.usesysid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
$fn$;

-- Who holds one attempt's lock right now.
CREATE OR REPLACE FUNCTION agent_builder_lock_holders(build_id bigint)
RETURNS TABLE (pid integer, login name, application text, builder boolean)
LANGUAGE sql STABLE AS $fn$
    SELECT h.pid, h.login, h.application, h.builder FROM agent_builder_lock_holders_all() h
    WHERE h.key = agent_builder_lock_key(build_id)
$fn$;

-- The claim's lock: taken, or the claim statement fails (and with it the whole claim is undone)
-- naming whoever holds the key.
CREATE OR REPLACE FUNCTION agent_builder_claim_lock(build_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    holder record;
BEGIN
    IF pg_try_advisory_lock(agent_builder_lock_key(build_id)) THEN
        RETURN true;
    END IF;
    SELECT h.pid, h.login, h.application INTO holder FROM agent_builder_lock_holders(build_id) AS h LIMIT 1;
    RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
        MESSAGE = format('agent-builder: the advisory lock of attempt %s is held by another session (pid %s, login %s, application %L), so this claim was undone',
                         build_id, coalesce(holder.pid::text, '?'), coalesce(holder.login::text, '?'), coalesce(holder.application, '')),
        DETAIL = format('holder pid=%s login=%s', coalesce(holder.pid::text, '?'), coalesce(holder.login::text, '?')),
        HINT = 'A session that is not a builder holds agent-builder''s lock keys; find it in pg_stat_activity and end it (pg_terminate_backend).';
END
$fn$;

-- -- The builder's tables: written only by builder sessions -------------------------------------------
CREATE OR REPLACE FUNCTION agent_builder_builder_only() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT agent_builder_is_builder() THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('agent-builder: only the builder writes %s (%s refused): session user %s is not a member of agent_builder_builder',
                             TG_TABLE_NAME, TG_OP, session_user),
            HINT = 'These rows are the builder''s record of what it built and tested; operators read them. If this login is the listener''s own: GRANT agent_builder_builder TO '
                   || quote_ident(session_user) || ';';
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$fn$;

-- agent_builds.built_by: the login of the session that made the attempt, set by the database.
CREATE OR REPLACE FUNCTION agent_builder_stamp_build() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.built_by := session_user;
    ELSIF NEW.built_by IS DISTINCT FROM OLD.built_by THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('agent-builder: agent_builds.built_by of attempt %s records who made it and never changes', OLD.id);
    END IF;
    RETURN NEW;
END
$fn$;

ALTER TABLE agent_builds ADD COLUMN built_by text;  -- NULL on attempts made before this migration
ALTER TABLE agent_builds ALTER COLUMN built_by SET DEFAULT session_user;
ALTER TABLE agent_builds ADD COLUMN signature text;
COMMENT ON COLUMN agent_builds.built_by IS
    'agent-builder: login of the session that made this attempt (set by the database); deployments require a member of agent_builder_builder';
COMMENT ON COLUMN agent_builds.signature IS
    'agent-builder: HMAC-SHA256 by BUILDER_SIGNING_KEY over (id, image_id, artifact_sha256), set when the build succeeded';

CREATE TRIGGER agent_builder_builder_only BEFORE INSERT OR UPDATE OR DELETE ON agent_builds
    FOR EACH ROW EXECUTE FUNCTION agent_builder_builder_only();
CREATE TRIGGER agent_builder_builder_only_truncate BEFORE TRUNCATE ON agent_builds
    FOR EACH STATEMENT EXECUTE FUNCTION agent_builder_builder_only();
CREATE TRIGGER agent_builder_stamp_build BEFORE INSERT OR UPDATE ON agent_builds
    FOR EACH ROW EXECUTE FUNCTION agent_builder_stamp_build();
CREATE TRIGGER agent_builder_builder_only BEFORE INSERT OR UPDATE OR DELETE ON agent_test_results
    FOR EACH ROW EXECUTE FUNCTION agent_builder_builder_only();
CREATE TRIGGER agent_builder_builder_only_truncate BEFORE TRUNCATE ON agent_test_results
    FOR EACH STATEMENT EXECUTE FUNCTION agent_builder_builder_only();
CREATE TRIGGER agent_builder_builder_only BEFORE INSERT OR UPDATE OR DELETE ON approval_link_uses
    FOR EACH ROW EXECUTE FUNCTION agent_builder_builder_only();
CREATE TRIGGER agent_builder_builder_only_truncate BEFORE TRUNCATE ON approval_link_uses
    FOR EACH STATEMENT EXECUTE FUNCTION agent_builder_builder_only();

-- -- The history: append-only for everyone --------------------------------------------------------
-- Rows come only from the builder_status trigger (agent_builder_record_history, which runs with
-- the rights of its owner); nobody may change or remove them, superusers included (unless they
-- disable this trigger themselves).
CREATE OR REPLACE FUNCTION agent_builder_history_append_only() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'USAGE') THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('agent-builder: %s is written only by the builder_status trigger of automation_ideas (INSERT by %s refused)', TG_TABLE_NAME, session_user),
            HINT = 'Change automation_ideas.builder_status instead: the change is recorded with your login.';
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('agent-builder: %s is append-only: %s refused (session user %s)', TG_TABLE_NAME, TG_OP, session_user),
        HINT = 'The status history is the audit trail of every change of builder_status; it is never changed or removed.';
END
$fn$;

CREATE TRIGGER agent_builder_history_append_only BEFORE INSERT OR UPDATE OR DELETE ON builder_status_history
    FOR EACH ROW EXECUTE FUNCTION agent_builder_history_append_only();
CREATE TRIGGER agent_builder_history_append_only_truncate BEFORE TRUNCATE ON builder_status_history
    FOR EACH STATEMENT EXECUTE FUNCTION agent_builder_history_append_only();

-- History rows: written with the rights of this function's owner (nobody else may insert them),
-- with the login that made the change (session_user) and the actor name the client gave (recorded,
-- never trusted). The override is recorded only when it was in force (an admin's).
CREATE OR REPLACE FUNCTION agent_builder_record_history() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
BEGIN
    INSERT INTO builder_status_history (automation_id, old_status, new_status, db_user, actor, build_id, override)
    VALUES (NEW.id,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.builder_status END,
            NEW.builder_status,
            session_user,
            nullif(current_setting('agent_builder.actor', true), ''),
            NEW.builder_build_id,
            lower(coalesce(current_setting('agent_builder.override', true), '')) IN ('on', 'true', '1', 'yes')
                AND agent_builder_is_admin());
    RETURN NULL;
END
$fn$;
DO $do$
BEGIN
    EXECUTE format('ALTER FUNCTION agent_builder_record_history() SET search_path = %I, pg_temp',
                   (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = 'builder_status_history'::regclass));
END
$do$;
-- Nobody may attach it to a table of their own to write history rows with its owner's rights.
REVOKE EXECUTE ON FUNCTION agent_builder_record_history() FROM PUBLIC;

-- -- automation_ideas: the state machine by role -------------------------------------------------
-- Operator moves (operator and admin members): awaiting_approval -> approved | rejected,
-- failed | rejected -> not_started. Builder moves (builder members): agent_builder_builder_moves().
-- builder_build_id and builder_retry_at: builder members only. The override: admin members only.
-- A builder member that is not also an operator or admin (and not a superuser) never approves,
-- rejects or retries.
CREATE OR REPLACE FUNCTION agent_builder_guard_status() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    known constant text[] := ARRAY['not_started', 'queued', 'building', 'failed', 'awaiting_approval',
                                   'approved', 'deploying', 'deployed', 'rejected'];
    repair_hint constant text := 'For a repair by hand, as a member of agent_builder_admin: BEGIN; SET LOCAL agent_builder.override = ''on''; UPDATE ...; COMMIT;';
    is_builder constant boolean := agent_builder_is_builder();
    is_operator constant boolean := agent_builder_is_operator();
    operator_move boolean;
    builder_move boolean;
    allowed jsonb;
    why text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.builder_status := coalesce(NEW.builder_status, 'not_started');
        IF NOT NEW.builder_status = ANY (known) THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = format('agent-builder: unknown builder_status %L; known values: %s', NEW.builder_status, array_to_string(known, ', '));
        END IF;
        IF NEW.builder_status <> 'not_started' THEN
            IF NOT agent_builder_override_active() THEN
                RAISE EXCEPTION USING ERRCODE = 'check_violation',
                    MESSAGE = format('agent-builder: a new automation starts with builder_status ''not_started'', not %L', NEW.builder_status),
                    HINT = 'Insert without builder_status, or use the admin override: BEGIN; SET LOCAL agent_builder.override = ''on''; ...; COMMIT;';
            END IF;
        END IF;
        IF (NEW.builder_build_id IS NOT NULL OR NEW.builder_retry_at IS NOT NULL) AND NOT is_builder THEN
            IF NOT agent_builder_override_active() THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                    MESSAGE = format('agent-builder: builder_build_id and builder_retry_at are the builder''s; session user %s is not a member of agent_builder_builder', session_user),
                    HINT = 'Insert the idea without them.';
            END IF;
        END IF;
        RETURN NEW;
    END IF;

    -- The builder's columns: which attempt owns the row, and its release backoff.
    IF (NEW.builder_build_id IS DISTINCT FROM OLD.builder_build_id OR NEW.builder_retry_at IS DISTINCT FROM OLD.builder_retry_at)
       AND NOT is_builder THEN
        IF NOT agent_builder_override_active() THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('agent-builder: builder_build_id and builder_retry_at of automation %s are the builder''s; session user %s is not a member of agent_builder_builder',
                                 NEW.id, session_user),
                HINT = repair_hint;
        END IF;
    END IF;

    IF NEW.builder_status IS NOT DISTINCT FROM OLD.builder_status THEN
        RETURN NEW;
    END IF;
    IF NEW.builder_status IS NULL OR NOT NEW.builder_status = ANY (known) THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = format('agent-builder: unknown builder_status %L; known values: %s',
                             NEW.builder_status, array_to_string(known, ', '));
    END IF;
    -- A legacy or NULL value (a table that predates the builder) may be reset by anyone.
    IF (OLD.builder_status IS NULL OR NOT OLD.builder_status = ANY (known)) AND NEW.builder_status = 'not_started' THEN
        NEW.builder_retry_at := NULL;
        RETURN NEW;
    END IF;
    operator_move := coalesce(agent_builder_operator_moves() -> OLD.builder_status, '[]') ? NEW.builder_status;
    builder_move := coalesce(agent_builder_builder_moves() -> OLD.builder_status, '[]') ? NEW.builder_status;
    IF operator_move AND is_operator THEN
        IF NEW.builder_status = 'not_started' THEN
            NEW.builder_retry_at := NULL;  -- an operator's retry is not delayed by earlier backoff
        END IF;
        RETURN NEW;
    END IF;
    IF builder_move AND is_builder THEN
        RETURN NEW;
    END IF;
    IF agent_builder_override_active() THEN
        RETURN NEW;
    END IF;

    allowed := agent_builder_operator_moves() -> OLD.builder_status;
    IF operator_move THEN
        why := format('From %L an operator may set: %s; session user %s is not a member of agent_builder_operator or agent_builder_admin%s.',
                      OLD.builder_status,
                      (SELECT string_agg(quote_literal(v), ' or ') FROM jsonb_array_elements_text(allowed) AS v),
                      session_user,
                      CASE WHEN is_builder THEN ' (the builder never approves, rejects or retries its own work)' ELSE '' END);
    ELSIF allowed IS NULL THEN
        why := format('From %L only the builder changes it%s; an operator may set approved or rejected on an awaiting_approval row, and not_started on a failed or rejected row.',
                      OLD.builder_status,
                      CASE WHEN builder_move THEN format(' (members of agent_builder_builder; session user %s is not one)', session_user) ELSE '' END);
    ELSE
        why := format('From %L an operator may set: %s.', OLD.builder_status,
                      (SELECT string_agg(quote_literal(v), ' or ') FROM jsonb_array_elements_text(allowed) AS v));
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'check_violation',
        MESSAGE = format('agent-builder: builder_status of automation %s cannot change from %L to %L. %s',
                         NEW.id, OLD.builder_status, NEW.builder_status, why),
        HINT = repair_hint;
END
$fn$;

DROP TRIGGER agent_builder_guard_update ON automation_ideas;
CREATE TRIGGER agent_builder_guard_update
    BEFORE UPDATE OF builder_status, builder_build_id, builder_retry_at ON automation_ideas
    FOR EACH ROW EXECUTE FUNCTION agent_builder_guard_status();
