DROP INDEX IF EXISTS automation_ideas_rejected_idx;
ALTER TABLE agent_builds DROP COLUMN IF EXISTS cleaned_at;
