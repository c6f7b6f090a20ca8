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
from flowplane.errors import FlowplaneError, HeaderTooLarge
from flowplane.services.resources import ResourceService

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_KINDS = {path: kind for kind, path in PATHS.items()}
_PATH_RE = re.compile(r"^/api/v1/native/(" + "|".join(_KINDS) + r")/([^/]+)$")


MAX_HEAD_BYTES = 64 * 1024
"""Largest request head (request line and headers) served; larger ones get 431. hypercorn's
h11 limit alone lets heads up to ~128 KiB through (it reads 64 KiB at a time)."""


class FastReads:
    """The outermost ASGI layer: request-head limit, the read fast path, then Quart.

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
            size = (
                len(scope.get("raw_path") or b"")
                + len(scope["query_string"])
                + sum(len(k) + len(v) + 4 for k, v in scope["headers"])
            )
            if size > MAX_HEAD_BYTES:
                err = HeaderTooLarge(f"the request head is larger than {MAX_HEAD_BYTES} bytes")
                body = json.dumps(err.to_json()).encode()
                headers = [(b"content-type", b"application/json"),
                           (b"content-length", str(len(body)).encode()),
                           (b"connection", b"close")]  # fmt: skip
                await _send(send, err.status, headers, body)
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
