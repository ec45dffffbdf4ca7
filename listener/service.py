"""Wires the listener together (`listen`) and runs the one-shot trigger (`build-once`).

One Redactor, made by the command line from the Settings (it is also the logging patcher's), is
handed to every sink: the stores of the workers, the rescuer, the notifier, the Vault clients
(which register the tokens they obtain) and the approval endpoint."""

from __future__ import annotations

import pkgutil
import signal
import sys
import threading
import time
from typing import Any, Callable, cast

import psycopg
from loguru import logger

from listener.clients import ntfy as notify
from listener.approval.links import approval_actions, review_link
from listener.approval.web import ReviewServer, WebSetupError, exposure_problem, serves_web
from listener.config import Settings
from listener.queue.context import AttemptContext
from listener.queue.db import Queries, connect, worker_name
from listener.queue.finish import run_attempt
from listener.queue.hooks import Handlers, Hooks
from listener.queue.listen import ListenLoop
from listener.queue.outbox import Outbox
from listener.ops.metrics import Metrics, MetricsServer
from listener.queue.records import Automation
from listener.redact import Redactor
from listener.queue.leader import Duty, Leader
from listener.queue.registry import RegistryLoop
from listener.queue.services import ServiceGroup, Started
from listener.queue.rescue import Rescuer
from listener.queue.states import Outcome
from listener.queue.store import Store
from listener.sandbox.engine import remove_attempt_containers
from listener.sandbox.sweep import SweepLoop, sweep_once
from listener.clients.vault import VaultClient
from listener.queue.workers import WorkerPool

EXIT_OK, EXIT_FAILED, EXIT_NOT_CLAIMABLE = 0, 1, 3
OUTBOX_STOP_S = 10.0  # at a stop: how long queued notifications may take to be confirmed and sent


class HandlerError(RuntimeError):
    pass


# Handlers named by their module before the package was laid out by stage (0.1 → 0.2): still accepted.
MOVED_HANDLERS = {
    "listener.pipeline:build": "listener.build.pipeline:build",
    "listener.deploy:deploy": "listener.deploy.production:deploy",
}


def load_handler(spec: str, variable: str) -> Callable[..., Any]:
    """'package.module:function' → the function, or a clear error naming the variable."""
    if spec in MOVED_HANDLERS:
        logger.warning("{}={} names the handler's old module; it is now {}", variable, spec, MOVED_HANDLERS[spec])
        spec = MOVED_HANDLERS[spec]
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise HandlerError(f"{variable}={spec!r}: expected 'package.module:function'")
    try:
        handler = pkgutil.resolve_name(spec)
    except ValueError as exc:  # not a dotted name on either side of the colon
        raise HandlerError(f"{variable}={spec!r}: expected 'package.module:function'") from exc
    except ImportError as exc:
        raise HandlerError(f"{variable}={spec!r}: cannot import {module_name}: {exc}") from exc
    except AttributeError as exc:
        if module_name not in sys.modules:  # raised by the module's own code while it was imported
            raise HandlerError(f"{variable}={spec!r}: cannot import {module_name}: AttributeError: {exc}") from exc
        raise HandlerError(f"{variable}={spec!r}: {module_name} has no function {attribute!r}") from exc
    except Exception as exc:  # noqa: BLE001 - the module failed while it was imported
        raise HandlerError(f"{variable}={spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    if not callable(handler):
        raise HandlerError(f"{variable}={spec!r}: {module_name} has no function {attribute!r}")
    return cast(Callable[..., Any], handler)


def load_handlers(settings: Settings) -> Handlers:
    """The handlers and the hooks of the stages they belong to. Only the production deploy stage
    removes a rejected build's sandbox image: a custom DEPLOY_HANDLER gets no Docker clean-up."""
    deploy = load_handler(settings.deploy_handler, "DEPLOY_HANDLER") if settings.deploy_handler else None
    on_rejected = None
    if deploy is not None:
        from listener.deploy import production

        if deploy is production.deploy:
            on_rejected = _rejected_cleanup(settings)
    hooks = Hooks(on_rejected=on_rejected, on_dead_attempt=_remove_leftovers,
                  approval_actions=lambda automation_id, build_id: approval_actions(settings, automation_id, build_id),
                  review_link=lambda automation_id, build_id: review_link(settings, automation_id, build_id))
    return Handlers(build=load_handler(settings.build_handler, "BUILD_HANDLER"), deploy=deploy, hooks=hooks)


def _rejected_cleanup(settings: Settings) -> Callable[[Automation, int, "str | None"], str]:
    from listener.deploy.production import clean_rejected

    def cleanup(_automation: Automation, _build_id: int, image_id: str | None) -> str:
        return clean_rejected(settings, image_id)

    return cleanup


def make_notifier(settings: Settings, redactor: Redactor | None = None) -> notify.Notifier:
    """ntfy with NTFY_TOKEN, or else the token read from Vault (VAULT_SECRETS_PATH, key ntfy_token)."""
    redactor = redactor if redactor is not None else Redactor.from_settings(settings)
    provider = None
    if settings.ntfy_token is None and settings.vault_addr and settings.vault_secrets_path:
        provider = VaultClient(settings.vault_addr, settings.vault_approle_dir, redactor=redactor).token_provider(
            settings.vault_secrets_path, "ntfy_token")
    if settings.ntfy_url is None:
        logger.warning("NTFY_URL is not set: notifications are only logged")
    return notify.Notifier.from_settings(settings, provider, redactor)


def _install_stop_signals(stop: threading.Event) -> None:
    def handle(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            logger.info("received {}, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


class RescueDuty:
    """The rescuer as the leader's duty (listener.queue.leader): one sweep per period on the
    leader's connection; and, on any listener, the abandoning of its own attempts at shutdown."""

    name = "rescue"

    def __init__(self, settings: Settings, dsn: str, queries: Queries, worker: str, notifier: notify.Notifier,
                 redactor: Redactor, hooks: Hooks | None = None) -> None:
        self.hooks = hooks if hooks is not None else Hooks(on_dead_attempt=_remove_leftovers)
        self.redactor = redactor
        self.settings = settings
        self.dsn = dsn
        self.queries = queries
        self.worker = worker
        self.notifier = notifier
        self._rescuer: Rescuer | None = None  # kept while the leader's connection is the same one

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        return connect(self.dsn, actor=f"builder-rescuer:{self.worker}", application="agent-builder rescuer")

    def _make(self, conn: psycopg.Connection[dict[str, Any]]) -> Rescuer:
        return Rescuer(conn, self.queries, self.settings, self.notifier, on_rescued=self.hooks.dead_attempt,
                       redactor=self.redactor)

    def __call__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        if self._rescuer is None or self._rescuer.conn is not conn:
            self._rescuer = self._make(conn)
        self._rescuer.sweep()

    def abandon(self, pool: WorkerPool, why: str) -> None:
        """Treat this listener's own unfinished attempts as died (shutdown grace ran out)."""
        with self._connect() as conn:
            rescuer = self._make(conn)
            for running in pool.snapshot():
                claim, context = running.claim, running.context
                rescuer.rescue({
                    "build_id": claim.build_id, "automation_id": claim.automation.id, "kind": claim.kind,
                    "step": context.step_name, "worker": claim.worker, "claimed_at": None,
                    "builder_status": context.status, "owns_row": True,
                }, why=why, require_lock=False)


def startup_checks(settings: Settings) -> bool:
    """The `check` command's checks: False (refuse to start) only when a required one fails."""
    from listener.ops.check import run_checks

    fine = True
    for check in run_checks(settings):
        if check.ok and check.warning:
            logger.warning("check {}: {} (fix: {})", check.name, check.detail, check.fix)
        elif check.ok:
            logger.info("check {}: {}", check.name, check.detail)
        elif check.required:
            logger.error("check {} FAILED: {} (fix: {})", check.name, check.detail, check.fix)
            fine = False
        else:
            logger.warning("check {} {}: {} (fix: {}); starting anyway", check.name, check.mark, check.detail, check.fix)
    return fine


def _remove_leftovers(installation: str, build_id: int) -> None:
    removed = remove_attempt_containers(installation, build_id)
    if removed:
        logger.bind(build_id=build_id).info("removed {} container(s) the dead attempt left behind", removed)


def run_listener(settings: Settings, redactor: Redactor | None = None) -> int:
    assert settings.database_url is not None
    dsn = settings.database_url
    redactor = redactor if redactor is not None else Redactor.from_settings(settings)
    try:
        handlers = load_handlers(settings)
    except HandlerError as exc:
        logger.error("{}", exc)
        return EXIT_FAILED
    if (exposed := exposure_problem(settings)) is not None:  # before anything starts
        logger.error("the review page cannot start: {}", exposed)
        return EXIT_FAILED
    if not startup_checks(settings):
        return EXIT_FAILED
    queries = Queries.load()
    notifier = make_notifier(settings, redactor)
    worker = worker_name()
    stop, stop_claiming = threading.Event(), threading.Event()
    _install_stop_signals(stop)

    metrics = Metrics()
    # The workers' notifications leave through the outbox: off their threads, and an ending's only
    # once it is on disk. The rescuer (the leader's thread) sends its own directly.
    outbox = Outbox.over_database(notifier, dsn, queries, worker)
    pool = WorkerPool(settings, dsn, queries, worker, handlers, outbox, stop_claiming, metrics, redactor)
    listen = ListenLoop(settings, dsn, worker, pool.wake)
    rescue = RescueDuty(settings, dsn, queries, worker, notifier, redactor, handlers.hooks)
    sweep = SweepLoop(settings, dsn, queries, worker, threading.Event())  # its once(): containers, images at most every 30 s
    leader = Leader.over_database(dsn, queries, worker, [Duty("rescue", rescue), Duty("sandbox sweep", lambda _conn: sweep.once())],
                                  settings.rescue_interval_s)
    registry = RegistryLoop(dsn, queries, worker, settings.builder_concurrency, settings.liveness_interval_s,
                            lambda: len(pool.snapshot()))
    background = ServiceGroup()  # stopped in reverse order after the workers
    if settings.metrics_addr:
        background.start(Started("metrics", MetricsServer(settings.metrics_addr, metrics, dsn, queries,
                                                          listening=listen.connected.is_set,
                                                          reconnects=lambda: listen.reconnects)))
    background.start(leader)  # at start, then every RESCUE_INTERVAL_S while it leads
    background.start(registry)
    if serves_web(settings):  # one-tap links and the review pages (listener/approval/web.py)
        try:
            review = ReviewServer(settings, dsn, queries, redactor)
        except WebSetupError as exc:  # checked before anything started; kept for a direct caller
            logger.error("the review page cannot start: {}", exc)
        else:
            background.start(Started("review page", review))
    background.start(listen)
    outbox.start()
    pool.start()
    logger.info("listener {} started: concurrency {}, poll every {:g} s", worker, settings.builder_concurrency,
                settings.poll_interval_s)
    if handlers.deploy is None:
        logger.warning("DEPLOY_HANDLER is not set: this listener builds but does not deploy; approved rows wait")

    stop.wait()
    logger.info("no new claims; giving running attempts up to {:g} s", settings.shutdown_grace_s)
    pool.stop()
    if not pool.join_until(time.monotonic() + settings.shutdown_grace_s):
        running = pool.snapshot()
        logger.warning("{} attempt(s) still running after SHUTDOWN_GRACE_S; treating them as died", len(running))
        try:
            rescue.abandon(pool, why=f"the listener stopped and SHUTDOWN_GRACE_S ({settings.shutdown_grace_s:g} s) ran out")
        except psycopg.OperationalError as exc:
            logger.error("could not record the abandoned attempts ({}); the rescuer of the next listener will", exc)
    outbox.stop()  # what the workers handed in goes out (once confirmed) before the listener ends
    outbox.join(OUTBOX_STOP_S)
    background.stop()  # the registry removes its row; should it not manage, its lock dies with the process
    if sweep.conn is not None:
        sweep.conn.close()
    logger.info("stopped")
    return EXIT_OK


def run_build_once(settings: Settings, automation_id: int | None, redactor: Redactor | None = None) -> int:
    """The playbook's scheduled/manual trigger: at most one automation, then exit."""
    assert settings.database_url is not None
    redactor = redactor if redactor is not None else Redactor.from_settings(settings)
    try:
        handlers = load_handlers(settings)
    except HandlerError as exc:
        logger.error("{}", exc)
        return EXIT_FAILED
    queries = Queries.load()
    notifier = make_notifier(settings, redactor)
    worker = worker_name()
    stop = threading.Event()
    _install_stop_signals(stop)
    with connect(settings.database_url, actor=f"builder:{worker}", application="agent-builder build-once") as conn:
        Rescuer(conn, queries, settings, notifier, on_rescued=handlers.hooks.dead_attempt, redactor=redactor).sweep()
        sweep_once(settings, conn, queries)
        store = Store(conn, queries, worker, redactor)
        claim = store.claim_next_build() if automation_id is None else store.claim_build(automation_id)
        if claim is None:
            if automation_id is None:
                logger.info("nothing to build")
                print("nothing to build")
                return EXIT_OK
            reason = store.claim_refusal(automation_id)
            logger.warning("automation {} not claimed: {}", automation_id, reason)
            print(f"automation {automation_id} not claimed: {reason}")
            notifier.send(notify.not_claimed(automation_id, reason))
            return EXIT_NOT_CLAIMABLE
        outbox = Outbox.over_database(notifier, settings.database_url, queries, worker)
        outbox.start()
        context = AttemptContext(claim=claim, store=store, settings=settings, notifier=outbox, stop=stop,
                                 hooks=handlers.hooks)
        context.log.info("claimed build of {!r}", claim.automation.label)
        try:
            ending = run_attempt(context, handlers.build)
        finally:
            outbox.stop()  # sends the ending's notification once it is on disk
            outbox.join(OUTBOX_STOP_S)

    print(f"automation {claim.automation.id}: {ending.value}")
    return EXIT_OK if ending is Outcome.SUCCEEDED else EXIT_FAILED
