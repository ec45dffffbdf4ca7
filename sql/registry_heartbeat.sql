-- Every LIVENESS_INTERVAL_S: the attempts this listener runs right now.
UPDATE agent_builder_listeners SET heartbeat_at = now(), in_flight = %(in_flight)s WHERE id = %(listener_id)s
