"""Storage backends behind one repository protocol (`base.Repository`)."""

from __future__ import annotations

from asyncio import AbstractEventLoop

from flowplane.errors import ConfigurationError
from flowplane.storage.base import Repository


async def open_repository(
    url: str, loop: AbstractEventLoop | None = None, *, time_limit: float = 5.0, pool_size: int = 4
) -> Repository:
    """Open the backend named by the database URL's scheme. PostgreSQL runs on the trio-asyncio
    `loop` (default: the current one). `time_limit`: the deadline of each storage call, in
    seconds (FLOWPLANE_STORAGE_TIMEOUT_SECONDS); `pool_size`: PostgreSQL's connection pool
    (FLOWPLANE_DATABASE_POOL_SIZE)."""
    if url.startswith("sqlite:"):
        from flowplane.storage.sqlite import SqliteRepository

        return await SqliteRepository.open(url, time_limit)
    if url.startswith(("postgresql:", "postgres:")):
        from flowplane.storage.postgres import PostgresRepository

        return await PostgresRepository.open(url, loop, time_limit, pool_size)
    raise ConfigurationError(
        f"unsupported database URL {url!r}: use sqlite:///path.db or postgresql://..."
    )
