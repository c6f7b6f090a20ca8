"""PostgreSQL backend: asyncpg, called from trio through trio-asyncio (DESIGN.md §4).

Needs the trio-asyncio loop that `flowplane serve` opens in its root nursery. Every write batch is
one transaction; a connection pool (small: the config actor is the single writer) serves the
occasional reads. A database URL's query may set `schema=NAME` to keep Flowplane's tables in
their own schema (created if missing).

Every call has a deadline (`time_limit`, FLOWPLANE_STORAGE_TIMEOUT_SECONDS). Each write records
its id in `write_log` in the same transaction; `write` answers what the database did, looking
that id up on a fresh connection when the connection was lost during COMMIT.

Several replicas may share the database (README "Replicas"). A write that changes state also
appends a `change_log` row (position, origin = this repository's `replica_id`, what it touched)
and sends `NOTIFY flowplane_changes, '<position>'`, in its transaction. Such writes first take a
transaction-level advisory lock (`CHANGE_LOCK`): writers are serialised across replicas, so
positions commit in increasing order (a reader that saw N saw everything before it), and, when
`fence` is set, the write checks that no other replica committed after position `fence` (the
last change this replica's memory reflects) and raises `StaleState` otherwise: every check a
plan made against memory (names, address:port, domains, references, quotas, If-Match) was made
against exactly the database's state, so the database decides conflicts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import trio
import trio_asyncio

from flowplane.errors import ConfigurationError, Conflict, StorageError
from flowplane.storage.base import (
    AuditQuery,
    AuditRow,
    DocumentUpgrade,
    HistoryKey,
    HistoryRow,
    ResourceRow,
    StaleState,
    UpgradeDocument,
    Upsert,
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
    change_entries,
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
CHANNEL = "flowplane_changes"
# Serialises state-changing writes. Advisory locks are per database: the second key, the schema,
# keeps deployments that share a database in separate schemas (`?schema=`) apart.
CHANGE_LOCK = "SELECT pg_advisory_xact_lock(727275, hashtext(current_schema()))"
CHANGE_LATEST = "SELECT coalesce(max(position), 0) FROM change_log"
CHANGE_APPEND = (
    "WITH c AS (INSERT INTO change_log (origin, entries) VALUES ($1, $2) RETURNING position)"
    f" SELECT position, pg_notify('{CHANNEL}', position::text) FROM c"
)


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
        self,
        url: str,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout: float = 5.0,
        pool_size: int = 4,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.pool_size = pool_size
        self.dsn, self.schema = _split_url(url)
        self._pool: asyncpg.Pool | None = None
        self._loop = loop
        self._uncertain: dict[str, int | None] = {}  # write id -> backend pid that ran it
        self.replica_id = uuid.uuid4().hex  # `origin` of this repository's change-log rows
        # The change-log position this process's memory reflects; None: do not check (a CLI
        # command writing on its own). The change feed (actors/feed.py) sets and advances it.
        self.fence: int | None = None
        self._held: asyncpg.Connection | None = None  # the transaction of `exclusive()`
        # Names this process's sessions in pg_stat_activity (operators, and tests that end
        # them), unless the URL names them (`?application_name=`).
        given = parse_qs(urlsplit(self.dsn).query).get("application_name")
        self.application_name = given[0] if given else f"flowplane-{self.replica_id[:12]}"

    @classmethod
    async def open(
        cls,
        url: str,
        loop: asyncio.AbstractEventLoop | None = None,
        time_limit: float = 5.0,
        pool_size: int = 4,
    ) -> PostgresRepository:
        """Connect. `loop` is the trio-asyncio loop to run on (default: the current one)."""
        if loop is None:
            loop = trio_asyncio.current_loop.get()
            if loop is None:
                raise ConfigurationError(
                    "the PostgreSQL backend needs a trio-asyncio loop (flowplane serve opens it)"
                )
        repo = cls(url, loop, time_limit, pool_size)
        await repo._run(repo._connect, limited=False)
        return repo

    async def _connect(self) -> None:
        # The server ends a statement that outlives the storage deadline too (the client has
        # given up on it by then), so a stuck statement cannot hold locks past it.
        settings = {
            "application_name": self.application_name,
            "statement_timeout": str(max(1, int(self.timeout * 1000))),
        }
        if self.schema:
            settings["search_path"] = self.schema
            conn = await asyncpg.connect(self.dsn, timeout=10)
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            finally:
                await conn.close()
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self.pool_size, timeout=10, server_settings=settings
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
            except asyncpg.UniqueViolationError as err:
                # A primary key or unique index refused a row another replica committed first
                # (the change feed has not brought it here yet): the write conflicts.
                raise Conflict(f"conflicting write: {err.detail or err}") from err
            except (
                OSError,
                asyncpg.exceptions.PostgresConnectionError,
                asyncpg.exceptions.OperatorInterventionError,
            ) as err:
                # The server is unreachable, restarting or ended the session: a retry after
                # the database is back succeeds (the pool opens new connections).
                raise StorageError(
                    f"PostgreSQL is unavailable: {err}", headers={"Retry-After": "1"}
                ) from err
            except (TimeoutError, asyncpg.PostgresError) as err:
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
                await c.execute("SET statement_timeout = 0")  # a migration takes what it takes
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
        statements = [
            *write_statements(writes, dollar, cas=True),
            *write_log_statements(write_id, dollar),
        ]
        # Resource upserts are compare-and-swaps (`cas`): statement i is writes[i].
        swaps = {i: w.row for i, w in enumerate(writes) if isinstance(w, Upsert)}
        swapped_out: ResourceRow | None = None  # an upsert whose stored version had moved on
        entries = change_entries(writes)
        fence = self.fence
        stale: int | None = None  # another replica's position found past `fence`
        position: int | None = None  # this write's change-log position
        # How far the transaction got; read after a failure, so the answer matches the database:
        # an error before COMMIT was sent means "not committed" (the server rolls back an open
        # transaction whose connection ends); after COMMIT returned, "committed", whatever the
        # pool does with the connection afterwards; in between, nobody knows yet.
        stage = "begin"
        backend: int | None = None

        held = self._held

        async def tx() -> None:
            nonlocal stage, backend, stale, position, swapped_out
            c = held if held is not None else await self.pool.acquire()
            try:
                backend = c.get_server_pid()
                if held is None:
                    await c.execute("BEGIN")
                if entries and held is None:
                    await c.execute(CHANGE_LOCK)  # held until COMMIT/ROLLBACK
                    if fence is not None and (latest := await c.fetchval(CHANGE_LATEST)) > fence:
                        stale = latest
                        await c.execute("ROLLBACK")
                        return
                for i, (sql, params) in enumerate(statements):
                    status = await c.execute(sql, *params)
                    if i in swaps and status.endswith(" 0"):  # "INSERT 0 <rows>"
                        swapped_out = swaps[i]
                        await c.execute("ROLLBACK")
                        return
                if entries:
                    row = await c.fetchrow(CHANGE_APPEND, self.replica_id, json.dumps(entries))
                    position = row[0]
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
                    if held is None:  # else `exclusive()` releases it
                        await self.pool.release(c)
                except Exception as err:  # the commit's outcome is already known; see above
                    # (the pool closes a connection it could not reset)
                    log.debug("PostgreSQL connection not returned to the pool: %s", err)

        try:
            await self._run(tx)
        except StorageError as err:
            if stage == "committed":  # e.g. the deadline hit while the pool reset the connection
                log.info("write %s committed; afterwards: %s", write_id, err.message)
                self._advance(fence, position)
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
            return
        if swapped_out is not None:
            r = swapped_out
            raise StaleState(
                f"{r.kind} {r.key!r} is no longer at version {r.version - 1} in the database"
                " (another writer changed it): nothing was written"
            )
        if stale is not None:
            raise StaleState(
                f"another replica changed the configuration (change {stale}, this replica is at"
                f" {fence}): nothing was written"
            )
        self._advance(fence, position)

    def _advance(self, fence: int | None, position: int | None) -> None:
        """After a commit: memory (once the caller applies this write) reflects `position`, as
        the lock guaranteed nobody committed between `fence` and it."""
        if fence is not None and position is not None and self.fence == fence:
            self.fence = position

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the change-log lock until exit, in a transaction on one connection: meanwhile
        no other replica commits a change. `changes_after`, `load_resources` and `load_rows`
        read on that transaction (so a catch-up inside sees the final state), and a `write`
        inside commits it (releasing the lock); on exit without one it is rolled back. Only
        for the single writer (the config actor): the connection serves one call at a time."""
        if self._held is not None:
            raise RuntimeError("exclusive() is not reentrant")

        async def begin() -> asyncpg.Connection:
            c = await self.pool.acquire()
            try:
                await c.execute("BEGIN")
                await c.execute(CHANGE_LOCK)
            except BaseException:
                c.terminate()
                await self.pool.release(c)
                raise
            return c

        conn = await self._run(begin)
        self._held = conn
        try:
            yield
        finally:
            self._held = None

            async def end() -> None:
                try:
                    if not conn.is_closed() and conn.is_in_transaction():
                        await conn.execute("ROLLBACK")
                except BaseException:
                    conn.terminate()
                    raise
                finally:
                    await self.pool.release(conn)

            with trio.CancelScope(shield=True):
                try:
                    await self._run(end)
                except StorageError as err:  # the server rolls back what the socket leaves
                    log.debug("exclusive transaction not ended cleanly: %s", err.message)

    def _reader(self) -> asyncpg.Pool | asyncpg.Connection:
        """Where reads that a catch-up makes go: the `exclusive()` transaction, if held."""
        return self._held if self._held is not None else self.pool

    async def change_position(self) -> int:
        """The latest committed change-log position (0: none yet)."""

        async def latest() -> int:
            return int(await self.pool.fetchval(CHANGE_LATEST))

        return await self._run(latest)

    async def changes_after(
        self, position: int, limit: int = 500
    ) -> list[tuple[int, str, list[list[str]]]]:
        """(position, origin, entries) of the change-log rows after `position`, oldest first."""

        async def read() -> list[tuple[int, str, list[list[str]]]]:
            rows = await self._reader().fetch(
                "SELECT position, origin, entries FROM change_log WHERE position > $1"
                " ORDER BY position LIMIT $2",
                position, limit,
            )  # fmt: skip
            return [(r[0], r[1], json.loads(r[2])) for r in rows]

        return await self._run(read)

    async def load_resources(self, keys: Sequence[tuple[str, str]]) -> list[ResourceRow]:
        """The stored resources among `keys` ((kind, xds_name) pairs); absent ones are left out."""
        kinds = [k for k, _ in keys]
        names = [n for _, n in keys]
        where = " WHERE (kind, xds_name) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
        sql = RESOURCE_SELECT.replace(" ORDER BY", where + " ORDER BY")

        async def load() -> list[ResourceRow]:
            rows = await self._reader().fetch(sql, kinds, names)
            return [resource_from(tuple(r)) for r in rows]

        return await self._run(load)

    async def prune_changes(self, before: datetime) -> int:
        """Delete the change-log rows committed before `before` (retention, by the leader)."""

        async def prune() -> int:
            status: str = await self.pool.execute(
                "DELETE FROM change_log WHERE created_at < $1", before
            )
            return int(status.rpartition(" ")[2])

        return await self._run(prune)

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
            rows = await self._reader().fetch(select)
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
