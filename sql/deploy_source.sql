-- What a deployment deploys: the build attempt that passed the four levels and was approved.
SELECT id AS build_id, image_id, artifact_sha256, files, acceptance_check
FROM agent_builds
WHERE id = (SELECT source_build_id FROM agent_builds WHERE id = %(deploy_id)s)
  AND kind = 'build' AND outcome = 'succeeded'
