"""Run a whole control plane in-process for tests: core + xDS server on loopback + an HTTP client
talking ASGI to the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import trio
import trio_asyncio

from flowplane.app import Core, make_app, open_core, worker_pool
from flowplane.grpc.pool import WorkerPool
from flowplane.grpc.server import XdsServer
from flowplane.settings import Settings
from flowplane.tls import xds_server_context
from flowplane.xds.sotw import NameLimits


@dataclass
class Plane:
    core: Core
    api: httpx.AsyncClient
    xds: XdsServer | WorkerPool

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
async def run_plane(settings: Settings, *, workers: int = 0) -> AsyncIterator[Plane]:
    """Storage, actors, the ADS server on 127.0.0.1 (port from settings, 0 = any) and an API
    client authenticated as the admin; everything is stopped on exit. With `workers` > 0, xDS
    is served by that many worker processes (`flowplane.grpc.pool`), as `flowplane serve
    --xds-workers N` does; the test's trio-asyncio loop still runs (for the ADS test client).
    """
    if workers:
        async with _run_worker_plane(settings, workers) as plane:
            yield plane
        return
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
            async with _api(core) as api:
                yield Plane(core, api, xds)
        finally:
            await xds.stop()


@asynccontextmanager
async def _run_worker_plane(settings: Settings, workers: int) -> AsyncIterator[Plane]:
    async with (
        trio_asyncio.open_loop(),
        open_core(settings) as core,
        trio.open_nursery() as nursery,
    ):
        pool = worker_pool(core, workers, status_interval=0.05)
        core.xds_port = await nursery.start(pool.run)
        try:
            async with _api(core) as api:
                yield Plane(core, api, pool)
        finally:
            with trio.CancelScope(shield=True):
                await pool.stop(settings.shutdown_grace_seconds)
            nursery.cancel_scope.cancel()


def _api(core: Core) -> httpx.AsyncClient:
    """An API client talking ASGI to `core`'s app, authenticated as the admin."""
    headers = {"Authorization": f"Bearer {admin_token(core)}"}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(core)), base_url="http://flowplane",
        headers=headers,
    )  # fmt: skip
