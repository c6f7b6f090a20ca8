"""HistoryService (api.md "History and rollback"), called directly with an explicit caller
against a real core on a real SQLite file: every version of every resource kept in the
transaction of its write, old versions and RFC 6902 diffs, rollback as a checked and audited
write that re-creates deleted resources, teams and scopes, and retention."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
import trio

from flowplane.app import Core
from flowplane.domain.auth import SYSTEM
from flowplane.domain.resources import Kind
from flowplane.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    QuotaExceeded,
)
from flowplane.services.common import Window
from flowplane.services.history import Version
from flowplane.services.startup import keep_history
from flowplane.storage.base import AuditQuery, HistoryKey
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from tests.services.helpers import ADMIN, all_but, assert_scope_refused, caller

C = Kind.CLUSTER.value


async def versions(core: Core, kind: str = C, name: str = "backend") -> list[tuple[int, str]]:
    page = await core.services.history.list(ADMIN, kind, name, Window(limit=1000))
    return [(r.version, r.action) for r in page.items]


async def test_every_write_is_a_version_newest_first(core: Core) -> None:
    """api.md: "Every version of every resource is kept (same transaction as the write)";
    `GET .../history` lists {version, action, actor, at, schemaVersion}, newest first."""
    res = core.services.resources
    await res.create(ADMIN, Kind.CLUSTER, cluster_body(port=1))
    await res.patch(
        ADMIN, Kind.CLUSTER, "backend", {"endpoints": [{"host": "127.0.0.1", "port": 2}]}
    )
    await res.replace(ADMIN, Kind.CLUSTER, "backend", cluster_body(port=3))
    assert await versions(core) == [(3, "update"), (2, "update"), (1, "create")]
    page = await core.services.history.list(ADMIN, C, "backend", Window(limit=1, offset=1))
    assert page.total == 3 and [r.version for r in page.items] == [2]
    row = page.items[0]
    assert (row.actor_name, row.actor_id, row.schema_version) == ("admin", "id-admin", 1)


async def test_old_versions_read_back_exactly_and_diff_is_rfc6902(core: Core) -> None:
    """`GET .../history/{version}` -> the document as it was; `?diff=previous` -> an RFC 6902
    patch that turns the previous version into this one."""
    res, hist = core.services.resources, core.services.history
    first = cluster_body(port=1, connectTimeoutSeconds=2)
    await res.create(ADMIN, Kind.CLUSTER, copy.deepcopy(first))
    await res.patch(ADMIN, Kind.CLUSTER, "backend", {"connectTimeoutSeconds": 7, "http2": True})
    v1 = await hist.version(ADMIN, C, "backend", 1)
    assert isinstance(v1, Version)
    assert v1.spec == first and v1.to_json()["version"] == 1
    patch = await hist.version(ADMIN, C, "backend", 2, diff="previous")
    assert sorted(op["path"] for op in patch) == ["/connectTimeoutSeconds", "/http2"]
    v2 = await hist.version(ADMIN, C, "backend", 2)
    assert isinstance(v2, Version) and isinstance(patch, list)
    assert jsonpatch.apply_patch(first, patch) == v2.spec
    # the first version's diff is from the empty document
    assert (
        jsonpatch.apply_patch({}, await hist.version(ADMIN, C, "backend", 1, diff="previous"))
        == first
    )
    with pytest.raises(NotFound):
        await hist.version(ADMIN, C, "backend", 3)


async def test_rollback_is_a_new_version_with_the_old_content_audited(core: Core) -> None:
    """`POST .../rollback {version}` -> a new version whose content is the old one, audited as
    `rollback`; If-Match is honoured (412 when stale, nothing changes)."""
    res, hist = core.services.resources, core.services.history
    await res.create(ADMIN, Kind.CLUSTER, cluster_body(port=1))
    await res.patch(
        ADMIN, Kind.CLUSTER, "backend", {"endpoints": [{"host": "127.0.0.1", "port": 2}]}
    )
    with pytest.raises(PreconditionFailed):
        await hist.rollback(ADMIN, C, "backend", 1, '"1"')
    back = await hist.rollback(ADMIN, C, "backend", 1, '"2"')
    assert back.version == 3 and back.spec == cluster_body(port=1)  # type: ignore[union-attr]
    assert core.state.get(Kind.CLUSTER, "backend") == back
    assert (await versions(core))[0] == (3, "rollback")
    rows, _ = await core.repo.query_audit(AuditQuery(resource_type=C))
    assert rows[0].action == "rollback" and rows[0].after == cluster_body(port=1)


async def test_deleted_resources_keep_history_and_rollback_recreates_them(core: Core) -> None:
    """api.md: "History survives deletion: rollback of a deleted name re-creates it"; its
    versions go on from the deletion (a version of its own, with no content)."""
    res, hist = core.services.resources, core.services.history
    await res.create(ADMIN, Kind.CLUSTER, cluster_body(port=1, team="t1"))
    await res.delete(ADMIN, Kind.CLUSTER, "backend")
    assert await versions(core) == [(2, "delete"), (1, "create")]
    with pytest.raises(NotFound, match="no version 3"):
        await hist.version(ADMIN, C, "backend", 3)
    with pytest.raises(BadRequest, match="is its deletion"):
        await hist.rollback(ADMIN, C, "backend", 2, None)
    with pytest.raises(PreconditionFailed):
        await hist.rollback(ADMIN, C, "backend", 1, '"1"')
    back = await hist.rollback(ADMIN, C, "backend", 1, '"2"')
    assert (back.version, back.team, back.spec) == (3, "t1", cluster_body(port=1, team="t1"))  # type: ignore[union-attr]
    # a plain re-create after another delete also continues the numbering
    await res.delete(ADMIN, Kind.CLUSTER, "backend")
    again = await res.create(ADMIN, Kind.CLUSTER, cluster_body(port=5, team="t1"))
    assert again.version == 5
    assert await versions(core) == [(5, "create"), (4, "delete"), (3, "rollback"), (2, "delete"),
                                    (1, "create")]  # fmt: skip


async def test_numbering_survives_a_restart(core: Core, settings: Any) -> None:
    """Deleted names are found in history at start-up, so (kind, team, name, version) stays
    one version for ever."""
    from flowplane.app import open_core

    res = core.services.resources
    await res.create(ADMIN, Kind.CLUSTER, cluster_body())
    await res.delete(ADMIN, Kind.CLUSTER, "backend")
    async with open_core(settings) as second:
        made = await second.services.resources.create(ADMIN, Kind.CLUSTER, cluster_body())
        assert made.version == 3
        back = await second.services.history.rollback(ADMIN, C, "backend", 1, None)
        assert back.version == 4  # type: ignore[union-attr]


async def test_rollback_to_a_config_referencing_something_deleted_is_400_naming_it(
    core: Core,
) -> None:
    """api.md: "a rollback to a config that references something deleted -> 400 naming it";
    nothing changes."""
    res, hist = core.services.resources, core.services.history
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("a"))
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("b"))
    await res.create(ADMIN, Kind.ROUTE_CONFIG, route_config_body(cluster="a"))
    await res.replace(ADMIN, Kind.ROUTE_CONFIG, "routes", route_config_body(cluster="b"))
    await res.delete(ADMIN, Kind.CLUSTER, "a")
    before = core.state.get(Kind.ROUTE_CONFIG, "routes")
    with pytest.raises(BadRequest, match="cluster 'a'") as info:
        await hist.rollback(ADMIN, Kind.ROUTE_CONFIG.value, "routes", 1, None)
    assert any("cluster 'a'" in d.message for d in info.value.details)
    assert core.state.get(Kind.ROUTE_CONFIG, "routes") == before
    assert (await versions(core, Kind.ROUTE_CONFIG.value, "routes"))[0] == (2, "update")


async def test_rollback_is_validated_like_any_write_quota_and_address(core: Core) -> None:
    """Rollback goes through the same rules as a write: a listener address taken since -> 409;
    a team's quota reached since -> 403 quota_exceeded."""
    res, hist = core.services.resources, core.services.history
    await res.create(ADMIN, Kind.CLUSTER, cluster_body())
    await res.create(ADMIN, Kind.ROUTE_CONFIG, route_config_body())
    await res.create(ADMIN, Kind.LISTENER, listener_body("l1", port=10001))
    await res.patch(ADMIN, Kind.LISTENER, "l1", {"port": 10002})
    await res.create(ADMIN, Kind.LISTENER, listener_body("l2", port=10001))
    with pytest.raises(Conflict, match="10001"):
        await hist.rollback(ADMIN, Kind.LISTENER.value, "l1", 1, None)
    await core.services.teams.create(SYSTEM, {"name": "q", "quotas": {"maxClusters": 1}})
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("x", team="q"))
    await res.delete(ADMIN, Kind.CLUSTER, "x")
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("y", team="q"))
    with pytest.raises(QuotaExceeded, match="quota"):
        await hist.rollback(ADMIN, C, "x", 1, None)


async def test_history_and_rollback_respect_teams_and_scopes(core: Core) -> None:
    """History is read like the resource: another team's history (deleted or not) -> 404;
    without the kind's read scope -> 403; rollback needs the write scope."""
    res, hist = core.services.resources, core.services.history
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("mine", team="t1"))
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("theirs", team="t2"))
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("gone", team="t2"))
    await res.delete(ADMIN, Kind.CLUSTER, "gone")
    t1 = caller("clusters:read", "clusters:write", teams=["t1"])
    assert [r.version for r in (await hist.list(t1, C, "mine", Window())).items] == [1]
    for name in ("theirs", "gone", "never"):
        with pytest.raises(NotFound):
            await hist.list(t1, C, name, Window())
        with pytest.raises(NotFound):
            await hist.version(t1, C, name, 1)
        with pytest.raises(NotFound):
            await hist.rollback(t1, C, name, 1, None)
    with pytest.raises(Forbidden) as info:
        await hist.list(all_but("clusters:read"), C, "mine", Window())
    assert_scope_refused(info.value, "clusters:read")
    with pytest.raises(Forbidden) as info:
        await hist.rollback(all_but("clusters:write"), C, "mine", 1, None)
    assert_scope_refused(info.value, "clusters:write")
    reader = caller("clusters:read", teams=["t1"])
    with pytest.raises(Forbidden):
        await hist.rollback(reader, C, "mine", 1, None)


async def test_a_failed_write_leaves_no_history(core: Core) -> None:
    """History rows are in the write's transaction: a refused write adds none."""
    res = core.services.resources
    await res.create(ADMIN, Kind.CLUSTER, cluster_body())
    with pytest.raises(BadRequest):
        await res.patch(ADMIN, Kind.CLUSTER, "backend", {"endpoints": []})
    with pytest.raises(PreconditionFailed):
        await res.patch(ADMIN, Kind.CLUSTER, "backend", {"http2": True}, '"7"')
    assert await versions(core) == [(1, "create")]


async def test_retention_keeps_the_newest_versions_by_a_background_job(
    core: Core, autojump_clock: trio.abc.Clock
) -> None:
    """FLOWPLANE_HISTORY_KEEP: the background job prunes at start and then every period to the
    newest `keep` versions of each resource (writes themselves never prune)."""
    res = core.services.resources
    await res.create(ADMIN, Kind.CLUSTER, cluster_body())
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("other"))
    for port in range(2, 6):
        await res.patch(ADMIN, Kind.CLUSTER, "backend",
                        {"endpoints": [{"host": "127.0.0.1", "port": port}]})  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: keep_history(core.repo, 2, every=60))
        await trio.sleep(1)
        assert [v for v, _ in await versions(core)] == [5, 4]
        assert [v for v, _ in await versions(core, name="other")] == [1]
        for port in range(6, 9):
            await res.patch(ADMIN, Kind.CLUSTER, "backend",
                            {"endpoints": [{"host": "127.0.0.1", "port": port}]})  # fmt: skip
        await trio.sleep(60)
        assert [v for v, _ in await versions(core)] == [8, 7]
        nursery.cancel_scope.cancel()
    key = HistoryKey(C, None, "backend")
    assert [r.version for r in await core.repo.history_versions(key, 100, 100)] == [8, 7]


async def test_a_name_in_several_teams_needs_team_to_choose(core: Core) -> None:
    """A name whose history the caller can see in several teams (here: deleted in t1, made
    again in t2) -> 400 listing the teams; `team` chooses. Names are per team (api.md
    Conventions), so t1's deleted one is rolled back beside t2's, which is untouched."""
    res, hist = core.services.resources, core.services.history
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("x", team="t1"))
    await res.delete(ADMIN, Kind.CLUSTER, "x")
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("x", port=2, team="t2"))
    with pytest.raises(BadRequest, match="several teams") as info:
        await hist.list(ADMIN, C, "x", Window())
    assert "t1" in info.value.details[0].message and "t2" in info.value.details[0].message
    old = await hist.list(ADMIN, C, "x", Window(), team="t1")
    assert [(r.version, r.action, r.team) for r in old.items] == [
        (2, "delete", "t1"),
        (1, "create", "t1"),
    ]
    new = await hist.list(ADMIN, C, "x", Window(), team="t2")
    assert [(r.version, r.team) for r in new.items] == [(1, "t2")]
    t2 = caller("clusters:read", teams=["t2"])
    assert [r.team for r in (await hist.list(t2, C, "x", Window())).items] == ["t2"]
    back = await hist.rollback(ADMIN, C, "x", 1, None, team="t1")
    assert (back.team, back.version) == ("t1", 3)
    assert res.get(ADMIN, Kind.CLUSTER, "x", team="t2").version == 1
