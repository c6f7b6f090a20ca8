"""Request/response plumbing shared by every endpoint: JSON bodies, queries, errors."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Response, current_app, request

from flowplane.domain.common import problems_from
from flowplane.errors import BadRequest, FlowplaneError, PayloadTooLarge, UnsupportedMediaType
from flowplane.services.common import Page

T = TypeVar("T")

MAX_JSON_DEPTH = 64
BODY_LIMIT_KEY = "FLOWPLANE_MAX_BODY_BYTES"
"""The app config key of the JSON body limit (the OpenAPI import has a larger one of its own)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, iteratively (never recurses), stopping past `limit`."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def decode_json(raw: bytes) -> Any:
    """The value of a JSON request body, or BadRequest.

    RFC 8259 §8.1: JSON exchanged between systems is UTF-8 with no byte order mark, so anything
    else is refused (`json.loads` on bytes would guess UTF-16/32 and accept it). §4 leaves
    duplicate keys undefined; silently keeping the last (`"team":"a","team":"b"` stored as b)
    would let two readers of one body disagree, so a duplicate key is refused too. NaN and
    Infinity are not JSON; nesting is bounded.
    """
    if raw.startswith(codecs.BOM_UTF8):
        raise BadRequest("the body starts with a byte order mark: send UTF-8 JSON without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(
            f"the body is not UTF-8 (byte {err.start}: {err.reason}); JSON bodies must be UTF-8"
        ) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise BadRequest(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except _DuplicateKey as err:
        raise BadRequest(f"the JSON body has the key {err.args[0]!r} twice in one object") from None
    except ValueError as err:
        raise BadRequest(f"the body is not valid JSON: {err}") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadRequest(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def is_json_type(content_type: str | None, *extra: str) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json") or mime in extra


async def json_body(*extra_types: str) -> Any:
    """The request's JSON body: 415 unless JSON, 413 past the size limit, 400 if malformed."""
    if not is_json_type(request.content_type, *extra_types):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type or 'none'}"
        )
    limit: int = current_app.config[BODY_LIMIT_KEY]
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    raw = await request.get_data(cache=False, as_text=False)
    assert isinstance(raw, bytes)
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    return decode_json(raw)


def query(model: type[BaseModel]) -> Any:
    """Parse the query string into `model`; unknown or malformed parameters -> 400."""
    args = request.args
    known = {f.alias or n for n, f in model.model_fields.items()}
    unknown = sorted(set(args) - known)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}")
    try:
        return model.model_validate({k: args.get(k) for k in args})
    except ValidationError as err:
        raise BadRequest("invalid query parameters", problems_from(err)) from None


def error_response(err: FlowplaneError) -> Response:
    resp = Response(json.dumps(err.to_json()), status=err.status, content_type="application/json")
    for k, v in err.headers.items():
        resp.headers[k] = v
    return resp


def page_response(page: Page[T], render: Callable[[T], Any]) -> Response:
    """A list response: `{items, total, limit, offset}` with each item rendered."""
    body = {"items": [render(i) for i in page.items], "total": page.total,
            "limit": page.limit, "offset": page.offset}  # fmt: skip
    return json_response(body)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    resp = Response(
        json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp
