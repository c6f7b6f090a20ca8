"""One SQL statement on a fresh PostgreSQL connection, outside any repository: tests and
benchmarks use it to drop their schema afterwards, inspect tables and end backends."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import trio_asyncio


async def fetch_value(
    loop: asyncio.AbstractEventLoop, dsn: str, query: str, *args: object, schema: str | None = None
) -> Any:
    """Run `query` on the trio-asyncio `loop` and return the first column of its first row
    (`schema`: the search path to run it in)."""
    settings = {"search_path": schema} if schema else None

    async def run() -> Any:
        conn = await asyncpg.connect(dsn, server_settings=settings)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return await trio_asyncio.aio_as_trio(run, loop=loop)()


async def drop_schema(loop: asyncio.AbstractEventLoop, dsn: str, schema: str) -> None:
    await fetch_value(loop, dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
