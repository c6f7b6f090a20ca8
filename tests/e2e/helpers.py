"""Helpers shared by the SotW and delta tests against real Envoy processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from flowplane.settings import Settings
from flowplane.testing.envoy import EnvoyProcess
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import Plane, run_plane
from flowplane.testing.upstream import Upstream, run_upstream
from tests.helpers import N, ok


@asynccontextmanager
async def plane_and_upstreams(
    settings: Settings,
) -> AsyncIterator[tuple[Plane, Upstream, Upstream]]:
    """A plane, then the upstreams "one" and "two" (stopped in reverse order)."""
    async with (
        run_plane(settings) as plane,
        run_upstream("one") as up1,
        run_upstream("two") as up2,
    ):
        yield plane, up1, up2


# -- configuration --------------------------------------------------------------------------------


async def post_edge(api: httpx.AsyncClient, upstream_port: int, listener_port: int) -> None:
    """backend (-> the upstream) <- routes <- edge (127.0.0.1:`listener_port`)."""
    ok(await api.post(f"{N}/clusters", json=cluster_body("backend", upstream_port)))
    ok(await api.post(f"{N}/route-configs", json=route_config_body()))
    ok(
        await api.post(
            f"{N}/listeners", json=listener_body(address="127.0.0.1", port=listener_port)
        )
    )


async def setup(plane: Plane, upstream_port: int, listener_port: int) -> None:
    """`post_edge`, then wait until the snapshot is published."""
    await post_edge(plane.api, upstream_port, listener_port)
    await plane.settled()


async def move_backend(api: httpx.AsyncClient, upstream_port: int) -> None:
    """Point the cluster `backend` at the upstream on `upstream_port`."""
    ok(await api.put(f"{N}/clusters/backend", json=cluster_body("backend", upstream_port)), 200)


def routes_with(*routes: dict[str, Any], name: str = "routes") -> dict[str, Any]:
    return {
        "name": name,
        "virtualHosts": [{"name": "vh", "domains": ["*"], "routes": list(routes)}],
    }


def fwd(prefix: str, cluster: str, **match: Any) -> dict[str, Any]:
    return {
        "match": {"path": {"type": "prefix", "value": prefix}, **match},
        "action": {"type": "forward", "cluster": cluster},
    }


# -- what the plane and Envoy report --------------------------------------------------------------


async def node(plane: Plane, node_id: str) -> dict[str, Any] | None:
    r = await plane.api.get(f"/api/v1/nodes/{node_id}")
    return r.json() if r.status_code == 200 else None


async def all_acked(plane: Plane, node_id: str, versions: Mapping[str, str]) -> bool:
    """The node has CDS, LDS and RDS, each acknowledged at `versions[type URL]`."""
    status = await node(plane, node_id)
    res = status["resources"] if status else {}
    return len(res) == 3 and all(
        v["versionAcknowledged"] == versions[v["typeUrl"]] for v in res.values()
    )


async def has_cluster(envoy: EnvoyProcess, name: str) -> bool:
    return name in (await envoy.resource_versions())["clusters"]


async def body_of(envoy: EnvoyProcess, port: int, path: str = "/") -> bytes | None:
    """The body of a 200 answer through Envoy's `port`; None for any other outcome."""
    try:
        status, _, body = await envoy.request(port, path)
    except (OSError, httpx.TransportError):
        return None
    return body if status == 200 else None


def reaches(envoy: EnvoyProcess, port: int, name: str) -> Callable[[], Awaitable[bool]]:
    """A predicate: a request through `port` reaches the upstream called `name`."""

    async def probe() -> bool:
        body = await body_of(envoy, port)
        return body is not None and body.startswith(f"{name} ".encode())

    return probe
