"""Build and deploy handlers for listener tests, plugged in with BUILD_HANDLER / DEPLOY_HANDLER.

They use the real AttemptContext (the listener's own claim, step and status code); only the
work of a build (Ollama, overseer, sandbox) is left out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from listener.queue.context import AttemptContext
from listener.queue.outcome import BuildSucceeded, LevelResult, StepFailure


def instant(ctx: AttemptContext) -> BuildSucceeded:
    """Reaches Step 3 and passes at once."""
    ctx.start_generation()
    return BuildSucceeded()


def hold(ctx: AttemptContext) -> BuildSucceeded:
    """Holds the claim before or after Step 3 (FAKE_HOLD_PHASE), announcing it with a file in
    FAKE_HOLD_DIR, for FAKE_HOLD_S seconds: so a test can kill or stop the listener mid-build."""
    phase = os.environ.get("FAKE_HOLD_PHASE", "after")
    if phase == "after":
        ctx.start_generation()
        ctx.step("sandbox")
    else:
        ctx.step("prompt")
    marker = Path(os.environ["FAKE_HOLD_DIR"]) / f"{ctx.automation.id}.holding"
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + float(os.environ.get("FAKE_HOLD_S", "600"))
    while time.monotonic() < deadline:
        if phase == "before" and ctx.stopping:
            break  # a cooperative build notices the stop before Step 3
        time.sleep(0.05)
    if phase == "before":
        ctx.start_generation()  # raises Released while stopping
    return BuildSucceeded()


def transient_then_pass(ctx: AttemptContext) -> BuildSucceeded:
    """Fails with a transient error before Step 3 the first time it sees a row, then passes."""
    marker = Path(os.environ["FAKE_HOLD_DIR"]) / f"{ctx.automation.id}.seen"
    if not marker.exists():
        marker.write_text("1")
        raise StepFailure(level=0, step="vault", message="Vault unreachable (connection refused)", transient=True)
    ctx.start_generation()
    return BuildSucceeded()


def fail_level_2(ctx: AttemptContext) -> BuildSucceeded:
    ctx.start_generation()
    ctx.record(LevelResult(level=1, passed=True, log="structure ok"))
    raise StepFailure(level=2, step="level2", message="ModuleNotFoundError: requests", kind="level",
                      result=LevelResult(level=2, passed=False, log="ModuleNotFoundError: requests"))


def crash(ctx: AttemptContext) -> BuildSucceeded:
    ctx.start_generation()
    raise ZeroDivisionError("division by zero in a handler")


def deploy_instant(ctx: AttemptContext) -> None:
    ctx.step("deploy")
