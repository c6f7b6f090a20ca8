"""Log set-up: human text (default) or one JSON object per line, both with structured fields.

Every line carries the fields bound to the task that logged it (`flowplane.observability.context`:
request id, token id, team), the current trace and span ids while tracing, and whatever the call
passed with `extra=` (node, type, error_detail, ...). JSON writes them as keys; text appends
`key=value` pairs after the message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from flowplane.observability.context import current, record_fields
from flowplane.observability.tracing import current_ids


class FieldsFilter(logging.Filter):
    """Copies the bound fields and the current trace and span ids onto every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        if not hasattr(record, "trace_id"):
            ids = current_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(record_fields(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record_fields(record)
        if not fields:
            return line
        pairs = " ".join(f"{k}={json.dumps(v) if _quote(v) else v}" for k, v in fields.items())
        head, sep, rest = line.partition("\n")  # an exception's traceback stays below
        return f"{head} [{pairs}]{sep}{rest}"


def _quote(value: object) -> bool:
    return not isinstance(value, int | float) and (
        not str(value) or any(c in str(value) for c in ' "=[]\n')
    )


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(FieldsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
