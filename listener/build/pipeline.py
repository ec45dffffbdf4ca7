"""The ordered steps of one build (playbook Steps 2–7).

Each step either returns or raises a StepFailure; listener.queue.finish maps whatever comes out to a
status, agent_test_results rows and a notification. The order saves credits: every free check
(validation, context size, extraction, compile/syntax/Dockerfile/secret checks with up to
REPAIR_ATTEMPTS repairs by the local model) runs before the one paid overseer call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from listener.clients import ntfy as notify
from listener.build.alerts import MODEL, OVERSEER, SANDBOX_IMAGE, Alerts
from listener.queue.context import AttemptContext
from listener.build.extract import GeneratedFiles, artifact_digest, extract
from listener.build.ollama import OllamaClient
from listener.queue.outcome import BuildSucceeded, LevelResult, StepFailure
from listener.build.overseer import Overseer, Readiness, Verdict
from listener.build.preflight import Problem, problems_summary, run_preflight
from listener.build.prompt import build_prompt, build_repair_prompt, check_fits, review_text, validate_buildable
from listener.clients.vault import VaultClient, VaultError

SandboxStep = Callable[[AttemptContext, GeneratedFiles], None]
SandboxReady = Callable[[AttemptContext], "str | None"]  # None, or why the sandbox cannot run (free)


@dataclass
class Pipeline:
    ollama: OllamaClient
    sandbox: SandboxStep
    overseer: Overseer | None = None  # default: from the attempt's settings
    sandbox_ready: SandboxReady | None = None  # checked before Step 3; build() checks the base image
    _overseer_ready: Readiness | None = field(default=None, init=False, repr=False)

    def run(self, ctx: AttemptContext) -> BuildSucceeded:
        prompt = self.prepare(ctx)
        ctx.start_generation()  # Step 3 starts: builder_status = 'building'
        files = self.generate(ctx, prompt)
        self.oversee(ctx, files)
        ctx.step("sandbox")
        self.sandbox(ctx, files)
        return BuildSucceeded()

    # -- before Step 3: anything wrong here either fails the row (it cannot be built as it
    # stands) or, when transient, releases the claim with backoff ------------------------------
    def prepare(self, ctx: AttemptContext) -> str:
        ctx.step("prompt")
        automation = ctx.automation
        reason = validate_buildable(automation)
        if reason is not None:
            raise StepFailure(level=0, step="prompt", kind="invalid",
                              message=f"cannot be built as it stands: {reason}. Fix the row, then set builder_status = 'not_started'.")
        prompt = build_prompt(automation, ctx.settings.sandbox_base_image)
        check_fits(prompt, ctx.settings.ollama_num_ctx)
        ctx.save(prompt=prompt)
        self._check_overseer_budget(ctx, before_step_3=True)
        self._check_model_ready(ctx)
        self._check_overseer_ready(ctx)
        self._check_sandbox_ready(ctx)
        self._check_vault(ctx)
        ctx.notify(notify.build_started(automation))
        return prompt

    def _check_vault(self, ctx: AttemptContext) -> None:
        """The sandbox AppRole must work before generation spends anything: a Vault blip releases
        the claim (retried with backoff); the credentials themselves are checked in the sandbox."""
        settings = ctx.settings
        if settings.vault_addr is None:
            return
        ctx.step("vault")
        try:
            VaultClient(settings.vault_addr, settings.vault_approle_dir, redactor=ctx.redactor).login()
        except VaultError as exc:
            raise StepFailure(level=0, step="vault", message=f"Vault: {exc}", transient=True) from None

    def _overseer(self, ctx: AttemptContext) -> Overseer:
        if self.overseer is None:
            self.overseer = Overseer.from_settings(ctx.settings)
        return self.overseer

    def _check_overseer_ready(self, ctx: AttemptContext) -> None:
        """Free checks first: the claude CLI runs, has every review flag and reports a login."""
        ctx.step("overseer-login")
        readiness = self._overseer(ctx).readiness()
        problem = None
        if not readiness.ready:
            problem = f"{readiness.problem}; {readiness.fix}" if readiness.fix else str(readiness.problem)
        self._outage(ctx, OVERSEER, problem, overseer_unavailable, f"the overseer is ready: {readiness.summary()}")
        self._overseer_ready = readiness

    def _check_model_ready(self, ctx: AttemptContext) -> None:
        """Free (GET /api/tags, no generation): Ollama answers and serves OLLAMA_MODEL. Ollama
        failing after this, during generation, fails the build at Step 3."""
        ctx.step("ollama")
        problem = self.ollama.model_problem()
        self._outage(ctx, MODEL, None if problem is None else f"{problem[0]}; fix: {problem[1]}",
                     model_unavailable, "Ollama serves the model")

    def _check_sandbox_ready(self, ctx: AttemptContext) -> None:
        """Free: the sandbox's base image must be on the engine."""
        if self.sandbox_ready is None:
            return
        ctx.step("sandbox-image")
        self._outage(ctx, SANDBOX_IMAGE, self.sandbox_ready(ctx), sandbox_unavailable, "the sandbox base image is there")

    @staticmethod
    def _outage(ctx: AttemptContext, alert: str, problem: str | None,
                notification: Callable[[str], notify.Notification], over: str) -> None:
        """What every free check before Step 3 does with its answer. A problem releases the claim with
        backoff (nothing failed, nothing spent) and is notified once per outage, by whichever listener
        sees it first (the alert lives in the database); the first build that finds it gone closes it."""
        alerts = Alerts(ctx.store)
        if problem is None:
            if alerts.clear(alert):
                ctx.log.info("{} again", over)
            return
        if alerts.raise_(alert, problem):
            ctx.notify(notification(problem))
        else:
            ctx.log.info("{} still unavailable (already notified): {}", alert, problem)
        raise StepFailure(level=0, step=ctx.step_name, message=problem, transient=True)

    def _check_overseer_budget(self, ctx: AttemptContext, *, before_step_3: bool) -> None:
        limit = ctx.settings.overseer_daily_limit
        if limit is None:
            return
        used = ctx.store.overseer_calls_today()
        if used < limit:
            return
        message = (f"the overseer's daily limit is reached ({used} of OVERSEER_DAILY_LIMIT={limit} calls today, UTC); "
                   "builds wait until tomorrow")
        if before_step_3:
            ctx.notify(notify.Notification(title="Overseer daily limit reached",
                                           message=f"[Agent Builder] PAUSED — {ctx.automation.label}: {message}",
                                           tags=("hourglass",), priority=3))
            raise StepFailure(level=0, step="overseer-budget", message=message, transient=True)
        raise StepFailure(level=0, step="overseer", message=message)

    # -- Step 3: generation, extraction, free checks and repairs --------------------------------
    def generate(self, ctx: AttemptContext, prompt: str) -> GeneratedFiles:
        automation_type = ctx.automation.type or ""
        output = self.ollama.generate(prompt).text
        ctx.save(model_output=output)
        files, problems = self._extract_and_check(output, automation_type)
        for repair in range(1, ctx.settings.repair_attempts + 1):
            if not problems:
                break
            ctx.step(f"repair-{repair}")
            ctx.log.info("preflight found {} problem(s), asking the model to repair: {}", len(problems),
                         problems_summary(problems))
            output = self.ollama.generate(build_repair_prompt(prompt, output, [p.message for p in problems])).text
            ctx.save(model_output=output)
            files, problems = self._extract_and_check(output, automation_type)
        if problems or files is None:
            log = problems_summary(problems)
            raise StepFailure(level=1, step="preflight", kind="level",
                              result=LevelResult(level=1, passed=False, log=f"{log}\n\n--- model output ---\n{output[:8000]}"),
                              message=f"{len(problems)} problem(s) after {ctx.settings.repair_attempts} repair(s): "
                                      f"{problems[0].message if problems else 'no code'}")
        ctx.save(files=files.as_dict(), artifact_sha256=artifact_digest(files))
        ctx.record(LevelResult(level=1, passed=True, log=structure_log(files)))
        return files

    @staticmethod
    def _extract_and_check(output: str, automation_type: str) -> tuple[GeneratedFiles | None, list[Problem]]:
        try:
            files = extract(output, automation_type)
        except StepFailure as failure:
            return None, [Problem(check="extract", message=failure.message)]
        return files, run_preflight(files, automation_type)

    # -- Step 4: the one paid review ------------------------------------------------------------
    def oversee(self, ctx: AttemptContext, files: GeneratedFiles) -> Verdict:
        ctx.step("overseer")
        self._check_overseer_budget(ctx, before_step_3=False)
        text = review_text(ctx.automation, files)
        # Counted before the call: a crash during the call must not make the credit invisible.
        ctx.save(overseer_called_at=datetime.now(timezone.utc))
        verdict = self._overseer(ctx).review(text.prompt, text.stdin, self._overseer_ready)
        usage = verdict.usage
        ctx.save(overseer_verdict="PASS" if verdict.passed else "FAIL", overseer_reason=verdict.reason,
                 overseer_cost_usd=usage.cost_usd, overseer_input_tokens=usage.input_tokens,
                 overseer_output_tokens=usage.output_tokens, overseer_model=usage.model)
        ctx.log.info("overseer verdict {} in {:.1f} s (cost {}, tokens {} in / {} out, model {}): {}",
                     "PASS" if verdict.passed else "FAIL", verdict.duration_s,
                     "n/a" if usage.cost_usd is None else f"${usage.cost_usd:.4f}", usage.input_tokens,
                     usage.output_tokens, usage.model, verdict.reason)
        if not verdict.passed:
            raise StepFailure(level=0, step="overseer", kind="overseer", message=verdict.reason,
                              log=f"exit code: {verdict.exit_code}\n--- output ---\n{verdict.raw[:8000]}")
        return verdict


def _paused(title: str, message: str, tag: str, until: str) -> notify.Notification:
    """Sent once per outage of a dependency checked free before Step 3: builds wait until it is back."""
    return notify.Notification(
        title=title,
        message=f"[Agent Builder] PAUSED — {message}. Builds wait, released before generation and retried "
                f"with backoff, until {until}.",
        tags=("warning", tag),
        priority=4,
    )


def overseer_unavailable(message: str) -> notify.Notification:
    title = "Overseer not logged in" if "not logged in" in message else "Overseer unavailable"
    return _paused(title, message, "overseer", "the overseer can review")


def model_unavailable(message: str) -> notify.Notification:
    return _paused("Model missing" if "has no model" in message else "Ollama unavailable", message, "ollama",
                   "Ollama serves the model")


def sandbox_unavailable(message: str) -> notify.Notification:
    title = ("Sandbox base image missing" if "base image" in message and "unreachable" not in message
             else "Docker engine unavailable")
    return _paused(title, message, "sandbox", "the sandbox can run")


def structure_log(files: GeneratedFiles) -> str:
    checks = ["python: ast.parse + compile ok" if files.main_name.endswith(".py") else "bash -n ok"]
    if files.dockerfile:
        checks.append("Dockerfile: directives ok")
    if files.requirements is not None:
        checks.append("requirements.txt: names and versions only")
    checks.append("secret scan: nothing hardcoded")
    return "; ".join(checks)


def build(ctx: AttemptContext) -> BuildSucceeded:
    """The default BUILD_HANDLER: Ollama for the code, the Docker sandbox for levels 2–4."""
    from listener.sandbox.levels import run_sandbox_levels
    from listener.sandbox.ready import base_image_problem

    started = time.monotonic()
    result = Pipeline(ollama=OllamaClient.from_settings(ctx.settings), sandbox=run_sandbox_levels,
                      sandbox_ready=lambda c: base_image_problem(c.settings, c.automation.type or "")).run(ctx)
    ctx.log.info("build passed all levels in {:.1f} s", time.monotonic() - started)
    return result
