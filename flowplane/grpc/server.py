"""Start and stop the grpclib xDS server on the asyncio loop that trio-asyncio runs."""

from __future__ import annotations

import asyncio
import logging

import trio_asyncio
from grpclib.server import Server

from flowplane.grpc.ads import AdsService, BytesPassthroughCodec
from flowplane.grpc.hub import Hub

log = logging.getLogger(__name__)


class XdsServer:
    def __init__(self, hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.loop = loop
        self._server: Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        self.hub.bind_loop(self.loop)

        async def _start() -> int:
            # grpclib's Server must be created inside the asyncio context (DESIGN.md §7).
            server = Server([AdsService(self.hub)], codec=BytesPassthroughCodec())
            await server.start(host, port, reuse_address=True)
            self._server = server
            sockets = server._server.sockets if server._server else ()
            return int(sockets[0].getsockname()[1]) if sockets else port

        return await trio_asyncio.aio_as_trio(_start)()

    async def stop(self) -> None:
        """Stop accepting, cancel every stream handler, wait for them to finish."""
        server, self._server = self._server, None
        if server is None:
            return

        async def _stop() -> None:
            server.close()
            await server.wait_closed()

        await trio_asyncio.aio_as_trio(_stop)()
