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
from typing import Any

from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from google.protobuf.json_format import MessageToDict
from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream

from flowplane.errors import FlowplaneError
from flowplane.grpc.hub import Hub, StreamInfo
from flowplane.observability import metrics
from flowplane.xds.sotw import Request, SotwStream

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


class AdsService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

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

    async def stream_delta(self, stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "delta xDS is not served yet; use GRPC (SotW)")

    async def stream_sotw(self, stream: Stream[DiscoveryRequest, Any]) -> None:
        state = SotwStream()
        wake = asyncio.Event()
        info = self.hub.register("sotw", _peer(stream), state, wake)
        metrics.XDS_STREAMS.labels("sotw").inc()
        reader = asyncio.ensure_future(self._read_sotw(stream, state, info, wake))
        try:
            while True:
                wake.clear()
                for out in state.outbound(self.hub.snapshot):
                    await stream.send_message(out.body)
                    metrics.XDS_RESPONSES.labels("sotw", _short(out.type_url)).inc()
                if reader.done():
                    break
                await wake.wait()
            reader.result()  # re-raise what ended the reader (None on a clean end of stream)
        except (StreamTerminatedError, ConnectionError, asyncio.CancelledError):
            raise
        except FlowplaneError as err:
            log.warning("xDS stream from %s (node %s) refused: %s", info.address, info.node_id, err)
            raise GRPCError(Status(err.grpc_status), err.message) from None
        except GRPCError:
            raise
        except Exception:
            # grpclib would turn this into a silent UNKNOWN: log it, end this stream only.
            log.exception("xDS stream actor crashed (node %s, %s)", info.node_id, info.address)
            metrics.XDS_STREAM_CRASHES.inc()
            raise GRPCError(Status.INTERNAL, "internal error in the control plane") from None
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            self.hub.unregister(info)
            metrics.XDS_STREAMS.labels("sotw").dec()

    async def _read_sotw(
        self, stream: Stream[DiscoveryRequest, Any], state: SotwStream, info: StreamInfo,
        wake: asyncio.Event,
    ) -> None:  # fmt: skip
        try:
            while True:
                msg = await stream.recv_message()
                if msg is None:
                    return
                if msg.HasField("node") and not info.node_metadata:
                    info.node_metadata = (
                        MessageToDict(msg.node.metadata) if msg.node.HasField("metadata") else {}
                    )
                state.on_request(Request.from_proto(msg))
                self._note_rejections(info)
                wake.set()
        finally:
            wake.set()  # let the writer see that the reader is done

    def _note_rejections(self, info: StreamInfo) -> None:
        for type_url, st in info.state.status().items():
            rej = st.last_rejection
            if rej is not None and info.note_rejection(rej):
                metrics.XDS_NACKS.labels(_short(type_url)).inc()
                log.warning(
                    "node %s rejected %s version %s (%s): %s",
                    info.node_id, _short(type_url), rej.version,
                    ", ".join(rej.resource_names) or "-", rej.message,
                )  # fmt: skip


def _short(type_url: str) -> str:
    return type_url.rpartition(".")[2]
