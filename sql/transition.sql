-- Move an owned row from one status to the next. Ownership: the row must still point at this
-- attempt and be in the expected status; a worker that lost its claim changes nothing.
UPDATE automation_ideas
SET builder_status = %(new_status)s
WHERE id = %(automation_id)s
  AND builder_build_id = %(build_id)s
  AND builder_status = %(expected)s
RETURNING id
