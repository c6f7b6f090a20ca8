"""Log fields bound to the current task: request id, the caller's token id and team.

A REST request binds its fields when it starts (`flowplane.observability.asgi`); the config
actor binds a command's fields while it handles the command (`tracing.resumed`). Every log record
then carries them (`FieldsFilter`); the JSON format writes them as keys, the text format appends
them as `key=value` (`flowplane.observability.logging`). Fields given to one call with
`extra=` (node, type, ...) win.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token

_EMPTY: Mapping[str, str] = {}
_FIELDS: ContextVar[Mapping[str, str]] = ContextVar("flowplane_log_fields", default=_EMPTY)

FIELDS = (
    "request_id",
    "token_id",
    "team",
    "trace_id",
    "span_id",
    "method",
    "route",
    "status",
    "duration_ms",
    "protocol",
    "stream_id",
    "node",
    "address",
    "type",
    "version",
    "error_detail",
)
"""Every structured field a log line may carry, in the order the JSON format writes them."""


def current() -> Mapping[str, str]:
    return _FIELDS.get()


@contextmanager
def bound(fields: Mapping[str, str]) -> Iterator[None]:
    """Bind `fields` (merged over the current ones) for the body of the `with`."""
    if not fields:
        yield
        return
    token = _FIELDS.set({**_FIELDS.get(), **fields})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def push(fields: Mapping[str, str]) -> Token[Mapping[str, str]]:
    """Bind `fields` until `pop` with the returned token (in the same task)."""
    return _FIELDS.set({**_FIELDS.get(), **fields})


def pop(token: Token[Mapping[str, str]]) -> None:
    _FIELDS.reset(token)


def bind(**fields: str | None) -> None:
    """Add `fields` (None values left out) to the current task's fields, until the task ends.
    For a request task, whose context ends with it."""
    new = {k: v for k, v in fields.items() if v is not None}
    if new:
        _FIELDS.set({**_FIELDS.get(), **new})


def caller_fields(token_id: str | None, teams: Iterable[str]) -> dict[str, str]:
    """The log fields of an authenticated caller: token id, and its team(s) (comma-separated)."""
    out = {"team": ",".join(sorted(teams))}
    if token_id is not None:
        out["token_id"] = token_id
    return out if out["team"] else {k: v for k, v in out.items() if k != "team"}


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields present on `record`, in `FIELDS` order."""
    out: dict[str, object] = {}
    for key in FIELDS:
        value = getattr(record, key, None)
        if value is not None and value != "":
            out[key] = value
    return out
