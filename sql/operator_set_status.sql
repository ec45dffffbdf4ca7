-- An operator's change of builder_status (approve, reject, retry): the same UPDATE a person would
-- type in SQL; the state machine trigger decides whether it is allowed.
UPDATE automation_ideas
SET builder_status = %(new_status)s
WHERE id = %(automation_id)s
RETURNING id, name, builder_status
