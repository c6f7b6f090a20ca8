"""The repository contract, run against every backend (SQLite file and real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from flowplane.errors import StorageError
from flowplane.storage import open_repository
from flowplane.storage.base import (
    AuditQuery,
    AuditRow,
    Delete,
    DeleteRow,
    Repository,
    ResourceRow,
    Row,
    UpdateRow,
    Upsert,
    load_migrations,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


def row(name: str, version: int = 1, **spec: object) -> ResourceRow:
    return ResourceRow("cluster", name, None, version, "native", {"name": name, **spec}, NOW, NOW)


async def test_migrations_are_applied_once(repo: Repository) -> None:
    names = [f"{m.version:04d}_{m.name}" for m in load_migrations("sqlite")]
    assert await repo.migrate() == names
    assert await repo.migrate() == []


async def test_write_load_round_trip(repo: Repository) -> None:
    await repo.migrate()
    spec = {"x": [1, 2.5, "é", None], "nested": {"b": 1, "a": 2}}  # key order is kept
    await repo.write([Upsert(row("a", **spec)), Upsert(row("b"))])
    await repo.write([Upsert(row("a", 2, y=True)), Delete("cluster", "b")])
    assert await repo.load_all() == [row("a", 2, y=True)]
    await repo.write([Upsert(row("c", **spec))])
    loaded = {r.name: r for r in await repo.load_all()}
    assert list(loaded["c"].spec["nested"]) == ["b", "a"]


async def test_failed_batch_changes_nothing(repo: Repository) -> None:
    await repo.migrate()
    await repo.write([Upsert(row("a"))])
    # version 0 violates a CHECK constraint: the whole batch rolls back, the delete included
    with pytest.raises(StorageError):
        await repo.write([Delete("cluster", "a"), Upsert(row("b")), Upsert(row("c", 0))])
    assert [r.name for r in await repo.load_all()] == ["a"]


async def test_small_tables(repo: Repository) -> None:
    await repo.migrate()
    values = {"description": "d", "quotas": {"maxClusters": 2}, "version": 1,
              "created_at": NOW, "updated_at": NOW}  # fmt: skip
    await repo.write([Row("teams", "a", values), Row("teams", "b", values)])
    await repo.write([Row("teams", "a", {**values, "version": 2}), DeleteRow("teams", "b")])
    await repo.write(
        [
            UpdateRow("teams", "a", {"description": "e"}),
            UpdateRow("teams", "zz", {"description": "x"}),
        ]
    )
    rows = await repo.load_rows("teams")
    assert len(rows) == 1 and rows[0]["name"] == "a" and rows[0]["version"] == 2
    assert rows[0]["description"] == "e"  # an update of a missing row creates nothing
    assert rows[0]["quotas"] == {"maxClusters": 2}
    with pytest.raises(StorageError):
        await repo.load_rows("resources; DROP TABLE teams")


async def test_audit_query(repo: Repository) -> None:
    await repo.migrate()
    rows = [
        AuditRow(
            NOW + timedelta(seconds=i),
            f"tok{i % 2}",
            f"name{i % 2}",
            "create",
            "cluster" if i < 3 else "token",
            f"r{i}",
            "a" if i % 2 else None,
            None,
            {"i": i},
            "127.0.0.1:1",
        )
        for i in range(5)
    ]
    await repo.write(rows)
    got, total = await repo.query_audit(AuditQuery())
    assert total == 5 and [r.resource_name for r in got] == ["r4", "r3", "r2", "r1", "r0"]
    assert got[0].after == {"i": 4} and got[0].before is None and got[0].id is not None
    got, total = await repo.query_audit(AuditQuery(resource_type="cluster", team="a"))
    assert (total, [r.resource_name for r in got]) == (1, ["r1"])
    got, total = await repo.query_audit(AuditQuery(actor="name0", limit=1, offset=1))
    assert (total, [r.resource_name for r in got]) == (3, ["r2"])
    got, total = await repo.query_audit(AuditQuery(since=NOW + timedelta(seconds=3)))
    assert total == 2


async def test_prune_audit_deletes_only_rows_older_than_the_cutoff(repo: Repository) -> None:
    """Audit retention (FLOWPLANE_AUDIT_KEEP_DAYS): `prune_audit(before)` deletes exactly the
    rows older than `before`, compared as instants (a cutoff given in another offset too)."""
    await repo.migrate()
    rows = [
        AuditRow(NOW - timedelta(days=d), None, "n", "create", "cluster", f"r{d}", None, None,
                 None, None)
        for d in (100, 91, 89, 0)
    ]  # fmt: skip
    await repo.write(rows)
    # 90 days before NOW, written in UTC+02:00: the same instant
    cutoff = (NOW - timedelta(days=90)).astimezone(timezone(timedelta(hours=2)))
    assert await repo.prune_audit(cutoff) == 2
    got, total = await repo.query_audit(AuditQuery())
    assert (total, [r.resource_name for r in got]) == (2, ["r0", "r89"])
    assert await repo.prune_audit(cutoff) == 0  # idempotent
    assert await repo.prune_audit(NOW + timedelta(seconds=1)) == 2
    assert (await repo.query_audit(AuditQuery()))[1] == 0


async def test_closed_repository_raises_storage_error(repo_url: str, aio_loop: Any) -> None:
    repo = await open_repository(repo_url, aio_loop)
    await repo.aclose()
    with pytest.raises(StorageError):
        await repo.ping()


async def test_resource_owner_and_api_rows(repo: Repository) -> None:
    """Migration 0003: a Native resource records the Platform API that made it, and API
    definitions (client JSON + what they generated) round-trip in their own table."""
    await repo.migrate()
    owned = ResourceRow("cluster", "pets.default", "t", 1, "platform", {"name": "pets.default"},
                        NOW, NOW, owner="api-1")  # fmt: skip
    await repo.write([Upsert(owned), Upsert(row("plain"))])
    loaded = {r.name: r for r in await repo.load_all()}
    assert loaded["pets.default"].owner == "api-1"
    assert loaded["plain"].owner is None
    spec = {"name": "pets", "domain": "pets.example.com", "routes": [{"path": "/p/{id}"}]}
    generated = {"clusters": {"t.pets.default": {"name": "t.pets.default"}}}
    values = {"name": "pets", "team": "t", "version": 1, "spec": spec, "generated": generated,
              "created_at": NOW, "updated_at": NOW}  # fmt: skip
    await repo.write([Row("apis", "api-1", values)])
    (api,) = await repo.load_rows("apis")
    assert (api["id"], api["spec"], api["generated"]) == ("api-1", spec, generated)
    assert datetime.fromisoformat(api["created_at"]) == NOW
    await repo.write([DeleteRow("apis", "api-1")])
    assert await repo.load_rows("apis") == []
