-- Store the signature of a succeeded build (BUILDER_SIGNING_KEY), only while the attempt is still
-- unfinished and its recorded artifact is exactly what this worker produced and tested (no row
-- back: the attempt was ended by someone else, or its image id or sha256 were changed).
UPDATE agent_builds
SET signature = %(signature)s
WHERE id = %(build_id)s AND finished_at IS NULL
  AND image_id IS NOT DISTINCT FROM %(image_id)s
  AND artifact_sha256 IS NOT DISTINCT FROM %(artifact_sha256)s
RETURNING id
