"""Helpers shared by the SotW and delta conformance suites: REST writes against a running plane,
the seed configuration, settings variants, cluster decoding and a reconnect storm."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import trio
from envoy.config.cluster.v3 import cluster_pb2
from prometheus_client import REGISTRY

from flowplane.settings import Settings
from flowplane.testing.adsclient import AdsStreamEnded, DeltaClient, SotwClient
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import Plane
from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.helpers import N, ok, plane_settings

CDS, EDS, LDS, RDS = CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
QUIET = 0.3  # seconds a stream must stay silent to show that nothing is sent
MIB = 1024 * 1024

V = TypeVar("V")
Connect = Callable[[Plane, str], AbstractAsyncContextManager[SotwClient | DeltaClient]]


# -- REST writes --------------------------------------------------------------------------------


async def post(plane: Plane, kind: str, body: dict[str, Any]) -> None:
    ok(await plane.api.post(f"{N}/{kind}", json=body))


async def put(plane: Plane, kind: str, body: dict[str, Any]) -> None:
    ok(await plane.api.put(f"{N}/{kind}/{body['name']}", json=body), 200)


async def delete(plane: Plane, kind: str, name: str) -> None:
    ok(await plane.api.delete(f"{N}/{kind}/{name}"), 204)


async def seed(plane: Plane) -> None:
    """backend <- routes <- edge: one resource of each served type."""
    await post(plane, "clusters", cluster_body("backend"))
    await post(plane, "route-configs", route_config_body("routes", "backend"))
    await post(plane, "listeners", listener_body("edge", "routes", port=10001))
    await plane.settled()


async def node_status(plane: Plane, node_id: str) -> dict[str, Any]:
    got: dict[str, Any] = ok(await plane.api.get(f"/api/v1/nodes/{node_id}"), 200)
    return got


def nacks() -> float:
    """The server's `flowplane_xds_nacks_total{type="Cluster"}`, every team's (process-wide)."""
    return sum(
        s.value
        for metric in REGISTRY.collect()
        for s in metric.samples
        if s.name == "flowplane_xds_nacks_total" and s.labels.get("type") == "Cluster"
    )


def cluster_ports(msg: cluster_pb2.Cluster) -> list[int]:
    """The port of every endpoint of a (decoded) cluster."""
    return [
        lb.endpoint.address.socket_address.port_value
        for loc in msg.load_assignment.endpoints
        for lb in loc.lb_endpoints
    ]


# -- settings and large content -------------------------------------------------------------------


def debounced(db_url: str) -> Settings:
    """A 0.2 s debounce: REST writes made in quick succession land in one snapshot."""
    return plane_settings(db_url, snapshot_debounce_seconds=0.2)


def big_settings(db_url: str) -> Settings:
    return plane_settings(db_url, snapshot_debounce_seconds=0.001, max_body_bytes=16 * MIB)


def long_host_cluster(name: str, count: int, port: int = 8080) -> dict[str, Any]:
    """A cluster of `count` endpoints with 250-character host names (~265 bytes each encoded)."""
    labels = ".".join(c * 60 for c in "wxyz")
    return {
        "name": name,
        "endpoints": [{"host": f"h{i:05d}.{labels}", "port": port} for i in range(count)],
    }


# -- rule 18: reconnect storms -------------------------------------------------------------------


async def reconnect_storm(
    plane: Plane, connect: Connect, node_prefix: str, streams: int, first: Callable[[Any], V]
) -> tuple[dict[int, V], list[str], Any, trio.CancelScope]:
    """Open `streams` streams at once (nodes `{node_prefix}000`, ...), each asking for CDS.

    Returns `first(response)` per stream that got its first response, the errors of the streams
    that ended instead, `GET /api/v1/nodes` while they were all open, and the cancel scope of the
    40 s deadline (`cancelled_caught`: the storm did not finish in time)."""
    got: dict[int, V] = {}
    ended: list[str] = []
    nodes: Any = None
    all_in = trio.Event()
    release = trio.Event()

    async def envoy(i: int) -> None:
        async with connect(plane, f"{node_prefix}{i:03d}") as c:
            await c.send(CDS)
            try:
                resp = await c.recv(timeout=30)
            except AdsStreamEnded as err:
                ended.append(str(err))
                return
            got[i] = first(resp)
            if len(got) == streams:
                all_in.set()
            await release.wait()

    with trio.move_on_after(40) as deadline:
        async with trio.open_nursery() as nursery:
            for i in range(streams):
                nursery.start_soon(envoy, i)
            with trio.move_on_after(35):
                await all_in.wait()
            nodes = ok(await plane.api.get("/api/v1/nodes"), 200)
            release.set()
    return got, ended, nodes, deadline
