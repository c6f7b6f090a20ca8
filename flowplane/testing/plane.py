"""Run a whole control plane in-process for tests: core + xDS server on loopback + an HTTP client
talking ASGI to the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import trio_asyncio

from flowplane.app import Core, make_app, open_core
from flowplane.grpc.server import XdsServer
from flowplane.settings import Settings
from flowplane.tls import xds_server_context
from flowplane.xds.sotw import NameLimits


@dataclass
class Plane:
    core: Core
    api: httpx.AsyncClient
    xds: XdsServer

    async def settled(self) -> None:
        """Wait until the published snapshot reflects every committed change."""
        await self.core.snapshots.caught_up(self.core.state.serial)

    @property
    def xds_port(self) -> int:
        assert self.core.xds_port is not None
        return self.core.xds_port


_admin_tokens: dict[str, str] = {}  # database URL -> the admin token made at its first start


def admin_token(core: Core) -> str:
    """The admin token of `core`'s database (made at its first start in this process)."""
    url = core.settings.database_url
    if core.admin_token is not None:
        _admin_tokens[url] = core.admin_token
    return _admin_tokens[url]


@asynccontextmanager
async def run_plane(settings: Settings) -> AsyncIterator[Plane]:
    """Storage, actors, the ADS server on 127.0.0.1 (port from settings, 0 = any) and an API
    client authenticated as the admin; everything is stopped on exit."""
    async with trio_asyncio.open_loop() as loop, open_core(settings) as core:
        xds = XdsServer(
            core.hub, loop, ssl=xds_server_context(settings), auth=settings.xds_auth,
            authenticator=core.authenticator,
            keepalive=(settings.xds_keepalive_seconds, settings.xds_keepalive_timeout_seconds),
            limits=NameLimits(
                settings.xds_max_names_per_request, settings.xds_max_names_per_stream
            ),
        )  # fmt: skip
        host, port = settings.xds_host_port
        core.xds_port = await xds.start(host, port)
        try:
            transport = httpx.ASGITransport(app=make_app(core))
            headers = {"Authorization": f"Bearer {admin_token(core)}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://flowplane", headers=headers
            ) as api:
                yield Plane(core, api, xds)
        finally:
            await xds.stop()
