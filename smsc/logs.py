"""How the hub's log lines look: text for a terminal, one JSON object a line for a log shipper.

A log call passes structured values as ``extra={"fields": {...}}``; the text
format appends them as ``key=value``, the JSON format as keys of the object.
Use :func:`fields` to build that argument, so every module writes the
convention one way (docs/operations.md "Logs")::

    log.info("bind refused", extra=fields(account="acme", status="ESME_RBINDFAIL"))
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

#: ``--log-format`` values.
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """The ``extra=`` argument that carries structured values to either format."""
    return {"fields": values}


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    f = getattr(record, "fields", None)
    return f if isinstance(f, dict) else {}


class TextFormatter(logging.Formatter):
    """The classic line, then ``key=value`` for each structured field."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _fields_of(record)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, then the fields.

    A field named like one of the four keys is kept under ``fields`` instead
    of overwriting it; values JSON cannot hold are written as their ``str()``.
    """

    RESERVED = ("time", "level", "logger", "message")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        clashing = {}
        for k, v in _fields_of(record).items():
            if k in self.RESERVED:
                clashing[k] = v
            else:
                doc[k] = v
        if clashing:
            doc["fields"] = clashing
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class _OurHandler(logging.StreamHandler):
    """Marks the handler :func:`setup_logging` installed, so a second call replaces only it."""


def setup_logging(verbose: bool, log_format: str = "text", stream: Any = None) -> None:
    """Root logging on stderr: INFO with ``-v``, else WARNING, in the chosen format."""
    handler = _OurHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _OurHandler):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


__all__ = ["FORMATS", "JsonFormatter", "TextFormatter", "fields", "setup_logging"]
