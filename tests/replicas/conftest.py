"""Two replicas on one PostgreSQL database (the real server on 127.0.0.1:5432, database `test`,
a fresh schema per test, dropped afterwards): two real cores in this process, each with its own
connection pool, change-feed connection and leader-election connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio_asyncio

from flowplane.app import Core, make_app, open_core
from flowplane.grpc.server import XdsServer
from flowplane.settings import load_settings
from flowplane.testing.plane import admin_token
from flowplane.testing.postgres import fetch_value

PG = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Replica:
    core: Core
    api: httpx.AsyncClient
    loop: asyncio.AbstractEventLoop  # the trio-asyncio loop the cores run on

    async def sql(self, query: str, *args: object) -> Any:
        """Run one statement on a fresh connection (outside the cores); return its value."""
        return await sql(self.loop, query, *args, schema=self.core.settings.database_url)


async def sql(loop: asyncio.AbstractEventLoop, query: str, *args: object, schema: str = "") -> Any:
    """One statement on a fresh connection (`schema`: a database URL whose schema to use)."""
    return await fetch_value(loop, PG, query, *args, schema=schema.rpartition("schema=")[2])


@pytest.fixture
def pg_url() -> str:
    return f"{PG}?schema=r_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def replicas(pg_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    """Replica A (started first: it creates the admin token) and replica B, on a fresh schema
    (dropped afterwards), each with its xDS server on a loopback port (`core.xds_port`)."""
    settings = load_settings(
        database_url=pg_url, api_address="127.0.0.1:0", default_gateway=False,
        snapshot_debounce_seconds=0.001,
    )  # fmt: skip
    async with trio_asyncio.open_loop() as loop:
        try:
            async with AsyncExitStack() as stack:
                out = []
                for _ in range(2):
                    core = await stack.enter_async_context(open_core(settings))
                    xds = XdsServer(core.hub, loop, ssl=None, auth="none",
                                    authenticator=core.authenticator)  # fmt: skip
                    core.xds_port = await xds.start("127.0.0.1", 0)
                    stack.push_async_callback(xds.stop)
                    api = await stack.enter_async_context(
                        httpx.AsyncClient(
                            transport=httpx.ASGITransport(app=make_app(core)),
                            base_url="http://flowplane.test",
                            headers={"Authorization": f"Bearer {admin_token(core)}"},
                        )
                    )
                    out.append(Replica(core, api, loop))
                yield out[0], out[1]
        finally:
            schema = pg_url.rpartition("schema=")[2]
            await sql(loop, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
