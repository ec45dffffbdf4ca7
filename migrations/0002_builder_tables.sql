-- agent-builder 0002: one record per build attempt, the test results, and the status history.
-- depends: 0001_automation_ideas

-- One row per attempt (a build, or a production deployment after approval). An approver can read
-- here exactly what they approve: the prompt, the raw model output, the files, the verdict.
CREATE TABLE agent_builds (
    id                  bigserial PRIMARY KEY,
    automation_id       bigint NOT NULL,
    kind                text NOT NULL DEFAULT 'build' CHECK (kind IN ('build', 'deploy')),
    worker              text NOT NULL,
    source_build_id     bigint,  -- for a deployment: the build whose tested artifact it deploys
    claimed_at          timestamptz NOT NULL DEFAULT now(),
    step                text NOT NULL DEFAULT 'claimed',
    step_at             timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    outcome             text CHECK (outcome IN ('succeeded', 'failed', 'released', 'crashed', 'stopped')),
    error               text,
    prompt              text,
    model_output        text,
    files               jsonb,
    overseer_verdict    text,
    overseer_reason     text,
    overseer_cost_usd   numeric(12, 6),
    overseer_called_at  timestamptz,
    acceptance_check    jsonb,
    image_id            text,
    artifact_sha256     text,
    CHECK ((finished_at IS NULL) = (outcome IS NULL))
);
-- At most one unfinished attempt per automation: a second concurrent claim cannot even be written.
CREATE UNIQUE INDEX agent_builds_one_active_idx ON agent_builds (automation_id) WHERE finished_at IS NULL;
CREATE INDEX agent_builds_automation_idx ON agent_builds (automation_id, id);
CREATE INDEX agent_builds_overseer_day_idx ON agent_builds (overseer_called_at) WHERE overseer_called_at IS NOT NULL;

-- The contract's results table: created when absent, completed when it exists.
DO $do$
BEGIN
    IF to_regclass('agent_test_results') IS NULL THEN
        CREATE TABLE agent_test_results (
            id              bigserial PRIMARY KEY,
            automation_id   bigint NOT NULL,
            test_level      smallint NOT NULL CHECK (test_level BETWEEN 0 AND 4),
            status          text NOT NULL CHECK (status IN ('pass', 'fail')),
            execution_log   text
        );
        INSERT INTO agent_builder_schema_notes (note) VALUES ('created agent_test_results');
    END IF;
    PERFORM agent_builder_add_missing_columns('agent_test_results', ARRAY[
        'automation_id', 'bigint',
        'test_level', 'smallint',
        'status', 'text',
        'execution_log', 'text',
        'build_id', 'bigint',
        'duration_ms', 'integer',
        'created_at', 'timestamptz NOT NULL DEFAULT now()'
    ]);
END
$do$;
CREATE INDEX IF NOT EXISTS agent_test_results_automation_idx ON agent_test_results (automation_id, id);
CREATE INDEX IF NOT EXISTS agent_test_results_build_idx ON agent_test_results (build_id, test_level);

-- Every change of builder_status, from any client, written by a trigger (migration 0003).
CREATE TABLE builder_status_history (
    id              bigserial PRIMARY KEY,
    automation_id   bigint NOT NULL,
    old_status      text,
    new_status      text,
    changed_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    db_user         text NOT NULL DEFAULT current_user,
    actor           text,
    build_id        bigint,
    override        boolean NOT NULL DEFAULT false
);
CREATE INDEX builder_status_history_automation_idx ON builder_status_history (automation_id, id);
