"""The gRPC edge of ADS: grpclib handlers that *are* the stream actors (DESIGN.md §1, §8).

Each handler runs on the asyncio loop hosted by trio-asyncio. It owns one sans-I/O state machine
(`flowplane.xds.sotw.SotwStream`), feeds it the requests a reader task receives, and writes what
the machine says the stream is owed, from pre-encoded bytes, whenever a request arrives or the
hub publishes a snapshot. One reader task and one writer loop per stream: never two concurrent
senders. Every task it creates is cancelled and awaited before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream

from flowplane.auth.authenticator import Authenticator
from flowplane.errors import BadRequest, FlowplaneError, Forbidden, Unauthorized
from flowplane.grpc import compat
from flowplane.grpc.hub import Hub, StreamInfo
from flowplane.grpc.nacklog import NackLog
from flowplane.observability import metrics
from flowplane.observability.metrics import NO_TEAM, count_auth_failure
from flowplane.observability.xds import StreamObserver, refused
from flowplane.xds.delta import DeltaRequest, DeltaStream
from flowplane.xds.scope import release, retain, scope_from_node, scoped
from flowplane.xds.snapshot import Snapshot
from flowplane.xds.sotw import NameLimits, Outbound, Rejection, Request, SotwStream, TypeStatus

_SPIFFE_TEAM = re.compile(r"^spiffe://[^/]+/team/([a-z0-9]([a-z0-9.-]*[a-z0-9])?)$")

log = logging.getLogger(__name__)

SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService"


class BytesPassthroughCodec(ProtoCodec):
    """Protobuf codec that sends `bytes` as they are: responses are assembled from cached,
    pre-encoded resources (DESIGN.md §2: encode once, never per stream)."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, bytes | bytearray | memoryview):
            return bytes(message)
        return super().encode(message, message_type)


def _peer(stream: Stream[Any, Any]) -> str:
    try:
        addr = stream.peer.addr()
    except Exception:
        return "unknown"
    return f"{addr[0]}:{addr[1]}" if addr else "unknown"


class _Machine(Protocol):
    node_id: str | None

    def on_request(self, req: Any) -> bool: ...
    def outbound(self, snap: Snapshot) -> list[Outbound]: ...
    def status(self) -> dict[str, TypeStatus]: ...
    def versions(self) -> list[tuple[str, str | None, str | None, bool]]: ...


MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Largest request accepted (xds rule 19: set limits deliberately). 4 MiB is grpc-go's and
grpcio's default receive limit; Envoy's requests are far smaller (names and versions)."""


class RequestFramer:
    """gRPC request messages out of a stream's request bytes, as they arrive
    (`compat.deliver_requests`): each whole message is decoded and handed to `handle`; the first
    error, or the end of the stream, settles `done` and nothing after it is read.

    Refused, each ending the stream with its gRPC status (xds rule 19: limits set deliberately):
    a message whose length prefix exceeds `limit` (before its body is buffered; grpclib would
    read any size), a compressed message, and bytes that do not parse as the request type (a
    client's malformed message is its error, not a crash of the stream actor). An exception from
    `handle` settles `done` with it, so the stream's writer ends the stream as it would have.
    """

    __slots__ = ("_buf", "_handle", "_kind", "_limit", "done")

    def __init__(
        self, kind: Any, limit: int, handle: Callable[[Any], None], done: asyncio.Future[None]
    ) -> None:
        self._kind = kind
        self._limit = limit
        self._handle = handle
        self._buf = bytearray()
        self.done = done

    def feed(self, data: bytes | None) -> None:
        if self.done.done():
            return
        if data is None:
            self._settle(None)
            return
        buf = self._buf
        buf += data
        while len(buf) >= 5:
            compressed, length = _PREFIX.unpack_from(buf)
            if compressed:
                self._settle(
                    GRPCError(Status.UNIMPLEMENTED, "compressed requests are not supported")
                )
                return
            if length > self._limit:
                self._settle(GRPCError(Status.RESOURCE_EXHAUSTED,
                    f"request of {length} bytes exceeds the {self._limit}-byte limit"))  # fmt: skip
                return
            if len(buf) < 5 + length:
                return
            body = bytes(buf[5 : 5 + length])
            del buf[: 5 + length]
            try:
                msg = self._kind.FromString(body)
            except DecodeError:
                self._settle(BadRequest(
                    f"the request is not a valid {self._kind.DESCRIPTOR.full_name} protobuf message"
                ))  # fmt: skip
                return
            try:
                self._handle(msg)
            except Exception as err:  # the stream's own failure: its writer reports it
                self._settle(err)
                return

    def close(self) -> None:
        """Read nothing more. The stream's buffer keeps `feed` until grpclib drops the stream;
        dropping `handle` (a closure over the stream actor's state) breaks the cycle
        stream -> buffer -> framer -> handle -> stream, so that state is freed by reference
        counting when the stream ends, not at the next (rare, DESIGN.md §5) cycle collection."""
        self._handle = _ignore
        self._buf.clear()
        if not self.done.done():
            self.done.cancel()

    def _settle(self, err: BaseException | None) -> None:
        self._buf.clear()
        if err is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(err)


_PREFIX = struct.Struct(">BI")  # gRPC message prefix: compressed flag, length


def _ignore(msg: Any) -> None:
    pass


def _san_team(cert: dict[str, Any] | None) -> str | None:
    """The team named by a client certificate's SPIFFE-style URI SAN
    (`spiffe://<trust domain>/team/<team>`), if any."""
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind == "URI":
            m = _SPIFFE_TEAM.fullmatch(value)
            if m:
                return m.group(1)
    return None


def authorization(stream: Stream[Any, Any]) -> str | None:
    """The stream's `authorization` metadata (None if absent)."""
    header = stream.metadata.get("authorization") if stream.metadata else None
    return header if isinstance(header, str) else None


def token_identity(
    authenticator: Authenticator, header: str | None, peer: str
) -> tuple[str | None, bool, str | None]:
    """FLOWPLANE_XDS_AUTH=token: (team granted, whether a team is required, token id) for a
    stream's `authorization` metadata. Raises Unauthorized or Forbidden (the stream is refused).
    The core answers its xDS workers' questions with this too, so both refuse alike."""
    principal = authenticator.authenticate(header, peer)
    if not principal.has("xds:connect"):
        raise Forbidden("the token lacks the scope xds:connect")
    if not principal.teams and (principal.admin or "xds:all" in principal.scopes):
        # an admin token, or a token holding xds:all (minted only by an admin, for a
        # scope=all bootstrap; never with teams), may connect any node, as its metadata
        # says: a node without a team then receives every team's configuration
        return None, False, principal.token_id
    if len(principal.teams) != 1:
        raise Forbidden("a data-plane token must be bound to exactly one team")
    return next(iter(principal.teams)), True, principal.token_id


class NackSink(Protocol):
    """Where a stream's NACKs go (`NackLog` in-process; a report to the core in a worker)."""

    def nack(
        self, node: str, rejection: Rejection, fields: Mapping[str, object] | None = None
    ) -> None: ...
    def close(self, node: str) -> None: ...


class AdsService:
    """ADS over grpclib. `auth` is FLOWPLANE_XDS_AUTH: "none" trusts node metadata, "mtls"
    takes the team from the client certificate, "token" from a data-plane token (scope
    `xds:connect`) sent as `authorization: Bearer <jwt>` metadata."""

    def __init__(
        self,
        hub: Hub,
        *,
        auth: str = "none",
        authenticator: Authenticator | None = None,
        limits: NameLimits | None = None,
        nacks: NackSink | None = None,
    ) -> None:
        self.hub = hub
        self.limits = limits or NameLimits()
        self.auth = auth
        self.authenticator = authenticator
        # A client decides how often it NACKs: log per node, rate-limited (issue 11, item 12).
        # An xDS worker passes a sink that reports them to the core, which logs them so.
        self.nacks: NackSink = nacks if nacks is not None else NackLog(log)

    def __mapping__(self) -> dict[str, Handler]:
        return {
            f"{SERVICE}/StreamAggregatedResources": Handler(
                self.stream_sotw, Cardinality.STREAM_STREAM, DiscoveryRequest, DiscoveryResponse
            ),
            f"{SERVICE}/DeltaAggregatedResources": Handler(
                self.stream_delta,
                Cardinality.STREAM_STREAM,
                DeltaDiscoveryRequest,
                DeltaDiscoveryResponse,
            ),
        }

    async def stream_sotw(self, stream: Stream[Any, Any]) -> None:
        await self._serve(stream, "sotw", SotwStream(self.limits), Request.from_proto)

    async def stream_delta(self, stream: Stream[Any, Any]) -> None:
        await self._serve(stream, "delta", DeltaStream(self.limits), DeltaRequest.from_proto)

    async def _identify(self, stream: Stream[Any, Any]) -> tuple[str | None, bool, str | None]:
        """`_identity`; an xDS worker overrides it to ask the core (which holds the tokens)."""
        return self._identity(stream)

    def _still_valid(self, token_id: str) -> None:
        assert self.authenticator is not None
        tok = self.authenticator.auth.tokens.get(token_id)
        if tok is None or not tok.active_at(datetime.now(UTC)):
            raise Unauthorized("the data-plane token was revoked or has expired")

    def _identity(self, stream: Stream[Any, Any]) -> tuple[str | None, bool, str | None]:
        """(team granted by the stream's credentials, whether a team is required, token id)."""
        if self.auth == "mtls":
            team = _san_team(stream.peer.cert())
            if team is None:
                raise Forbidden("the client certificate names no team (URI SAN .../team/<team>)")
            return team, True, None
        if self.auth == "token":
            assert self.authenticator is not None
            return token_identity(self.authenticator, authorization(stream), _peer(stream))
        return None, False, None

    async def _serve(
        self,
        stream: Stream[Any, Any],
        protocol: str,
        state: _Machine,
        convert: Callable[[Any], Any],
    ) -> None:
        try:
            identity, required, token_id = await self._identify(stream)
        except FlowplaneError as err:  # refused before it is a node: never listed
            log.warning("xDS stream from %s refused: %s", _peer(stream), err,
                        extra={"protocol": protocol, "address": _peer(stream)})  # fmt: skip
            refused(protocol)
            count_auth_failure("xds", err)
            raise GRPCError(Status(err.grpc_status), err.message) from None
        wake = asyncio.Event()
        observed = StreamObserver(protocol, token_id)
        # The writer (the loop below) and `poke` share these: `parked` is True only while the
        # writer waits for `wake` (it is then between two sends, never inside one), `unsent`
        # holds responses `poke` took from the state machine but could not write at once.
        parked = False
        unsent: list[tuple[Snapshot, Outbound]] = []

        def poke() -> None:
            """The stream may owe responses (a new snapshot, a new subscription, a token change).

            Called on the loop, from the hub or the reader. While the writer is parked, what is
            owed is written here and now when grpclib can take it without waiting
            (`compat.send_message_now`): a push to 10,000 streams is then one pass over them,
            not 10,000 task wake-ups. Anything else — the writer busy, no node yet, a token to
            re-check, a full flow-control window — wakes the writer, which does it as before."""
            if not parked or info.scope is None:
                wake.set()
                return
            try:
                if token_id is not None:
                    self._still_valid(token_id)
                snap = self.hub.snapshot
                outs = state.outbound(scoped(snap, info.scope))
            except Exception:  # a revoked token, or a crash: the writer meets it again and ends
                wake.set()
                return
            for i, out in enumerate(outs):
                if not compat.send_message_now(stream, out.body):
                    # recorded as sent by the machine: the writer sends them
                    unsent.extend((snap, o) for o in outs[i:])
                    wake.set()
                    break
                observed.sent(snap, out.type_url, out.nonce, out.version)
            if outs:
                self.hub.changed(info)  # versions sent: the status report is due

        info = self.hub.register(protocol, _peer(stream), state, poke)
        ended = "closed"  # how the stream ended, for flowplane_xds_stream_ends_total
        reader: asyncio.Future[None] | None = None
        try:
            reader = asyncio.ensure_future(
                self._read(stream, state, info, wake, poke, convert, identity, required, observed)
            )
            while True:
                wake.clear()
                if token_id is not None:
                    self._still_valid(token_id)  # a revoked or expired token ends the stream
                while unsent:  # what `poke` could not write, in order, before anything newer
                    built, out = unsent.pop(0)
                    await stream.send_message(out.body)
                    observed.sent(built, out.type_url, out.nonce, out.version)
                snap = self.hub.snapshot
                if info.scope is not None:  # known once the first request (with node) arrived
                    sent = False
                    for out in state.outbound(scoped(snap, info.scope)):
                        await stream.send_message(out.body)
                        observed.sent(snap, out.type_url, out.nonce, out.version)
                        sent = True
                    if sent:
                        self.hub.changed(info)  # versions sent: the status report is due
                if reader.done():
                    break
                parked = True
                try:
                    await wake.wait()
                finally:
                    parked = False
            reader.result()  # re-raise what ended the reader (None on a clean end of stream)
        except (StreamTerminatedError, ConnectionError):
            raise
        except asyncio.CancelledError:
            ended = "shutdown"
            raise
        except FlowplaneError as err:
            ended = "refused"
            log.warning("xDS stream from %s (node %s) refused: %s", info.address, info.node_id, err,
                        extra=_fields(info, token_id))  # fmt: skip
            raise GRPCError(Status(err.grpc_status), err.message) from None
        except GRPCError:
            ended = "refused"
            raise
        except Exception:
            ended = "error"
            # grpclib would turn this into a silent UNKNOWN: log it, end this stream only.
            log.exception("xDS stream actor crashed (node %s, %s)", info.node_id, info.address)
            metrics.XDS_STREAM_CRASHES.inc()
            raise GRPCError(Status.INTERNAL, "internal error in the control plane") from None
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            self.hub.unregister(info)
            if info.scope is not None:
                release(info.scope)  # the scope's cached view goes with its last stream
                log.info(
                    "xDS %s stream %d disconnected: node %s from %s",
                    info.protocol, info.stream_id, info.node_id, info.address,
                    extra=_fields(info, token_id),
                )  # fmt: skip
            self.nacks.close(_log_key(info))
            observed.closed(ended)

    async def _read(
        self,
        stream: Stream[Any, Any],
        state: _Machine,
        info: StreamInfo,
        wake: asyncio.Event,
        poke: Callable[[], None],
        convert: Callable[[Any], Any],
        identity: str | None,
        required: bool,
        observed: StreamObserver,
    ) -> None:
        def handle(msg: Any) -> None:
            if info.scope is None:
                # xds rule 2: the node is on the first request; scope is fixed from it.
                node = msg.node if msg.HasField("node") else None
                info.node_metadata = (
                    MessageToDict(node.metadata)
                    if node is not None and node.HasField("metadata") else {}
                )  # fmt: skip
                info.scope = scope_from_node(
                    node.id if node is not None else None, info.node_metadata,
                    identity_team=identity, auth_required=required,
                )  # fmt: skip
                retain(info.scope)  # released when the stream ends (`_serve`)
                node_id = node.id if node is not None else None
                observed.identified(node_id, info.team)
                log.info(
                    "xDS %s stream %d connected: node %s (team %s) from %s",
                    info.protocol, info.stream_id, node_id, info.team, info.address,
                    extra={**_fields(info, observed.token_id), "node": node_id},
                )  # fmt: skip
            owes = state.on_request(convert(msg))
            self.hub.changed(info)  # an ACK, a NACK or a new subscription
            nack = msg.HasField("error_detail")
            observed.received(msg.type_url, msg.response_nonce, nack)
            if nack:  # only a NACK can record a rejection
                self._note_rejections(info, observed.token_id)
            if owes:  # a plain ACK owes nothing: no writer wake-up (half the work per push)
                poke()

        # Each request is handled as it arrives, inside the connection's data_received (no
        # task wake-up per ACK); this task only waits for the end of the stream.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        framer = RequestFramer(compat.request_type(stream), MAX_REQUEST_BYTES, handle, done)
        try:
            compat.deliver_requests(stream, framer.feed)
            await done
        finally:
            framer.close()
            wake.set()  # let the writer see that the reader is done

    def _note_rejections(self, info: StreamInfo, token_id: str | None) -> None:
        for type_url, st in info.state.status().items():
            rej = st.last_rejection
            if rej is not None and info.note_rejection(rej):
                metrics.XDS_NACKS.labels(_short(type_url), info.team or NO_TEAM).inc()
                self.nacks.nack(_log_key(info), rej, _fields(info, token_id))


def _log_key(info: StreamInfo) -> str:
    """Whom the NACK log names: the node, or the peer address of a stream without a node id."""
    return info.node_id or info.address


def _fields(info: StreamInfo, token_id: str | None) -> dict[str, Any]:
    """The structured log fields of a stream's events (README "Observability")."""
    out = {"protocol": info.protocol, "stream_id": info.stream_id, "node": info.node_id,
           "team": info.team, "address": info.address, "token_id": token_id}  # fmt: skip
    return {k: v for k, v in out.items() if v is not None}


def _short(type_url: str) -> str:
    return type_url.rpartition(".")[2]
