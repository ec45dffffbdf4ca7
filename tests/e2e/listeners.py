"""Run `agent-builder listen` / `build-once` as real subprocesses against a test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psycopg
from psycopg.rows import dict_row

REPO = Path(__file__).resolve().parents[2]


def base_env(db_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NTFY_", "VAULT_", "OLLAMA_", "BUILD_", "DEPLOY_"))}
    env.update({
        "DATABASE_URL": db_url,
        "BUILD_HANDLER": "tests.fakes.handlers:instant",
        "DEPLOY_HANDLER": "tests.fakes.handlers:deploy_instant",
        "POLL_INTERVAL_S": "300",
        "RESCUE_INTERVAL_S": "0.3",
        "LIVENESS_INTERVAL_S": "1",
        "SHUTDOWN_GRACE_S": "5",
        "RELEASE_BACKOFF_BASE_S": "0.5",
        "LOG_LEVEL": "DEBUG",
        "PYTHONPATH": str(REPO),
    })
    env.update(overrides)
    return env


class ListenerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "listener", "listen"], cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 15.0) -> None:
        wait_until(lambda: text in self.log(), timeout, f"{text!r} in the listener log", self)

    def wait_listening(self, timeout: float = 15.0) -> None:
        self.wait_for_log("listening on", timeout)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, listener: ListenerProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    detail = f"\n--- listener log ---\n{listener.log()[-4000:]}" if listener is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


def query(db_url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def statuses(db_url: str) -> dict[int, str]:
    return {r["id"]: r["builder_status"] for r in query(db_url, "SELECT id, builder_status FROM automation_ideas")}


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "listener", *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


class Listeners:
    """Starts listener subprocesses for one test (each with its own log) and kills any still running."""

    def __init__(self, db_url: str, tmp_path: Path, **defaults: str) -> None:
        self.db_url = db_url
        self.tmp_path = tmp_path
        self.defaults = defaults
        self.started: list[ListenerProcess] = []

    def start(self, **env: str) -> ListenerProcess:
        listener = ListenerProcess(base_env(self.db_url, **{**self.defaults, **env}),
                                   self.tmp_path / f"listener-{len(self.started)}.log")
        self.started.append(listener)
        return listener

    def close(self) -> None:
        for listener in self.started:
            if listener.proc.poll() is None:
                listener.kill()
