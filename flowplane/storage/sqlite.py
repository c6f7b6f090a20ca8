"""SQLite backend: the embedded default.

One connection, used from worker threads (`trio.to_thread`) under a lock, so the event loop never
blocks on disk. WAL journal with `synchronous=FULL`: a commit that returned is on disk, so an
acknowledged change survives a crash or power loss.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import trio

from flowplane.errors import ConfigurationError, StorageError
from flowplane.storage.base import AuditQuery, AuditRow, ResourceRow, Write, load_migrations
from flowplane.storage.sql import (
    RESOURCE_SELECT,
    audit_from,
    audit_prune,
    audit_queries,
    decode_record,
    qmark,
    resource_from,
    split_statements,
    table_select,
    write_statements,
)

T = TypeVar("T")


def sqlite_path(url: str) -> str:
    """`sqlite:///./x.db` -> `./x.db`, `sqlite:////abs/x.db` -> `/abs/x.db`, `sqlite:///:memory:`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigurationError(
            f"not a SQLite URL: {url!r} (expected sqlite:///relative/path.db or sqlite:////abs.db)"
        )
    return url[len(prefix) :]


class SqliteRepository:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, url: str) -> SqliteRepository:
        repo = cls(url)
        await repo._run(repo._connect)
        return repo

    def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn

    async def _run(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                try:
                    return fn()
                except sqlite3.Error as err:
                    raise StorageError(f"SQLite error on {self.path}: {err}") from err

        # Never abandon a thread mid-transaction: a cancelled caller waits for the commit/rollback.
        return await trio.to_thread.run_sync(locked, abandon_on_cancel=False)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("the SQLite repository is closed")
        return self._conn

    async def migrate(self) -> list[str]:
        migrations = load_migrations("sqlite")

        def apply() -> list[str]:
            c = self.conn
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in c.execute("SELECT version FROM schema_migrations")}
            applied = []
            for m in migrations:
                if m.version in done:
                    continue
                c.execute("BEGIN IMMEDIATE")
                try:
                    # executescript would COMMIT on its own; run statements one by one instead.
                    for stmt in split_statements(m.sql):
                        c.execute(stmt)
                    c.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)",
                        (m.version, m.name, datetime.now(UTC).isoformat()),
                    )
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    raise
                applied.append(f"{m.version:04d}_{m.name}")
            return applied

        return await self._run(apply)

    async def load_all(self) -> list[ResourceRow]:
        return await self._run(
            lambda: [resource_from(r) for r in self.conn.execute(RESOURCE_SELECT).fetchall()]
        )

    async def write(self, writes: Sequence[Write]) -> None:
        statements = write_statements(writes, qmark)

        def tx() -> None:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    c.execute(sql, params)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

        await self._run(tx)

    async def load_rows(self, table: str) -> list[dict[str, Any]]:
        select = table_select(table)

        def load() -> list[dict[str, Any]]:
            cur = self.conn.execute(select)
            names = [d[0] for d in cur.description]
            return [decode_record(names, r) for r in cur.fetchall()]

        return await self._run(load)

    async def query_audit(self, q: AuditQuery) -> tuple[list[AuditRow], int]:
        count_sql, select_sql, params, page_params = audit_queries(q, qmark)

        def query() -> tuple[list[AuditRow], int]:
            total = self.conn.execute(count_sql, params).fetchone()[0]
            rows = self.conn.execute(select_sql, page_params).fetchall()
            return [audit_from(r) for r in rows], int(total)

        return await self._run(query)

    async def prune_audit(self, before: datetime) -> int:
        sql, params = audit_prune(before, qmark)

        def prune() -> int:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                deleted = c.execute(sql, params).rowcount
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return int(deleted)

        return await self._run(prune)

    async def ping(self) -> None:
        await self._run(lambda: self.conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(close)
