"""SnapshotBuilder: incremental encoding, consistency (xds rule 16), immutability, determinism."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message
from pydantic import BaseModel

from flowplane.domain.cluster import Cluster
from flowplane.domain.listener import Listener
from flowplane.domain.resources import Kind
from flowplane.domain.route import RouteConfig, clusters_of_vhosts
from flowplane.errors import Conflict
from flowplane.xds.builder import Change, SnapshotBuilder
from flowplane.xds.snapshot import Snapshot
from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE


def translate(kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
    """A small stand-in for flowplane.xds.translate: enough to give each model its own bytes."""
    if isinstance(model, Cluster):
        c = cluster_pb2.Cluster(name=model.name, type=cluster_pb2.Cluster.EDS)
        c.connect_timeout.FromNanoseconds(round(model.connect_timeout_seconds * 1e9))
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=model.name)
        for ep in model.endpoints:
            lb = cla.endpoints.add().lb_endpoints.add()
            lb.endpoint.address.socket_address.address = ep.host
            lb.endpoint.address.socket_address.port_value = ep.port
        return [(CLUSTER_TYPE, model.name, c), (ENDPOINT_TYPE, model.name, cla)]
    if isinstance(model, RouteConfig):
        rc = route_pb2.RouteConfiguration(name=model.name)
        vh = rc.virtual_hosts.add(name="all", domains=["*"])
        for cluster in sorted(clusters_of_vhosts(model.virtual_hosts)):
            r = vh.routes.add()
            r.match.prefix = f"/{cluster}"
            r.route.cluster = cluster
        return [(ROUTE_TYPE, model.name, rc)]
    assert isinstance(model, Listener)
    lst = listener_pb2.Listener(name=model.name)
    lst.address.socket_address.port_value = model.port or 0
    return [(LISTENER_TYPE, model.name, lst)]


def cluster(name: str, port: int = 80, timeout: float = 5.0) -> Cluster:
    return Cluster.model_validate(
        {
            "name": name,
            "endpoints": [{"host": "10.0.0.1", "port": port}],
            "connectTimeoutSeconds": timeout,
        }
    )


def route_config(name: str, *clusters: str) -> RouteConfig:
    routes: list[dict[str, Any]] = [
        {
            "match": {"path": {"type": "prefix", "value": f"/{c}"}},
            "action": {"type": "forward", "cluster": c},
        }
        for c in clusters
    ]
    return RouteConfig.model_validate(
        {"name": name, "virtualHosts": [{"name": "vh", "domains": ["*"], "routes": routes}]}
    )


def listener(name: str, route: str, port: int = 8080) -> Listener:
    return Listener.model_validate(
        {
            "name": name,
            "address": "0.0.0.0",
            "port": port,
            "filterChains": [
                {"filters": [{"type": "httpConnectionManager", "routeConfigName": route}]}
            ],
        }
    )


def world() -> list[Change]:
    return [
        (Kind.CLUSTER, "a", cluster("a")),
        (Kind.CLUSTER, "b", cluster("b")),
        (Kind.ROUTE_CONFIG, "r", route_config("r", "a", "b")),
        (Kind.LISTENER, "l", listener("l", "r")),
    ]


class Counting:
    """Wraps translate, counting calls per (kind, name)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[Kind, str]] = Counter()

    def __call__(self, kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
        self.calls[(kind, str(getattr(model, "name", "")))] += 1
        return translate(kind, model)


def _names(snap: Snapshot, type_url: str) -> list[str]:
    return list(snap.resources(type_url))


def test_builds_every_type_from_scratch() -> None:
    b = SnapshotBuilder(translate)
    assert b.snapshot.serial == 0
    snap = b.apply(world())
    assert snap is b.snapshot
    assert snap.serial == 1
    assert _names(snap, CLUSTER_TYPE) == ["a", "b"]
    assert _names(snap, ENDPOINT_TYPE) == ["a", "b"]
    assert _names(snap, ROUTE_TYPE) == ["r"]
    assert _names(snap, LISTENER_TYPE) == ["l"]


def test_one_changed_cluster_reencodes_one_cluster() -> None:
    counting = Counting()
    b = SnapshotBuilder(counting)
    many = [(Kind.CLUSTER, f"c{i}", cluster(f"c{i}")) for i in range(50)]
    first = b.apply([*many, *world()])
    encoded, calls = b.encoded, counting.calls.total()
    assert calls == 54

    second = b.apply([(Kind.CLUSTER, "c7", cluster("c7", port=81, timeout=2.0))])
    assert counting.calls.total() - calls == 1
    assert counting.calls[(Kind.CLUSTER, "c7")] == 2
    assert b.encoded - encoded == 2  # its Cluster and its ClusterLoadAssignment, nothing else
    assert second.serial == first.serial + 1
    # Untouched resources are the very same cached objects; untouched types are shared.
    for name in ("c6", "a", "b"):
        assert second.get(CLUSTER_TYPE).get(name) is first.get(CLUSTER_TYPE).get(name)
    assert second.get(ROUTE_TYPE) is first.get(ROUTE_TYPE)
    assert second.get(LISTENER_TYPE) is first.get(LISTENER_TYPE)
    assert second.get(CLUSTER_TYPE).version != first.get(CLUSTER_TYPE).version


def test_cluster_change_that_only_touches_eds_keeps_cds_type_snapshot() -> None:
    b = SnapshotBuilder(translate)
    first = b.apply(world())
    second = b.apply([(Kind.CLUSTER, "a", cluster("a", port=99))])
    assert second.get(CLUSTER_TYPE) is first.get(CLUSTER_TYPE)  # the Cluster bytes are equal
    assert second.get(ENDPOINT_TYPE) is not first.get(ENDPOINT_TYPE)


def test_equal_content_publishes_nothing_new() -> None:
    b = SnapshotBuilder(translate)
    first = b.apply(world())
    assert b.apply(world()) is first
    assert b.apply([]) is first
    assert b.apply([(Kind.CLUSTER, "nope", None)]) is first  # deleting the unknown: a no-op


def test_published_snapshots_are_never_mutated() -> None:
    b = SnapshotBuilder(translate)
    first = b.apply(world())
    before = {url: dict(ts.resources) for url, ts in first.types.items()}
    versions = first.versions()
    b.apply([(Kind.CLUSTER, "c", cluster("c")), (Kind.CLUSTER, "a", cluster("a", port=1))])
    b.apply([(Kind.LISTENER, "l", None)])
    assert {url: dict(ts.resources) for url, ts in first.types.items()} == before
    assert first.versions() == versions


def test_last_change_in_a_batch_wins() -> None:
    b = SnapshotBuilder(translate)
    snap = b.apply([*world(), (Kind.CLUSTER, "x", cluster("x")), (Kind.CLUSTER, "x", None)])
    assert "x" not in snap.get(CLUSTER_TYPE)


def test_listener_naming_a_missing_route_config_is_rejected_and_nothing_changes() -> None:
    # xds rule 16: an inconsistent snapshot is never published.
    b = SnapshotBuilder(translate)
    first = b.apply(world())
    encoded = b.encoded
    with pytest.raises(Conflict) as err:
        b.apply([(Kind.LISTENER, "l2", listener("l2", "missing", port=9090))])
    assert "listener 'l2' names route config 'missing', which does not exist" in str(err.value)
    assert [d.field for d in err.value.details] == ["listener 'l2'"]
    assert b.snapshot is first
    assert b.encoded > encoded  # it was translated, but none of it was kept:
    assert b.apply([(Kind.ROUTE_CONFIG, "missing", route_config("missing", "a"))]).serial == 2
    assert "l2" not in b.snapshot.get(LISTENER_TYPE)


def test_route_naming_missing_clusters_lists_every_dangling_reference() -> None:
    b = SnapshotBuilder(translate)
    b.apply(world())
    with pytest.raises(Conflict) as err:
        b.apply([(Kind.ROUTE_CONFIG, "r2", route_config("r2", "x", "y", "a"))])
    messages = [d.message for d in err.value.details]
    assert messages == [
        "route config 'r2' names cluster 'x', which does not exist",
        "route config 'r2' names cluster 'y', which does not exist",
    ]
    assert err.value.status == 409


def test_deleting_a_referenced_resource_is_rejected_unless_its_referrers_go_too() -> None:
    b = SnapshotBuilder(translate)
    first = b.apply(world())
    with pytest.raises(Conflict, match="route config 'r' names cluster 'a'"):
        b.apply([(Kind.CLUSTER, "a", None)])
    with pytest.raises(Conflict, match="listener 'l' names route config 'r'"):
        b.apply([(Kind.ROUTE_CONFIG, "r", None)])
    assert b.snapshot is first
    # Changing the referrer in the same batch makes the deletion fine.
    snap = b.apply([(Kind.CLUSTER, "a", None), (Kind.ROUTE_CONFIG, "r", route_config("r", "b"))])
    assert _names(snap, CLUSTER_TYPE) == ["b"]
    # And deleting everything, referrers with referees, empties the snapshot.
    snap = b.apply(
        [(Kind.LISTENER, "l", None), (Kind.ROUTE_CONFIG, "r", None), (Kind.CLUSTER, "b", None)]
    )
    assert dict(snap.types) == {}


def test_a_failing_translate_leaves_the_builder_unchanged() -> None:
    def broken(kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
        if getattr(model, "name", "") == "bad":
            raise RuntimeError("boom")
        return translate(kind, model)

    b = SnapshotBuilder(broken)
    first = b.apply(world())
    with pytest.raises(RuntimeError):
        b.apply([(Kind.CLUSTER, "a", cluster("a", 2)), (Kind.CLUSTER, "bad", cluster("bad"))])
    assert b.snapshot is first
    assert b.apply([(Kind.CLUSTER, "a", cluster("a"))]) is first  # still the old content


def test_two_resources_producing_the_same_xds_resource_conflict() -> None:
    def clashing(kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
        out = translate(kind, model)
        if kind is Kind.LISTENER:
            out.append((CLUSTER_TYPE, "a", cluster_pb2.Cluster(name="a")))
        return out

    b = SnapshotBuilder(clashing)
    b.apply(world()[:3])
    with pytest.raises(Conflict, match="listener 'l' and cluster 'a' both produce Cluster 'a'"):
        b.apply([world()[3]])


def test_versions_are_deterministic_across_builders_and_orderings() -> None:
    # xds rule 8: the same content gives the same versions (another replica, a restart).
    one, two = SnapshotBuilder(translate), SnapshotBuilder(translate)
    changes = [
        *world(),
        (Kind.CLUSTER, "c", cluster("c")),
        (Kind.ROUTE_CONFIG, "r2", route_config("r2", "c")),
    ]
    s1 = one.apply(changes)
    two.apply([*changes[:2], changes[4]])
    s2 = two.apply(list(reversed(changes)))
    assert s1.versions() == s2.versions()
    for url in s1.types:
        assert s1.get(url).resources == s2.get(url).resources
    # Going through a detour and back lands on the same versions too.
    two.apply([(Kind.CLUSTER, "c", cluster("c", 5))])
    assert two.apply([(Kind.CLUSTER, "c", cluster("c"))]).versions() == s1.versions()
