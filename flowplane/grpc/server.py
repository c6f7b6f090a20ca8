"""Start and stop the grpclib xDS server on the asyncio loop that trio-asyncio runs."""

from __future__ import annotations

import asyncio
import logging
from ssl import SSLContext

from grpclib.config import Configuration

from flowplane.auth.authenticator import Authenticator
from flowplane.grpc import compat
from flowplane.grpc.ads import AdsService, BytesPassthroughCodec
from flowplane.grpc.hub import Hub
from flowplane.xds.sotw import NameLimits

log = logging.getLogger(__name__)


def keepalive_config(interval: float, timeout: float) -> Configuration:
    """grpclib settings for dead-peer detection: PING every connection with an open stream every
    `interval` seconds, close it if the PING is not answered within `timeout`.

    grpclib's server defaults (a PING every 2 h, and none after 2 PINGs without data sent, at
    most one per 5 min) would keep a vanished data plane's stream — and its node entry —
    for hours: an xDS stream is idle for as long as the configuration does not change, so the
    "without data" limits are lifted (no limit on PINGs in a row; spacing = the interval).
    """
    return compat.keepalive_configuration(
        time=interval,
        timeout=timeout,
        max_pings_without_data=0,
        # The check is "last PING sent less than this long ago -> skip"; half the interval
        # keeps a timer that fires a little early from skipping a round.
        min_sent_ping_interval_without_data=interval / 2,
    )


class XdsServer:
    def __init__(
        self,
        hub: Hub,
        loop: asyncio.AbstractEventLoop,
        *,
        ssl: SSLContext | None = None,
        auth: str = "none",
        authenticator: Authenticator | None = None,
        keepalive: tuple[float, float] = (30.0, 10.0),
        limits: NameLimits | None = None,
    ) -> None:
        self.hub = hub
        self.limits = limits or NameLimits()
        self.keepalive = keepalive
        self.auth = auth
        self.authenticator = authenticator
        self.loop = loop
        self.ssl = ssl
        self._server: compat.ConnectionTrackingServer | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind and serve; returns the bound port (useful with port 0).

        First installs the batched trio-asyncio loop (flowplane/grpc/loop.py; process-wide,
        idempotent): raises ConfigurationError, binding nothing, if trio-asyncio is not the
        version that patch was written for.
        """
        import trio_asyncio  # here: importing it replaces asyncio's loop policy (see worker.py)

        compat.install_batched_loop()
        self.hub.bind_loop(self.loop)

        async def _start() -> int:
            # grpclib's Server must be created inside the asyncio context (DESIGN.md §7).
            service = AdsService(
                self.hub, auth=self.auth, authenticator=self.authenticator, limits=self.limits
            )
            server = compat.ConnectionTrackingServer(
                [service], codec=BytesPassthroughCodec(), config=keepalive_config(*self.keepalive)
            )
            # A deep accept queue: after a control-plane restart every Envoy reconnects at once
            # (xds rule 18); the kernel caps it at net.core.somaxconn.
            await server.start(host, port, reuse_address=True, ssl=self.ssl, backlog=4096)
            self._server = server
            sockets = compat.bound_sockets(server)
            return int(sockets[0].getsockname()[1]) if sockets else port

        bound: int = await trio_asyncio.aio_as_trio(_start)()
        return bound

    async def stop(self) -> None:
        """Stop accepting, cancel every stream handler, wait for them to finish."""
        import trio_asyncio

        server, self._server = self._server, None
        if server is None:
            return

        async def _stop() -> None:
            server.close()
            await server.wait_closed()
            server.close_connections()
            await asyncio.sleep(0)  # let the transports finish closing

        await trio_asyncio.aio_as_trio(_stop)()
