"""SQLite faults on real files, through the real REST app (issue 11, items 2-4).

- Disk full: "say 'database or disk is full'" — not the error of the ROLLBACK that followed.
  SQLite's `PRAGMA max_page_count` (on the app's own connection) makes a real SQLITE_FULL.
- Read-only: "Reopen on such errors; readiness must reflect it." Tests run as root, for whom
  chmod does not make a file read-only; `chattr +i` (immutable) does, for root too: SQLite then
  opens the file read-only, as it does for a file whose permissions forbid writing.
- A lock held by another connection (`BEGIN EXCLUSIVE` on the same file): "Writes must fail with
  503 + Retry-After after a configurable deadline (and say whether the outcome is known);
  readiness must answer."
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from flowplane.app import Core, make_app, open_core
from flowplane.settings import load_settings
from flowplane.storage.sqlite import SqliteRepository
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import admin_token

pytestmark = pytest.mark.timeout(60)
N = "/api/v1/native"


@asynccontextmanager
async def app(path: Path, **settings: Any) -> AsyncIterator[tuple[Core, httpx.AsyncClient]]:
    s = load_settings(
        database_url=f"sqlite:///{path}", api_address="127.0.0.1:0", default_gateway=False,
        **settings,
    )  # fmt: skip
    async with open_core(s) as core:
        transport = httpx.ASGITransport(app=make_app(core))
        headers = {"Authorization": f"Bearer {admin_token(core)}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://flowplane.test", headers=headers
        ) as client:
            yield core, client


async def on_connection(core: Core, sql: str) -> Any:
    """Run `sql` on the repository's own connection (a PRAGMA that holds per connection)."""
    repo = core.repo
    assert isinstance(repo, SqliteRepository)
    return await repo._run(lambda _: repo.conn.execute(sql).fetchone())


async def test_disk_full_says_disk_full_and_changes_nothing(tmp_path: Path) -> None:
    async with app(tmp_path / "f.db") as (core, client):
        assert (await client.post(f"{N}/clusters", json=cluster_body("small"))).status_code == 201
        (pages,) = await on_connection(core, "PRAGMA page_count")
        await on_connection(core, f"PRAGMA max_page_count = {pages}")
        big = cluster_body(
            "big", endpoints=[{"host": f"h{i}.example", "port": 80} for i in range(3000)]
        )
        r = await client.post(f"{N}/clusters", json=big)
        assert r.status_code == 503, r.text
        assert "database or disk is full" in r.json()["message"]
        assert "rollback" not in r.json()["message"]
        assert (await client.get(f"{N}/clusters/big")).status_code == 404
        await on_connection(core, "PRAGMA max_page_count = 1073741823")
        assert (await client.post(f"{N}/clusters", json=big)).status_code == 201
    async with app(tmp_path / "f.db") as (_, client):  # and the database agrees
        assert (await client.get(f"{N}/clusters/big")).status_code == 200


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_read_only_file_recovers_without_restart(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    async with app(db) as (_, client):  # created and migrated while writable
        assert (await client.post(f"{N}/clusters", json=cluster_body("a"))).status_code == 201
    with immutable(db):
        async with app(db) as (_, client):
            ready = await client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["storage"] is False
            r = await client.post(f"{N}/clusters", json=cluster_body("b"))
            assert r.status_code == 503
            assert "readonly" in r.json()["message"]
            assert (await client.get(f"{N}/clusters/a")).status_code == 200  # reads still work
            await trio.run_process(["chattr", "-i", str(db)])  # the permission is fixed
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.post(f"{N}/clusters", json=cluster_body("b"))).status_code == 201
    # Opened read-only again: a write arriving first (no readiness probe before it) reopens too.
    with immutable(db):
        async with app(db) as (_, client):
            await trio.run_process(["chattr", "-i", str(db)])
            assert (await client.post(f"{N}/clusters", json=cluster_body("c"))).status_code == 201
            assert (await client.get("/readyz")).status_code == 200


async def test_lock_held_by_another_connection_meets_the_deadline(tmp_path: Path) -> None:
    db = tmp_path / "lock.db"
    async with app(db, storage_timeout_seconds=0.5) as (_, client):
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with trio.fail_after(3):  # one deadline (0.5 s) and then some, not a long stall
                r = await client.post(f"{N}/clusters", json=cluster_body("late"))
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "1"
            assert "not applied" in r.json()["message"]
            with trio.fail_after(2):
                ready = await client.get("/readyz")
                audit = await client.get("/api/v1/audit")
            assert ready.status_code in (200, 503)
            assert audit.status_code in (200, 503)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await client.get(f"{N}/clusters/late")).status_code == 404
        assert (await client.post(f"{N}/clusters", json=cluster_body("late"))).status_code == 201


async def test_a_commit_stalled_past_the_deadline_is_unknown_then_settled(tmp_path: Path) -> None:
    """A stall inside COMMIT (a frozen filesystem; here the connection's trace callback sleeps
    as COMMIT starts, in the storage thread): the caller is told the outcome is unknown within
    the deadline; once the commit finishes, memory follows the database without a restart."""
    async with app(tmp_path / "stall.db", storage_timeout_seconds=0.3) as (core, client):
        assert (await client.post(f"{N}/clusters", json=cluster_body("a"))).status_code == 201
        armed = threading.Event()

        def stall(sql: str) -> None:
            if sql == "COMMIT" and armed.is_set():
                armed.clear()
                time.sleep(1.0)

        repo = core.repo
        assert isinstance(repo, SqliteRepository)
        await repo._run(lambda _: repo.conn.set_trace_callback(stall))
        armed.set()
        with trio.fail_after(1):  # answered at the deadline, not after the stall
            r = await client.put(
                f"{N}/clusters/a", json=cluster_body("a", port=9), headers={"If-Match": '"1"'}
            )
        assert r.status_code == 503, r.text
        assert "unknown" in r.json()["message"]
        with trio.fail_after(10):  # the actor settles on its own: watch what the API serves
            while (await client.get(f"{N}/clusters/a")).json()["version"] != 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert [row.version for row in await repo.load_all()] == [2]
