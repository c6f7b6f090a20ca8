"""Every use Flowplane makes of third-party internals, in one place (issue 9).

grpclib has no public API for four things the xDS edge needs (a request size limit checked
before the body is read, the connections a server holds, the port it bound, keepalive settings),
its general per-message path costs what a push to 10,000 streams cannot afford (issue 14:
`send_message_now` writes a DATA frame directly when nothing has to wait, `deliver_requests`
hands request bytes over as they arrive instead of through a queue and a task), and
trio-asyncio's main loop costs a trio checkpoint per asyncio callback (`flowplane.grpc.loop`
replaces it). Each such access is a small named function here, written against the versions
pinned in pyproject.toml: grpclib==0.4.9, h2==4.4.1 (grpclib's HTTP/2) and trio-asyncio==0.16.0.
The rest of `flowplane/grpc` calls these functions and never touches an underscored attribute
itself.

`INTERNALS` lists every attribute relied on, by owner; `tests/grpc/test_compat.py` checks each
one on real objects of the installed versions, so an upgrade that drops or renames one fails
that test (naming the attribute), not a production stream. Keep the table in step with the code.

The trio-asyncio patch is installed by `install_batched_loop()`, which `XdsServer.start()` calls
(and `flowplane serve` before its nursery opens): importing a module never patches anything. It
refuses any trio-asyncio but the version it was written for, since the patch is a copy of that
version's `_main_loop_one`.
"""

from __future__ import annotations

import contextlib
import struct
import time
import weakref
from collections.abc import Callable
from importlib import metadata
from socket import socket
from typing import Any, Final

from grpclib.config import Configuration
from grpclib.protocol import Buffer, H2Protocol
from grpclib.server import Server, Stream
from h2.connection import ConnectionState
from h2.stream import StreamState

from flowplane.errors import ConfigurationError

GRPCLIB_VERSION = "0.4.9"
H2_VERSION = "4.4.1"
TRIO_ASYNCIO_VERSION = "0.16.0"

INTERNALS: dict[str, tuple[str, ...]] = {
    # grpclib 0.4.9 (deliver_requests, send_message_now, request_type, ConnectionTrackingServer,
    # bound_sockets, keepalive_configuration)
    "grpclib.server.Stream": (
        "_stream",
        "_recv_type",
        "_send_initial_metadata_done",
        "_send_trailing_metadata_done",
        "_cancel_done",
        "_send_message_done",
        "_messages_sent",
    ),
    "grpclib.protocol.Stream": (
        "buffer",
        "data_received",
        "window_updated",
        "id",
        "_h2_connection",
        "_transport",
        "connection",
        "data_sent",
    ),
    "grpclib.protocol.Buffer": ("_ack_callback", "_acked", "_unacked", "_eof"),
    "grpclib.protocol.Connection": (
        "_transport",
        "_connection",
        "data_received",
        "last_data_received",
        "ack",
        "flush",
        "write_ready",
        "data_sent",
        "messages_sent",
        "last_message_sent",
        "data_send_process",
    ),
    # h2 4.4.1 (send_message_now: the bookkeeping of H2Connection.send_data, done directly)
    "h2.connection.H2Connection": (
        "incoming_buffer",
        "max_inbound_frame_size",
        "_inbound_flow_control_window_manager",
        "state_machine",
        "streams",
        "_data_to_send",
        "outbound_flow_control_window",
        "max_outbound_frame_size",
    ),
    "h2.stream.H2Stream": (
        "state_machine",
        "outbound_flow_control_window",
        "_inbound_window_manager",
        "_expected_content_length",
        "_actual_content_length",
    ),
    "h2.frame_buffer.FrameBuffer": ("_data", "_preamble_len", "_headers_buffer"),
    "h2.stream.H2StreamStateMachine": ("state", "headers_received"),
    "h2.windows.WindowManager": ("current_window_size", "window_consumed"),
    "grpclib.server.Server": ("_protocol_factory", "_server", "__gc_step__", "__gc_collect__"),
    "grpclib.protocol.H2Protocol": ("connection", "processor"),
    "grpclib.protocol.EventsProcessor": ("streams",),
    "grpclib.config.Configuration": (
        "_keepalive_time",
        "_keepalive_timeout",
        "_http2_max_pings_without_data",
        "_http2_min_sent_ping_interval_without_data",
    ),
    # trio-asyncio 0.16.0 (flowplane.grpc.loop, installed by install_batched_loop); the loop's
    # state attributes exist on a running loop only
    "trio_asyncio.TrioEventLoop": (
        "_main_loop_one",
        "call_soon",
        "_check_callback",
        "_queue_handle",
        "_debug",
        "_timers",
        "_q_recv",
        "_stopped",
        "_nursery",
    ),
    "trio_asyncio._handles.AsyncHandle": ("_context", "_run", "_callback", "_started"),
    "asyncio.Handle": ("_cancelled", "_run", "_callback", "_context"),
    "asyncio.TimerHandle": ("_when",),
}


# -- grpclib: server streams ------------------------------------------------------------------


_DATA_HEADER: Final = struct.Struct(">HBBBI")  # HTTP/2 frame header: 24-bit length, type, flags, id
_GRPC_PREFIX: Final = struct.Struct(">BI")  # gRPC message prefix: compressed flag, length
_SENDING_STREAM_STATES: Final = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE})


def send_message_now(stream: Stream[Any, Any], body: bytes) -> bool:
    """Write one gRPC message (`body`, already encoded) to `stream` at once, if it can be.

    grpclib's `Stream.send_message` is a coroutine that goes through h2's general machinery for
    every message: a `DataFrame` object, its serialization, the state machines' transitions and
    four copies of the body (measured: a third of an xDS worker's CPU in a push to 10,000
    streams, benchmarks/results/xds-workers.md). When nothing has to wait, sending a DATA frame
    is only bytes and bookkeeping, done here exactly as h2 4.4.1's `H2Connection.send_data` and
    grpclib 0.4.9's `Stream.send_message` / `protocol.Stream.send_data` do it:

    - sent only if grpclib already sent the response headers and no trailers, the connection is
      open on the server side (`ConnectionState.SERVER_OPEN`) and the h2 stream is open or
      half-closed by the client (in those states h2's SEND_DATA transition changes nothing),
      the transport is neither paused (grpclib's `write_ready`) nor closing, and the whole
      message fits in both flow-control windows: then h2 would send the same frames, the
      windows and grpclib's counters are decremented and advanced as they would be;
    - otherwise nothing is written or changed and False is returned: the caller awaits
      `stream.send_message`, which waits for the window or fails as grpclib does.

    Frames already queued in h2 (`_data_to_send`) are written first, so order is kept.
    """
    if (
        not stream._send_initial_metadata_done
        or stream._send_trailing_metadata_done
        or stream._cancel_done
    ):
        return False
    h2s = stream._stream
    conn = h2s.connection
    if not conn.write_ready.is_set() or h2s._transport.is_closing():
        return False
    h2c = h2s._h2_connection
    if h2c.state_machine.state is not ConnectionState.SERVER_OPEN:
        return False
    sid = h2s.id
    assert sid is not None  # set once the request's headers arrived, before the handler runs
    h2stream = h2c.streams.get(sid)
    if h2stream is None or h2stream.state_machine.state not in _SENDING_STREAM_STATES:
        return False
    size = len(body) + _GRPC_PREFIX.size
    if size > h2c.outbound_flow_control_window or size > h2stream.outbound_flow_control_window:
        return False
    limit = h2c.max_outbound_frame_size
    prefix = _GRPC_PREFIX.pack(0, len(body))
    if size <= limit:
        parts: list[bytes | memoryview] = [
            _DATA_HEADER.pack(size >> 8, size & 0xFF, 0, 0, sid),
            prefix,
            body,
        ]
    else:
        data = memoryview(prefix + body)
        parts = []
        for start in range(0, size, limit):
            chunk = data[start : start + limit]
            n = len(chunk)
            parts += (_DATA_HEADER.pack(n >> 8, n & 0xFF, 0, 0, sid), chunk)
    pending = h2c._data_to_send
    if pending:
        parts.insert(0, bytes(pending))
        h2c._data_to_send = bytearray()
    h2c.outbound_flow_control_window -= size
    h2stream.outbound_flow_control_window -= size
    h2s._transport.write(b"".join(parts))
    h2s.data_sent += size
    conn.data_sent += size
    conn.data_send_process()
    stream._send_message_done = True
    stream._messages_sent += 1
    conn.messages_sent += 1
    conn.last_message_sent = time.monotonic()
    return True


class _DeliveringBuffer(Buffer):
    """A grpclib stream buffer that hands each chunk of request bytes to `deliver` as it arrives
    (`None` at the end of the stream) instead of queueing it for `read`. Flow control is
    acknowledged on arrival, as grpclib does when a chunk is read: `deliver` consumes it then."""

    def __init__(
        self, ack_callback: Callable[[int], None], deliver: Callable[[bytes | None], None]
    ):
        super().__init__(ack_callback)
        self._deliver = deliver

    def add(self, data: bytes, ack_size: int) -> None:
        self._ack_callback(ack_size)
        self._deliver(data)

    def eof(self) -> None:
        self._eof = True
        self._deliver(None)

    async def read(self, size: int) -> bytes:
        raise RuntimeError("this stream's request bytes are delivered (deliver_requests)")

    def unacked_size(self) -> int:
        return 0


def deliver_requests(stream: Stream[Any, Any], deliver: Callable[[bytes | None], None]) -> None:
    """From now on, call `deliver` with each chunk of `stream`'s request bytes as grpclib
    receives it, and with None at the end of the stream; first with what it already holds.

    grpclib 0.4.9 queues request bytes in the stream's `Buffer` (`protocol.Stream.buffer`) for a
    task to `read`: one task wake-up and two queue operations per message. An xDS stream reads
    an ACK per response it is sent, so a push to 10,000 streams cost as many wake-ups again
    (benchmarks/results/xds-workers.md); delivered, the ACK is handled where it is received.
    `deliver` runs inside the connection's `data_received` and must not raise. The bytes the
    old buffer holds (chunks left after a read, then chunks not read yet, then the end of
    stream) are delivered first, in order, each acknowledged as `read` would have.
    """
    h2s = stream._stream
    old = h2s.buffer
    h2s.buffer = _DeliveringBuffer(old._ack_callback, deliver)
    for chunk, _size in old._acked:  # already acknowledged by the read that left them
        deliver(bytes(chunk))
    old._acked.clear()
    while not old._unacked.empty():
        data, _size, ack_size = old._unacked.get_nowait()
        if data or ack_size:  # (b"", 0, 0) is grpclib's end-of-stream marker: `_eof` says it
            h2s.buffer.add(data, ack_size)
    if old._eof:
        h2s.buffer.eof()


def request_type(stream: Stream[Any, Any]) -> Any:
    """The protobuf message class of `stream`'s requests (from the handler's registration).

    grpclib 0.4.9 keeps it in `Stream._recv_type` only; needed to decode a body read with
    `deliver_requests`.
    """
    return stream._recv_type


# -- grpclib: the server ----------------------------------------------------------------------


_WINDOW_INCREMENT: Final = struct.Struct(">I")
_LARGEST_WINDOW: Final = 2**31 - 1  # RFC 9113 §6.9.1 (h2's guard_increment_window)
_DATA, _WINDOW_UPDATE = 0x0, 0x8  # frame types (RFC 9113 §6.1, §6.9)


def receive_now(protocol: H2Protocol, data: bytes) -> bool:
    """Handle `data` received on a server connection without h2's general machinery, if it is
    only what an xDS stream's steady state sends; True if it was handled, else nothing changed.

    Per response it is sent, a client sends one small DATA frame (its ACK) and, now and then,
    WINDOW_UPDATE frames; through h2 4.4.1 each is a parsed `Frame` object (whose `repr` h2
    builds for a disabled trace log), two state-machine transitions and an event (measured: a
    quarter of an xDS worker's CPU in a push to 10,000 streams). Handled here only if `data` is
    whole frames, each of them:

    - DATA without flags (no padding, not the end of the stream), on a stream that h2 has open
      with its headers received and whose requests are delivered (`deliver_requests`), within
      the connection's and the stream's receive windows and h2's frame size limit: the windows
      are consumed as h2 does, then the bytes go to grpclib's stream buffer as grpclib's
      `process_data_received` does (which acknowledges them);
    - WINDOW_UPDATE without flags, for the connection or for a stream h2 has open (or
      half-closed by the client), with an increment that is positive and keeps the window at or
      under 2^31-1: h2's send window grows and grpclib's waiting senders are woken.

    On a connection in `ConnectionState.SERVER_OPEN` (in which h2's RECV_DATA and
    RECV_WINDOW_UPDATE transitions change nothing), with nothing half-read in h2's buffer (the
    preface, a frame, a header block). Anything else (HEADERS, PING, SETTINGS, RST_STREAM,
    GOAWAY, the end of a stream, a flow-control violation, a partial frame) and the whole of
    `data` goes to h2, which also answers every error as it always did.
    """
    conn = protocol.connection
    h2c = conn._connection
    incoming = h2c.incoming_buffer
    if (
        incoming._data
        or incoming._preamble_len
        or incoming._headers_buffer
        or h2c.state_machine.state is not ConnectionState.SERVER_OPEN
    ):
        return False
    streams = h2c.streams
    delivered = protocol.processor.streams
    limit = h2c.max_inbound_frame_size
    conn_window = h2c._inbound_flow_control_window_manager.current_window_size
    conn_out = h2c.outbound_flow_control_window
    windows: dict[int, int] = {}
    frames: list[tuple[int, int, int, int]] = []  # (type, stream id, body start, body end)
    size, off = len(data), 0
    while off < size:
        if size - off < 9:
            return False
        hi, lo, kind, flags, sid = _DATA_HEADER.unpack_from(data, off)
        length, sid = (hi << 8) | lo, sid & 0x7FFFFFFF
        end = off + 9 + length
        if end > size or length > limit or flags:
            return False
        if kind == _DATA:
            h2s = streams.get(sid)
            stream = delivered.get(sid)
            if (
                h2s is None
                or stream is None
                or h2s.state_machine.state is not StreamState.OPEN
                or not h2s.state_machine.headers_received
                or h2s._expected_content_length is not None
                or not isinstance(stream.buffer, _DeliveringBuffer)
            ):
                return False
            window = windows.get(sid, h2s._inbound_window_manager.current_window_size)
            if length > window or length > conn_window:
                return False
            windows[sid] = window - length
            conn_window -= length
        elif kind == _WINDOW_UPDATE:
            if length != 4:
                return False
            (increment,) = _WINDOW_INCREMENT.unpack_from(data, off + 9)
            increment &= 0x7FFFFFFF
            if not increment:
                return False
            if sid == 0:
                conn_out += increment
                if conn_out > _LARGEST_WINDOW:
                    return False
            else:
                h2s = streams.get(sid)
                if h2s is None or h2s.state_machine.state not in _SENDING_STREAM_STATES:
                    return False
                key = -sid  # the send window, beside the receive windows under +sid
                window = windows.get(key, h2s.outbound_flow_control_window) + increment
                if window > _LARGEST_WINDOW:
                    return False
                windows[key] = window
        else:
            return False
        frames.append((kind, sid, off + 9, end))
        off = end
    now = time.monotonic()
    for kind, sid, start, end in frames:
        if kind == _DATA:
            length = end - start
            h2c._inbound_flow_control_window_manager.window_consumed(length)
            h2s = streams[sid]
            h2s._inbound_window_manager.window_consumed(length)
            h2s._actual_content_length += length
            stream = delivered.get(sid)
            if stream is not None:
                stream.buffer.add(data[start:end], length)
                stream.data_received += length
            else:  # (as grpclib: a stream its handler already left)
                conn.ack(sid, length)
            conn.data_received += length
            conn.last_data_received = now
        else:
            (increment,) = _WINDOW_INCREMENT.unpack_from(data, start)
            increment &= 0x7FFFFFFF
            if sid == 0:
                h2c.outbound_flow_control_window += increment
                for stream in delivered.values():
                    stream.window_updated.set()
            else:
                h2s = streams.get(sid)
                if h2s is not None:
                    h2s.outbound_flow_control_window += increment
                stream = delivered.get(sid)
                if stream is not None:
                    stream.window_updated.set()
    conn.flush()
    return True


class _ReceivingH2Protocol(H2Protocol):
    """grpclib's connection protocol, trying `receive_now` before h2."""

    received_now = 0  # chunks `receive_now` handled (read by tests)

    def data_received(self, data: bytes) -> None:
        if receive_now(self, data):
            self.received_now += 1
        else:
            super().data_received(data)


class ConnectionTrackingServer(Server):
    """grpclib's server, remembering its connections so `close_connections()` can close them
    (asyncio's Server.close only stops listening; open HTTP/2 connections would otherwise leak).

    grpclib 0.4.9 creates one `H2Protocol` per connection in the private `_protocol_factory`
    and exposes no list of them; the override records each. Closing goes through the
    connection's asyncio transport (`Connection._transport`), as grpclib has no public close.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()
        self._until_sweep = 10

    def __gc_step__(self) -> None:
        """Called by grpclib for every new connection; sweeps its set of connection handlers
        every max(10, N) connections, N the connections held.

        grpclib 0.4.9 sweeps the whole set (one handler per connection ever made and not swept
        yet) every 10 connections: O(N^2 / 10) over a reconnect storm of N Envoys (measured: 6 %
        of a worker's CPU while 3,000 connect, more at 10,000). Spaced by N, the cost per
        connection stays constant and at most N closed handlers wait for the next sweep."""
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self.__gc_collect__()
            self._until_sweep = max(10, len(self.protocols))

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        # grpclib builds the protocol (with its private handler); only its data path differs
        protocol.__class__ = _ReceivingH2Protocol
        self.protocols.add(protocol)
        return protocol

    def close_connections(self) -> None:
        for protocol in list(self.protocols):
            conn = getattr(protocol, "connection", None)  # set once the connection is made
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn._transport.close()


def bound_sockets(server: Server) -> tuple[socket, ...]:
    """The listening sockets of a started grpclib server (empty if it has none).

    grpclib 0.4.9 keeps the asyncio server in `Server._server` and does not expose its sockets;
    needed to report the port actually bound when port 0 was asked for.
    """
    sockets: Any = getattr(server._server, "sockets", None) or ()
    return tuple(sockets)


def keepalive_configuration(
    *,
    time: float,
    timeout: float,
    max_pings_without_data: int,
    min_sent_ping_interval_without_data: float,
) -> Configuration:
    """A grpclib `Configuration` with the given HTTP/2 keepalive settings.

    grpclib 0.4.9 has these settings only as underscored (experimental, undocumented) fields:
    `_keepalive_time`, `_keepalive_timeout`, `_http2_max_pings_without_data`,
    `_http2_min_sent_ping_interval_without_data`; needed for dead-peer detection.
    """
    return Configuration(
        _keepalive_time=time,
        _keepalive_timeout=timeout,
        _http2_max_pings_without_data=max_pings_without_data,
        _http2_min_sent_ping_interval_without_data=min_sent_ping_interval_without_data,
    )


# -- trio-asyncio: the batched main loop -------------------------------------------------------


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution`, or None if it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def install_batched_loop() -> None:
    """Install `flowplane.grpc.loop` into trio-asyncio's event loop class, process-wide.

    Replaces `BaseTrioEventLoop._main_loop_one` (a copy of trio-asyncio 0.16.0's, plus a drain of
    the callbacks already queued) and `call_soon` (without the non-debug callback check). Loops
    look both up per call, so a loop already running picks them up at its next iteration.
    Idempotent. Raises ConfigurationError, patching nothing, if the installed trio-asyncio is
    not 0.16.0: the copied method would silently undo or break a newer loop's changes.
    """
    # Imported here, not at module level: an xDS worker process (plain asyncio) imports this
    # module, and importing trio-asyncio replaces asyncio's event loop policy process-wide.
    from trio_asyncio import BaseTrioEventLoop

    from flowplane.grpc import loop as batched_loop

    found = installed_version("trio-asyncio")
    if found != TRIO_ASYNCIO_VERSION:
        raise ConfigurationError(
            f"trio-asyncio {found or '(not installed)'} is installed, but Flowplane's batched "
            f"event loop (flowplane/grpc/loop.py) was written for trio-asyncio "
            f"{TRIO_ASYNCIO_VERSION}: install trio-asyncio=={TRIO_ASYNCIO_VERSION}, or port the "
            "patch to the new version and update flowplane/grpc/compat.py"
        )
    cls = BaseTrioEventLoop
    cls._main_loop_one = batched_loop.main_loop_one
    cls.call_soon = batched_loop.call_soon


def batched_loop_installed() -> bool:
    """Whether trio-asyncio's loop class currently runs `flowplane.grpc.loop`."""
    from trio_asyncio import BaseTrioEventLoop

    from flowplane.grpc import loop as batched_loop

    cls = BaseTrioEventLoop
    return bool(
        cls._main_loop_one is batched_loop.main_loop_one and cls.call_soon is batched_loop.call_soon
    )
