"""The read fast path: `GET /api/v1/native/{kind}/{name}` answered by the same service call as the
Quart route (`ResourceService.get`, which reads the committed in-memory state), in front of Quart.

Why: this is the hottest endpoint (pipelines and dashboards poll it) and Quart's per-request
machinery dominates its cost. Measured on the 2-core benchmark machine: a bare quart-trio app
answering a constant peaks at ~750 requests/s, while hypercorn-trio with a plain ASGI callable
reaches ~1,290/s (benchmarks/results/rest.md). Everything else — writes, lists, misses, errors,
docs — goes through Quart. The response is byte-identical to Quart's (the same cached JSON and
headers; tests/api/test_fastpath.py compares them), and `If-None-Match` gets a 304.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from flowplane.api.native import PATHS
from flowplane.auth.authenticator import Authenticator
from flowplane.domain.auth import Principal
from flowplane.errors import BadRequest, FlowplaneError, HeaderTooLarge
from flowplane.observability.asgi import set_caller, set_route
from flowplane.services.resources import ResourceService

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_KINDS = {path: kind for kind, path in PATHS.items()}
_ROUTES = {path: f"/api/v1/native/{path}/<name>" for path in _KINDS}  # as Quart's rules say
_PATH_RE = re.compile(r"^/api/v1/native/(" + "|".join(_KINDS) + r")/([^/]+)$")


MAX_HEAD_BYTES = 64 * 1024
"""Largest request head (request line and headers) served; larger ones get 431. hypercorn's
h11 limit alone lets heads up to ~128 KiB through (it reads 64 KiB at a time)."""


class FastReads:
    """The outermost ASGI layer: request-head limit and framing checks, the read fast path, then
    Quart.

    It also shields every `send` of the inner app from cancellation: quart-trio runs a request
    in a nursery that is already cancelled when the last body chunk is sent, and hypercorn closes
    the connection (Connection: close, keep-alive expiry) inside that send — unshielded, the
    close was cancelled at its first checkpoint and the socket leaked.
    """

    def __init__(
        self, app: ASGIApp, resources: ResourceService, authenticator: Authenticator
    ) -> None:
        self.app = app
        self.resources = resources
        self.authenticator = authenticator

    def _principal(self, scope: Scope, needed: str) -> Principal | None:
        """The caller if authenticated and allowed `needed`; None sends the request to Quart,
        whose identical checks produce the error response (and audit the failure)."""
        header = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        if header is None:
            return None
        try:
            client = scope.get("client")
            principal = self.authenticator.authenticate(
                header, f"{client[0]}:{client[1]}" if client else None, record=False
            )
            self.authenticator.authorize(principal, needed)
        except FlowplaneError:
            return None
        return principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = _refusal(scope)
            if refusal is not None:
                body = json.dumps(refusal.to_json()).encode()
                headers = [(b"content-type", b"application/json"),
                           (b"content-length", str(len(body)).encode()),
                           (b"connection", b"close")]  # fmt: skip
                # `Connection: close` makes hypercorn (h11) close once this response is sent,
                # with anything pipelined behind the request unanswered.
                await _drain(receive)
                await _send(send, refusal.status, headers, body)
                return
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            m = _PATH_RE.fullmatch(scope["path"])
            principal = None
            if m is not None:
                principal = self._principal(scope, _KINDS[m.group(1)].scope("read"))
            if principal is not None:
                assert m is not None
                # misses, other teams' resources and failures go to Quart (same checks, errors)
                try:
                    res = self.resources.get(principal, _KINDS[m.group(1)], m.group(2))
                except FlowplaneError:
                    res = None
                if res is not None:
                    set_route(_ROUTES[m.group(1)])
                    set_caller(principal.token_id, principal.teams)
                    etag = res.etag.encode()
                    for key, value in scope["headers"]:
                        if key == b"if-none-match" and etag in value.split(b", "):
                            await _send(send, 304, [(b"etag", etag)], b"")
                            return
                    body = res.json_bytes
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"etag", etag),
                    ]
                    await _send(send, 200, headers, body)
                    return
        await self.app(scope, receive, _shielded(send))


def _refusal(scope: Scope) -> FlowplaneError | None:
    """Why a request is refused before it reaches any route, if it is: a head past
    MAX_HEAD_BYTES (431), or framing that two HTTP parsers could read differently (400)."""
    size = (
        len(scope.get("raw_path") or b"")
        + len(scope["query_string"])
        + sum(len(k) + len(v) + 4 for k, v in scope["headers"])
    )
    if size > MAX_HEAD_BYTES:
        return HeaderTooLarge(f"the request head is larger than {MAX_HEAD_BYTES} bytes")
    names = {key.lower() for key, _ in scope["headers"]}
    if b"transfer-encoding" in names and b"content-length" in names:
        # RFC 9112 §6.3: a message with both "might indicate an attempt to perform request
        # smuggling"; h11 frames by Transfer-Encoding, a proxy in front may frame by
        # Content-Length and so pass a second request hidden in the body. The server "MUST
        # close the connection after responding to such a request": refused, then closed.
        return BadRequest(
            "a request with both Content-Length and Transfer-Encoding is refused "
            "(RFC 9112 section 6.3: ambiguous framing, a request smuggling pattern)"
        )
    return None


DRAIN_BYTES = MAX_HEAD_BYTES
DRAIN_SECONDS = 2.0


async def _drain(receive: Receive) -> None:
    """Let h11 finish reading a refused request's body (at most DRAIN_BYTES, DRAIN_SECONDS)
    before the answer. Answered mid-body with `Connection: close`, h11 then finds the rest of
    the client's bytes where it expects the end of the connection and hypercorn closes the
    socket while the answer is being written (trio's BusyResourceError): the answer was lost in
    about half the attempts (tests/e2e/test_security_e2e.py). A client that keeps sending past
    the bounds gets the answer at once, and still the closed connection."""
    seen = 0
    with trio.move_on_after(DRAIN_SECONDS):
        while seen <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return  # http.disconnect
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


SEND_SHIELD_SECONDS = 10.0
"""How long a shielded send may take: a client that stops reading cannot hold a request (and a
graceful shutdown) forever."""


def _shielded(send: Send) -> Send:
    async def shielded_send(message: MutableMapping[str, Any]) -> None:
        deadline = trio.current_time() + SEND_SHIELD_SECONDS
        with trio.CancelScope(shield=True, deadline=deadline):
            await send(message)

    return shielded_send


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
