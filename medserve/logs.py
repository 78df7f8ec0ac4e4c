"""Structured JSON logging. Log events carry ids, tags, counts and timings, never patient values."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC ISO 8601), level, logger, event, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry |= {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
        if record.exc_info:
            # Exception type and location only: messages of validation errors can echo input.
            exc_type = record.exc_info[0]
            entry["exception"] = exc_type.__name__ if exc_type else "unknown"
        return json.dumps(entry, default=str)


def get_logger(name: str) -> logging.Logger:
    """A `medserve.*` logger writing JSON lines to stderr (configured once per process)."""
    root = logging.getLogger("medserve")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(f"medserve.{name}" if not name.startswith("medserve") else name)
