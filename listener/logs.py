"""Logging setup: loguru, one line per event, text or JSON, on stderr.

A patcher redacts every record before any sink sees it (listener.redact): the message, the
extra values, and an exception's traceback, which it renders into the message itself (so no
sink prints an exception's raw text). `logger.*` anywhere in the process is covered.
"""

from __future__ import annotations

import sys
import traceback
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


def setup_logging(log_format: str = "text", level: str = "INFO", redactor: Redactor | None = None) -> None:
    logger.remove()
    logger.configure(patcher=redacting_patcher(redactor if redactor is not None else Redactor()))
    if log_format == "json":
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=level, format=_text_format, backtrace=False, diagnose=False)
