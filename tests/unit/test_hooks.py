"""Stages plug into the queue through hooks registered by the wiring: the production deploy stage
cleans up after a rejection; a custom DEPLOY_HANDLER gets no Docker image removal."""

from __future__ import annotations

import dataclasses

from listener.config import Settings
from listener.deploy import production
from listener.queue.hooks import NO_CLEANUP, Hooks
from listener.queue.records import Automation
from listener.service import load_handlers

AUTOMATION = Automation(id=7, name="x", type="script", status="ready_to_build", priority=None, task_description="t",
                        infrastructure_requirement=None, builder_status="rejected")


def test_the_production_deploy_handler_brings_its_rejection_cleanup() -> None:
    handlers = load_handlers(Settings.from_env({}))
    assert handlers.deploy is production.deploy and handlers.hooks.on_rejected is not None
    # No image recorded: the clean-up says so without reaching Docker.
    assert handlers.hooks.rejected(AUTOMATION, 1, None) == "no sandbox image to remove"


def test_a_custom_deploy_handler_gets_no_docker_cleanup() -> None:
    handlers = load_handlers(Settings.from_env({"DEPLOY_HANDLER": "tests.fakes.handlers:deploy_instant"}))
    assert handlers.deploy is not None and handlers.deploy is not production.deploy
    assert handlers.hooks.on_rejected is None
    assert handlers.hooks.rejected(AUTOMATION, 1, "sha256:" + "ab" * 32) == NO_CLEANUP


def test_no_deploy_handler_no_cleanup() -> None:
    handlers = load_handlers(dataclasses.replace(Settings.from_env({}), deploy_handler=""))
    assert handlers.deploy is None and handlers.hooks.on_rejected is None


def test_hooks_default_to_doing_nothing() -> None:
    hooks = Hooks()
    assert hooks.approval_actions(1, 2) == () and hooks.rejected(AUTOMATION, 1, None) == NO_CLEANUP
    hooks.dead_attempt("installation", 1)  # no hook: nothing happens, nothing raises
