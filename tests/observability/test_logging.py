"""Log lines carry the bound fields (README "Observability", Logs): one event per line, in JSON
as keys, in text as `[key=value ...]` after the message; `extra=` fields win over bound ones;
values with spaces or quotes are quoted so a line still splits into its fields."""

from __future__ import annotations

import io
import json
import logging
import shlex

from flowplane.observability import context
from flowplane.observability.logging import FieldsFilter, JsonFormatter, TextFormatter


def logged(formatter: logging.Formatter, **extra: object) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(FieldsFilter())
    log = logging.getLogger("flowplane.test.fields")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    with context.bound({"request_id": "r-1", "team": "payments", "token_id": "t-9"}):
        log.info("committed: %s", "create cluster a", extra=extra)
    log.info("outside any request")
    return out.getvalue()


def test_json_lines_carry_bound_and_extra_fields() -> None:
    first, second = (json.loads(line) for line in logged(JsonFormatter(), team="search",
                                                         node="team=search/dp 1").splitlines())  # fmt: skip
    assert first["message"] == "committed: create cluster a"
    assert first["request_id"] == "r-1" and first["token_id"] == "t-9"
    assert first["team"] == "search" and first["node"] == "team=search/dp 1"  # extra wins
    assert "request_id" not in second and second["message"] == "outside any request"


def test_text_lines_append_the_fields_quoted_where_needed() -> None:
    first, second = logged(TextFormatter(), error_detail='bad "thing" here').splitlines()
    message, _, fields = first.partition(" [")
    assert message.endswith("committed: create cluster a")
    pairs = dict(item.split("=", 1) for item in shlex.split(fields.rstrip("]")))
    assert pairs == {"request_id": "r-1", "token_id": "t-9", "team": "payments",
                     "error_detail": 'bad "thing" here'}  # fmt: skip
    assert second.endswith("outside any request")
