"""A repository of each backend: a real SQLite file, and a fresh schema in the real PostgreSQL
server on 127.0.0.1:5432 (database `test`, trust auth; dropped afterwards)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import trio_asyncio

from flowplane.storage import open_repository
from flowplane.storage.base import Repository

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def aio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    async with trio_asyncio.open_loop() as loop:
        yield loop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def repo_url(
    request: pytest.FixtureRequest, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/repo.db"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{PG}?schema={schema}"
    finally:
        await drop_schema(schema, aio_loop)


async def drop_schema(schema: str, loop: asyncio.AbstractEventLoop) -> None:
    """Drop a test's PostgreSQL schema and everything in it."""

    async def drop() -> None:
        conn = await asyncpg.connect(PG)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(drop, loop=loop)()


@pytest.fixture
async def repo(repo_url: str, aio_loop: asyncio.AbstractEventLoop) -> AsyncIterator[Repository]:
    r = await open_repository(repo_url, aio_loop)
    try:
        yield r
    finally:
        await r.aclose()
