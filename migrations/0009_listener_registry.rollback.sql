DROP TABLE IF EXISTS agent_builder_listeners;
