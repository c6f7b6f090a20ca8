"""PostgreSQL backend: asyncpg, called from trio through trio-asyncio (DESIGN.md §4).

Needs the trio-asyncio loop that `flowplane serve` opens in its root nursery. Every write batch is
one transaction; a connection pool (small: the config actor is the single writer) serves the
occasional reads. A database URL's query may set `schema=NAME` to keep Flowplane's tables in
their own schema (created if missing).

Every call has a deadline (`time_limit`, FLOWPLANE_STORAGE_TIMEOUT_SECONDS). Each write records
its id in `write_log` in the same transaction; `write` answers what the database did, looking
that id up on a fresh connection when the connection was lost during COMMIT.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import trio_asyncio

from flowplane.errors import ConfigurationError, StorageError
from flowplane.storage.base import (
    AuditQuery,
    AuditRow,
    DocumentUpgrade,
    HistoryKey,
    HistoryRow,
    ResourceRow,
    UpgradeDocument,
    Write,
    WriteOutcomeUnknown,
    load_migrations,
)
from flowplane.storage.sql import (
    DOCUMENTS_SELECT,
    HISTORY_HEADS,
    RESOURCE_SELECT,
    WRITE_LOG_LOOKUP,
    audit_from,
    audit_prune,
    audit_queries,
    decode_record,
    document_from,
    document_update,
    dollar,
    history_from,
    history_prune,
    history_queries,
    history_versions_query,
    resource_from,
    split_statements,
    table_select,
    write_log_statements,
    write_statements,
)

log = logging.getLogger(__name__)
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


class _Deadline(Exception):
    """The storage deadline passed (kept apart from driver timeouts to say so)."""


class PostgresRepository:
    def __init__(
        self, url: str, loop: asyncio.AbstractEventLoop | None = None, timeout: float = 5.0
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.dsn, self.schema = _split_url(url)
        self._pool: asyncpg.Pool | None = None
        self._loop = loop
        self._uncertain: dict[str, int | None] = {}  # write id -> backend pid that ran it

    @classmethod
    async def open(
        cls, url: str, loop: asyncio.AbstractEventLoop | None = None, time_limit: float = 5.0
    ) -> PostgresRepository:
        """Connect. `loop` is the trio-asyncio loop to run on (default: the current one)."""
        if loop is None:
            loop = trio_asyncio.current_loop.get()
            if loop is None:
                raise ConfigurationError(
                    "the PostgreSQL backend needs a trio-asyncio loop (flowplane serve opens it)"
                )
        repo = cls(url, loop, time_limit)
        await repo._run(repo._connect, limited=False)
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

    async def _run(self, fn: Callable[[], Awaitable[T]], *, limited: bool = True) -> T:
        """Run an asyncpg coroutine on the asyncio side within the storage deadline (unless not
        `limited`); driver errors and the deadline become StorageError."""

        async def guarded() -> T:
            try:
                if not limited:
                    return await fn()
                deadline = asyncio.timeout(self.timeout)
                try:
                    async with deadline:
                        return await fn()
                except TimeoutError as err:
                    if deadline.expired():  # not a driver's own timeout
                        raise _Deadline from err
                    raise
            except _Deadline:
                raise StorageError(
                    f"PostgreSQL did not answer within {self.timeout:g} s",
                    headers={"Retry-After": "1"},
                ) from None
            except (TimeoutError, asyncpg.PostgresError, OSError) as err:
                raise StorageError(f"PostgreSQL error: {err}") from err
            except (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError) as err:
                raise StorageError(
                    f"PostgreSQL connection problem: {err}", headers={"Retry-After": "1"}
                ) from err

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

        return await self._run(apply, limited=False)  # a migration takes what it takes

    async def load_all(self) -> list[ResourceRow]:
        async def load() -> list[ResourceRow]:
            return [resource_from(tuple(r)) for r in await self.pool.fetch(RESOURCE_SELECT)]

        return await self._run(load)

    async def write(self, writes: Sequence[Write]) -> None:
        if not writes:
            return  # nothing to commit (and no transaction to record)
        write_id = uuid.uuid4().hex
        statements = [*write_statements(writes, dollar), *write_log_statements(write_id, dollar)]
        # How far the transaction got; read after a failure, so the answer matches the database:
        # an error before COMMIT was sent means "not committed" (the server rolls back an open
        # transaction whose connection ends); after COMMIT returned, "committed", whatever the
        # pool does with the connection afterwards; in between, nobody knows yet.
        stage = "begin"
        backend: int | None = None

        async def tx() -> None:
            nonlocal stage, backend
            c = await self.pool.acquire()
            try:
                backend = c.get_server_pid()
                await c.execute("BEGIN")
                for sql, params in statements:
                    await c.execute(sql, *params)
                stage = "commit"
                await c.execute("COMMIT")
                stage = "committed"
            except BaseException:
                # Never hand back a connection in an unknown state (cancelled mid-statement, or
                # inside a transaction): closing it makes the server roll back what is open.
                c.terminate()
                raise
            finally:
                try:
                    await self.pool.release(c)
                except Exception as err:  # the commit's outcome is already known; see above
                    # (the pool closes a connection it could not reset)
                    log.debug("PostgreSQL connection not returned to the pool: %s", err)

        try:
            await self._run(tx)
        except StorageError as err:
            if stage == "committed":  # e.g. the deadline hit while the pool reset the connection
                log.info("write %s committed; afterwards: %s", write_id, err.message)
                return
            if stage != "commit":
                raise StorageError(
                    f"{err.message}: the write was not applied", headers=err.headers
                ) from err
            self._uncertain[write_id] = backend
            for _ in range(3):  # a fresh connection may fail too (the same fault, still on)
                if (outcome := await self.write_outcome(write_id)) is not None:
                    break
            if outcome is None:
                raise WriteOutcomeUnknown(
                    f"the outcome of the write is unknown: the connection to PostgreSQL was lost"
                    f" while it committed and the database could not be asked ({err.message})",
                    write_id,
                ) from err
            if not outcome:
                raise StorageError(
                    f"{err.message}: the write was not applied", headers=err.headers
                ) from err
            log.info("write %s committed although its connection failed: %s", write_id, err)

    async def write_outcome(self, write_id: str) -> bool | None:
        """Look the write up on a fresh connection. If it is absent while the backend that ran
        it is still alive, that backend could yet commit it: end it (pg_terminate_backend) and
        look again once it is gone."""
        backend = self._uncertain.get(write_id)
        lookup = WRITE_LOG_LOOKUP.format("$1")

        async def check() -> bool | None:
            settings = {"search_path": self.schema} if self.schema else None
            conn = await asyncpg.connect(self.dsn, timeout=self.timeout, server_settings=settings)
            try:
                if await conn.fetchval(lookup, write_id):
                    return True
                for _ in range(100):
                    if backend is None or not await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend
                    ):
                        # Its transaction has ended; it may have committed since the first look.
                        return bool(await conn.fetchval(lookup, write_id))
                    await conn.fetchval("SELECT pg_terminate_backend($1)", backend)
                    await asyncio.sleep(0.01)
                return None
            finally:
                await conn.close()

        try:
            outcome = await self._run(check)
        except StorageError as err:
            log.warning("could not look up the outcome of write %s: %s", write_id, err.message)
            return None
        if outcome is not None:
            self._uncertain.pop(write_id, None)
        return outcome

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

    async def history(
        self, key: HistoryKey, limit: int, offset: int
    ) -> tuple[list[HistoryRow], int]:
        count_sql, select_sql, params, page_params = history_queries(key, limit, offset, dollar)

        async def query() -> tuple[list[HistoryRow], int]:
            total = await self.pool.fetchval(count_sql, *params)
            rows = await self.pool.fetch(select_sql, *page_params)
            return [history_from(tuple(r)) for r in rows], int(total)

        return await self._run(query)

    async def history_versions(self, key: HistoryKey, upto: int, count: int) -> list[HistoryRow]:
        sql, params = history_versions_query(key, upto, count, dollar)

        async def query() -> list[HistoryRow]:
            return [history_from(tuple(r)) for r in await self.pool.fetch(sql, *params)]

        return await self._run(query)

    async def history_heads(self) -> list[tuple[str, str | None, str, int]]:
        async def query() -> list[tuple[str, str | None, str, int]]:
            return [(r[0], r[1], r[2], int(r[3])) for r in await self.pool.fetch(HISTORY_HEADS)]

        return await self._run(query)

    async def prune_history(self, keep: int) -> int:
        sql, params = history_prune(keep, dollar)

        async def prune() -> int:
            status: str = await self.pool.execute(sql, *params)  # "DELETE <count>"
            return int(status.rpartition(" ")[2])

        return await self._run(prune)  # under the deadline, as prune_audit: retried next run

    async def upgrade_documents(
        self, upgrade: UpgradeDocument, *, commit: bool
    ) -> list[DocumentUpgrade]:
        async def tx() -> list[DocumentUpgrade]:
            done: list[DocumentUpgrade] = []
            async with self.pool.acquire() as c:
                # One upgrader at a time across replicas (the migrations' lock), and no write
                # between the read and the updates: the tables are locked for the transaction.
                await c.execute("SELECT pg_advisory_lock(727274)")
                try:
                    tr = c.transaction()
                    await tr.start()
                    try:
                        if commit:
                            await c.execute("LOCK TABLE resources, apis IN EXCLUSIVE MODE")
                        for row in await c.fetch(DOCUMENTS_SELECT):
                            change = upgrade(document_from(tuple(row)))  # may raise
                            if change is not None:
                                sql, params = document_update(change, dollar)
                                await c.execute(sql, *params)
                                done.append(change)
                    except BaseException:
                        await tr.rollback()
                        raise
                    if commit and done:
                        await tr.commit()
                    else:
                        await tr.rollback()
                finally:
                    await c.execute("SELECT pg_advisory_unlock(727274)")
            return done

        return await self._run(tx, limited=False)  # start-up work: it takes what it takes

    async def ping(self) -> None:
        async def ping() -> None:
            await self.pool.fetchval("SELECT 1")

        await self._run(ping)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:

            async def close() -> None:
                await pool.close()

            await self._run(close, limited=False)
