-- Fill in what an attempt produced so far (NULL leaves a field as it is). Only while unfinished.
UPDATE agent_builds
SET prompt             = coalesce(%(prompt)s, prompt),
    model_output       = coalesce(%(model_output)s, model_output),
    files              = coalesce(%(files)s, files),
    overseer_verdict   = coalesce(%(overseer_verdict)s, overseer_verdict),
    overseer_reason    = coalesce(%(overseer_reason)s, overseer_reason),
    overseer_cost_usd  = coalesce(%(overseer_cost_usd)s, overseer_cost_usd),
    overseer_called_at = coalesce(%(overseer_called_at)s, overseer_called_at),
    overseer_input_tokens  = coalesce(%(overseer_input_tokens)s, overseer_input_tokens),
    overseer_output_tokens = coalesce(%(overseer_output_tokens)s, overseer_output_tokens),
    overseer_model     = coalesce(%(overseer_model)s, overseer_model),
    acceptance_check   = coalesce(%(acceptance_check)s, acceptance_check),
    image_id           = coalesce(%(image_id)s, image_id),
    artifact_sha256    = coalesce(%(artifact_sha256)s, artifact_sha256),
    error              = coalesce(%(error)s, error)
WHERE id = %(build_id)s AND finished_at IS NULL
RETURNING id
