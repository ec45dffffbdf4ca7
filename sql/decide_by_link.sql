-- The operator's UPDATE, performed for a signed link: only for the build the link was made for.
UPDATE automation_ideas
SET builder_status = %(new_status)s
WHERE id = %(automation_id)s AND builder_build_id = %(build_id)s
RETURNING id, name, builder_status
