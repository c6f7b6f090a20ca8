"""Every use Flowplane makes of third-party internals, in one place (issue 9).

grpclib has no public API for four things the xDS edge needs (a request size limit checked
before the body is read, the connections a server holds, the port it bound, keepalive settings),
and trio-asyncio's main loop costs a trio checkpoint per asyncio callback (`flowplane.grpc.loop`
replaces it). Each such access is a small named function here, written against the versions
pinned in pyproject.toml: grpclib==0.4.9 and trio-asyncio==0.16.0. The rest of `flowplane/grpc`
calls these functions and never touches an underscored attribute itself.

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
import weakref
from importlib import metadata
from socket import socket
from typing import Any

from grpclib.config import Configuration
from grpclib.protocol import H2Protocol
from grpclib.server import Server, Stream

from flowplane.errors import ConfigurationError

GRPCLIB_VERSION = "0.4.9"
TRIO_ASYNCIO_VERSION = "0.16.0"

INTERNALS: dict[str, tuple[str, ...]] = {
    # grpclib 0.4.9 (recv_request_bytes, request_type, ConnectionTrackingServer, bound_sockets,
    # keepalive_configuration)
    "grpclib.server.Stream": ("_stream", "_recv_type"),
    "grpclib.protocol.Stream": ("recv_data",),
    "grpclib.server.Server": ("_protocol_factory", "_server"),
    "grpclib.protocol.H2Protocol": ("connection",),
    "grpclib.protocol.Connection": ("_transport",),
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


async def recv_request_bytes(stream: Stream[Any, Any], size: int) -> bytes:
    """Up to `size` bytes of the request body of `stream` (fewer, or b"", at its end).

    grpclib 0.4.9 offers only `Stream.recv_message`, which reads a message of any length before
    decoding it; reading the HTTP/2 stream under it (`Stream._stream.recv_data`) lets the edge
    read the 5-byte gRPC prefix and refuse an oversized message before buffering its body.
    """
    return await stream._stream.recv_data(size)


def request_type(stream: Stream[Any, Any]) -> Any:
    """The protobuf message class of `stream`'s requests (from the handler's registration).

    grpclib 0.4.9 keeps it in `Stream._recv_type` only; needed to decode a body read with
    `recv_request_bytes`.
    """
    return stream._recv_type


# -- grpclib: the server ----------------------------------------------------------------------


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

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
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
