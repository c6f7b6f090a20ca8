"""A tiny HTTP/1.1 upstream (trio + h11) for Envoy end-to-end tests.

Every request is answered `200` with body `"<name> <method> <path>"` and header
`x-upstream: <name>`, so a test can tell which upstream a request reached through Envoy.
Connections are kept alive (Envoy pools upstream connections); every request is recorded.

    async with run_upstream("alpha") as up:
        ...  # point an Envoy cluster at 127.0.0.1:up.port
        assert up.requests[-1].path == "/hello"
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h11
import trio

_MAX_RECV = 65536


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the upstream saw it. Header names are lower-case; repeated headers are
    joined with ", "."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Upstream:
    """An HTTP/1.1 server on 127.0.0.1; `port` is known once `serve` has started."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[ReceivedRequest] = field(default_factory=list)
    # path -> a JSON body served instead of the echo (e.g. a JWKS document for jwt_authn)
    documents: dict[str, bytes] = field(default_factory=dict)
    connections: int = 0  # connections accepted so far (shows keep-alive at work)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def serve(
        self, *, task_status: trio.TaskStatus[Upstream] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on `host` port 0 and serve until cancelled; `nursery.start` returns `self`
        with `port` set. Cancelling closes the listener and every open connection."""
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, self._handle, 0, host=self.host)
            listeners = await nursery.start(serve)
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while await self._one_exchange(conn, stream):
                    conn.start_next_cycle()
            except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                # A peer that sends garbage or resets the connection just loses it.
                return

    async def _one_exchange(self, conn: h11.Connection, stream: trio.SocketStream) -> bool:
        """Serve one request/response; False when the connection should end."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_MAX_RECV)
                conn.receive_data(data)  # b"" means EOF; h11 turns it into ConnectionClosed
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return False
        assert request is not None  # h11 always yields Request before EndOfMessage
        method = request.method.decode("ascii")
        path = request.target.decode("ascii", "replace")
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.headers:
            key, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.requests.append(ReceivedRequest(method, path, headers, bytes(body)))

        document = self.documents.get(path)
        payload = f"{self.name} {method} {path}".encode() if document is None else document
        response = h11.Response(
            status_code=200,
            headers=[
                ("content-type", "text/plain" if document is None else "application/json"),
                ("content-length", str(len(payload))),
                ("x-upstream", self.name),
            ],
        )
        out = conn.send(response) + (conn.send(h11.Data(data=payload)) or b"")
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(out)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


@asynccontextmanager
async def run_upstream(
    name: str, *, host: str = "127.0.0.1", documents: dict[str, bytes] | None = None
) -> AsyncIterator[Upstream]:
    """Run an `Upstream` called `name` for the duration of the block, then stop it (listener and
    open connections closed) even if the block raises or is cancelled. `documents` maps paths
    to JSON bodies served as they are."""
    upstream = Upstream(name=name, host=host, documents=dict(documents or {}))
    async with trio.open_nursery() as nursery:
        await nursery.start(upstream.serve)
        try:
            yield upstream
        finally:
            nursery.cancel_scope.cancel()
