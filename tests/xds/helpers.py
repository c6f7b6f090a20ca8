"""Tiny snapshots from real protos, shared by the xDS stream tests.

`content` maps a type to {name: revision}; each revision of a resource gives different bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from flowplane.xds.snapshot import Resource, Snapshot, TypeSnapshot
from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE

CDS, EDS, LDS, RDS = CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE

MESSAGES: dict[str, type[Message]] = {
    CDS: cluster_pb2.Cluster,
    EDS: endpoint_pb2.ClusterLoadAssignment,
    LDS: listener_pb2.Listener,
    RDS: route_pb2.RouteConfiguration,
}
_cache: dict[tuple[str, str, int], Resource] = {}


def cluster_resource(name: str, timeout_s: int = 1) -> Resource:
    """A Cluster resource, encoded afresh (not cached); `timeout_s` varies its bytes."""
    msg = cluster_pb2.Cluster(name=name)
    msg.connect_timeout.seconds = timeout_s
    return Resource.encode(CDS, name, msg)


def _encode(type_url: str, name: str, rev: int) -> Resource:
    if type_url == CDS:
        return cluster_resource(name, rev + 1)
    if type_url == EDS:
        msg: Message = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
        msg.policy.overprovisioning_factor.value = rev + 100
    elif type_url == LDS:
        msg = listener_pb2.Listener(name=name)
        msg.address.socket_address.port_value = rev + 1
    else:
        msg = route_pb2.RouteConfiguration(name=name)
        msg.virtual_hosts.add(name=f"rev{rev}", domains=["*"])
    return Resource.encode(type_url, name, msg)


def resource(type_url: str, name: str, rev: int = 0) -> Resource:
    """Revision `rev` of a resource (cached: the same arguments give the same object)."""
    key = (type_url, name, rev)
    if key not in _cache:
        _cache[key] = _encode(type_url, name, rev)
    return _cache[key]


Content = Mapping[str, Mapping[str, int]]


def snapshot(content: Content, serial: int = 1) -> Snapshot:
    return Snapshot(
        {
            t: TypeSnapshot(t, {n: resource(t, n, rev) for n, rev in by_name.items()})
            for t, by_name in content.items()
            if by_name
        },
        serial,
    )


def changed(base: Content, type_url: str, **revs: int | None) -> dict[str, dict[str, int]]:
    out = {t: dict(v) for t, v in base.items()}
    for n, rev in revs.items():
        if rev is None:
            out[type_url].pop(n, None)
        else:
            out[type_url][n] = rev
    return out


BASE: Content = {
    CDS: {"a": 0, "b": 0},
    EDS: {"a": 0, "b": 0},
    LDS: {"l": 0},
    RDS: {"r": 0, "r2": 0},
}


def name_of(type_url: str, msg: Message) -> str:
    name = getattr(msg, "cluster_name" if type_url == EDS else "name")
    assert isinstance(name, str)
    return name
