"""Micro-benchmark: snapshot building and SotW fan-out (DESIGN.md §2 "encode once").

Builds 1,000 clusters + 100 route configs of 50 routes + 100 listeners from scratch, then
re-publishes one changed cluster, and serves both snapshots to simulated SotW streams.

    .venv/bin/python benchmarks/bench_snapshot.py [--streams N]

Uses the real translator (`flowplane.xds.translate`) when it is importable, else a stand-in
that builds the protos directly; it prints which one ran.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2
from google.protobuf.message import Message
from pydantic import BaseModel

from flowplane.domain.cluster import Cluster
from flowplane.domain.listener import Listener
from flowplane.domain.resources import Kind
from flowplane.domain.route import RouteConfig
from flowplane.xds.builder import Change, SnapshotBuilder, Translate
from flowplane.xds.snapshot import Snapshot
from flowplane.xds.sotw import Request, SotwStream
from flowplane.xds.types import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE

CLUSTERS, ROUTE_CONFIGS, ROUTES_PER_CONFIG, LISTENERS = 1000, 100, 50, 100


def _real_translate() -> tuple[Translate, str] | None:
    try:
        from flowplane.xds import translate as mod
    except ImportError:
        return None
    dispatch = getattr(mod, "translate", None)
    if callable(dispatch):
        return dispatch, "flowplane.xds.translate.translate"
    try:
        to_cluster = mod.cluster_to_proto
        to_route = mod.route_config_to_proto
        to_listener = mod.listener_to_proto
    except AttributeError:
        return None

    def per_kind(kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
        if isinstance(model, Cluster):
            return [(CLUSTER_TYPE, model.name, to_cluster(model))]
        if isinstance(model, RouteConfig):
            return [(ROUTE_TYPE, model.name, to_route(model, model.name))]
        assert isinstance(model, Listener)
        return [(LISTENER_TYPE, model.name, to_listener(model))]

    return per_kind, "flowplane.xds.translate.{cluster,route_config,listener}_to_proto"


def stand_in(kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
    """Builds roughly the same protos as the real translator, without its options."""
    if isinstance(model, Cluster):
        c = cluster_pb2.Cluster(name=model.name, type=cluster_pb2.Cluster.STATIC)
        c.connect_timeout.FromNanoseconds(round(model.connect_timeout_seconds * 1e9))
        c.load_assignment.cluster_name = model.name
        for ep in model.endpoints:
            sa = c.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address
            sa.socket_address.address = ep.host
            sa.socket_address.port_value = ep.port
        return [(CLUSTER_TYPE, model.name, c)]
    if isinstance(model, RouteConfig):
        rc = route_pb2.RouteConfiguration(name=model.name)
        for vh in model.virtual_hosts:
            pvh = rc.virtual_hosts.add(name=vh.name, domains=vh.domains)
            for r in vh.routes:
                pr = pvh.routes.add()
                pr.match.prefix = r.match.path.value
                pr.route.cluster = r.action.cluster  # type: ignore[union-attr]
        return [(ROUTE_TYPE, model.name, rc)]
    assert isinstance(model, Listener)
    lst = listener_pb2.Listener(name=model.name)
    lst.address.socket_address.address = model.address or "0.0.0.0"
    lst.address.socket_address.port_value = model.port or 0
    for h in model.http_managers():
        hcm = hcm_pb2.HttpConnectionManager(stat_prefix=model.name)
        hcm.rds.route_config_name = h.route_config_name or ""
        hcm.rds.config_source.ads.SetInParent()
        router = hcm.http_filters.add(name="envoy.filters.http.router")
        router.typed_config.type_url = (
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        )
        f = lst.filter_chains.add().filters.add(
            name="envoy.filters.network.http_connection_manager"
        )
        packed = any_pb2.Any()
        packed.Pack(hcm, deterministic=True)
        f.typed_config.CopyFrom(packed)
    return [(LISTENER_TYPE, model.name, lst)]


def cluster(i: int, port: int = 8000) -> Cluster:
    return Cluster.model_validate(
        {"name": f"c{i}", "endpoints": [{"host": f"10.0.{i // 250}.{i % 250 + 1}", "port": port}]}
    )


def route_config(i: int) -> RouteConfig:
    routes: list[dict[str, Any]] = [
        {
            "match": {"path": {"type": "prefix", "value": f"/svc{j}"}},
            "action": {"type": "forward", "cluster": f"c{(i * ROUTES_PER_CONFIG + j) % CLUSTERS}"},
        }
        for j in range(ROUTES_PER_CONFIG)
    ]
    return RouteConfig.model_validate(
        {"name": f"r{i}", "virtualHosts": [{"name": "vh", "domains": ["*"], "routes": routes}]}
    )


def listener(i: int) -> Listener:
    return Listener.model_validate(
        {
            "name": f"l{i}",
            "address": "0.0.0.0",
            "port": 10000 + i,
            "filterChains": [
                {"filters": [{"type": "httpConnectionManager", "routeConfigName": f"r{i}"}]}
            ],
        }
    )


@contextmanager
def timed(label: str, results: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[label] = time.perf_counter() - start
    print(f"  {label:<52} {results[label] * 1000:10.2f} ms")


def serve(streams: list[SotwStream], snap: Snapshot) -> tuple[int, int]:
    sent = size = 0
    for s in streams:
        for out in s.outbound(snap):
            sent += 1
            size += len(out.body)
            s.on_request(
                Request(out.type_url, out.version, out.nonce, _names(s, out.type_url), None, None)
            )
    return sent, size


def _names(s: SotwStream, type_url: str) -> tuple[str, ...]:
    sub = s.subscription(type_url)
    assert sub is not None
    return () if sub[0] else tuple(sorted(sub[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args(argv)

    real = _real_translate()
    translate: Callable[[Kind, BaseModel], list[tuple[str, str, Message]]]
    translate, which = (
        real if real is not None else (stand_in, "stand-in (benchmarks/bench_snapshot.py)")
    )
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.node()}")
    print(f"translate: {which}")

    changes: list[Change] = [(Kind.CLUSTER, f"c{i}", cluster(i)) for i in range(CLUSTERS)]
    changes += [(Kind.ROUTE_CONFIG, f"r{i}", route_config(i)) for i in range(ROUTE_CONFIGS)]
    changes += [(Kind.LISTENER, f"l{i}", listener(i)) for i in range(LISTENERS)]

    results: dict[str, float] = {}
    builder = SnapshotBuilder(translate)
    print(
        f"snapshot ({CLUSTERS} clusters, {ROUTE_CONFIGS}x{ROUTES_PER_CONFIG} routes, "
        f"{LISTENERS} listeners):"
    )
    with timed("build from scratch", results):
        first = builder.apply(changes)
    encoded = builder.encoded
    with timed("re-publish one changed cluster", results):
        second = builder.apply([(Kind.CLUSTER, "c7", cluster(7, port=9000))])
    print(f"  resources encoded for the change: {builder.encoded - encoded} (of {encoded})")
    assert second.serial == first.serial + 1
    with timed("re-publish identical content (no-op)", results):
        assert builder.apply([(Kind.CLUSTER, "c7", cluster(7, port=9000))]) is second

    print(f"SotW fan-out to {args.streams} streams (CDS+LDS wildcard, RDS 1 name each):")
    streams = []
    for n in range(args.streams):
        s = SotwStream()
        s.on_request(Request(CLUSTER_TYPE, node_id=f"envoy-{n}"))
        s.on_request(Request(LISTENER_TYPE))
        s.on_request(Request(ROUTE_TYPE, resource_names=(f"r{n % ROUTE_CONFIGS}",)))
        streams.append(s)
    with timed("initial responses for all streams", results):
        sent, size = serve(streams, first)
    print(f"  {sent} responses, {size / 1e6:.1f} MB")
    with timed("one changed cluster to all streams", results):
        sent, size = serve(streams, second)
    print(
        f"  {sent} responses, {size / 1e6:.1f} MB, "
        f"{results['one changed cluster to all streams'] / max(sent, 1) * 1e6:.1f} us each"
    )
    with timed("nothing changed (every stream checked)", results):
        assert serve(streams, second) == (0, 0)


if __name__ == "__main__":
    main()
