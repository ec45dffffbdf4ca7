-- agent-builder 0001: the automation_ideas table.
-- Created when absent. When it already exists (production: more columns, many rows), only the
-- columns the builder needs are added; nothing existing is rewritten or dropped. What this
-- migration added is written down in agent_builder_schema_notes so the rollback removes exactly that.

CREATE TABLE IF NOT EXISTS agent_builder_schema_notes (
    note        text PRIMARY KEY,
    detail      jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Adds each missing column of `columns` (pairs: name, declaration) to `tbl` and records it.
CREATE OR REPLACE FUNCTION agent_builder_add_missing_columns(tbl text, columns text[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    i int;
    added jsonb := '[]'::jsonb;
BEGIN
    FOR i IN 1 .. coalesce(array_length(columns, 1), 0) / 2 LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_attribute
            WHERE attrelid = tbl::regclass AND attname = columns[2 * i - 1] AND NOT attisdropped
        ) THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN %I %s', tbl, columns[2 * i - 1], columns[2 * i]);
            added := added || to_jsonb(columns[2 * i - 1]);
        END IF;
    END LOOP;
    INSERT INTO agent_builder_schema_notes (note, detail)
    VALUES ('added columns to ' || tbl, added)
    ON CONFLICT (note) DO UPDATE SET detail = agent_builder_schema_notes.detail || EXCLUDED.detail;
END
$fn$;

-- Drops the columns that agent_builder_add_missing_columns added to `tbl`, or the table itself
-- when this project created it.
CREATE OR REPLACE FUNCTION agent_builder_undo_table(tbl text)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    col text;
BEGIN
    IF EXISTS (SELECT 1 FROM agent_builder_schema_notes WHERE note = 'created ' || tbl) THEN
        EXECUTE format('DROP TABLE IF EXISTS %I', tbl);
    ELSE
        FOR col IN
            SELECT jsonb_array_elements_text(detail) FROM agent_builder_schema_notes
            WHERE note = 'added columns to ' || tbl
        LOOP
            EXECUTE format('ALTER TABLE %I DROP COLUMN IF EXISTS %I', tbl, col);
        END LOOP;
    END IF;
    DELETE FROM agent_builder_schema_notes WHERE note IN ('created ' || tbl, 'added columns to ' || tbl);
END
$fn$;

DO $do$
BEGIN
    IF to_regclass('automation_ideas') IS NULL THEN
        CREATE TABLE automation_ideas (
            id                          bigserial PRIMARY KEY,
            name                        text,
            type                        text,
            status                      text NOT NULL DEFAULT 'idea',
            priority                    integer,
            task_description            text,
            infrastructure_requirement  text,
            created_at                  timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO agent_builder_schema_notes (note) VALUES ('created automation_ideas');
    ELSIF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'automation_ideas'::regclass AND attname = 'id' AND NOT attisdropped
          AND atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
    ) THEN
        RAISE EXCEPTION 'agent-builder: automation_ideas exists but has no integer id column; the builder needs one';
    END IF;
    PERFORM agent_builder_add_missing_columns('automation_ideas', ARRAY[
        'name', 'text',
        'type', 'text',
        'status', 'text',
        'priority', 'integer',
        'task_description', 'text',
        'infrastructure_requirement', 'text',
        'builder_status', 'text NOT NULL DEFAULT ''not_started''',
        'acceptance_check', 'jsonb',
        'builder_build_id', 'bigint',
        'builder_retry_at', 'timestamptz'
    ]);
END
$do$;

COMMENT ON COLUMN automation_ideas.builder_status IS
    'agent-builder state: not_started, queued, building, failed, awaiting_approval, approved, deploying, deployed, rejected';
COMMENT ON COLUMN automation_ideas.builder_build_id IS
    'agent-builder: the agent_builds attempt that owns this row now (ownership check on every builder write)';
COMMENT ON COLUMN automation_ideas.builder_retry_at IS
    'agent-builder: a released row is not claimed again before this time (backoff after transient failures)';
