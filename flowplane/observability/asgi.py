"""The outermost ASGI layer of the REST API: request id, metrics, access log and the server span.

For every HTTP request:

- **Request id**: the caller's `X-Request-Id` if it is 1-128 visible ASCII characters, else a new
  one (32 hex digits); echoed in the response's `X-Request-Id`. A malformed one is refused (400,
  the JSON error body), since it would go into every log line of the request.
- **Metrics**: `flowplane_http_requests_total{method,route,status}` and
  `flowplane_http_request_duration_seconds{method,route}`, where `route` is the route template
  the router matched (`/api/v1/native/clusters/<name>`), set by the inner layers through
  `set_route`; a request no route matched is `route="unmatched"`. Never the raw path.
- **Access log** (logger `flowplane.access`): writes and failures (any method but GET/HEAD, or a
  status >= 400) at INFO, successful reads at DEBUG; fields method, route, status, duration_ms,
  request id, and once authenticated, token id and team (`set_caller`).
- **Trace**: a SERVER span named `<METHOD> <route>`, continuing the `traceparent` header, current
  for the whole request (tracing on only).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

from flowplane.errors import BadRequest
from flowplane.observability import context, metrics, tracing

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("flowplane.access")

_REQUEST_ID = re.compile(rb"[!-~]{1,128}")
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Request:
    """What the inner layers tell the outer one about a request (shared by reference: trio
    copies the context into the tasks Quart starts, and the copy holds this same object)."""

    __slots__ = ("caller", "route")

    def __init__(self) -> None:
        self.route = UNMATCHED
        self.caller: dict[str, str] | None = None


_CURRENT: ContextVar[_Request | None] = ContextVar("flowplane_request", default=None)


def set_route(template: str) -> None:
    """The route template the router matched for the current request."""
    req = _CURRENT.get()
    if req is not None:
        req.route = template


def set_caller(token_id: str | None, teams: Iterable[str]) -> None:
    """The authenticated caller of the current request: its log fields from now on."""
    fields = context.caller_fields(token_id, teams)
    context.bind(**fields)
    req = _CURRENT.get()
    if req is not None:
        req.caller = fields


class ObservedRequests:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        request_id = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value
                break
        method = scope["method"] if scope["method"] in _METHODS else "other"
        if request_id is None:
            # unique, not secret: the PRNG, not a system call per request as uuid4 would make
            rid = format(random.getrandbits(128), "032x")
        elif _REQUEST_ID.fullmatch(request_id):
            rid = request_id.decode("ascii")
        else:
            err = BadRequest("X-Request-Id must be 1-128 visible ASCII characters")
            await _refuse(send, err)
            _observe(method, _Request(), err.status, time.perf_counter() - t0)
            return
        req = _Request()
        status = 500
        rid_header = rid.encode("ascii")

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid_header)]
            await send(message)

        # Plain set/reset rather than context managers: this runs for every request.
        req_token = _CURRENT.set(req)
        fields_token = context.push({"request_id": rid})
        try:
            if not tracing.enabled():
                try:
                    await self.app(scope, receive, observed_send)
                finally:
                    _observe(method, req, status, time.perf_counter() - t0)
                return
            with tracing.server_span(scope["headers"], method) as span:
                try:
                    await self.app(scope, receive, observed_send)
                finally:
                    if span is not None:
                        _finish_span(span, method, req.route, scope, status)
                    _observe(method, req, status, time.perf_counter() - t0)
        finally:
            context.pop(fields_token)
            _CURRENT.reset(req_token)


_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The (counter, histogram) children of a request's labels, looked up once: `labels()`
    takes a lock and builds a key per call, which the hottest endpoint would pay each time."""
    key = (method, route, status)
    found = _children.get(key)
    if found is None:
        found = _children[key] = (
            metrics.HTTP_REQUESTS.labels(method, route, str(status)),
            metrics.HTTP_SECONDS.labels(method, route),
        )
    return found


def _observe(method: str, req: _Request, status: int, seconds: float) -> None:
    count, latency = _series(method, req.route, status)
    count.inc()
    latency.observe(seconds)
    level = logging.DEBUG if method in ("GET", "HEAD") and status < 400 else logging.INFO
    if access_log.isEnabledFor(level):
        access_log.log(
            level, "%s %s -> %d", method, req.route, status,
            extra={"method": method, "route": req.route, "status": status,
                   "duration_ms": round(seconds * 1000, 3), **(req.caller or {})},
        )  # fmt: skip


def _finish_span(span: Any, method: str, route: str, scope: Scope, status: int) -> None:
    span.update_name(f"{method} {route}")
    span.set_attribute("http.request.method", method)
    span.set_attribute("http.route", route)
    span.set_attribute("url.path", scope["path"])
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        tracing.set_error(span, str(status))


async def _refuse(send: Send, err: BadRequest) -> None:
    body = json.dumps(err.to_json()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
