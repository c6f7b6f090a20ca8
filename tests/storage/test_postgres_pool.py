"""PostgreSQL pool settings (README "Configuration"): FLOWPLANE_DATABASE_POOL_SIZE sizes each
process's pool, and the server's statement_timeout follows FLOWPLANE_STORAGE_TIMEOUT_SECONDS on
pooled connections (migrations are not limited)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from flowplane.errors import ConfigurationError
from flowplane.settings import load_settings
from flowplane.storage import open_repository
from flowplane.storage.postgres import PostgresRepository
from flowplane.testing.postgres import drop_schema
from tests.storage.conftest import PG


def test_pool_size_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPLANE_DATABASE_POOL_SIZE", "7")
    assert load_settings().database_pool_size == 7
    monkeypatch.setenv("FLOWPLANE_DATABASE_POOL_SIZE", "0")
    with pytest.raises(ConfigurationError, match="FLOWPLANE_DATABASE_POOL_SIZE"):
        load_settings()


@pytest.mark.postgres
async def test_pool_size_and_statement_timeout(aio_loop: asyncio.AbstractEventLoop) -> None:
    """The rule: the pool has FLOWPLANE_DATABASE_POOL_SIZE connections at most, and the server
    ends a pooled statement after the storage deadline (statement_timeout)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    repo = await open_repository(f"{PG}?schema={schema}", aio_loop, time_limit=1.5, pool_size=2)
    try:
        assert isinstance(repo, PostgresRepository)
        await repo.migrate()

        async def show() -> str:
            return str(await repo.pool.fetchval("SHOW statement_timeout"))

        assert await repo._run(show) == "1500ms"
        assert repo.pool.get_max_size() == 2
    finally:
        await repo.aclose()
        await drop_schema(aio_loop, PG, schema)
