"""The commands of interface.md. Thin: parse, call, print."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from loguru import logger

from listener.config import ConfigError, Settings
from listener.logs import setup_logging

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_CLAIMABLE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-builder",
        description="Turns rows of automation_ideas into tested, human-approved automations.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument("--rollback", action="store_true", help="undo the last applied migration")

    commands.add_parser("listen", help="run the listener: LISTEN, claim, build, deploy approved rows")

    once = commands.add_parser("build-once", help="claim at most one automation, build it, exit")
    once.add_argument("--id", type=int, dest="automation_id", help="build this automation (only if it is ready)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"agent-builder: {exc}", file=sys.stderr)
        return EXIT_ERROR
    setup_logging(settings.log_format, settings.log_level)
    if settings.database_url is None:
        print("agent-builder: DATABASE_URL is not set (a libpq URI, e.g. postgresql://user@host/db)", file=sys.stderr)
        return EXIT_ERROR
    if args.command == "migrate":
        return _migrate(settings.database_url, rollback=args.rollback)
    if args.command == "listen":
        from listener.service import run_listener

        return run_listener(settings)
    if args.command == "build-once":
        from listener.service import run_build_once

        return run_build_once(settings, args.automation_id)
    return EXIT_USAGE


def _migrate(database_url: str, *, rollback: bool) -> int:
    from listener.migrate import migrate

    try:
        report = migrate(database_url, rollback=rollback)
    except Exception as exc:  # noqa: BLE001 - any failure is reported and exits 1
        logger.error("migration failed: {}", exc)
        return EXIT_ERROR
    if rollback:
        print(f"rolled back: {', '.join(report.rolled_back) or 'nothing'}")
    else:
        print(f"applied: {', '.join(report.applied) or 'nothing (up to date)'}")
    print(f"schema now at: {report.current[-1] if report.current else 'empty'}")
    return EXIT_OK
