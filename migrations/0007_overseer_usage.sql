-- agent-builder 0007: what the one overseer review cost (tokens in and out, the model), and the
-- builder's open alerts (an outage is notified once, not at every retry, across listeners and restarts).
-- depends: 0005_rejection_cleanup
ALTER TABLE agent_builds
    ADD COLUMN overseer_input_tokens integer,
    ADD COLUMN overseer_output_tokens integer,
    ADD COLUMN overseer_model text;

CREATE TABLE agent_builder_alerts (
    name        text PRIMARY KEY,         -- e.g. 'overseer': the overseer cannot review (not logged in, ...)
    detail      text NOT NULL,
    raised_at   timestamptz NOT NULL DEFAULT now(),
    cleared_at  timestamptz               -- NULL while the outage lasts
);

-- With the roles of the builder (when a migration has made them), the builder writes the alerts
-- and everyone who reads the builder's tables reads them.
DO $do$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'agent_builder_builder') THEN
        GRANT SELECT, INSERT, UPDATE ON agent_builder_alerts TO agent_builder_builder;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'agent_builder_operator') THEN
        GRANT SELECT ON agent_builder_alerts TO agent_builder_operator;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'agent_builder_admin') THEN
        GRANT SELECT ON agent_builder_alerts TO agent_builder_admin;
    END IF;
END
$do$;
