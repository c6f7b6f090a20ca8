"""Resource writes on PostgreSQL are compare-and-swaps on the version (README "Replicas"): the
database refuses a write planned against a version that is no longer the stored one, whoever
wrote it, even without the change-log check (e.g. `flowplane token create`-style writers that
have no memory to fence, or a bug)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from flowplane.storage import open_repository
from flowplane.storage.base import AuditQuery, AuditRow, Repository, ResourceRow, StaleState, Upsert
from flowplane.testing.postgres import drop_schema
from tests.storage.conftest import PG

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 12, 3, tzinfo=UTC)


def row(version: int, port: int = 1) -> ResourceRow:
    return ResourceRow(kind="cluster", name="x", team=None, version=version, source="native",
                       spec={"name": "x", "port": port}, created_at=NOW, updated_at=NOW)  # fmt: skip


def audit(what: str) -> AuditRow:
    return AuditRow(NOW, None, None, what, "cluster", "x", None, None, None, None)


@pytest.fixture
async def pg(aio_loop: asyncio.AbstractEventLoop) -> AsyncIterator[Repository]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    repo = await open_repository(f"{PG}?schema={schema}", aio_loop)
    try:
        await repo.migrate()
        yield repo
    finally:
        await repo.aclose()
        await drop_schema(aio_loop, PG, schema)


async def test_a_write_against_a_moved_version_changes_nothing(pg: Repository) -> None:
    """The rule: "If-Match/version as compare-and-swap ... 0 rows -> the write fails" (issue
    13): a second create of a stored name, and an update that skips a version, are refused
    (StaleState, a 503 the config actor turns into a re-plan) with their audit rows; the next
    version in order is written."""
    await pg.write([Upsert(row(1)), audit("create")])
    with pytest.raises(StaleState, match="no longer at version 0"):
        await pg.write([Upsert(row(1, port=2)), audit("create again")])
    with pytest.raises(StaleState, match="no longer at version 2"):
        await pg.write([Upsert(row(3, port=3)), audit("skip")])
    assert [(r.version, r.spec["port"]) for r in await pg.load_all()] == [(1, 1)]
    await pg.write([Upsert(row(2, port=4)), audit("update")])
    assert [(r.version, r.spec["port"]) for r in await pg.load_all()] == [(2, 4)]
    rows, _ = await pg.query_audit(AuditQuery())
    assert sorted(r.action for r in rows) == ["create", "update"]
