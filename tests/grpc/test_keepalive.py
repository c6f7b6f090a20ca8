"""HTTP/2 keepalive on xDS connections (FLOWPLANE_XDS_KEEPALIVE_*), over real sockets.

A data plane whose host vanishes leaves a TCP connection that never closes by itself: nothing is
sent on an idle xDS stream, so without PINGs the stream (and its entry in `GET /api/v1/nodes`)
would stay until the next push happened to time out in TCP. The "dead" peer here is a raw HTTP/2
client that opens an ADS stream and then never processes another frame, so it never answers the
server's PINGs; a live grpclib client (which answers them) must stay connected.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import pytest
import trio
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from flowplane.errors import ConfigurationError
from flowplane.grpc.server import keepalive_config
from flowplane.settings import load_settings
from flowplane.testing.adsclient import sotw_client
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import Plane, run_plane
from flowplane.xds.types import CLUSTER_TYPE
from tests.helpers import N, ok, plane_settings

SOTW_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def test_keepalive_config_lifts_the_idle_limits() -> None:
    cfg = keepalive_config(30.0, 10.0)
    assert cfg._keepalive_time == 30.0
    assert cfg._keepalive_timeout == 10.0
    # grpclib's defaults stop PINGing after 2 PINGs without data; an idle xDS stream sends none
    assert cfg._http2_max_pings_without_data == 0
    assert cfg._http2_min_sent_ping_interval_without_data <= 30.0


@pytest.mark.parametrize(
    "bad",
    [{"xds_keepalive_seconds": 0}, {"xds_keepalive_seconds": "soon"},
     {"xds_keepalive_timeout_seconds": -1}, {"xds_keepalive_seconds": 86_400}],
)  # fmt: skip
def test_bad_keepalive_settings_are_refused(db_url: str, bad: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="FLOWPLANE_XDS_KEEPALIVE_"):
        load_settings(database_url=db_url, **bad)


async def _silent_ads_stream(port: int, node_id: str) -> trio.SocketStream:
    """Open an ADS stream with one CDS request, then never read a frame again."""
    sock = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [
            (":method", "POST"), (":scheme", "http"), (":path", SOTW_PATH),
            (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )  # fmt: skip
    body = DiscoveryRequest(node=base_pb2.Node(id=node_id), type_url=CLUSTER_TYPE)
    raw = body.SerializeToString()
    conn.send_data(1, b"\x00" + struct.pack(">I", len(raw)) + raw)
    await sock.send_all(conn.data_to_send())
    return sock


async def _node_ids(plane: Plane) -> set[str]:
    got = ok(await plane.api.get("/api/v1/nodes"), 200)
    return {n["id"] for n in got["items"]}


async def _until_listed(plane: Plane, node_id: str) -> None:
    while node_id not in await _node_ids(plane):  # noqa: ASYNC110 -- polls the REST view
        await trio.sleep(0.01)


async def _drain_until_eof(sock: trio.SocketStream) -> None:
    """Read (and discard, unparsed: no PING is ever answered) until the server closes."""
    while await sock.receive_some(65536):
        pass


@pytest.mark.parametrize(
    "workers", [0, pytest.param(1, marks=pytest.mark.e2e, id="through-an-xds-worker")]
)
async def test_unanswered_pings_drop_the_stream_and_the_node(db_url: str, workers: int) -> None:
    """The same with xDS served in-process and by a worker process (issue 14: keepalive keeps
    working across processes; the worker PINGs with the core's settings)."""
    settings = plane_settings(
        db_url, xds_keepalive_seconds=0.1, xds_keepalive_timeout_seconds=0.4
    )
    with trio.fail_after(20):
        async with run_plane(settings, workers=workers) as plane:
            ok(await plane.api.post(f"{N}/clusters", json=cluster_body("backend")))
            await plane.settled()
            async with sotw_client("127.0.0.1", plane.xds_port, node_id="alive") as live:
                await live.send(CLUSTER_TYPE)
                await live.ack(await live.recv())
                sock = await _silent_ads_stream(plane.xds_port, "vanished")
                async with sock:
                    await _until_listed(plane, "vanished")
                    with trio.fail_after(5):  # keepalive 0.1 s + timeout 0.4 s, with room
                        await _drain_until_eof(sock)
                with trio.fail_after(3):
                    while "vanished" in await _node_ids(plane):  # noqa: ASYNC110
                        await trio.sleep(0.01)
                # the live client answered every PING meanwhile (several rounds) and still
                # gets pushes on the same stream
                await live.expect_quiet(0.5)
                assert await _node_ids(plane) == {"alive"}
                body = cluster_body("backend")
                body["connectTimeoutSeconds"] = 7
                ok(await plane.api.put(f"{N}/clusters/backend", json=body), 200)
                resp = await live.recv()
                assert resp.type_url == CLUSTER_TYPE


async def test_without_short_keepalive_a_silent_peer_stays(db_url: str) -> None:
    """The control for the test above: with the default 30 s keepalive the same silent client is
    still connected and listed after the time the short keepalive needed to drop it."""
    settings = plane_settings(db_url)
    with trio.fail_after(20):
        async with run_plane(settings) as plane:
            sock = await _silent_ads_stream(plane.xds_port, "silent")
            async with sock:
                await _until_listed(plane, "silent")
                with trio.move_on_after(1.0) as waited:
                    await _drain_until_eof(sock)
                assert waited.cancelled_caught  # no EOF: the server kept the connection
                assert "silent" in await _node_ids(plane)
