"""Migration 0005 (names unique per team): a database written before it keeps every resource,
and afterwards two teams can store the same name (issue 11 item 9). Real SQLite file and real
PostgreSQL schema: the database is migrated to 0004 only, written with that release's columns,
then opened by the current release."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import asyncpg
import pytest
import trio_asyncio

from flowplane.storage import open_repository, postgres, sqlite
from flowplane.storage.base import Delete, Migration, ResourceRow, Upsert

NOW = datetime(2026, 12, 1, tzinfo=UTC).isoformat()
OLD_ROWS = [  # (kind, name, team): before 0005 a name was unique across teams
    ("cluster", "backend", "a"),
    ("cluster", "web", None),
    ("route_config", "routes", "a"),
]


def _upto(version: int, real: object) -> object:
    def load(dialect: str) -> list[Migration]:
        return [m for m in real(dialect) if m.version <= version]  # type: ignore[operator]

    return load


async def _write_old_rows(url: str, loop: asyncio.AbstractEventLoop) -> None:
    rows = [(k, n, t, 1, "native", f'{{"name":"{n}"}}', NOW, NOW) for k, n, t in OLD_ROWS]
    insert = ("INSERT INTO resources (kind, name, team, version, source, spec, created_at,"
              " updated_at) VALUES ")  # fmt: skip
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executemany(insert + "(?,?,?,?,?,?,?,?)", rows)
        return
    dsn, schema = postgres._split_url(url)

    async def write() -> None:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema or "public"})
        try:
            await conn.executemany(insert + "($1,$2,$3,$4,$5,$6,$7,$8)", rows)
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(write, loop=loop)()


def _row(name: str, team: str | None, version: int = 1) -> ResourceRow:
    return ResourceRow(
        kind="cluster", name=name, team=team, version=version, source="native",
        spec={"name": name}, created_at=datetime.fromisoformat(NOW),
        updated_at=datetime.fromisoformat(NOW),
    )  # fmt: skip


async def test_old_rows_survive_and_names_become_per_team(
    repo_url: str, aio_loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        for module in (sqlite, postgres):
            m.setattr(module, "load_migrations", _upto(4, module.load_migrations))
        old = await open_repository(repo_url, aio_loop)
        try:
            assert (await old.migrate())[-1] == "0004_write_log"
        finally:
            await old.aclose()
    await _write_old_rows(repo_url, aio_loop)

    repo = await open_repository(repo_url, aio_loop)
    try:
        assert (await repo.migrate())[0] == "0005_team_names"  # then any later ones
        loaded = {(r.kind, r.name, r.team): r for r in await repo.load_all()}
        assert set(loaded) == set(OLD_ROWS)  # every resource kept, name and team unchanged
        assert loaded["cluster", "backend", "a"].spec == {"name": "backend"}
        # now team b (and shared) may have a `backend` too; a's is updated in place
        await repo.write([Upsert(_row("backend", "b")), Upsert(_row("backend", None))])
        await repo.write([Upsert(_row("backend", "a", version=2))])
        rows = {(r.name, r.team): r.version for r in await repo.load_all() if r.kind == "cluster"}
        assert rows == {("backend", "a"): 2, ("backend", "b"): 1, ("backend", None): 1,
                        ("web", None): 1}  # fmt: skip
        await repo.write([Delete("cluster", "b/backend")])  # by key: only b's goes
        rows = {(r.name, r.team) for r in await repo.load_all() if r.kind == "cluster"}
        assert rows == {("backend", "a"), ("backend", None), ("web", None)}
    finally:
        await repo.aclose()
