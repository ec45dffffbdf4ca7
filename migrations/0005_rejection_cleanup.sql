-- agent-builder 0005: a rejected build's sandbox image is removed once; this records when.
-- depends: 0004_approval_links
ALTER TABLE agent_builds ADD COLUMN cleaned_at timestamptz;
CREATE INDEX automation_ideas_rejected_idx ON automation_ideas (id) WHERE builder_status = 'rejected';
