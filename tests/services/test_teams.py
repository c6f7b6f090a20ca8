"""TeamService (api.md "Teams, tokens, auth"): list, get, create, patch and delete, called
directly with an explicit caller (no HTTP)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flowplane.app import Core, open_core
from flowplane.domain.auth import SYSTEM, Principal
from flowplane.domain.resources import Kind
from flowplane.errors import (
    BadRequest,
    Conflict,
    FlowplaneError,
    Forbidden,
    NotFound,
    QuotaExceeded,
)
from flowplane.services.common import Window
from flowplane.settings import Settings
from flowplane.testing.factories import cluster_body
from tests.services.helpers import (
    ADMIN,
    all_but,
    assert_scope_refused,
    caller,
    run,
    token_caller,
)


async def make(core: Core, *names: str) -> None:
    for name in names:
        await core.services.teams.create(SYSTEM, {"name": name})


async def test_create_returns_the_record_and_it_is_readable(core: Core) -> None:
    teams = core.services.teams
    rec = await teams.create(ADMIN, {"name": "payments", "description": "money",
                                     "quotas": {"maxClusters": 2, "requestsPerMinute": 60}})  # fmt: skip
    assert (rec.name, rec.description, rec.quotas, rec.version) == (
        "payments", "money", {"maxClusters": 2, "requestsPerMinute": 60}, 1,
    )  # fmt: skip
    assert rec.created_at == rec.updated_at
    assert teams.get(ADMIN, "payments") == rec
    assert list(teams.list(ADMIN, Window()).items) == [rec]


async def test_a_teams_quota_applies_to_its_resources(core: Core) -> None:
    """api.md: quotas per team -> 403 quota_exceeded; shared resources have none."""
    await core.services.teams.create(ADMIN, {"name": "a", "quotas": {"maxClusters": 1}})
    res = core.services.resources
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("c1", team="a"))
    with pytest.raises(QuotaExceeded, match="quota of 1"):
        await res.create(ADMIN, Kind.CLUSTER, cluster_body("c2", team="a"))
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("c3"))  # shared: no quota
    await core.services.teams.patch(ADMIN, "a", {"quotas": {"maxClusters": 2}})
    assert (await res.create(ADMIN, Kind.CLUSTER, cluster_body("c2", team="a"))).team == "a"


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({}, "name"),
        ({"name": "z", "quotas": {"maxClusters": -1}}, "quotas.maxClusters"),
        ({"name": "z", "quotas": {"maxBananas": 1}}, "quotas.maxBananas"),
        ({"name": "z", "description": "x" * 1001}, "description"),
    ],
)
async def test_create_with_a_bad_body_is_400_with_field_details(
    core: Core, sent: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        await core.services.teams.create(ADMIN, sent)
    assert [d.field for d in refused.value.details] == [field]
    assert core.services.teams.list(ADMIN, Window()).total == 0


async def test_create_of_a_taken_name_is_409(core: Core) -> None:
    teams = core.services.teams
    first = await teams.create(ADMIN, {"name": "a", "description": "first"})
    with pytest.raises(Conflict, match="'a' already exists"):
        await teams.create(ADMIN, {"name": "a", "description": "second"})
    assert teams.get(ADMIN, "a") == first


async def test_list_and_get_show_the_callers_teams_only(core: Core) -> None:
    """Admins see every team, by name; a team-bound caller its own; another team is missing."""
    await make(core, "c", "a", "b")
    teams = core.services.teams
    every = teams.list(ADMIN, Window())
    assert [t.name for t in every.items] == ["a", "b", "c"] and every.total == 3
    page = teams.list(ADMIN, Window(limit=1, offset=2))
    assert ([t.name for t in page.items], page.total, page.limit, page.offset) == (["c"], 3, 1, 2)
    a, _ = await token_caller(core, role="platform-engineer", teams=["a", "c"])
    assert [t.name for t in teams.list(a, Window()).items] == ["a", "c"]
    assert teams.get(a, "a").name == "a"
    for hidden in ("b", "nope"):
        with pytest.raises(NotFound, match=f"team '{hidden}' does not exist"):
            teams.get(a, hidden)


async def test_patch_changes_what_it_names(core: Core) -> None:
    teams = core.services.teams
    first = await teams.create(ADMIN, {"name": "a", "description": "d", "quotas": {"maxApis": 3}})
    quotas = await teams.patch(ADMIN, "a", {"quotas": {"maxListeners": 1}})
    assert (quotas.description, quotas.quotas, quotas.version) == ("d", {"maxListeners": 1}, 2)
    assert quotas.created_at == first.created_at and quotas.updated_at >= first.updated_at
    cleared = await teams.patch(ADMIN, "a", {"description": None, "quotas": None})
    assert (cleared.description, cleared.quotas, cleared.version) == (None, {}, 3)
    assert teams.get(ADMIN, "a") == cleared
    assert core.state.team_quotas["a"] == {}  # what the config actor enforces follows


async def test_patch_refusals(core: Core) -> None:
    await make(core, "a", "b")
    teams = core.services.teams
    for not_an_object in (None, [], "x"):
        with pytest.raises(BadRequest):
            await teams.patch(ADMIN, "a", not_an_object)
    with pytest.raises(BadRequest) as bad:
        await teams.patch(ADMIN, "a", {"quotas": {"maxClusters": "many"}})
    assert [d.field for d in bad.value.details] == ["quotas.maxClusters"]
    with pytest.raises(BadRequest) as renamed:
        await teams.patch(ADMIN, "a", {"name": "z"})  # a team cannot be renamed
    assert [d.field for d in renamed.value.details] == ["name"]
    with pytest.raises(NotFound):
        await teams.patch(ADMIN, "nope", {"description": "x"})
    bound = caller("teams:write", teams=["a"])
    with pytest.raises(Forbidden):  # team records are not a team-bound token's to change
        await teams.patch(bound, "b", {"description": "mine now"})
    assert teams.get(ADMIN, "a").version == teams.get(ADMIN, "b").version == 1


async def test_delete_removes_an_empty_team(core: Core) -> None:
    await make(core, "a", "b")
    teams = core.services.teams
    assert await teams.delete(ADMIN, "a") is None
    with pytest.raises(NotFound):
        teams.get(ADMIN, "a")
    assert [t.name for t in teams.list(ADMIN, Window()).items] == ["b"]
    assert "a" not in core.state.team_quotas


async def test_delete_refusals(core: Core) -> None:
    """409 while the team owns resources; a missing (or unseen) team is 404."""
    await make(core, "a", "b")
    teams = core.services.teams
    await core.services.resources.create(ADMIN, Kind.CLUSTER, cluster_body("ca", team="a"))
    with pytest.raises(Conflict, match="cluster 'ca'"):
        await teams.delete(ADMIN, "a")
    with pytest.raises(NotFound):
        await teams.delete(ADMIN, "nope")
    with pytest.raises(Forbidden):
        await teams.delete(caller("teams:write", teams=["a"]), "b")
    assert [t.name for t in teams.list(ADMIN, Window()).items] == ["a", "b"]


TeamOp = Callable[[Core, Principal], Awaitable[object] | object]
OPERATIONS: dict[str, tuple[str, TeamOp]] = {
    "list": ("teams:read", lambda c, p: c.services.teams.list(p, Window())),
    "get": ("teams:read", lambda c, p: c.services.teams.get(p, "a")),
    "create": ("teams:write", lambda c, p: c.services.teams.create(p, {"name": "new"})),
    "patch": ("teams:write", lambda c, p: c.services.teams.patch(p, "a", {"description": "x"})),
    "delete": ("teams:write", lambda c, p: c.services.teams.delete(p, "a")),
}


@pytest.mark.parametrize("name", OPERATIONS)
async def test_every_operation_checks_its_scope(core: Core, name: str) -> None:
    scope, op = OPERATIONS[name]
    await make(core, "a")
    teams = core.services.teams
    before = list(teams.list(ADMIN, Window()).items)
    with pytest.raises(FlowplaneError) as refused:
        await run(op(core, all_but(scope)))
    assert_scope_refused(refused.value, scope)
    assert list(teams.list(ADMIN, Window()).items) == before
    await run(op(core, caller(scope)))  # the scope is enough


async def test_platform_engineers_cannot_create_teams(core: Core) -> None:
    """The role has teams:read, not teams:write: team records are admin business."""
    pe, _ = await token_caller(core, role="platform-engineer", teams=["a"])
    with pytest.raises(Forbidden, match="teams:write"):
        await core.services.teams.create(pe, {"name": "q"})


async def test_team_changes_are_persisted(settings: Settings) -> None:
    async with open_core(settings) as core:
        teams = core.services.teams
        await teams.create(ADMIN, {"name": "a", "quotas": {"maxClusters": 1}})
        await teams.patch(ADMIN, "a", {"description": "kept"})
        await teams.create(ADMIN, {"name": "gone"})
        await teams.delete(ADMIN, "gone")
        before = list(teams.list(ADMIN, Window()).items)
    async with open_core(settings) as core:
        assert list(core.services.teams.list(ADMIN, Window()).items) == before
        assert before[0].description == "kept" and before[0].version == 2
        # the restarted config actor enforces the stored quota
        await core.services.resources.create(ADMIN, Kind.CLUSTER, cluster_body("c1", team="a"))
        with pytest.raises(QuotaExceeded):
            await core.services.resources.create(ADMIN, Kind.CLUSTER, cluster_body("c2", team="a"))


async def test_a_team_bound_token_cannot_raise_its_own_quotas(core: Core) -> None:
    """api.md: the teams endpoints are admin business. With teams:write but bound to team a, a
    token could otherwise lift a's quotas (requestsPerMinute included) or create teams."""
    await make(core, "a")
    teams = core.services.teams
    bound = caller("teams:write", teams=["a"])
    for attempt in (
        teams.patch(bound, "a", {"quotas": {"requestsPerMinute": 1_000_000}}),
        teams.create(bound, {"name": "mine"}),
        teams.delete(bound, "a"),
    ):
        with pytest.raises(Forbidden, match="bound to teams"):
            await attempt
    assert teams.get(ADMIN, "a").quotas == {} and [
        t.name for t in teams.list(ADMIN, Window()).items
    ] == ["a"]
