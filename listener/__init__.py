"""agent-builder: turns rows of automation_ideas into tested, human-approved automations."""

__version__ = "0.1.0"
