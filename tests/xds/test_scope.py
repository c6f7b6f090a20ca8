"""Per-node scoping: scope_from_node, the builder's ScopeIndex, and scoped views of snapshots."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from flowplane.domain.resources import Kind, Ref, parse_spec, references
from flowplane.errors import BadRequest, Forbidden
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.xds.builder import Change, SnapshotBuilder
from flowplane.xds.scope import (
    EMPTY_INDEX,
    MAX_ALLOWLIST,
    Scope,
    ScopeIndex,
    scope_from_node,
    scoped,
)
from flowplane.xds.snapshot import Resource, Snapshot, TypeSnapshot
from flowplane.xds.sotw import Request, SotwStream
from flowplane.xds.translate import translate_resource
from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE

# -- helpers ----------------------------------------------------------------------------------


def _team(team: str | None) -> dict[str, Any]:
    return {} if team is None else {"team": team}


def cl(name: str, team: str | None = None, port: int = 8080) -> Change:
    return (Kind.CLUSTER, name, parse_spec(Kind.CLUSTER, cluster_body(name, port, **_team(team))))


def rc(name: str, *clusters: str, team: str | None = None) -> Change:
    body = route_config_body(name, clusters[0], **_team(team))
    body["virtualHosts"][0]["routes"] = [
        {
            "name": f"to-{c}",
            "match": {"path": {"type": "prefix", "value": f"/{c}"}},
            "action": {"type": "forward", "cluster": c},
        }
        for c in clusters
    ]
    return (Kind.ROUTE_CONFIG, name, parse_spec(Kind.ROUTE_CONFIG, body))


def ls(name: str, route_config: str, team: str | None = None, port: int = 10000) -> Change:
    body = listener_body(name, route_config, port, **_team(team))
    return (Kind.LISTENER, name, parse_spec(Kind.LISTENER, body))


def tcp_ls(name: str, cluster: str, team: str | None = None, port: int = 11000) -> Change:
    body = {
        "name": name,
        "address": "0.0.0.0",
        "port": port,
        "filterChains": [{"filters": [{"type": "tcpProxy", "cluster": cluster}]}],
        **_team(team),
    }
    return (Kind.LISTENER, name, parse_spec(Kind.LISTENER, body))


def inline_ls(
    name: str, cluster: str, tracing: str, team: str | None = None, port: int = 12000
) -> Change:
    inline = route_config_body("inline", cluster)
    del inline["name"]
    body = {
        "name": name,
        "address": "0.0.0.0",
        "port": port,
        "filterChains": [
            {
                "filters": [
                    {
                        "type": "httpConnectionManager",
                        "inlineRouteConfig": inline,
                        "tracing": {"provider": "zipkin", "collectorCluster": tracing},
                    }
                ]
            }
        ],
        **_team(team),
    }
    return (Kind.LISTENER, name, parse_spec(Kind.LISTENER, body))


def names(snap: Snapshot, type_url: str) -> set[str]:
    return set(snap.resources(type_url))


def world() -> list[Change]:
    """Teams a and b, plus shared (team-less) resources."""
    return [
        cl("a-api", "a"),
        cl("a-orphan", "a"),  # team a's, referenced by nobody
        cl("a-tcp", "a"),
        cl("a-inline", "a"),
        cl("shared-tracing"),
        cl("shared-db"),
        cl("b-api", "b"),
        cl("b-extra", "b"),
        cl("gw-backend"),
        rc("a-routes", "a-api", "shared-db", team="a"),
        rc("a-unused-routes", "a-orphan", team="a"),
        rc("b-routes", "b-api", "b-extra", team="b"),
        rc("gw-routes", "gw-backend"),
        ls("a-edge", "a-routes", "a", 10001),
        tcp_ls("a-tcp", "a-tcp", "a", 10002),
        inline_ls("a-inline", "a-inline", "shared-tracing", "a", 10003),
        ls("b-edge", "b-routes", "b", 10004),
        ls("gateway", "gw-routes", None, 10005),
    ]


def built(changes: list[Change] | None = None) -> SnapshotBuilder:
    b = SnapshotBuilder(translate_resource)
    b.apply(world() if changes is None else changes)
    return b


# -- scope_from_node --------------------------------------------------------------------------


def test_team_from_metadata_with_include_default() -> None:
    meta = {"team": "a", "scope": "team", "include_default": True}
    assert scope_from_node("dp-1", meta) == Scope.for_team("a", include_default=True)
    assert scope_from_node("dp-1", {"team": "a"}) == Scope("team", "a", False)


def test_team_from_the_node_id_only_when_metadata_has_none() -> None:
    assert scope_from_node("team=b/dp-7", {}) == Scope.for_team("b")
    assert scope_from_node("team=b/dp-7", {"team": "a"}) == Scope.for_team("a")
    assert scope_from_node("team=b", {}) == Scope.everything()  # no "/": not the convention


def test_allowlist_beats_team() -> None:
    """The allowlist names listeners as references do (api.md Conventions): inside the node's
    team (`x` of team a is `a/x`), `shared/<name>` a shared one; the scope holds their keys."""
    meta = {"team": "a", "scope": "team", "listener_allowlist": ["x", "y"]}
    assert scope_from_node(None, meta) == Scope.for_allowlist(["a/y", "a/x"], team="a")
    meta = {"team": "a", "scope": "allowlist", "listener_allowlist": ["x", "shared/gw"]}
    assert scope_from_node(None, meta) == Scope("allowlist", "a", False, frozenset({"a/x", "gw"}))
    meta = {"listener_allowlist": ["x", "b/y"]}  # no team: keys as written
    assert scope_from_node(None, meta) == Scope.for_allowlist(["x", "b/y"])


@pytest.mark.parametrize("allowlist", [None, []])
def test_allowlist_scope_without_names_is_a_bad_request(allowlist: list[str] | None) -> None:
    with pytest.raises(BadRequest, match="listener_allowlist"):
        scope_from_node(None, {"team": "a", "scope": "allowlist", "listener_allowlist": allowlist})


def test_all_only_without_team_and_without_auth() -> None:
    assert scope_from_node(None, {}) is Scope.everything()
    assert scope_from_node("dp-1", {"scope": "all"}) is Scope.everything()
    assert scope_from_node("dp-1", {"scope": "team"}) is Scope.everything()  # legacy node
    with pytest.raises(Forbidden, match="no team"):
        scope_from_node("dp-1", {}, auth_required=True)
    with pytest.raises(Forbidden, match="no team"):
        scope_from_node("dp-1", {"listener_allowlist": ["x"]}, auth_required=True)
    with pytest.raises(Forbidden, match="scope 'all'"):
        scope_from_node("dp-1", {"team": "a", "scope": "all"})


def test_identity_mismatch_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="claims team 'a' but its identity grants 'b'"):
        scope_from_node("dp-1", {"team": "a"}, identity_team="b")
    with pytest.raises(Forbidden, match="claims team 'a'"):
        scope_from_node("team=a/dp-1", {}, identity_team="b", auth_required=True)


def test_identity_team_is_used_when_metadata_has_none() -> None:
    assert scope_from_node("dp-1", {}, identity_team="b") == Scope.for_team("b")
    got = scope_from_node("dp-1", {"include_default": True}, identity_team="b", auth_required=True)
    assert got == Scope.for_team("b", include_default=True)
    assert scope_from_node("dp-1", {"team": "b"}, identity_team="b") == Scope.for_team("b")
    got = scope_from_node("dp-1", {"listener_allowlist": ["x"]}, identity_team="b")
    assert got == Scope.for_allowlist(["b/x"], team="b")


@pytest.mark.parametrize(
    "meta",
    [
        {"team": 3},
        {"team": ""},
        {"team": "a", "scope": "everything"},
        {"team": "a", "include_default": "maybe"},
        {"team": "a", "include_default": 1.0},
        {"team": "a", "listener_allowlist": {"x": 1}},
        {"team": "a", "listener_allowlist": ["x", 2.0]},
        {"team": "a", "listener_allowlist": [f"l{i}" for i in range(MAX_ALLOWLIST + 1)]},
    ],
)
def test_malformed_metadata_is_a_bad_request(meta: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        scope_from_node("dp-1", meta)


def test_lenient_spellings_from_hand_written_bootstraps() -> None:
    assert scope_from_node(None, {"team": "a", "include_default": "true"}).include_default
    meta = {"team": "a", "listener_allowlist": "x, y"}
    assert scope_from_node(None, meta) == Scope.for_allowlist({"a/x", "a/y"}, team="a")


def test_scopes_are_values() -> None:
    one = Scope.for_allowlist(["x", "y"], team="a")
    two = Scope.for_allowlist(("y", "x", "x"), team="a")
    assert one == two
    assert hash(one) == hash(two)
    assert len({one, two, Scope.for_team("a")}) == 2
    with pytest.raises(ValueError, match="needs a team"):
        Scope("team")
    with pytest.raises(ValueError, match="at least one"):
        Scope("allowlist", "a")
    with pytest.raises(ValueError, match="neither"):
        Scope("all", "a")


# -- the index --------------------------------------------------------------------------------


def test_index_holds_team_and_transitive_references() -> None:
    idx = built().snapshot.index
    a_edge = idx.listeners["a-edge"]
    assert a_edge.team == "a"
    assert a_edge.route_configs == {"a-routes"}
    assert a_edge.clusters == {"a-api", "shared-db"}  # through the route config
    assert idx.listeners["a-tcp"].clusters == {"a-tcp"}
    assert idx.listeners["a-inline"].clusters == {"a-inline", "shared-tracing"}
    assert idx.listeners["a-inline"].route_configs == set()
    assert idx.route_configs["b-routes"].team == "b"
    assert idx.route_configs["b-routes"].clusters == {"b-api", "b-extra"}
    assert idx.clusters["shared-db"].team is None
    assert idx.clusters["a-api"].outputs == ((CLUSTER_TYPE, "a-api"),)
    assert idx.team_listeners("a") == {"a-edge", "a-tcp", "a-inline"}
    assert idx.team_listeners(None) == {"gateway"}
    assert idx.team_listeners("nobody") == set()


def test_index_follows_a_route_config_that_changes_its_clusters() -> None:
    b = built()
    b.apply([rc("a-routes", "a-orphan", team="a")])
    assert b.snapshot.index.listeners["a-edge"].clusters == {"a-orphan"}
    b.apply([ls("a-edge", "gw-routes", "a", 10001)])
    assert b.snapshot.index.listeners["a-edge"].clusters == {"gw-backend"}
    b.apply([(Kind.LISTENER, "a-edge", None), (Kind.ROUTE_CONFIG, "a-routes", None)])
    assert "a-edge" not in b.snapshot.index.listeners
    assert "a-edge" not in b.snapshot.index.team_listeners("a")


def test_index_is_copied_on_write_and_content_only_changes_recompute_nothing() -> None:
    b = built()
    before = b.snapshot
    b.apply([cl("b-api", "b", port=9999)])  # endpoints only
    after = b.snapshot
    assert after is not before
    assert after.index is before.index  # team, references and outputs are all unchanged
    after = b.apply([cl("b-api", "a", port=9999)])  # a cluster changes team
    assert after.index.clusters["b-api"].team == "a"
    assert after.index.listeners is before.index.listeners  # only the cluster map was copied
    assert after.index.route_configs is before.index.route_configs


def test_a_team_change_alone_publishes_a_new_index_with_the_same_types() -> None:
    b = built()
    before = b.snapshot
    after = b.apply([ls("gateway", "gw-routes", "b", 10005)])  # same xDS bytes, new owner
    assert after.serial == before.serial + 1
    assert all(after.types[u] is before.types[u] for u in before.types)
    assert after.index.listeners["gateway"].team == "b"
    assert b.apply([ls("gateway", "gw-routes", "b", 10005)]) is after  # no change at all


def test_a_failed_apply_leaves_the_index_unchanged() -> None:
    b = built()
    before = b.snapshot
    with pytest.raises(Exception, match="does not exist"):
        b.apply([ls("a-edge", "missing", "a", 10001)])
    assert b.snapshot is before
    assert b.snapshot.index.listeners["a-edge"].route_configs == {"a-routes"}


def test_incremental_index_equals_one_built_at_once() -> None:
    b = SnapshotBuilder(translate_resource)
    for change in world():  # one at a time, dependencies first
        b.apply([change])
    b.apply([rc("a-routes", "a-api", team="a"), cl("shared-db", None, 1234)])
    at_once = built([*world(), rc("a-routes", "a-api", team="a"), cl("shared-db", None, 1234)])
    assert _index_dict(b.snapshot.index) == _index_dict(at_once.snapshot.index)


def _index_dict(idx: ScopeIndex) -> dict[Any, Any]:
    out: dict[Any, Any] = {k: dict(idx.of_kind(k)) for k in Kind}
    out["teams"] = {t: idx.team_listeners(t) for t in ("a", "b", "c", None)}
    return out


# -- scoped views -----------------------------------------------------------------------------


def test_team_scope_serves_own_listeners_and_exactly_their_references() -> None:
    snap = built().snapshot
    view = scoped(snap, Scope.for_team("a"))
    assert names(view, LISTENER_TYPE) == {"a-edge", "a-tcp", "a-inline"}
    assert names(view, ROUTE_TYPE) == {"a-routes"}  # not a-unused-routes, not b's
    # Shared clusters its listeners reference are in; team a's unreferenced cluster and every
    # cluster of team b are not.
    assert names(view, CLUSTER_TYPE) == {
        "a-api",
        "shared-db",
        "a-tcp",
        "a-inline",
        "shared-tracing",
    }
    assert view.resources(CLUSTER_TYPE)["a-api"] is snap.resources(CLUSTER_TYPE)["a-api"]


def test_shared_listeners_only_with_include_default() -> None:
    snap = built().snapshot
    without = scoped(snap, Scope.for_team("b"))
    assert names(without, LISTENER_TYPE) == {"b-edge"}
    assert names(without, CLUSTER_TYPE) == {"b-api", "b-extra"}
    with_default = scoped(snap, Scope.for_team("b", include_default=True))
    assert names(with_default, LISTENER_TYPE) == {"b-edge", "gateway"}
    assert names(with_default, ROUTE_TYPE) == {"b-routes", "gw-routes"}
    assert names(with_default, CLUSTER_TYPE) == {"b-api", "b-extra", "gw-backend"}


def test_a_team_without_listeners_gets_nothing() -> None:
    view = scoped(built().snapshot, Scope.for_team("c"))
    assert view.types == {}
    assert view.version(CLUSTER_TYPE) == TypeSnapshot(CLUSTER_TYPE, {}).version


def test_allowlist_serves_exactly_the_named_listeners() -> None:
    snap = built().snapshot
    view = scoped(snap, Scope.for_allowlist(["a-tcp", "gateway"], team="a"))
    assert names(view, LISTENER_TYPE) == {"a-tcp", "gateway"}  # shared ones may be named
    assert names(view, ROUTE_TYPE) == {"gw-routes"}
    assert names(view, CLUSTER_TYPE) == {"a-tcp", "gw-backend"}


def test_allowlist_cannot_reach_another_teams_listener() -> None:
    view = scoped(built().snapshot, Scope.for_allowlist(["a-edge", "b-edge"], team="a"))
    assert names(view, LISTENER_TYPE) == {"a-edge"}
    assert names(view, CLUSTER_TYPE) == {"a-api", "shared-db"}
    assert "b-api" not in view.resources(CLUSTER_TYPE)


def test_allowlist_ignores_unknown_names_and_without_team_reaches_any_listener() -> None:
    snap = built().snapshot
    view = scoped(snap, Scope.for_allowlist(["nope", "b-edge"]))
    assert names(view, LISTENER_TYPE) == {"b-edge"}
    assert scoped(snap, Scope.for_allowlist(["nope"], team="a")).types == {}


def test_scope_all_is_the_snapshot_itself() -> None:
    snap = built().snapshot
    assert scoped(snap, Scope.everything()) is snap
    assert scoped(snap, scope_from_node("dp-1", {})) is snap


def test_equal_scopes_share_one_view_and_its_response_bodies() -> None:
    snap = built().snapshot
    one = scoped(snap, scope_from_node("team=a/dp-1", {"team": "a"}))
    two = scoped(snap, scope_from_node("team=a/dp-2", {"scope": "team"}, identity_team="a"))
    assert one is two
    assert one.serial == snap.serial
    streams = [SotwStream() for _ in range(3)]
    bodies = []
    for s in streams:
        s.on_request(Request(CLUSTER_TYPE, node_id="x"))
        (out,) = s.outbound(scoped(snap, Scope.for_team("a")))
        bodies.append(out)
    # The body is built once (memoised on the view's TypeSnapshot); only nonces are per stream.
    ts = one.get(CLUSTER_TYPE)
    assert ("body", ts.version) in ts._memo
    assert all(o.version == ts.version for o in bodies)


def test_views_of_a_team_wholly_in_scope_reuse_the_snapshots_type_snapshots() -> None:
    b = built([cl("x", "a"), rc("r", "x", team="a"), ls("l", "r", "a")])
    view = scoped(b.snapshot, Scope.for_team("a"))
    assert all(view.types[u] is b.snapshot.types[u] for u in b.snapshot.types)


def test_another_teams_change_does_not_change_this_teams_versions() -> None:
    b = built()
    a, bb = Scope.for_team("a", include_default=True), Scope.for_team("b")
    a1, b1 = scoped(b.snapshot, a), scoped(b.snapshot, bb)
    b.apply([cl("b-api", "b", port=9999)])  # team b changes a cluster
    a2, b2 = scoped(b.snapshot, a), scoped(b.snapshot, bb)
    assert a2 is not a1
    for url in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE):
        assert a2.version(url) == a1.version(url)
        assert a2.get(url) is a1.get(url)  # the very same object: streams skip it in O(1)
    assert b2.version(CLUSTER_TYPE) != b1.version(CLUSTER_TYPE)
    assert b2.version(LISTENER_TYPE) == b1.version(LISTENER_TYPE)

    b.apply([cl("a-orphan", "a", port=9999)])  # team a's, but referenced by no listener
    assert scoped(b.snapshot, a).version(CLUSTER_TYPE) == a1.version(CLUSTER_TYPE)
    b.apply([cl("shared-db", None, port=9999)])  # shared and referenced by a-routes
    assert scoped(b.snapshot, a).version(CLUSTER_TYPE) != a1.version(CLUSTER_TYPE)
    assert scoped(b.snapshot, bb).version(CLUSTER_TYPE) == b2.version(CLUSTER_TYPE)


def test_a_stream_of_team_a_is_owed_nothing_when_team_b_changes() -> None:
    b = built()
    scope = Scope.for_team("a")
    stream = SotwStream()
    for url in (CLUSTER_TYPE, LISTENER_TYPE):
        stream.on_request(Request(url, node_id="team=a/dp-1"))
    stream.on_request(Request(ROUTE_TYPE, resource_names=("a-routes", "b-routes")))
    sent = stream.outbound(scoped(b.snapshot, scope))
    assert [o.type_url for o in sent] == [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE]
    b.apply([cl("b-api", "b", port=9999), rc("b-routes", "b-api", team="b")])
    assert stream.outbound(scoped(b.snapshot, scope)) == []
    b.apply([cl("a-api", "a", port=9999)])
    (out,) = stream.outbound(scoped(b.snapshot, scope))
    assert out.type_url == CLUSTER_TYPE


def test_deleting_a_listener_drops_what_only_it_referenced() -> None:
    b = built()
    b.apply([(Kind.LISTENER, "a-edge", None)])
    view = scoped(b.snapshot, Scope.for_team("a"))
    assert names(view, ROUTE_TYPE) == set()
    assert "a-api" not in view.resources(CLUSTER_TYPE)
    assert "shared-db" not in view.resources(CLUSTER_TYPE)


def test_every_xds_resource_a_domain_resource_produces_follows_it() -> None:
    def with_endpoints(kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
        out = translate_resource(kind, model)
        if kind is Kind.CLUSTER:
            from envoy.config.endpoint.v3 import endpoint_pb2

            name = out[0][1]
            out.append((ENDPOINT_TYPE, name, endpoint_pb2.ClusterLoadAssignment(cluster_name=name)))
        return out

    b = SnapshotBuilder(with_endpoints)
    b.apply(world())
    view = scoped(b.snapshot, Scope.for_team("b"))
    assert names(view, ENDPOINT_TYPE) == {"b-api", "b-extra"}


def test_a_snapshot_without_an_index_scopes_to_nothing() -> None:
    res = Resource.from_any_bytes("c", b"\x0a\x01x")
    snap = Snapshot({CLUSTER_TYPE: TypeSnapshot(CLUSTER_TYPE, {"c": res})}, 1)
    assert snap.index is EMPTY_INDEX
    assert scoped(snap, Scope.for_team("a")).types == {}
    assert scoped(snap, Scope.everything()) is snap


def test_the_view_memo_is_bounded() -> None:
    from flowplane.xds import snapshot as snapshot_module

    snap = built().snapshot
    limit = snapshot_module._SNAPSHOT_MEMO_LIMIT
    for i in range(limit + 10):
        scoped(snap, Scope.for_team(f"t{i}"))
    assert len(snap._memo) == limit


# -- property ---------------------------------------------------------------------------------

TEAMS = ["a", "b", "c", None]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[list[Change]], Scope]:
    """A random consistent world, applied in a few batches (later ones re-team and re-wire)."""
    n_clusters = draw(st.integers(1, 6))
    clusters = [f"c{i}" for i in range(n_clusters)]
    team = st.sampled_from(TEAMS)

    def generation() -> list[Change]:
        out = [cl(c, draw(team), port=draw(st.integers(1, 3))) for c in clusters]
        n_routes = draw(st.integers(0, 4))
        routes = [f"r{i}" for i in range(n_routes)]
        for r in routes:
            targets = draw(st.lists(st.sampled_from(clusters), min_size=1, max_size=3))
            out.append(rc(r, *targets, team=draw(team)))
        for i in range(draw(st.integers(0, 6))):
            port = 10000 + i
            if bool(routes) and draw(st.booleans()):
                out.append(ls(f"l{i}", draw(st.sampled_from(routes)), draw(team), port))
            elif draw(st.booleans()):
                out.append(tcp_ls(f"l{i}", draw(st.sampled_from(clusters)), draw(team), port))
            else:
                c1, c2 = draw(st.sampled_from(clusters)), draw(st.sampled_from(clusters))
                out.append(inline_ls(f"l{i}", c1, c2, draw(team), port))
        return out

    batches = [generation() for _ in range(draw(st.integers(1, 3)))]
    listener_names = st.sampled_from([f"l{i}" for i in range(8)])
    if draw(st.booleans()):
        scope = Scope.for_team(
            draw(st.sampled_from(["a", "b", "c"])), include_default=draw(st.booleans())
        )
    else:
        allow = draw(st.lists(listener_names, min_size=1, max_size=4))
        scope = Scope.for_allowlist(allow, team=draw(team))
    return batches, scope


def _deletions(builder: SnapshotBuilder, keep: list[Change]) -> list[Change]:
    """Delete what the next generation does not have (listeners first: no dangling refs)."""
    wanted = {(k, n) for k, n, _ in keep}
    idx = builder.snapshot.index
    return [
        (kind, name, None)
        for kind in (Kind.LISTENER, Kind.ROUTE_CONFIG, Kind.CLUSTER)
        for name in idx.of_kind(kind)
        if (kind, name) not in wanted
    ]


@settings(max_examples=100, deadline=None, database=None)
@given(worlds())
def test_views_contain_exactly_the_scope_and_its_references(
    case: tuple[list[list[Change]], Scope],
) -> None:
    batches, scope = case
    b = SnapshotBuilder(translate_resource)
    for batch in batches:
        b.apply([*batch, *_deletions(b, batch)])
    final = {(k, n): m for k, n, m in batches[-1] if m is not None}
    teams = {key: getattr(m, "team", None) for key, m in final.items()}

    def needs(kind: Kind, model: BaseModel) -> set[Ref]:
        out: set[Ref] = set()
        for ref in references(kind, model):
            out.add(ref)
            out |= needs(ref.kind, final[(ref.kind, ref.name)])
        return out

    listeners = {n for k, n in final if k is Kind.LISTENER}
    if scope.kind == "team":
        roots = {
            n
            for n in listeners
            if teams[(Kind.LISTENER, n)] == scope.team
            or (scope.include_default and teams[(Kind.LISTENER, n)] is None)
        }
    else:
        roots = {
            n
            for n in scope.allowlist & listeners
            if scope.team is None or teams[(Kind.LISTENER, n)] in (scope.team, None)
        }
    referenced: set[Ref] = set()
    for n in roots:
        referenced |= needs(Kind.LISTENER, final[(Kind.LISTENER, n)])

    view = scoped(b.snapshot, scope)
    kinds = {
        LISTENER_TYPE: Kind.LISTENER,
        ROUTE_TYPE: Kind.ROUTE_CONFIG,
        CLUSTER_TYPE: Kind.CLUSTER,
    }
    got = {Ref(kinds[url], n) for url, ts in view.types.items() for n in ts}
    expected = {Ref(Kind.LISTENER, n) for n in roots} | referenced
    # Nothing referenced by an included listener is missing...
    assert got == expected
    # ...and everything is the scope's own, shared-and-included, or referenced by a root.
    for ref in got:
        team = teams[(ref.kind, ref.name)]
        if ref.kind is Kind.LISTENER:
            assert (scope.kind == "allowlist" and ref.name in scope.allowlist) or (
                team == scope.team or (scope.include_default and team is None)
            )
            assert scope.team is None or team in (scope.team, None)
        else:
            assert ref in referenced
    # The full snapshot's resources (equal content; a TypeSnapshot reused from an earlier equal
    # view may hold equal older objects); versions are content versions of the view.
    for url, ts in view.types.items():
        for n, res in ts.resources.items():
            assert res == b.snapshot.resources(url)[n]
        assert ts == TypeSnapshot(url, dict(ts.resources))
    # The incremental index equals one built from scratch.
    fresh = SnapshotBuilder(translate_resource)
    fresh.apply(batches[-1])
    assert _index_dict(b.snapshot.index) == _index_dict(fresh.snapshot.index)


def test_clusters_named_by_http_filters_reach_the_teams_data_planes() -> None:
    """A JWKS or an authorization service cluster is referenced by the listener's filters, so
    a team's scoped view carries it (Envoy would refuse the listener without it)."""
    body = listener_body("a-guarded", "a-routes", 10006, team="a")
    body["filterChains"][0]["filters"][0]["httpFilters"] = [
        {"type": "ext_authz", "config": {"service": {"type": "grpc", "cluster": "a-authz"}}},
        {"type": "jwt_authn", "config": {
            "providers": {"p": {"issuer": "https://issuer.test", "remoteJwks": {
                "uri": "https://idp.test/jwks", "cluster": "shared-idp"}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "p"}}],
        }},
        {"type": "router"},
    ]  # fmt: skip
    guarded = (Kind.LISTENER, "a-guarded", parse_spec(Kind.LISTENER, body))
    snap = built([*world(), cl("a-authz", "a"), cl("shared-idp"), guarded]).snapshot
    assert {"a-authz", "shared-idp"} <= names(scoped(snap, Scope.for_team("a")), CLUSTER_TYPE)
    assert not {"a-authz", "shared-idp"} & names(scoped(snap, Scope.for_team("b")), CLUSTER_TYPE)
