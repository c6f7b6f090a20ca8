"""SQLite backend: the embedded default.

One connection, used from worker threads (`trio.to_thread`) under a lock, so the event loop never
blocks on disk. WAL journal with `synchronous=FULL`: a commit that returned is on disk, so an
acknowledged change survives a crash or power loss.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import trio

from flowplane.errors import ConfigurationError, StorageError
from flowplane.storage.base import (
    TABLES,
    AuditQuery,
    AuditRow,
    Delete,
    DeleteRow,
    ResourceRow,
    Row,
    Upsert,
    Write,
    load_migrations,
)

T = TypeVar("T")
JSON_COLUMNS = frozenset({"quotas", "scopes", "teams"})


def _encode(column: str, value: Any) -> Any:
    if column in JSON_COLUMNS or isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


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
                    for stmt in _statements(m.sql):
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
        def load() -> list[ResourceRow]:
            rows = self.conn.execute(
                "SELECT kind, name, team, version, source, spec, created_at, updated_at"
                " FROM resources ORDER BY kind, name"
            ).fetchall()
            return [
                ResourceRow(
                    kind=r[0],
                    name=r[1],
                    team=r[2],
                    version=r[3],
                    source=r[4],
                    spec=json.loads(r[5]),
                    created_at=datetime.fromisoformat(r[6]),
                    updated_at=datetime.fromisoformat(r[7]),
                )
                for r in rows
            ]

        return await self._run(load)

    async def write(self, writes: Sequence[Write]) -> None:
        params_up = []
        params_del = []
        rows: list[tuple[str, tuple[Any, ...]]] = []  # (sql, params) for the small tables/audit
        for w in writes:
            if isinstance(w, Upsert):
                r = w.row
                params_up.append(
                    (
                        r.kind,
                        r.name,
                        r.team,
                        r.version,
                        r.source,
                        json.dumps(r.spec, separators=(",", ":")),
                        r.created_at.isoformat(),
                        r.updated_at.isoformat(),
                    )
                )
            elif isinstance(w, Delete):
                params_del.append((w.kind, w.name))
            elif isinstance(w, Row):
                if w.table not in TABLES:
                    raise StorageError(f"unknown table {w.table!r}")
                cols = [TABLES[w.table], *w.values]
                vals = (w.key, *(_encode(c, v) for c, v in w.values.items()))
                updates = ", ".join(f"{c} = excluded.{c}" for c in w.values)
                rows.append(
                    (
                        f"INSERT INTO {w.table} ({', '.join(cols)}) VALUES"
                        f" ({', '.join('?' * len(cols))}) ON CONFLICT ({TABLES[w.table]})"
                        f" DO UPDATE SET {updates}",
                        vals,
                    )
                )
            elif isinstance(w, DeleteRow):
                rows.append((f"DELETE FROM {w.table} WHERE {TABLES[w.table]} = ?", (w.key,)))
            elif isinstance(w, AuditRow):
                rows.append(
                    (
                        "INSERT INTO audit (time, actor_id, actor_name, action, resource_type,"
                        " resource_name, team, before, after, client_address)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (
                            w.time.isoformat(),
                            w.actor_id,
                            w.actor_name,
                            w.action,
                            w.resource_type,
                            w.resource_name,
                            w.team,
                            None if w.before is None else json.dumps(w.before),
                            None if w.after is None else json.dumps(w.after),
                            w.client_address,
                        ),
                    )
                )

        def tx() -> None:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                if params_del:
                    c.executemany("DELETE FROM resources WHERE kind = ? AND name = ?", params_del)
                if params_up:
                    c.executemany(
                        "INSERT INTO resources"
                        " (kind, name, team, version, source, spec, created_at, updated_at)"
                        " VALUES (?,?,?,?,?,?,?,?)"
                        " ON CONFLICT (kind, name) DO UPDATE SET team = excluded.team,"
                        " version = excluded.version, source = excluded.source,"
                        " spec = excluded.spec, updated_at = excluded.updated_at",
                        params_up,
                    )
                for sql, params in rows:
                    c.execute(sql, params)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

        await self._run(tx)

    async def load_rows(self, table: str) -> list[dict[str, Any]]:
        if table not in TABLES:
            raise StorageError(f"unknown table {table!r}")

        def load() -> list[dict[str, Any]]:
            cur = self.conn.execute(f"SELECT * FROM {table} ORDER BY {TABLES[table]}")
            names = [d[0] for d in cur.description]
            return [
                {n: (json.loads(v) if n in JSON_COLUMNS and v is not None else v)
                 for n, v in zip(names, r, strict=True)}
                for r in cur.fetchall()
            ]  # fmt: skip

        return await self._run(load)

    async def query_audit(self, q: AuditQuery) -> tuple[list[AuditRow], int]:
        where: list[str] = []
        params: list[Any] = []
        if q.resource_type:
            where.append("resource_type = ?")
            params.append(q.resource_type)
        if q.team:
            where.append("team = ?")
            params.append(q.team)
        if q.actor:
            where.append("(actor_id = ? OR actor_name = ?)")
            params += [q.actor, q.actor]
        if q.since:
            where.append("time >= ?")
            params.append(q.since.isoformat())
        clause = (" WHERE " + " AND ".join(where)) if where else ""

        def query() -> tuple[list[AuditRow], int]:
            c = self.conn
            total = c.execute(f"SELECT count(*) FROM audit{clause}", params).fetchone()[0]
            rows = c.execute(
                "SELECT id, time, actor_id, actor_name, action, resource_type, resource_name,"
                f" team, before, after, client_address FROM audit{clause}"
                " ORDER BY id DESC LIMIT ? OFFSET ?",
                [*params, q.limit, q.offset],
            ).fetchall()
            return [
                AuditRow(
                    id=r[0],
                    time=datetime.fromisoformat(r[1]),
                    actor_id=r[2],
                    actor_name=r[3],
                    action=r[4],
                    resource_type=r[5],
                    resource_name=r[6],
                    team=r[7],
                    before=_json_or_none(r[8]),
                    after=_json_or_none(r[9]),
                    client_address=r[10],
                )
                for r in rows
            ], int(total)

        return await self._run(query)

    async def ping(self) -> None:
        await self._run(lambda: self.conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(close)


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
