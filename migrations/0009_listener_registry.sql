-- agent-builder 0009: the registry of running listeners (`agent-builder listeners`, `healthcheck`).
-- A listener writes its row at start from a dedicated session and holds a session advisory lock
-- keyed by the row's id (class 1094861833, 'AB09'): the row counts as live exactly while that
-- session is connected, so a SIGKILLed listener (or a lost host) drops out without any timeout.
-- depends: 0007_overseer_usage 0008_alerts_roles
CREATE TABLE agent_builder_listeners (
    id            bigserial PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    worker        text NOT NULL,                    -- host:pid, as in agent_builds.worker
    version       text NOT NULL,
    concurrency   integer NOT NULL,
    backend_pid   integer NOT NULL DEFAULT pg_backend_pid(),  -- the session that holds the lock
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    in_flight     integer NOT NULL DEFAULT 0
);
CREATE INDEX agent_builder_listeners_host_idx ON agent_builder_listeners (host);

DO $do$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'agent_builder_builder') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON agent_builder_listeners TO agent_builder_builder;
        GRANT USAGE ON SEQUENCE agent_builder_listeners_id_seq TO agent_builder_builder;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'agent_builder_operator') THEN
        GRANT SELECT ON agent_builder_listeners TO agent_builder_operator;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'agent_builder_admin') THEN
        GRANT SELECT ON agent_builder_listeners TO agent_builder_admin;
    END IF;
END
$do$;
