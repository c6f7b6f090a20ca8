"""HTTP/2 keepalive on the xDS connection with real Envoy processes, both directions.

- Both sides PING every 0.2 s: a live Envoy keeps its one connection and stream (no false drop).
- The control plane goes silent without closing the connection (a frozen relay between Envoy and
  the plane: the bytes stop, the sockets stay open): Envoy's keepalive from the bootstrap notices
  within its timeout, drops the connection and reconnects, instead of waiting for TCP to give up.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import pytest
import trio

from flowplane.testing.envoy import EnvoyProcess, ads_bootstrap, run_envoy
from flowplane.testing.plane import Plane, run_plane
from tests.helpers import plane_settings

pytestmark = pytest.mark.e2e

XDS_CX = "cluster.xds_cluster.upstream_cx_total"


async def test_live_envoy_keeps_its_connection_with_fast_pings_both_ways(
    db_url: str, tmp_path: Path
) -> None:
    settings = plane_settings(db_url, xds_keepalive_seconds=0.2, xds_keepalive_timeout_seconds=0.5)
    with trio.fail_after(60):
        async with run_plane(settings) as plane:
            boot = ads_bootstrap("envoy-ka", "127.0.0.1", plane.xds_port, keepalive=(0.2, 0.5))
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                await envoy.wait_ready()
                streams = set(plane.core.hub.streams)
                assert len(streams) == 1
                await trio.sleep(1.5)  # many PING rounds each way; nothing else may happen
                assert set(plane.core.hub.streams) == streams  # same stream: never dropped
                assert await envoy.stat(XDS_CX) == 1  # Envoy never reconnected
                assert await envoy.stat("control_plane.connected_state") == 1


class _Relay:
    """A TCP relay on loopback. `freeze()` stops moving bytes on the connections it has (they
    stay open: a peer that vanished); new connections are relayed normally."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen: list[trio.Event] = []
        self.port = 0

    def freeze(self) -> None:
        for ev in self.frozen:
            ev.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, down: trio.SocketStream) -> None:
        frozen = trio.Event()
        self.frozen.append(frozen)
        async with down, await trio.open_tcp_stream("127.0.0.1", self.target_port) as up:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                try:
                    while data := await src.receive_some(65536):
                        if frozen.is_set():
                            await trio.sleep_forever()  # swallow: the other side hears nothing
                        await dst.send_all(data)
                except trio.BrokenResourceError:
                    # A peer reset its connection: Envoy does, when it gives up on the silent
                    # plane with bytes still unread. That relayed connection ends on both sides,
                    # as through a real relay (it once failed the test in CI, on 2026-12-04).
                    nursery.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, down, up)
                nursery.start_soon(pump, up, down)


async def test_envoy_reconnects_when_the_control_plane_goes_silent(
    db_url: str, tmp_path: Path
) -> None:
    # The server's own keepalive is long here, so only Envoy's (from the bootstrap) can act.
    settings = plane_settings(db_url, xds_keepalive_seconds=60)
    with trio.fail_after(60):
        async with run_plane(settings) as plane, trio.open_nursery() as nursery:
            relay = _Relay(plane.xds_port)
            await nursery.start(relay.serve)
            boot = ads_bootstrap("envoy-ka", "127.0.0.1", relay.port, keepalive=(0.2, 0.5))
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                await envoy.wait_ready()
                assert await envoy.stat(XDS_CX) == 1
                first = _newest_stream_id(plane)
                relay.freeze()
                # PING unanswered for 0.5 s -> Envoy closes and dials again (through the relay,
                # which relays new connections): a second xDS connection, and a new stream.
                await envoy.wait_for(
                    lambda: _at_least(_xds_connections(envoy), 2), 15, what="Envoy reconnecting"
                )
                await envoy.wait_for(
                    lambda: _true(_newest_stream_id(plane) > first), 15, what="a new stream"
                )
            nursery.cancel_scope.cancel()


async def _xds_connections(envoy: EnvoyProcess) -> int:
    return await envoy.stat(XDS_CX) or 0


def _newest_stream_id(plane: Plane) -> int:
    return max(plane.core.hub.streams, default=0)  # stream ids count up from 1


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


async def _true(value: bool) -> bool:
    return value
