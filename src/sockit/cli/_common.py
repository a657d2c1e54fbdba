"""What the subcommands' parsers and stderr output share: one-line usage errors, and
log records rendered as text or one JSON object per event.

Must stay cheap to import (the CLI's start-up time is a measured goal): argparse,
json and datetime only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from typing import Any, NoReturn

__all__ = ["JsonFormatter", "Parser", "TextFormatter", "UsageError", "add_log_handler"]


class UsageError(Exception):
    """Bad command line: one line on stderr, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage text plus a line) and no exit
    from inside the parser."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


class TextFormatter(logging.Formatter):
    """``PROG: message`` (plus a traceback if the record has one)."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        text = f"{self.prog}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, event, message and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_RECORD_FIELDS and key not in event:
                event[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def add_log_handler(
    logger: logging.Logger, *, prog: str, level: int, log_format: str, stream: Any
) -> logging.Handler:
    """Send ``logger``'s records at ``level`` and above to ``stream`` as text or JSON,
    and only there (not also through the root logger). Returns the handler, for
    ``logger.removeHandler`` when the command is done."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(prog))
    logger.setLevel(level)
    logger.addHandler(handler)
    logger.propagate = False
    return handler
