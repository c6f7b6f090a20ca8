"""Snapshots are immutable values whose versions are content hashes (DESIGN.md §2, xds rule 8)."""

from __future__ import annotations

import hashlib

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import any_pb2

from flowplane.xds.snapshot import (
    FULL_STATE_TYPES,
    ORDER,
    Resource,
    Snapshot,
    TypeSnapshot,
    content_version,
    order_key,
)
from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.xds.helpers import cluster_resource as _cluster


def test_resource_holds_the_packed_any_and_its_content_hash() -> None:
    res = _cluster("a")
    packed = any_pb2.Any.FromString(res.any_bytes)
    assert packed.type_url == CLUSTER_TYPE
    assert cluster_pb2.Cluster.FromString(packed.value).name == "a"
    assert res.version == hashlib.sha256(res.any_bytes).hexdigest()[:16]


def test_resource_version_follows_content_only() -> None:
    assert _cluster("a").version == _cluster("a").version
    assert _cluster("a") == _cluster("a")
    assert _cluster("a", 2).version != _cluster("a").version


def test_resource_encoding_is_deterministic_for_maps() -> None:
    # Map fields are where non-deterministic encoding shows; insertion order must not matter.
    one, two = cluster_pb2.Cluster(name="m"), cluster_pb2.Cluster(name="m")
    for key in ("a", "b", "c"):
        one.metadata.filter_metadata[key].fields["k"].string_value = key
    for key in ("c", "a", "b"):
        two.metadata.filter_metadata[key].fields["k"].string_value = key
    assert Resource.encode(CLUSTER_TYPE, "m", one) == Resource.encode(CLUSTER_TYPE, "m", two)


def test_resource_refuses_a_mismatched_type_url() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Resource.encode(LISTENER_TYPE, "a", cluster_pb2.Cluster(name="a"))


def test_type_version_is_a_hash_over_sorted_name_version_pairs() -> None:
    a, b = _cluster("a"), _cluster("b")
    one = TypeSnapshot(CLUSTER_TYPE, {"b": b, "a": a})
    two = TypeSnapshot(CLUSTER_TYPE, {"a": a, "b": b})
    assert one.version == two.version == content_version([("a", a.version), ("b", b.version)])
    assert one == two
    assert list(one.resources) == ["a", "b"]  # iteration in name order
    assert TypeSnapshot(CLUSTER_TYPE, {"a": a}).version != one.version
    assert TypeSnapshot(CLUSTER_TYPE, {"a": _cluster("a", 3), "b": b}).version != one.version


def test_type_version_is_stable_across_processes() -> None:
    # A fixed expectation: the hash depends on content only (not on id(), hash seeds or time).
    assert content_version([]) == hashlib.sha256(b"").hexdigest()[:16]
    assert content_version([("a", "1")]) == hashlib.sha256(b"a\x001\n").hexdigest()[:16]


def test_type_snapshot_is_read_only_and_detached_from_its_input() -> None:
    source = {"a": _cluster("a")}
    ts = TypeSnapshot(CLUSTER_TYPE, source)
    source["b"] = _cluster("b")
    assert list(ts.resources) == ["a"]
    with pytest.raises(TypeError):
        ts.resources["b"] = _cluster("b")  # type: ignore[index]


def test_type_snapshot_checks_names() -> None:
    with pytest.raises(ValueError, match="filed under"):
        TypeSnapshot(CLUSTER_TYPE, {"x": _cluster("a")})


def test_memo_computes_once_per_key() -> None:
    ts = TypeSnapshot(CLUSTER_TYPE, {"a": _cluster("a")})
    calls: list[int] = []

    def make() -> bytes:
        calls.append(1)
        return b"body"

    assert ts.memo("k", make) == b"body"
    assert ts.memo("k", make) == b"body"
    assert len(calls) == 1


def test_snapshot_accessors_and_missing_types() -> None:
    ts = TypeSnapshot(CLUSTER_TYPE, {"a": _cluster("a")})
    snap = Snapshot({CLUSTER_TYPE: ts}, 3)
    assert snap.serial == 3
    assert snap.get(CLUSTER_TYPE) is ts
    assert snap.version(CLUSTER_TYPE) == ts.version
    assert list(snap.resources(CLUSTER_TYPE)) == ["a"]
    # A type with no resources reads as empty, with a stable identity and the empty-set version.
    assert len(snap.get(ROUTE_TYPE)) == 0
    assert snap.get(ROUTE_TYPE) is Snapshot.empty().get(ROUTE_TYPE)
    assert snap.version(ROUTE_TYPE) == content_version([])
    with pytest.raises(TypeError):
        snap.types[ROUTE_TYPE] = ts  # type: ignore[index]


def test_order_is_make_before_break() -> None:
    # xds rule 14: CDS -> EDS -> LDS -> RDS.
    assert ORDER == (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)
    other = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    assert sorted([other, ROUTE_TYPE, CLUSTER_TYPE, LISTENER_TYPE], key=order_key) == [
        CLUSTER_TYPE,
        LISTENER_TYPE,
        ROUTE_TYPE,
        other,
    ]
    # xds rule 10: LDS and CDS are the full-state types.
    assert frozenset({CLUSTER_TYPE, LISTENER_TYPE}) == FULL_STATE_TYPES


def test_snapshot_versions_listing() -> None:
    lst = Resource.encode(LISTENER_TYPE, "l", listener_pb2.Listener(name="l"))
    snap = Snapshot(
        {
            LISTENER_TYPE: TypeSnapshot(LISTENER_TYPE, {"l": lst}),
            CLUSTER_TYPE: TypeSnapshot(CLUSTER_TYPE, {"a": _cluster("a")}),
        },
        1,
    )
    assert list(snap.versions()) == [CLUSTER_TYPE, LISTENER_TYPE]
