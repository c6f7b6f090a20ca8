"""The SQLite repository against real database files."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio_asyncio

from flowplane.errors import ConfigurationError
from flowplane.storage import open_repository
from flowplane.storage.base import ResourceRow, load_migrations
from flowplane.storage.sqlite import sqlite_path

NOW = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


def row(name: str, version: int = 1, **spec: object) -> ResourceRow:
    return ResourceRow("cluster", name, None, version, "native", {"name": name, **spec}, NOW, NOW)


async def test_migrations_recorded_and_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sub/dir/f.db"  # missing directories are created
    repo = await open_repository(url)
    try:
        assert await repo.migrate() == [
            f"{m.version:04d}_{m.name}" for m in load_migrations("sqlite")
        ]
        assert await repo.migrate() == []
    finally:
        await repo.aclose()
    with sqlite3.connect(tmp_path / "sub/dir/f.db") as c:
        versions = [r[0] for r in c.execute("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in load_migrations("sqlite")]
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///", "mysql://x", "redis://localhost",
     "postgresql://localhost/x?schema=Bad-Name"],
)  # fmt: skip
async def test_bad_urls_refused_clearly(url: str) -> None:
    async with trio_asyncio.open_loop():
        with pytest.raises(ConfigurationError):
            await open_repository(url)


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite:///./flowplane.db") == "./flowplane.db"
    assert sqlite_path("sqlite:////var/lib/f.db") == "/var/lib/f.db"


async def test_cli_db_migrate(tmp_path: Path) -> None:
    import os
    import sys

    import trio

    env = {**os.environ, "FLOWPLANE_DATABASE_URL": f"sqlite:///{tmp_path}/m.db"}
    cmd = [sys.executable, "-m", "flowplane.cli.main", "db", "migrate"]
    first = await trio.run_process(cmd, env=env, capture_stdout=True)
    assert first.stdout.decode().startswith("applied: 0001_resources, 0002_auth")
    again = await trio.run_process(cmd, env=env, capture_stdout=True)
    assert again.stdout.decode().strip() == "the database is up to date"
