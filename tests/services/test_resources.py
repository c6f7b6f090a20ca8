"""ResourceService (api.md "Native API"): list, get, create, replace, merge-patch and delete of
clusters, route configs and listeners, called directly with an explicit caller (no HTTP)
against a real core on a real SQLite file."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from flowplane.app import Core, open_core
from flowplane.domain.auth import SYSTEM, Principal
from flowplane.domain.resources import Kind, StoredResource
from flowplane.errors import BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed
from flowplane.services.common import Window
from flowplane.services.gateway import LISTENER, ROUTES
from flowplane.settings import Settings, load_settings
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from tests.services.helpers import ADMIN, all_but, assert_scope_refused, caller, token_caller

KINDS = list(Kind)
NAME = {Kind.CLUSTER: "backend", Kind.ROUTE_CONFIG: "routes", Kind.LISTENER: "edge"}
_FACTORY: dict[Kind, Callable[..., dict[str, Any]]] = {
    Kind.CLUSTER: cluster_body,
    Kind.ROUTE_CONFIG: route_config_body,
    Kind.LISTENER: listener_body,
}
CHANGE: dict[Kind, dict[str, Any]] = {  # a merge patch changing one field of `body(kind)`
    Kind.CLUSTER: {"connectTimeoutSeconds": 3},
    Kind.ROUTE_CONFIG: {
        "virtualHosts": route_config_body(domains=["api.example.com"])["virtualHosts"]
    },
    Kind.LISTENER: {"port": 10001},
}


def body(kind: Kind, **extra: Any) -> dict[str, Any]:
    return _FACTORY[kind](**extra)


async def dependencies(core: Core, kind: Kind, team: str | None = None) -> None:
    """Create, in `team` (None: shared), what `body(kind)` references (a route config ->
    `backend`; a listener -> `routes` -> `backend`): references resolve inside the referring
    resource's team (api.md Conventions)."""
    res, extra = core.services.resources, {} if team is None else {"team": team}
    if kind is not Kind.CLUSTER:
        await res.create(SYSTEM, Kind.CLUSTER, cluster_body(**extra))
    if kind is Kind.LISTENER:
        await res.create(SYSTEM, Kind.ROUTE_CONFIG, route_config_body(**extra))


def names(page_items: Any) -> list[str]:
    return [r.name for r in page_items]


# --- success: values, and visible to the next read ------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_create_stores_the_clients_json_and_is_readable(core: Core, kind: Kind) -> None:
    await dependencies(core, kind)
    res = core.services.resources
    sent = body(kind)
    made = await res.create(ADMIN, kind, copy.deepcopy(sent))
    assert (made.kind, made.name, made.team, made.version, made.source) == (
        kind, NAME[kind], None, 1, "native",
    )  # fmt: skip
    assert made.spec == sent  # stored exactly as sent (api.md: no configuration loss)
    assert made.created_at == made.updated_at and made.etag == '"1"'
    assert res.get(ADMIN, kind, NAME[kind]) == made
    assert made in res.list(ADMIN, kind, Window()).items


async def test_list_is_sorted_windowed_and_counted(core: Core) -> None:
    """api.md "Lists": `{items, total, limit, offset}`, no silent truncation."""
    res = core.services.resources
    for name, team in (("c", None), ("a", "t1"), ("b", None), ("d", "t1")):
        await res.create(SYSTEM, Kind.CLUSTER, cluster_body(name, team=team))
    page = res.list(ADMIN, Kind.CLUSTER, Window(limit=2, offset=1))
    assert (names(page.items), page.total, page.limit, page.offset) == (["b", "c"], 4, 2, 1)
    assert names(res.list(ADMIN, Kind.CLUSTER, Window(offset=9)).items) == []
    only_t1 = res.list(ADMIN, Kind.CLUSTER, Window(), team="t1")
    assert (names(only_t1.items), only_t1.total) == (["a", "d"], 2)
    assert res.list(ADMIN, Kind.LISTENER, Window()).total == 0  # kinds are separate


async def test_get_missing_is_404(core: Core) -> None:
    with pytest.raises(NotFound, match="cluster 'nope' does not exist"):
        core.services.resources.get(ADMIN, Kind.CLUSTER, "nope")


@pytest.mark.parametrize("kind", KINDS)
async def test_replace_replaces_the_whole_document(core: Core, kind: Kind) -> None:
    """api.md: PUT replaces (what the client did not send is gone); the version goes up by
    one; `createdAt` stays."""
    await dependencies(core, kind)
    res = core.services.resources
    first = await res.create(ADMIN, kind, {**body(kind), **CHANGE[kind]})
    new = body(kind)
    del new["name"]  # the name comes from the path
    put = await res.replace(ADMIN, kind, NAME[kind], new, if_match='"1"')
    assert put.spec == body(kind)  # the changed field is back to the factory's
    assert (put.version, put.created_at, put.etag) == (2, first.created_at, '"2"')
    assert put.updated_at >= first.updated_at
    assert res.get(ADMIN, kind, NAME[kind]) == put


@pytest.mark.parametrize("kind", KINDS)
async def test_patch_merges_into_the_stored_document(core: Core, kind: Kind) -> None:
    """RFC 7386: what the patch does not mention is kept; `null` removes a member — but not
    `team`: references resolve inside a team, so a resource never moves (400)."""
    await dependencies(core, kind, team="t1")
    res = core.services.resources
    await res.create(ADMIN, kind, body(kind, team="t1"))
    patched = await res.patch(ADMIN, kind, NAME[kind], CHANGE[kind])
    assert patched.spec == {**body(kind, team="t1"), **CHANGE[kind]}
    assert patched.version == 2
    with pytest.raises(BadRequest, match="cannot move to another team"):
        await res.patch(ADMIN, kind, NAME[kind], {"team": None}, if_match='"2"')
    assert res.get(ADMIN, kind, NAME[kind]) == patched


@pytest.mark.parametrize("kind", KINDS)
async def test_delete_removes_it(core: Core, kind: Kind) -> None:
    await dependencies(core, kind)
    res = core.services.resources
    await res.create(ADMIN, kind, body(kind))
    assert await res.delete(ADMIN, kind, NAME[kind], if_match='"1"') is None
    with pytest.raises(NotFound):
        res.get(ADMIN, kind, NAME[kind])
    assert NAME[kind] not in names(res.list(ADMIN, kind, Window()).items)
    with pytest.raises(NotFound):  # a second delete finds nothing
        await res.delete(ADMIN, kind, NAME[kind])


# --- scopes: every operation refuses a caller without its scope ------------------------------

OPS = ("list", "get", "create", "replace", "patch", "delete")


async def _call(core: Core, op: str, kind: Kind, who: Principal) -> object:
    res, name = core.services.resources, NAME[kind]
    if op == "list":
        return res.list(who, kind, Window())
    if op == "get":
        return res.get(who, kind, name)
    if op == "create":
        return await res.create(who, kind, body(kind, team="t1"))
    if op == "replace":
        return await res.replace(who, kind, name, body(kind, team="t1"))
    if op == "patch":
        return await res.patch(who, kind, name, CHANGE[kind])
    return await res.delete(who, kind, name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", OPS)
async def test_every_operation_checks_its_scope(core: Core, op: str, kind: Kind) -> None:
    """A caller holding every scope but this kind's read (list, get) or write scope is refused
    (403) and nothing changes; that one scope, within the caller's team, is enough."""
    await dependencies(core, kind, team="t1")
    res = core.services.resources
    existing = None if op == "create" else await res.create(SYSTEM, kind, body(kind, team="t1"))
    scope = kind.scope("read" if op in ("list", "get") else "write")
    with pytest.raises(Forbidden) as refused:
        await _call(core, op, kind, all_but(scope))
    assert_scope_refused(refused.value, scope)
    stored = core.state.get(kind, f"t1/{NAME[kind]}")
    assert stored == existing  # nothing changed (for create: nothing made)
    await _call(core, op, kind, caller(scope, teams=["t1"]))


# --- team rules -------------------------------------------------------------------------------


async def _three_clusters(core: Core) -> None:
    for name, team in (("shared", None), ("ca", "a"), ("cb", "b")):
        await core.services.resources.create(SYSTEM, Kind.CLUSTER, cluster_body(name, team=team))


async def test_a_team_bound_caller_reads_its_team_and_shared_only(core: Core) -> None:
    """api.md: a token bound to teams sees only those teams' resources (lists too) plus shared
    ones; another team's resource is reported as missing, exactly like a missing one."""
    await _three_clusters(core)
    res = core.services.resources
    a, _ = await token_caller(core, role="platform-engineer", teams=["a"])
    assert names(res.list(a, Kind.CLUSTER, Window()).items) == ["ca", "shared"]
    assert res.list(a, Kind.CLUSTER, Window(), team="b").total == 0
    assert res.get(a, Kind.CLUSTER, "shared").team is None
    with pytest.raises(NotFound) as other:
        res.get(a, Kind.CLUSTER, "cb")
    with pytest.raises(NotFound) as missing:
        res.get(a, Kind.CLUSTER, "cz")
    assert other.value.message == missing.value.message.replace("cz", "cb")  # no leak


async def test_a_team_bound_caller_creates_in_its_team(core: Core) -> None:
    """One team: a create without `team` goes to it. Several: the caller must name one (a
    create without a team would be shared, which only admins write)."""
    res = core.services.resources
    a, _ = await token_caller(core, role="platform-engineer", teams=["a"])
    made = await res.create(a, Kind.CLUSTER, cluster_body("one"))
    assert made.team == "a" and made.spec["team"] == "a"
    ab, _ = await token_caller(core, role="platform-engineer", teams=["a", "b"])
    with pytest.raises(Forbidden, match="only admins change shared"):
        await res.create(ab, Kind.CLUSTER, cluster_body("two"))
    assert (await res.create(ab, Kind.CLUSTER, cluster_body("two", team="b"))).team == "b"


async def test_writes_outside_the_callers_teams_are_refused(core: Core) -> None:
    """Creating in (or moving to) another team, or writing a shared resource -> 403; another
    team's resource cannot even be found (404 on PUT/PATCH/DELETE too, as over REST)."""
    await _three_clusters(core)
    res = core.services.resources
    a, _ = await token_caller(core, role="platform-engineer", teams=["a"])
    with pytest.raises(Forbidden, match="team 'b'"):
        await res.create(a, Kind.CLUSTER, cluster_body("x", team="b"))
    with pytest.raises(BadRequest, match="cannot move to another team"):
        await res.patch(a, Kind.CLUSTER, "ca", {"team": "b"})
    with pytest.raises(BadRequest, match="cannot move to another team"):
        await res.replace(a, Kind.CLUSTER, "ca", cluster_body("ca", team="b"))
    for write in (
        res.replace(a, Kind.CLUSTER, "cb", cluster_body("cb", team="a")),
        res.patch(a, Kind.CLUSTER, "cb", {"http2": True}),
        res.delete(a, Kind.CLUSTER, "cb"),
    ):
        with pytest.raises(NotFound):
            await write
    for write in (
        res.replace(a, Kind.CLUSTER, "shared", cluster_body("shared")),
        res.patch(a, Kind.CLUSTER, "shared", {"http2": True}),
        res.delete(a, Kind.CLUSTER, "shared"),
    ):
        with pytest.raises(Forbidden, match="only admins change shared"):
            await write
    assert core.state.get(Kind.CLUSTER, "x") is None
    for name, team in (("shared", None), ("ca", "a"), ("cb", "b")):
        got = res.get(ADMIN, Kind.CLUSTER, name)
        assert (got.version, got.team) == (1, team)  # none of the refused writes landed


async def test_references_stay_inside_the_team(core: Core) -> None:
    """A resource of team a may reference a's or shared resources only; another team's is
    reported as missing (400 with a field-level detail). api.md Conventions: a reference
    resolves inside the referring resource's team; a shared one is named `shared/<name>`."""
    await _three_clusters(core)
    res = core.services.resources
    a, _ = await token_caller(core, role="platform-engineer", teams=["a"])
    with pytest.raises(BadRequest) as refused:
        await res.create(a, Kind.ROUTE_CONFIG, route_config_body("ra", cluster="cb"))
    assert [d.to_json() for d in refused.value.details] == [
        {"field": "(references)", "message": "cluster 'cb' does not exist"}
    ]
    with pytest.raises(BadRequest) as refused:  # explicitly naming the other team: the same
        await res.create(a, Kind.ROUTE_CONFIG, route_config_body("rb", cluster="b/cb"))
    assert "'b/cb' does not exist" in refused.value.details[0].message
    with pytest.raises(BadRequest) as refused:  # `shared` alone resolves inside team a
        await res.create(a, Kind.ROUTE_CONFIG, route_config_body("rs", cluster="shared"))
    assert "'shared' does not exist" in refused.value.details[0].message
    for name, target in (("r-ca", "ca"), ("r-shared", "shared/shared")):
        made = await res.create(a, Kind.ROUTE_CONFIG, route_config_body(name, cluster=target))
        assert made.team == "a" and made.spec["virtualHosts"] == route_config_body(
            cluster=target
        )["virtualHosts"]  # stored as written


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "field", "message"),
    [
        ({"name": "x"}, "endpoints", "Field required"),
        (cluster_body("x", port=99999), "endpoints[0].port", "less than or equal to 65535"),
        (cluster_body("Not A Name"), "name", "lowercase letters"),
        (cluster_body("x", lbPolicy="FASTEST"), "lbPolicy", "ROUND_ROBIN"),
        (cluster_body("x", colour="blue"), "colour", "unknown field"),
    ],
)
async def test_create_with_a_bad_body_is_400_with_field_details(
    core: Core, sent: dict[str, Any], field: str, message: str
) -> None:
    res = core.services.resources
    with pytest.raises(BadRequest) as refused:
        await res.create(ADMIN, Kind.CLUSTER, sent)
    (problem,) = refused.value.details
    assert problem.field == field and message in problem.message
    assert res.list(ADMIN, Kind.CLUSTER, Window()).total == 0  # a failed request changes nothing


async def test_create_conflicts_are_409(core: Core) -> None:
    """The name is taken; two listeners on one address:port (api.md "Listener")."""
    await dependencies(core, Kind.LISTENER)
    res = core.services.resources
    with pytest.raises(Conflict, match="cluster 'backend' already exists"):
        await res.create(ADMIN, Kind.CLUSTER, cluster_body(port=9999))
    assert res.get(ADMIN, Kind.CLUSTER, "backend").spec == cluster_body()  # not overwritten
    await res.create(ADMIN, Kind.LISTENER, listener_body("one", port=10080))
    with pytest.raises(Conflict) as taken:
        await res.create(ADMIN, Kind.LISTENER, listener_body("two", port=10080, address="10.0.0.1"))
    assert [d.field for d in taken.value.details] == ["port"] and "'one'" in taken.value.message
    assert res.list(ADMIN, Kind.LISTENER, Window()).total == 1


async def test_replace_refusals(core: Core) -> None:
    res = core.services.resources
    await res.create(ADMIN, Kind.CLUSTER, cluster_body())
    with pytest.raises(BadRequest) as renamed:
        await res.replace(ADMIN, Kind.CLUSTER, "backend", cluster_body("other"))
    assert [d.field for d in renamed.value.details] == ["name"]
    with pytest.raises(BadRequest) as bad:
        await res.replace(ADMIN, Kind.CLUSTER, "backend", {"endpoints": []})
    assert [d.field for d in bad.value.details] == ["endpoints"]
    with pytest.raises(NotFound):
        await res.replace(ADMIN, Kind.CLUSTER, "nope", cluster_body("nope"))
    assert res.get(ADMIN, Kind.CLUSTER, "backend").version == 1


async def test_patch_refusals(core: Core) -> None:
    res = core.services.resources
    await res.create(ADMIN, Kind.CLUSTER, cluster_body())
    for not_an_object in (None, [], "x", 5):
        with pytest.raises(BadRequest, match="JSON object"):
            await res.patch(ADMIN, Kind.CLUSTER, "backend", not_an_object)
    with pytest.raises(BadRequest) as bad:
        await res.patch(ADMIN, Kind.CLUSTER, "backend", {"endpoints": [{"host": "h"}]})
    assert [d.field for d in bad.value.details] == ["endpoints[0].port"]
    with pytest.raises(NotFound):
        await res.patch(ADMIN, Kind.CLUSTER, "nope", {"http2": True})
    assert res.get(ADMIN, Kind.CLUSTER, "backend").version == 1


async def test_stale_if_match_is_412_on_every_write(core: Core) -> None:
    """api.md: PUT/PATCH/DELETE honour If-Match, so two writers never silently overwrite each
    other; `*` and a weak tag of the current version match."""
    res = core.services.resources
    await res.create(ADMIN, Kind.CLUSTER, cluster_body())
    await res.patch(ADMIN, Kind.CLUSTER, "backend", {"http2": True})  # now at version 2
    stale = '"1"'
    with pytest.raises(PreconditionFailed, match="version 2"):
        await res.replace(ADMIN, Kind.CLUSTER, "backend", cluster_body(), if_match=stale)
    with pytest.raises(PreconditionFailed):
        await res.patch(ADMIN, Kind.CLUSTER, "backend", {"http2": False}, if_match=stale)
    with pytest.raises(PreconditionFailed):
        await res.delete(ADMIN, Kind.CLUSTER, "backend", if_match=stale)
    assert res.get(ADMIN, Kind.CLUSTER, "backend").spec["http2"] is True
    assert (await res.patch(ADMIN, Kind.CLUSTER, "backend", {}, if_match='W/"2"')).version == 3
    assert (
        await res.replace(ADMIN, Kind.CLUSTER, "backend", cluster_body(), if_match="*")
    ).version == 4
    await res.delete(ADMIN, Kind.CLUSTER, "backend", if_match='"1", "4"')
    assert core.state.get(Kind.CLUSTER, "backend") is None


async def test_delete_of_a_referenced_resource_is_409_naming_the_referrers(core: Core) -> None:
    await dependencies(core, Kind.LISTENER)
    res = core.services.resources
    await res.create(ADMIN, Kind.LISTENER, listener_body())
    with pytest.raises(Conflict) as refused:
        await res.delete(ADMIN, Kind.CLUSTER, "backend")
    assert [d.message for d in refused.value.details] == ["referenced by route config 'routes'"]
    with pytest.raises(Conflict, match="listener 'edge'"):
        await res.delete(ADMIN, Kind.ROUTE_CONFIG, "routes")
    await res.delete(ADMIN, Kind.LISTENER, "edge")  # in order, each delete is allowed
    await res.delete(ADMIN, Kind.ROUTE_CONFIG, "routes")
    await res.delete(ADMIN, Kind.CLUSTER, "backend")
    assert not list(core.state.all())


async def test_the_default_gateway_cannot_be_deleted(db_url: str) -> None:
    """services/gateway.py: while FLOWPLANE_DEFAULT_GATEWAY is on, its listener and route
    config are ensured at start and a delete is 409 (even for an admin)."""
    async with open_core(load_settings(database_url=db_url)) as core:
        res = core.services.resources
        gw = res.get(ADMIN, Kind.LISTENER, LISTENER)
        assert (gw.spec["address"], gw.spec["port"]) == ("0.0.0.0", 10000)
        assert res.get(ADMIN, Kind.ROUTE_CONFIG, ROUTES).spec["virtualHosts"] == []
        for kind, name in ((Kind.LISTENER, LISTENER), (Kind.ROUTE_CONFIG, ROUTES)):
            with pytest.raises(Conflict, match="default gateway"):
                await res.delete(ADMIN, kind, name)
        # changing it is allowed: only deletion is refused
        assert (await res.patch(ADMIN, Kind.LISTENER, LISTENER, {"port": 10009})).version == 2


# --- persistence --------------------------------------------------------------------------------


async def test_writes_are_persisted(settings: Settings) -> None:
    """What the service wrote is what a restarted core reads back (the database is the source
    of truth), references included."""
    async with open_core(settings) as core:
        res = core.services.resources
        await dependencies(core, Kind.LISTENER)
        await res.create(ADMIN, Kind.LISTENER, listener_body())
        await res.patch(ADMIN, Kind.CLUSTER, "backend", {"http2": True})
        await res.create(ADMIN, Kind.CLUSTER, cluster_body("gone", team="t1"))
        await res.delete(ADMIN, Kind.CLUSTER, "gone")
        before: dict[Kind, list[StoredResource]] = {
            k: list(res.list(ADMIN, k, Window()).items) for k in Kind
        }
    async with open_core(settings) as core:
        res = core.services.resources
        after = {k: list(res.list(ADMIN, k, Window()).items) for k in Kind}
        assert [r.to_json() for k in Kind for r in after[k]] == [
            r.to_json() for k in Kind for r in before[k]
        ]
        assert res.get(ADMIN, Kind.CLUSTER, "backend").version == 2
        with pytest.raises(NotFound):
            res.get(ADMIN, Kind.CLUSTER, "gone")
        with pytest.raises(Conflict, match="referenced"):  # the reference index was rebuilt
            await res.delete(ADMIN, Kind.CLUSTER, "backend")
