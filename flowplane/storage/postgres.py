"""PostgreSQL backend: asyncpg, called from trio through trio-asyncio (DESIGN.md §4).

Needs the trio-asyncio loop that `flowplane serve` opens in its root nursery. Every write batch is
one transaction; a connection pool (small: the config actor is the single writer) serves the
occasional reads. A database URL's query may set `schema=NAME` to keep Flowplane's tables in
their own schema (created if missing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import trio_asyncio

from flowplane.errors import ConfigurationError, StorageError
from flowplane.storage.base import AuditQuery, AuditRow, ResourceRow, Write, load_migrations
from flowplane.storage.sql import (
    RESOURCE_SELECT,
    audit_from,
    audit_prune,
    audit_queries,
    decode_record,
    dollar,
    resource_from,
    split_statements,
    table_select,
    write_statements,
)

T = TypeVar("T")
_IDENT_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _split_url(url: str) -> tuple[str, str | None]:
    """(asyncpg DSN, schema or None): `schema` is Flowplane's own query parameter."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    schema = query.pop("schema", [None])[0]
    if schema is not None and (not schema or set(schema) - _IDENT_OK or schema[0].isdigit()):
        raise ConfigurationError(f"schema={schema!r}: use lowercase letters, digits and _")
    rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
    scheme = "postgresql" if parts.scheme in ("postgresql", "postgres") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, rest, "")), schema


class PostgresRepository:
    def __init__(self, url: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.url = url
        self.dsn, self.schema = _split_url(url)
        self._pool: asyncpg.Pool | None = None
        self._loop = loop

    @classmethod
    async def open(
        cls, url: str, loop: asyncio.AbstractEventLoop | None = None
    ) -> PostgresRepository:
        """Connect. `loop` is the trio-asyncio loop to run on (default: the current one)."""
        if loop is None:
            loop = trio_asyncio.current_loop.get()
            if loop is None:
                raise ConfigurationError(
                    "the PostgreSQL backend needs a trio-asyncio loop (flowplane serve opens it)"
                )
        repo = cls(url, loop)
        await repo._run(repo._connect)
        return repo

    async def _connect(self) -> None:
        settings = {"search_path": self.schema} if self.schema else None
        if self.schema:
            conn = await asyncpg.connect(self.dsn, timeout=10)
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            finally:
                await conn.close()
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=4, timeout=10, server_settings=settings
        )

    async def _run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run an asyncpg coroutine on the asyncio side; driver errors become StorageError."""

        async def guarded() -> T:
            try:
                return await fn()
            except (TimeoutError, asyncpg.PostgresError, OSError) as err:
                raise StorageError(f"PostgreSQL error: {err}") from err
            except asyncpg.InterfaceError as err:
                raise StorageError(f"PostgreSQL connection problem: {err}") from err

        result: T = await trio_asyncio.aio_as_trio(guarded, loop=self._loop)()
        return result

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError("the PostgreSQL repository is closed")
        return self._pool

    async def migrate(self) -> list[str]:
        migrations = load_migrations("postgres")

        async def apply() -> list[str]:
            applied = []
            async with self.pool.acquire() as c:
                # One migrator at a time across replicas.
                await c.execute("SELECT pg_advisory_lock(727274)")
                try:
                    await c.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                        " name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                    )
                    done = {r[0] for r in await c.fetch("SELECT version FROM schema_migrations")}
                    for m in migrations:
                        if m.version in done:
                            continue
                        async with c.transaction():
                            for stmt in split_statements(m.sql):
                                await c.execute(stmt)
                            await c.execute(
                                "INSERT INTO schema_migrations (version, name, applied_at)"
                                " VALUES ($1, $2, $3)",
                                m.version, m.name, datetime.now(UTC).isoformat(),
                            )  # fmt: skip
                        applied.append(f"{m.version:04d}_{m.name}")
                finally:
                    await c.execute("SELECT pg_advisory_unlock(727274)")
            return applied

        return await self._run(apply)

    async def load_all(self) -> list[ResourceRow]:
        async def load() -> list[ResourceRow]:
            return [resource_from(tuple(r)) for r in await self.pool.fetch(RESOURCE_SELECT)]

        return await self._run(load)

    async def write(self, writes: Sequence[Write]) -> None:
        statements = write_statements(writes, dollar)

        async def tx() -> None:
            async with self.pool.acquire() as c, c.transaction():
                for sql, params in statements:
                    await c.execute(sql, *params)

        await self._run(tx)

    async def load_rows(self, table: str) -> list[dict[str, Any]]:
        select = table_select(table)

        async def load() -> list[dict[str, Any]]:
            rows = await self.pool.fetch(select)
            return [decode_record(list(r.keys()), list(r.values())) for r in rows]

        return await self._run(load)

    async def query_audit(self, q: AuditQuery) -> tuple[list[AuditRow], int]:
        count_sql, select_sql, params, page_params = audit_queries(q, dollar)

        async def query() -> tuple[list[AuditRow], int]:
            total = await self.pool.fetchval(count_sql, *params)
            rows = await self.pool.fetch(select_sql, *page_params)
            return [audit_from(tuple(r)) for r in rows], int(total)

        return await self._run(query)

    async def prune_audit(self, before: datetime) -> int:
        sql, params = audit_prune(before, dollar)

        async def prune() -> int:
            status: str = await self.pool.execute(sql, *params)  # "DELETE <count>"
            return int(status.rpartition(" ")[2])

        return await self._run(prune)

    async def ping(self) -> None:
        async def ping() -> None:
            await self.pool.fetchval("SELECT 1")

        await self._run(ping)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:

            async def close() -> None:
                await pool.close()

            await self._run(close)
