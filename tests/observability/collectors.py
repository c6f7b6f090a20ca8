"""Trace collectors written for the tests, from the published protocol definitions:

- `otlp_http_collector`: OTLP/HTTP, `POST /v1/traces` with an `ExportTraceServiceRequest`
  protobuf body (opentelemetry-proto), answered with an `ExportTraceServiceResponse`;
- `otlp_grpc_collector`: OTLP/gRPC, `opentelemetry.proto.collector.trace.v1.TraceService/Export`
  served by grpclib (on the trio-asyncio loop the caller opened);
- `zipkin_collector`: Zipkin's HTTP API v2, `POST /api/v2/spans` with a JSON list of spans.

The HTTP ones are plain ASGI callables served by hypercorn on loopback. Each collector keeps
what it received as `Span`s (one shape for all three), and `wait_for` waits, under a deadline,
until a predicate holds over them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_asyncio
from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream
from hypercorn.config import Config
from hypercorn.trio import serve
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from flowplane.grpc import compat

Scope = MutableMapping[str, Any]


@dataclass(frozen=True)
class Span:
    """One received span: ids in lowercase hex ("" for no parent), name, attributes/tags as
    strings, and the service that sent it."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, str]
    service: str
    kind: str = ""


@dataclass
class Collector:
    port: int = 0
    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    def add(self, spans: list[Span]) -> None:
        self.requests += 1
        self.spans.extend(spans)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(
        self,
        predicate: Callable[[list[Span]], bool],
        seconds: float = 15,
    ) -> list[Span]:
        """The spans once `predicate(spans)` holds; AssertionError (with what did arrive)
        after `seconds`."""
        with trio.move_on_after(seconds):
            while not predicate(self.spans):
                await self._changed.wait()
            return self.spans
        raise AssertionError(f"after {seconds} s, {self.requests} exports: {self.spans}")


def _value(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    return "" if kind is None else str(getattr(v, kind))


def spans_of(request: ExportTraceServiceRequest) -> list[Span]:
    out = []
    for rs in request.resource_spans:
        service = next(
            (_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), ""
        )
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    Span(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        name=s.name,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        service=service,
                        kind=str(s.kind),
                    )
                )
    return out


async def _read_body(receive: Callable[[], Any]) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _respond(send: Callable[[Any], Any], status: int, ctype: bytes, body: bytes) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_lifespan(app: Any) -> Any:
    """`app`, answering hypercorn's lifespan messages (start-up and shutdown complete)."""

    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rpartition(".")[2]  # startup | shutdown
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await app(scope, receive, send)

    return wrapped


@asynccontextmanager
async def _serve_http(app: Any) -> AsyncIterator[int]:
    app = _with_lifespan(app)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(
                app, config, shutdown_trigger=shutdown.wait, task_status=task_status
            )
        )
        try:
            yield int(binds[0].rpartition(":")[2])
        finally:
            shutdown.set()


@asynccontextmanager
async def _http_collector(
    path: str, decode: Callable[[bytes], list[Span]], status: int, ctype: bytes, reply: bytes
) -> AsyncIterator[Collector]:
    """A collector answering `POST path` (body decoded by `decode`) on 127.0.0.1."""
    collector = Collector()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        body = await _read_body(receive)
        if scope["method"] != "POST" or scope["path"] != path:
            await _respond(send, 404, b"text/plain", b"not found")
            return
        collector.add(decode(body))
        await _respond(send, status, ctype, reply)

    async with _serve_http(app) as port:
        collector.port = port
        yield collector


def otlp_http_collector() -> AbstractAsyncContextManager[Collector]:
    """An OTLP/HTTP receiver on 127.0.0.1 (any free port): `POST /v1/traces`, protobuf."""
    return _http_collector(
        "/v1/traces", lambda body: spans_of(ExportTraceServiceRequest.FromString(body)),
        200, b"application/x-protobuf", ExportTraceServiceResponse().SerializeToString(),
    )  # fmt: skip


def _zipkin_spans(body: bytes) -> list[Span]:
    return [
        Span(
            trace_id=s["traceId"],
            span_id=s["id"],
            parent_id=s.get("parentId", ""),
            name=s.get("name", ""),
            attributes={k: str(v) for k, v in s.get("tags", {}).items()},
            service=s.get("localEndpoint", {}).get("serviceName", ""),
            kind=s.get("kind", ""),
        )
        for s in json.loads(body)
    ]


def zipkin_collector() -> AbstractAsyncContextManager[Collector]:
    """A Zipkin v2 receiver on 127.0.0.1 (any free port): `POST /api/v2/spans`, JSON."""
    return _http_collector("/api/v2/spans", _zipkin_spans, 202, b"application/json", b"")


class _TraceService:
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def export(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        # trio-asyncio runs this loop in trio's thread: the collector's trio.Event can be set
        self.collector.add(spans_of(request))
        await stream.send_message(ExportTraceServiceResponse())

    def __mapping__(self) -> dict[str, Handler]:
        return {
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export": Handler(
                self.export,
                Cardinality.UNARY_UNARY,
                ExportTraceServiceRequest,
                ExportTraceServiceResponse,
            )
        }


@asynccontextmanager
async def otlp_grpc_collector() -> AsyncIterator[Collector]:
    """An OTLP/gRPC receiver on 127.0.0.1 (any free port), served by grpclib on the running
    trio-asyncio loop."""
    collector = Collector()
    server = Server([_TraceService(collector)])
    await trio_asyncio.aio_as_trio(server.start)("127.0.0.1", 0)
    try:
        sockets = compat.bound_sockets(server)
        collector.port = sockets[0].getsockname()[1]
        yield collector
    finally:
        server.close()
        await trio_asyncio.aio_as_trio(server.wait_closed)()
