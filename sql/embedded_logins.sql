-- The embedded default's two logins (its cluster is agent-builder's alone, so the names are fixed):
-- `listener`, the listener's own login (a builder, not a superuser, never an operator), and
-- `operator`, for psql, `agent-builder approve` and the one-tap endpoint. Idempotent.
DO $do$
BEGIN
    BEGIN
        CREATE ROLE listener LOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END;
    BEGIN
        CREATE ROLE operator LOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END;
    GRANT agent_builder_builder TO listener;
    GRANT agent_builder_operator TO operator;
END
$do$
