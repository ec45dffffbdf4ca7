"""Logging setup: loguru, one line per event, text or JSON, on stderr.

A patcher redacts every record before any sink sees it (listener.redact): the message, the
extra values, and an exception's traceback, which it renders into the message itself (so no
sink prints an exception's raw text). `logger.*` anywhere in the process is covered, and so are
the standard library's loggers (the libraries' warnings: forwarded to loguru) and exceptions
nobody caught (in any thread: logged instead of printed raw by Python).
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, Callable

from loguru import logger

from listener.redact import Redactor


def _text_format(record: Any) -> str:
    extras = " ".join(f"{key}={value}" for key, value in record["extra"].items())
    extras = extras.replace("{", "{{").replace("}", "}}")
    context = f"{extras} | " if extras else ""
    return "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | " + context + "{message}\n{exception}"


def redacting_patcher(redactor: Redactor) -> Callable[[Any], None]:
    """A loguru patcher: secrets out of the record, control characters escaped."""

    def patch(record: Any) -> None:
        message = str(record["message"])
        exception = record["exception"]
        if exception is not None:
            rendered = "".join(traceback.format_exception(exception.type, exception.value, exception.traceback))
            message = f"{message}\n{rendered.rstrip()}"
            record["exception"] = None
        record["message"] = redactor.redact(message)
        for key, value in list(record["extra"].items()):
            if isinstance(value, str):
                record["extra"][key] = redactor.redact(value)
            elif not isinstance(value, (int, float, bool)) and value is not None:
                record["extra"][key] = redactor.redact(str(value))

    return patch


class _ToLoguru(logging.Handler):
    """The standard library's log records, as loguru records (and so through the patcher)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info or None).bind(library=record.name).log(level, "{}", record.getMessage())


def _log_uncaught(kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None,
                  where: str = "main thread") -> None:
    if kind is not None and issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value or kind(), tb)
        return
    logger.opt(exception=(kind, value, tb)).critical("uncaught exception in the {}", where)


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread is not None else "unknown"
    _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback, f"thread {name}")


def setup_logging(log_format: str = "text", level: str = "INFO", redactor: Redactor | None = None) -> None:
    logger.remove()
    logger.configure(patcher=redacting_patcher(redactor if redactor is not None else Redactor()))
    if log_format == "json":
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=level, format=_text_format, backtrace=False, diagnose=False)
    root = logging.getLogger()
    if not any(isinstance(handler, _ToLoguru) for handler in root.handlers):
        root.addHandler(_ToLoguru(level=logging.WARNING))
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
