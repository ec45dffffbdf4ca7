"""Playbook Steps 5–6: deploy into the Docker sandbox and run test levels 2–4 (Level 1, the
structure checks, ran before the overseer). Each level writes its agent_test_results row; the
first failure stops the build with a StepFailure the finish step maps to status and ntfy.

Level 3 runs the automation for real (an agent against the recording claude stand-in,
listener/sandbox/standin.py, its --dry-run first as an extra step). Every Level 4 check is evaluated
twice: before the run, against a fresh container of the same image that runs nothing (the negative
control: a check that already holds proves nothing), and after it."""

from __future__ import annotations

import ast
import json
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from loguru import logger

from listener.queue.context import AttemptContext
from listener.build.extract import GeneratedFiles
from listener.build.ollama import OllamaClient
from listener.queue.outcome import LevelResult, StepFailure
from listener.sandbox.checks import CheckResult, RunState, evaluate, validate_spec
from listener.sandbox.derive import derive_checks
from listener.sandbox.dockerfile import REQUIREMENTS_FILE
from listener.sandbox.engine import EngineError, RunResult, Sandbox
from listener.sandbox.keeper import SANDBOX_WORKDIR
from listener.sandbox.naming import build_tag
from listener.sandbox.recorder import Recorder, gateway_address
from listener.sandbox.standin import SCRIPT as STANDIN_SCRIPT
from listener.sandbox.standin import STANDIN_DIR, STANDIN_FILE, STANDIN_PATH, reply_environment

APP_DIR = "/app"
NO_RECORDER_URL = "http://127.0.0.1:9/no-recording-endpoint"  # SANDBOX_NETWORK=none: nothing to call
IMPORT_CHECK = (
    "import importlib.util, json, sys\n"
    "missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]\n"
    "print(json.dumps({'missing': missing}))\n"
    "sys.exit(3 if missing else 0)\n"
)
AGENT_CHECK = (
    f"bash -n {APP_DIR}/agent.sh || exit 2; "
    f"[ \"$(command -v claude)\" = {STANDIN_PATH} ] || "
    f"{{ echo 'claude is not the sandbox stand-in {STANDIN_PATH} (first on PATH)' >&2; exit 4; }}"
)
CONTROL_LIMIT_S = 30.0  # the negative control's container runs nothing: its keeper only has to start and hold
NO_CONTROL = ("container_running",)  # nothing was started before the run: a control would say nothing
HELD_BEFORE = "this check held before the automation ran"


@dataclass
class Level:
    number: int
    started: float

    def result(self, passed: bool, log: str) -> LevelResult:
        return LevelResult(level=self.number, passed=passed, log=log[-20_000:],
                           duration_ms=int((time.monotonic() - self.started) * 1000))


def run_sandbox_levels(ctx: AttemptContext, files: GeneratedFiles) -> None:
    """Levels 2, 3 and 4 for either automation type, in a confined container."""
    settings = ctx.settings
    automation = ctx.automation
    level = Level(2, time.monotonic())
    try:
        sandbox = Sandbox.connect(settings, ctx.installation, automation.id, ctx.claim.build_id)
        sandbox.ensure_network()
    except EngineError as exc:
        _fail(ctx, level, f"{exc}", kind="error")
    image = None
    try:
        with tempfile.TemporaryDirectory(prefix=f"agent-{automation.id}-") as workdir:
            context = Path(workdir)
            write_context(context, files, automation.type or "", settings.sandbox_base_image, settings.sandbox_agent_image)
            image = _level_2(ctx, sandbox, context, files, level)
        spec, note = _acceptance(ctx, files)
        _levels_3_and_4(ctx, sandbox, image, files, spec, note)
    except StepFailure:
        if image is not None:
            sandbox.remove_image(image)
        raise
    sandbox.prune_images(settings.sandbox_keep_images)


# -- the build context -----------------------------------------------------------------------------

def write_context(directory: Path, files: GeneratedFiles, automation_type: str, base_image: str, agent_image: str) -> None:
    """The files and the Dockerfile the sandbox image is built from (listener/sandbox/image.py
    interprets the Dockerfile; the files go in owned by root, agent.sh executable)."""
    main = directory / files.main_name
    main.write_text(files.main, encoding="utf-8")
    if automation_type == "claude_agent":
        main.chmod(0o755)
        standin = directory / STANDIN_FILE
        standin.write_text(STANDIN_SCRIPT, encoding="utf-8")
        standin.chmod(0o755)
        dockerfile = (f"FROM {agent_image}\nWORKDIR {APP_DIR}\nCOPY agent.sh {APP_DIR}/agent.sh\n"
                      f"COPY {STANDIN_FILE} {STANDIN_PATH}\nENV PATH={STANDIN_DIR}:$PATH\n")
    elif files.dockerfile:
        dockerfile = files.dockerfile
    else:
        dockerfile = (f"FROM {base_image}\nWORKDIR {APP_DIR}\nCOPY script.py {APP_DIR}/script.py\n"
                      f"CMD [\"python3\", \"{APP_DIR}/script.py\"]\n")
    if files.requirements is not None:
        (directory / REQUIREMENTS_FILE).write_text(files.requirements, encoding="utf-8")
    (directory / "Dockerfile").write_text(dockerfile, encoding="utf-8")


def imported_modules(source: str) -> list[str]:
    """Top-level modules a script imports (absolute imports only, __future__ aside)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    names.discard("__future__")
    return sorted(names)


# -- Level 2: deployment ---------------------------------------------------------------------------

def _level_2(ctx: AttemptContext, sandbox: Sandbox, context: Path, files: GeneratedFiles, level: Level) -> str:
    ctx.step("level2")
    automation = ctx.automation
    tag = build_tag(automation.id, automation.name, ctx.claim.build_id, ctx.installation)
    try:
        built = sandbox.build(context, tag)
    except EngineError as exc:
        _fail(ctx, level, f"Level 2 (deployment): {exc}", log=getattr(exc, "log", ""), detail=getattr(exc, "detail", ""))
    ctx.save(image_id=built.image_id)
    if automation.type == "claude_agent":
        entrypoint, command, what = (["bash", "-c", AGENT_CHECK], None,
                                      f"agent.sh parses and claude is the sandbox stand-in {STANDIN_PATH}")
    else:
        modules = imported_modules(files.main)
        entrypoint, command, what = ["python3", "-c", IMPORT_CHECK], modules, f"imports resolve: {', '.join(modules) or '(none)'}"
    try:
        with sandbox.container(built.image_id, command, {}, entrypoint=entrypoint) as container:
            run = sandbox.run_to_end(container, timeout_s=min(60.0, sandbox.limits.timeout_s))
    except EngineError as exc:
        _fail(ctx, level, f"Level 2 (deployment): {exc}")
    log = f"{built.log}\ncheck: {what}\n{run.describe()}\n{run.logs}"
    if run.exit_code != 0:
        reason = _missing_modules(run.logs, modules if automation.type != "claude_agent" else []) or run.describe()
        _fail(ctx, level, f"Level 2 (deployment) failed: {reason}", log=log, detail=_last_line(run.logs))
    ctx.record(level.result(True, log))
    return built.image_id  # runs use the id: exactly the image that was built, whatever the tag says later


def _missing_modules(logs: str, asked: list[str]) -> str | None:
    """The import check's answer, limited to the modules the builder asked about (the answer
    comes from inside the image: only names the builder already knows may reach a message)."""
    for line in logs.splitlines():
        try:
            missing = json.loads(line).get("missing")
        except (ValueError, AttributeError):
            continue
        known = [name for name in asked if isinstance(missing, list) and name in missing]
        if known:
            return (f"modules not found in the image: {', '.join(known)} (third-party packages are declared "
                    f"in {REQUIREMENTS_FILE})")
    return None


# -- the acceptance check --------------------------------------------------------------------------

def _acceptance(ctx: AttemptContext, files: GeneratedFiles) -> tuple[list[dict[str, Any]] | StepFailure, str]:
    """The operator's acceptance_check, or checks derived by the model when it is NULL. A bad or
    missing check is kept as a failure value and reported at Level 4, after the run."""
    given = ctx.automation.acceptance_check
    try:
        if given is None:
            ctx.step("derive-checks")  # a second model call (free: the local model), under its own label
            spec, note = derive_checks(OllamaClient.from_settings(ctx.settings), ctx.automation, files)
            ctx.save(acceptance_check=spec)
            return validate_spec(spec), note
        ctx.save(acceptance_check=given)
        return validate_spec(given), "acceptance checks given by the operator (acceptance_check)"
    except StepFailure as failure:
        return failure, "acceptance checks unusable"


# -- Levels 3 and 4: run it, then look at what it left behind --------------------------------------

@dataclass(frozen=True)
class Control:
    """The negative control of one check: its evaluation before the automation ran."""

    index: int
    kind: str
    outcome: str  # "held", "did not hold", "skipped", "could not run"
    detail: str

    def line(self) -> str:
        return f"  check {self.index} {self.kind}: {self.outcome}: {self.detail}"


def _levels_3_and_4(ctx: AttemptContext, sandbox: Sandbox, image: str, files: GeneratedFiles,
                    spec: list[dict[str, Any]] | StepFailure, note: str) -> None:
    settings = ctx.settings
    automation_type = ctx.automation.type or ""
    level = Level(3, time.monotonic())
    ctx.step("level3")
    service_s = _service_seconds(spec)
    # The recording endpoint listens on the sandbox network's gateway only (not 0.0.0.0); with
    # SANDBOX_NETWORK=none there is no endpoint and SANDBOX_HTTP_URL leads nowhere.
    gateway = gateway_address(sandbox.client, sandbox.network or "none")
    try:
        recorder = Recorder.bound_to(gateway, settings.sandbox_http_port) if gateway else None
    except OSError as exc:
        _fail(ctx, level, f"Level 3 (smoke): the recording endpoint could not listen on {gateway}:"
                          f"{settings.sandbox_http_port} (SANDBOX_HTTP_PORT): {exc.strerror or exc}", kind="error")
    with recorder if recorder is not None else nullcontext():
        token = recorder.open_run() if recorder is not None else ""
        checks = spec if not isinstance(spec, StepFailure) else []
        environment = _run_environment(ctx, recorder, token, gateway, automation_type, checks)
        entrypoint, command, how = _smoke_command(automation_type)
        # A service keeps running through Level 4: its keeper's deadline leaves SANDBOX_TIMEOUT_S for the checks.
        limit_s = service_s + settings.sandbox_timeout_s if service_s else None
        try:
            controls = _negative_control(ctx, sandbox, image, checks, environment, recorder, token)
            smoke_log = _dry_run(ctx, sandbox, image, files, level, automation_type, recorder, gateway, checks)
            with sandbox.container(image, command, environment, entrypoint=entrypoint, limit_s=limit_s) as container:
                run = sandbox.run_for(container, service_s) if service_s else sandbox.run_to_end(container)
                outcome = run.describe() if run.exit_code is not None or not service_s else f"still running after {service_s:g} s (a service)"
                log = f"{smoke_log}{how}\n{outcome}\n{run.logs}"
                if not _smoke_passed(run, service_s):
                    _fail(ctx, level, f"Level 3 (smoke) failed: {run.describe()}{_limit_hint(run, settings.sandbox_tmp_size)}",
                          log=log, detail=_last_line(run.logs))
                ctx.record(level.result(True, log))

                level = Level(4, time.monotonic())
                ctx.step("level4")
                if isinstance(spec, StepFailure):
                    _fail(ctx, level, spec.message, log=f"{note}\n{spec.message}")
                results = evaluate(spec, _state(ctx, sandbox, container, recorder, token))
                _level_4_verdict(ctx, level, spec, note, controls, results)
        except EngineError as exc:
            _fail(ctx, level, f"Level {level.number}: {exc}")
        finally:
            if recorder is not None:
                recorder.close_run(token)


def _run_environment(ctx: AttemptContext, recorder: Recorder | None, token: str, gateway: str | None,
                     automation_type: str, checks: list[dict[str, Any]]) -> dict[str, str]:
    """The sandbox run's environment: no DRY_RUN (the run is real, and confined); for an agent, the
    stand-in's canned reply."""
    environment = {"AGENT_BUILDER_SANDBOX": "1",
                   "SANDBOX_HTTP_URL": recorder.url_for(token, gateway or "") if recorder is not None else NO_RECORDER_URL}
    if ctx.settings.vault_addr:
        environment["VAULT_ADDR"] = ctx.settings.vault_addr
    if automation_type == "claude_agent":
        environment.update(reply_environment(checks))
    return environment


def _state(ctx: AttemptContext, sandbox: Sandbox, container: Any, recorder: Recorder | None, token: str) -> RunState:
    return RunState(container=container, recorder=recorder, run_token=token,
                    sandbox_database_url=ctx.settings.sandbox_database_url, sandbox=sandbox,
                    derived=ctx.automation.acceptance_check is None)


def _negative_control(ctx: AttemptContext, sandbox: Sandbox, image: str, checks: list[dict[str, Any]],
                      environment: dict[str, str], recorder: Recorder | None, token: str) -> list[Control]:
    """Every check evaluated once before the automation runs: against a fresh container of the same
    image (same environment, mounts, tmpfs and network) whose keeper runs nothing and holds, and
    against the recording endpoint before any request of the run. A check that holds here proves
    nothing about the automation."""
    if not checks:
        return []
    controls: dict[int, Control] = {}
    needs_container = []
    for index, check in enumerate(checks, start=1):
        kind = check["kind"]
        if kind in NO_CONTROL:
            controls[index] = Control(index, kind, "skipped", "a control is not meaningful here: before the run nothing "
                                                               "was started that could be running")
        elif kind in ("http_request", "claude_called"):  # before the run: no request of it recorded yet
            [result] = evaluate([check], _state(ctx, sandbox, None, recorder, token))
            controls[index] = _control(index, result)
        else:
            needs_container.append(index)
    if needs_container:
        try:
            limit_s = min(CONTROL_LIMIT_S, sandbox.limits.timeout_s)  # the container lives limit + hold at most
            with sandbox.container(image, ["-c", "exit 0"], environment, entrypoint=["/bin/sh"],
                                   limit_s=limit_s) as container:
                run = sandbox.run_to_end(container, timeout_s=limit_s)
                if run.exit_code != 0:
                    raise EngineError(f"the control container did not start cleanly: {run.describe()}")
                for index in needs_container:
                    [result] = evaluate([checks[index - 1]], _state(ctx, sandbox, container, recorder, token))
                    controls[index] = _control(index, result)
        except EngineError as exc:
            for index in needs_container:
                controls[index] = Control(index, checks[index - 1]["kind"], "could not run", str(exc))
    ordered = [controls[index] for index in sorted(controls)]
    for control in ordered:
        logger.info("level 4 negative control: {}", control.line().strip())
    return ordered


def _control(index: int, result: CheckResult) -> Control:
    if not result.ran:
        return Control(index, result.kind, "could not run", result.detail)
    return Control(index, result.kind, "held" if result.passed else "did not hold", result.detail)


def _level_4_verdict(ctx: AttemptContext, level: Level, spec: list[dict[str, Any]], note: str,
                     controls: list[Control], results: list[CheckResult]) -> None:
    """Both evaluations go to the log; a check that held before the run, or whose control could not
    run, fails Level 4 like one that does not hold after it."""
    after = [f"  {'PASS' if r.passed else 'FAIL'} check {i} {r.kind}: {r.detail}" for i, r in enumerate(results, start=1)]
    log = (f"{note}\nbefore the run (negative control: a fresh container of the same image, the automation not "
           f"started):\n" + "\n".join(c.line() for c in controls) + "\nafter the run:\n" + "\n".join(after))
    held = [c for c in controls if c.outcome == "held"]
    if held:
        first = held[0]
        _fail(ctx, level, f"Level 4 (assertion) failed: check {first.index} ({first.kind}): {HELD_BEFORE}, so it "
                          f"proves nothing about the automation ({len(held)} of {len(spec)} held before)",
              log=log, detail=f"{first.kind} before the run: {first.detail}")
    unknown = [c for c in controls if c.outcome == "could not run"]
    if unknown:
        first = unknown[0]
        _fail(ctx, level, f"Level 4 (assertion) failed: check {first.index} ({first.kind}) could not be evaluated "
                          "before the automation ran (its negative control)", log=log, detail=first.detail)
    failed = [(i, r) for i, r in enumerate(results, start=1) if not r.passed]
    if failed:
        index, first_failed = failed[0]
        _fail(ctx, level, f"Level 4 (assertion) failed: {len(failed)} of {len(results)} check(s) did not "
                          f"hold, first {first_failed.kind}", log=log,
              detail=f"check {index} {first_failed.kind}: {first_failed.detail}")
    ctx.record(level.result(True, log))


def _dry_run(ctx: AttemptContext, sandbox: Sandbox, image: str, files: GeneratedFiles, level: Level,
             automation_type: str, recorder: Recorder | None, gateway: str | None,
             checks: list[dict[str, Any]]) -> str:
    """An agent's --dry-run, when it has one: an extra smoke step in its own container, with its own
    recording token (its calls never count for Level 4). Returns its part of the Level 3 log."""
    if automation_type != "claude_agent" or "--dry-run" not in files.main:
        return ""
    token = recorder.open_run() if recorder is not None else ""
    try:
        environment = _run_environment(ctx, recorder, token, gateway, automation_type, checks)
        with sandbox.container(image, ["--dry-run"], environment, entrypoint=[f"{APP_DIR}/agent.sh"]) as container:
            run = sandbox.run_to_end(container)
    finally:
        if recorder is not None:
            recorder.close_run(token)
    log = f"ran agent.sh --dry-run (in {SANDBOX_WORKDIR}, its own container)\n{run.describe()}\n{run.logs}\n"
    if run.timed_out or run.exit_code != 0:
        _fail(ctx, level, f"Level 3 (smoke) failed: agent.sh --dry-run: {run.describe()}", log=log,
              detail=_last_line(run.logs))
    return log


def _limit_hint(run: RunResult, tmp_size: str) -> str:
    """Why a write failed, when the automation hit a sandbox limit (its own message says only ENOSPC/EROFS)."""
    if run.exit_code in (None, 0):
        return ""
    if "No space left on device" in run.logs:
        return f" (the sandbox limit: /tmp and {SANDBOX_WORKDIR} hold at most SANDBOX_TMP_SIZE={tmp_size} each)"
    if "Read-only file system" in run.logs:
        return f" (the sandbox's root filesystem is read-only: write under /tmp or the working directory {SANDBOX_WORKDIR})"
    return ""


def _service_seconds(spec: list[dict[str, Any]] | StepFailure) -> float | None:
    if isinstance(spec, StepFailure):
        return None
    waits = [float(check["after_s"]) for check in spec if check.get("kind") == "container_running"]
    return max(waits) if waits else None


def _smoke_command(automation_type: str) -> tuple[list[str] | None, list[str] | None, str]:
    """(entrypoint, command, what the log says): the image's own command for a script; agent.sh for
    an agent, for real, against the claude stand-in. The keeper runs it in the working directory."""
    if automation_type == "claude_agent":
        return [f"{APP_DIR}/agent.sh"], [], (f"ran agent.sh for real (in {SANDBOX_WORKDIR}, no input), claude being the "
                                             f"recording stand-in {STANDIN_PATH}")
    return None, None, f"ran the image's command for real in {SANDBOX_WORKDIR} (confined; AGENT_BUILDER_SANDBOX=1)"


def _smoke_passed(run: RunResult, service_s: float | None) -> bool:
    if service_s:
        return run.exit_code in (None, 0)
    return not run.timed_out and run.exit_code == 0


def _last_line(logs: str) -> str:
    lines = [line for line in logs.strip().splitlines() if line.strip()]
    return f"last output line: {lines[-1][:300]}" if lines else ""


def _fail(ctx: AttemptContext, level: Level, message: str, *, log: str = "", kind: str = "level",
          detail: str = "") -> NoReturn:
    """`message` is the builder's sentence (agent_builds.error, ntfy); `detail` (sandbox output)
    and `log` go only to the stored log."""
    raise StepFailure(level=level.number, step=f"level{level.number}", message=message.splitlines()[0],
                      log=log, kind=kind, detail=detail,
                      result=level.result(False, "\n".join(part for part in (message, detail, log) if part)))
