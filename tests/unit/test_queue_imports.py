"""The queue imports no stage: stages plug in as handlers and hooks (listener.queue.hooks),
registered by the wiring (listener.service). Checked in a fresh interpreter, so that nothing a
test imported before counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import listener.queue

QUEUE = Path(listener.queue.__file__).parent
FORBIDDEN = ("listener.build", "listener.sandbox", "listener.deploy", "listener.approval", "listener.clients",
             "docker", "httpx", "hvac")
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(*modules: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(done.stdout)


def queue_modules() -> list[str]:
    return sorted(f"listener.queue.{path.stem}" for path in QUEUE.glob("*.py") if path.stem != "__init__")


def test_every_queue_module_is_probed() -> None:
    names = queue_modules()
    assert {"listener.queue.store", "listener.queue.states", "listener.queue.workers", "listener.queue.finish",
            "listener.queue.rescue", "listener.queue.hooks"} <= set(names)


def test_importing_the_queue_loads_no_stage_and_no_client_library() -> None:
    loaded = loaded_by(*queue_modules())
    wrong = [name for name in loaded if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert wrong == [], f"the queue pulls in: {wrong}"


def test_the_probe_sees_a_stage_when_one_is_imported() -> None:
    """The check above can fail: importing the wiring does load the stages it registers."""
    loaded = loaded_by("listener.service")
    assert "listener.sandbox.engine" in loaded and "docker" in loaded and "httpx" in loaded


def test_deploy_does_not_import_the_build_pipeline() -> None:
    """Deploying needs the tested files and their digest (listener.build.extract), not the pipeline
    that makes them (Ollama, the overseer, Vault)."""
    loaded = loaded_by("listener.deploy.production")
    assert "listener.build.pipeline" not in loaded and "listener.build.ollama" not in loaded
