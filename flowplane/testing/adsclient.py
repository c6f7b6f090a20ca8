"""A scripted ADS client for tests, driven from trio over real gRPC (grpclib).

grpclib is asyncio-only, so the connection lives on the asyncio loop that trio-asyncio runs
(`run_plane` opens it); every call here hops over with `trio_asyncio.aio_as_trio`. A background
asyncio task reads responses into a buffer; `recv()` takes them in order. The reader is cancelled
and awaited when the client closes (under trio-asyncio a pending asyncio task at loop close is
fatal).

    async with sotw_client("127.0.0.1", plane.xds_port, node_id="team=a/dp-1") as c:
        await c.send(CLUSTER_TYPE)                      # the first request carries the node
        resp = await c.recv()                           # raises TimeoutError / AdsStreamEnded
        await c.ack(resp)
        await c.expect_quiet(0.3)                       # nothing may arrive meanwhile

`delta_client` is the same over `DeltaAggregatedResources`.

Flow control: the client uses grpclib's defaults (no message size limit; 4 MiB HTTP/2 stream and
connection windows). `pause_reading()` stops consuming, so the server's writes block once the
window is full: that is how a slow Envoy looks to the server (xds rule 17).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import trio
import trio_asyncio
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from google.protobuf import any_pb2
from google.protobuf.json_format import ParseDict
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpclib.client import Channel
from grpclib.client import Stream as ClientStream
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE

__all__ = [
    "AdsStreamEnded",
    "DeltaClient",
    "SotwClient",
    "StreamEnd",
    "decode",
    "delta_client",
    "resource_names",
    "sotw_client",
]

SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService"
SOTW_METHOD = f"{SERVICE}/StreamAggregatedResources"
DELTA_METHOD = f"{SERVICE}/DeltaAggregatedResources"

MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER_TYPE: cluster_pb2.Cluster,
    ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    LISTENER_TYPE: listener_pb2.Listener,
    ROUTE_TYPE: route_pb2.RouteConfiguration,
}

ReqT = TypeVar("ReqT", DiscoveryRequest, DeltaDiscoveryRequest)
RespT = TypeVar("RespT", DiscoveryResponse, DeltaDiscoveryResponse)


@dataclass(frozen=True)
class StreamEnd:
    """How the server ended the stream: its gRPC status (None if the connection was lost before
    any status arrived) and message."""

    status: Status | None
    message: str | None = None

    def __str__(self) -> str:
        name = self.status.name if self.status is not None else "no status (connection lost)"
        return f"{name}: {self.message}" if self.message else name


class AdsStreamEnded(Exception):
    """`recv()` found the stream ended by the server (and nothing more buffered)."""

    def __init__(self, end: StreamEnd) -> None:
        super().__init__(f"the server ended the ADS stream: {end}")
        self.end = end


def decode(any_msg: any_pb2.Any) -> Message:
    """The resource inside `any_msg` (a known xDS type)."""
    cls = MESSAGE_TYPES.get(any_msg.type_url)
    if cls is None:
        raise ValueError(f"unknown resource type {any_msg.type_url!r}")
    msg = cls()
    if not any_msg.Unpack(msg):
        raise ValueError(f"could not unpack {any_msg.type_url!r}")
    return msg


def _name_of(any_msg: any_pb2.Any) -> str:
    msg = decode(any_msg)
    if isinstance(msg, endpoint_pb2.ClusterLoadAssignment):
        return str(msg.cluster_name)
    return str(getattr(msg, "name"))  # noqa: B009 - Cluster, Listener, RouteConfiguration


def resource_names(resp: DiscoveryResponse | DeltaDiscoveryResponse) -> list[str]:
    """Names of the resources a response carries, in order."""
    if isinstance(resp, DeltaDiscoveryResponse):
        return [r.name for r in resp.resources]
    return [_name_of(a) for a in resp.resources]


class _Conn(Generic[ReqT, RespT]):
    """The asyncio side of one ADS stream: a channel, the stream and its reader task.

    Every method runs on the asyncio loop (the trio-side wrappers call them via aio_as_trio).
    """

    def __init__(
        self,
        host: str,
        port: int,
        method: str,
        req: type[ReqT],
        resp: type[RespT],
        metadata: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ):
        self.host, self.port, self.method = host, port, method
        self.metadata, self.tls = metadata, tls
        self.req_type, self.resp_type = req, resp
        self.channel: Channel | None = None
        self.stream: ClientStream[ReqT, RespT] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.buffer: collections.deque[RespT] = collections.deque()
        self.arrived = asyncio.Event()  # set on every response and at the end of the stream
        self.reading = asyncio.Event()  # cleared = paused (the client stops consuming)
        self.reading.set()
        self.end: StreamEnd | None = None
        self.received = 0
        self._half_closed = False

    async def open(self) -> None:
        self.channel = Channel(self.host, self.port, ssl=self.tls)
        stream: ClientStream[ReqT, RespT] = self.channel.request(
            self.method,
            Cardinality.STREAM_STREAM,
            self.req_type,
            self.resp_type,
            metadata=self.metadata,
        )
        self.stream = await stream.__aenter__()
        try:
            await self.stream.send_request()
        except BaseException:
            await self.dispose()
            raise
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.stream is not None
        stream = self.stream
        try:
            while True:
                await self.reading.wait()
                msg = await stream.recv_message()
                if msg is None:
                    self.end = _status_of(stream) or StreamEnd(None, "ended without a status")
                    return
                self.buffer.append(msg)
                self.received += 1
                self.arrived.set()
        except GRPCError as err:
            self.end = StreamEnd(err.status, err.message)
        except (StreamTerminatedError, ConnectionError) as err:
            self.end = _status_of(stream) or StreamEnd(None, str(err) or type(err).__name__)
        finally:
            self.arrived.set()

    async def send(self, msg: ReqT) -> None:
        """Send `msg`; raises `AdsStreamEnded` if the server has ended the stream."""
        assert self.stream is not None
        assert self.reader is not None
        if self.end is not None:
            raise AdsStreamEnded(self.end)
        try:
            await self.stream.send_message(msg)
        except (StreamTerminatedError, ConnectionError):
            # The server ended (and reset) the stream: report the status the reader got.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.reader), 1.0)
            if self.end is not None:
                raise AdsStreamEnded(self.end) from None
            raise

    async def wait_arrival(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.arrived.wait(), seconds)

    async def half_close(self, grace: float) -> StreamEnd | None:
        """End our side and wait up to `grace` seconds for the server to end the stream."""
        assert self.stream is not None
        assert self.reader is not None
        if self.end is None and not self._half_closed:
            self._half_closed = True
            with contextlib.suppress(Exception):  # the server may have reset the stream
                await self.stream.end()
        self.reading.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.reader), grace)
        return self.end

    async def dispose(self) -> None:
        """Cancel and await the reader, reset the stream if still open, close the channel."""
        stream, self.stream = self.stream, None
        try:
            if self.reader is not None:
                self.reader.cancel()
                with contextlib.suppress(BaseException):
                    await self.reader
            if stream is not None:
                if self.end is None:
                    with contextlib.suppress(Exception):
                        await stream.cancel()  # RST_STREAM: the server sees the client go away
                # Exit as after an error: grpclib then skips waiting for trailers (the reader
                # has them, or the stream was reset) and only releases the stream.
                with contextlib.suppress(Exception):
                    await stream.__aexit__(_Disposed, _Disposed(), None)
        finally:
            if self.channel is not None:
                self.channel.close()
                await asyncio.sleep(0)  # let the transport finish closing


class _Disposed(Exception):
    pass


def _status_of(stream: ClientStream[Any, Any]) -> StreamEnd | None:
    """The gRPC status the server sent, from its trailers (or a trailers-only response), or None.

    grpclib exposes trailers only once our side has ended the stream (recv_trailing_metadata),
    and a reset that follows the status masks it as StreamTerminatedError; so read the status
    from the underlying HTTP/2 stream, as grpclib's own `Stream.__aexit__` does.
    """
    h2 = stream._stream
    for headers in (h2.trailers, h2.headers):
        if headers is None:
            continue
        found = dict(headers)
        if "grpc-status" not in found:
            continue
        try:
            status, message, _ = stream._process_grpc_status(found)
        except GRPCError as err:
            return StreamEnd(err.status, err.message)
        return StreamEnd(status, message)
    return None


class _Client(Generic[ReqT, RespT]):
    """The trio side, shared by the SotW and delta clients."""

    def __init__(self, conn: _Conn[ReqT, RespT], node_id: str | None, node_metadata: Any):
        self._conn = conn
        self.node_id = node_id
        self.node_metadata: Mapping[str, Any] | None = node_metadata
        self.sent = 0  # requests sent so far
        self.responses: list[RespT] = []  # every response taken by recv(), in order

    # -- requests -------------------------------------------------------------------------------

    def _node(self, node_id: str | None) -> base_pb2.Node | None:
        """The node for the next request: an explicit `node_id` always, else the client's node on
        the first request only (as gRPC's xDS client does; xds rule 2)."""
        if node_id is None:
            if self.sent or self.node_id is None:
                return None
            node_id = self.node_id
        node = base_pb2.Node(id=node_id)
        if self.node_metadata:
            ParseDict(dict(self.node_metadata), node.metadata)
        return node

    async def _send(self, msg: ReqT, node_id: str | None = None, error: str | None = None) -> None:
        """Send `msg` with the node this request carries (see `_node`) and, for a NACK, the
        `error_detail` (both request types have the same `node` and `error_detail` fields)."""
        node = self._node(node_id)
        if node is not None:
            msg.node.CopyFrom(node)
        err = _error(error)
        if err is not None:
            msg.error_detail.CopyFrom(err)
        await trio_asyncio.aio_as_trio(self._conn.send)(msg)
        self.sent += 1

    # -- responses ------------------------------------------------------------------------------

    async def recv(self, timeout: float = 5) -> RespT:  # noqa: ASYNC109 -- a test-script deadline
        """The next response. Raises `TimeoutError` if none arrives within `timeout` seconds and
        `AdsStreamEnded` if the server ended the stream (after everything buffered is taken)."""
        conn = self._conn
        deadline = trio.current_time() + timeout
        while True:
            if conn.buffer:
                resp = conn.buffer.popleft()
                self.responses.append(resp)
                return resp
            if conn.end is not None:
                raise AdsStreamEnded(conn.end)
            left = deadline - trio.current_time()
            if left <= 0:
                raise TimeoutError(f"no response within {timeout} s")
            conn.arrived.clear()
            await trio_asyncio.aio_as_trio(conn.wait_arrival)(left)

    async def recv_many(
        self,
        count: int,
        timeout: float = 5,  # noqa: ASYNC109 -- as recv
    ) -> list[RespT]:
        return [await self.recv(timeout) for _ in range(count)]

    async def expect_quiet(self, seconds: float = 0.3) -> None:
        """Assert that no response arrives (and the stream stays open) for `seconds`."""
        conn = self._conn
        deadline = trio.current_time() + seconds
        while True:
            if conn.buffer:
                raise AssertionError(f"expected no response, got {_summary(conn.buffer[0])}")
            if conn.end is not None:
                raise AssertionError(f"expected a quiet stream, it ended: {conn.end}")
            left = deadline - trio.current_time()
            if left <= 0:
                return
            conn.arrived.clear()
            await trio_asyncio.aio_as_trio(conn.wait_arrival)(left)

    def pause_reading(self) -> None:
        """Stop consuming the stream: unread data is not acknowledged (HTTP/2 flow control), so
        the server's writes block once the window is full — a slow client. A response the
        reader was already receiving is still taken."""
        self._conn.reading.clear()

    def resume_reading(self) -> None:
        self._conn.reading.set()

    @property
    def buffered(self) -> int:
        """Responses received but not yet taken by `recv()`."""
        return len(self._conn.buffer)

    @property
    def end(self) -> StreamEnd | None:
        """How the server ended the stream, or None while it is open."""
        return self._conn.end

    async def wait_end(self, timeout: float = 5) -> StreamEnd:  # noqa: ASYNC109 -- as recv
        """Wait until the server ends the stream (without ending ours); buffered responses stay
        available to `recv()`. Raises `TimeoutError`."""
        conn = self._conn
        with trio.move_on_after(timeout):
            while conn.end is None:
                conn.arrived.clear()
                await trio_asyncio.aio_as_trio(conn.wait_arrival)(timeout)
        if conn.end is None:
            raise TimeoutError(f"the stream did not end within {timeout} s")
        return conn.end

    async def close(self, timeout: float = 5) -> StreamEnd:  # noqa: ASYNC109 -- as recv
        """End our side of the stream cleanly (END_STREAM) and wait for the server's status."""
        end: StreamEnd | None = await trio_asyncio.aio_as_trio(self._conn.half_close)(timeout)
        if end is None:
            raise TimeoutError(f"the server did not end the stream within {timeout} s")
        return end


def _summary(resp: DiscoveryResponse | DeltaDiscoveryResponse) -> str:
    if isinstance(resp, DeltaDiscoveryResponse):
        return (
            f"DeltaDiscoveryResponse(type={resp.type_url}, nonce={resp.nonce!r}, "
            f"resources={resource_names(resp)}, removed={list(resp.removed_resources)})"
        )
    return (
        f"DiscoveryResponse(type={resp.type_url}, version={resp.version_info!r}, "
        f"nonce={resp.nonce!r}, {len(resp.resources)} resources)"
    )


def _error(message: str | None, code: int = 3) -> status_pb2.Status | None:
    return None if message is None else status_pb2.Status(code=code, message=message)


class SotwClient(_Client[DiscoveryRequest, DiscoveryResponse]):
    """A state-of-the-world ADS stream (`StreamAggregatedResources`)."""

    async def send(
        self,
        type_url: str,
        names: Iterable[str] = (),
        version: str = "",
        nonce: str = "",
        node_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """One DiscoveryRequest. `names` is the full desired set (xds rule 9); `error` makes it a
        NACK (error_detail, code INVALID_ARGUMENT). The node goes on the first request only
        unless `node_id` is given."""
        msg = DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version,
            response_nonce=nonce,
        )
        await self._send(msg, node_id, error)

    async def ack(self, resp: DiscoveryResponse, names: Iterable[str] | None = None) -> None:
        """ACK `resp`: echo its version and nonce, keep the subscription (`names`, if given, else
        the names it carried for a named type, [] for a full-state one)."""
        await self.send(resp.type_url, self._names(resp, names), resp.version_info, resp.nonce)

    async def nack(
        self,
        resp: DiscoveryResponse,
        message: str,
        *,
        version: str = "",
        names: Iterable[str] | None = None,
    ) -> None:
        """NACK `resp`: its nonce, `error_detail` = `message`, `version` = the last good version
        the client holds (default "")."""
        await self.send(resp.type_url, self._names(resp, names), version, resp.nonce, error=message)

    @staticmethod
    def _names(resp: DiscoveryResponse, names: Iterable[str] | None) -> list[str]:
        if names is not None:
            return list(names)
        if resp.type_url in (CLUSTER_TYPE, LISTENER_TYPE):
            return []
        return resource_names(resp)


class DeltaClient(_Client[DeltaDiscoveryRequest, DeltaDiscoveryResponse]):
    """An incremental ADS stream (`DeltaAggregatedResources`)."""

    async def send(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        nonce: str = "",
        initial_versions: Mapping[str, str] | None = None,
        node_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """One DeltaDiscoveryRequest; `error` makes it a NACK of `nonce`."""
        msg = DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=dict(initial_versions or {}),
        )
        await self._send(msg, node_id, error)

    async def ack(self, resp: DeltaDiscoveryResponse) -> None:
        await self.send(resp.type_url, nonce=resp.nonce)

    async def nack(self, resp: DeltaDiscoveryResponse, message: str) -> None:
        await self.send(resp.type_url, nonce=resp.nonce, error=message)


C = TypeVar("C", SotwClient, DeltaClient)


@asynccontextmanager
async def _open(
    make: Callable[[_Conn[Any, Any]], C],
    host: str,
    port: int,
    method: str,
    req: type[Any],
    resp: type[Any],
    metadata: Mapping[str, str] | None,
    tls: ssl.SSLContext | None,
) -> AsyncIterator[C]:
    conn: _Conn[Any, Any] = _Conn(host, port, method, req, resp, metadata, tls)
    await trio_asyncio.aio_as_trio(conn.open)()
    try:
        yield make(conn)
    finally:
        # Shielded: the asyncio side must be cleaned up even when the test is being cancelled
        # (a pending asyncio task at loop close is fatal); bounded so a stuck server cannot hang
        # the test.
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            if conn.end is None:
                await trio_asyncio.aio_as_trio(conn.half_close)(1.0)
            await trio_asyncio.aio_as_trio(conn.dispose)()


def sotw_client(
    host: str,
    port: int,
    *,
    node_id: str | None = "conformance",
    node_metadata: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> contextlib.AbstractAsyncContextManager[SotwClient]:
    """Open a SotW ADS stream to `host:port` (on the running trio-asyncio loop).

    `metadata` is sent as the stream's gRPC request metadata (e.g. `{"authorization": "Bearer
    <data-plane token>"}`); `tls` makes the connection TLS (with a client certificate for mTLS;
    the context must offer ALPN "h2").

    On exit our side is ended cleanly (the server then ends the stream), the reader task is
    cancelled and awaited and the channel closed.
    """
    return _open(
        lambda conn: SotwClient(conn, node_id, node_metadata),
        host, port, SOTW_METHOD, DiscoveryRequest, DiscoveryResponse, metadata, tls,
    )  # fmt: skip


def delta_client(
    host: str,
    port: int,
    *,
    node_id: str | None = "conformance",
    node_metadata: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> contextlib.AbstractAsyncContextManager[DeltaClient]:
    """Open a delta ADS stream to `host:port`; otherwise like `sotw_client`."""
    return _open(
        lambda conn: DeltaClient(conn, node_id, node_metadata),
        host, port, DELTA_METHOD, DeltaDiscoveryRequest, DeltaDiscoveryResponse, metadata, tls,
    )  # fmt: skip
