"""A request that is not a valid protobuf (issue 11, item 14), over a raw HTTP/2 connection.

"Malformed protobuf from a client is answered with gRPC INTERNAL and an ERROR traceback; answer
INVALID_ARGUMENT and log one line." The bytes are framed correctly (gRPC's 5-byte prefix), so
only the protobuf decoder can refuse them; a raw h2 client is the only way to send them (every
gRPC client library encodes what it sends).
"""

from __future__ import annotations

import logging
import struct

import h2.config
import h2.connection
import h2.events
import pytest
import trio

from flowplane.settings import Settings
from flowplane.testing.plane import run_plane

SOTW_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

GARBAGE = b"\xff\xff\xff\xff\x07not a protobuf"
"""Field number 0x1fffffff with wire type 7, which does not exist: no message parses it."""


async def _grpc_status_of(port: int, path: str, body: bytes) -> tuple[int, str]:
    """Send one framed message on a new stream of `path`; (grpc-status, grpc-message) of the
    server's answer."""
    sock = await trio.open_tcp_stream("127.0.0.1", port)
    async with sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "POST"), (":scheme", "http"), (":path", path),
                (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )  # fmt: skip
        conn.send_data(1, b"\x00" + struct.pack(">I", len(body)) + body)
        await sock.send_all(conn.data_to_send())
        headers: dict[str, str] = {}
        while True:
            data = await sock.receive_some(65536)
            assert data, "the server closed the connection without a gRPC status"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    for k, v in event.headers:
                        key = k.decode() if isinstance(k, bytes) else k
                        headers[key] = v.decode() if isinstance(v, bytes) else v
                if isinstance(event, h2.events.StreamEnded):
                    return int(headers["grpc-status"]), headers.get("grpc-message", "")
            await sock.send_all(conn.data_to_send())


@pytest.mark.parametrize("path", [SOTW_PATH, DELTA_PATH])
async def test_garbage_bytes_are_invalid_argument_with_one_log_line(
    xds_settings: Settings, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            status, message = await _grpc_status_of(plane.xds_port, path, GARBAGE)
    assert status == 3, (status, message)  # INVALID_ARGUMENT, not INTERNAL (13)
    assert "not a valid" in message and "DiscoveryRequest" in message, message
    ours = [r for r in caplog.records if r.name.startswith(("flowplane.grpc", "grpclib"))]
    assert [r.levelno for r in ours] == [logging.WARNING], [r.getMessage() for r in ours]
    assert ours[0].exc_info is None  # one line: no traceback
    assert "\n" not in ours[0].getMessage()
