-- A clean stop: the listener removes its own row.
DELETE FROM agent_builder_listeners WHERE id = %(listener_id)s
