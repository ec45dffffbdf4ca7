"""Logging setup: loguru, one line per event, text or JSON, on stderr."""

from __future__ import annotations

import sys
from typing import Any

from loguru import logger


def _text_format(record: Any) -> str:
    extras = " ".join(f"{key}={value}" for key, value in record["extra"].items())
    extras = extras.replace("{", "{{").replace("}", "}}")
    context = f"{extras} | " if extras else ""
    return "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | " + context + "{message}\n{exception}"


def setup_logging(log_format: str = "text", level: str = "INFO") -> None:
    logger.remove()
    if log_format == "json":
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=level, format=_text_format, backtrace=False, diagnose=False)
