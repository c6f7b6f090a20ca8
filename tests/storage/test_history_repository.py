"""The history part of the repository contract, on every backend (SQLite file and real
PostgreSQL): versions written with a batch, read newest first by (kind, team, name) with a null
team as its own key, the newest version of every key, retention, and one key per version."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flowplane.errors import Conflict, StorageError
from flowplane.storage.base import HistoryKey, HistoryRow, Repository

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def version(name: str, v: int, team: str | None = None, spec: object = True) -> HistoryRow:
    return HistoryRow(
        "cluster", team, name, v, "update", "id", "who", NOW, 1,
        None if spec is None else {"name": name, "v": v}, source="native",
    )  # fmt: skip


async def test_versions_are_read_by_key_newest_first(repo: Repository) -> None:
    await repo.migrate()
    await repo.write([version("a", v) for v in (1, 2, 3)] + [version("a", 1, team="t")])
    await repo.write([version("a", 4, spec=None), version("b", 1)])
    rows, total = await repo.history(HistoryKey("cluster", None, "a"), 2, 1)
    assert total == 4 and [r.version for r in rows] == [3, 2]
    assert rows[0] == version("a", 3)
    (deleted,) = await repo.history_versions(HistoryKey("cluster", None, "a"), 4, 1)
    assert deleted.spec is None
    team_rows, team_total = await repo.history(HistoryKey("cluster", "t", "a"), 50, 0)
    assert team_total == 1 and team_rows == [version("a", 1, team="t")]
    got = await repo.history_versions(HistoryKey("cluster", None, "a"), 3, 2)
    assert [r.version for r in got] == [3, 2]
    assert sorted(await repo.history_heads(), key=str) == sorted(
        [("cluster", None, "a", 4), ("cluster", "t", "a", 1), ("cluster", None, "b", 1)], key=str
    )


async def test_a_version_is_written_once(repo: Repository) -> None:
    """(kind, team, name, version) is unique, a null team included: a batch that repeats one
    fails whole (PostgreSQL's unique violation is a Conflict at its edge: issue 13)."""
    await repo.migrate()
    await repo.write([version("a", 1)])
    with pytest.raises((StorageError, Conflict)):
        await repo.write([version("b", 1), version("a", 1)])
    assert await repo.history_heads() == [("cluster", None, "a", 1)]


async def test_prune_keeps_the_newest_versions_of_every_key(repo: Repository) -> None:
    await repo.migrate()
    await repo.write([version("a", v) for v in range(1, 6)]
                     + [version("a", v, team="t") for v in range(1, 4)] + [version("b", 1)])  # fmt: skip
    assert await repo.prune_history(2) == 4
    rows, _ = await repo.history(HistoryKey("cluster", None, "a"), 50, 0)
    assert [r.version for r in rows] == [5, 4]
    rows, _ = await repo.history(HistoryKey("cluster", "t", "a"), 50, 0)
    assert [r.version for r in rows] == [3, 2]
    assert await repo.prune_history(2) == 0
