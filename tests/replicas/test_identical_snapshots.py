"""Identical snapshots (README "Replicas"): two replicas with the same data publish the same
resource bytes and the same content-hash versions, so an Envoy that moves to the other replica
is sent nothing it already has."""

from __future__ import annotations

import pytest
import trio

from flowplane.app import Core
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.xds.snapshot import Snapshot
from tests.helpers import ok
from tests.replicas.conftest import Replica
from tests.replicas.test_change_feed import N, until_changed, watch

pytestmark = pytest.mark.postgres


def contents(snapshot: Snapshot) -> dict[str, dict[str, tuple[str, bytes]]]:
    """type URL -> resource name -> (version, serialized Any)."""
    return {
        url: {name: (r.version, r.any_bytes) for name, r in snapshot.get(url).resources.items()}
        for url in snapshot.versions()
    }


async def published(core: Core) -> Snapshot:
    await core.snapshots.caught_up(core.state.serial)
    return core.hub.snapshot


async def test_replicas_publish_identical_snapshots(replicas: tuple[Replica, Replica]) -> None:
    """The rule: "xDS versions are content hashes, so an Envoy that moves to another replica
    receives nothing it already has" (api.md Operations): after writes on both replicas (each
    applying the other's through the change feed, in its own order of arrival), every type's
    version and every resource's version and bytes are equal on A and B."""
    a, b = replicas
    seen_a, seen_b = watch(a.core), watch(b.core)
    with trio.fail_after(30):
        ok(await a.api.post(f"{N}/clusters", json=cluster_body("backend")))
        ok(await b.api.post(f"{N}/clusters", json=cluster_body("other", 9090)))
        await until_changed(seen_b, "backend")
        await until_changed(seen_a, "other")
        ok(await b.api.post(f"{N}/route-configs", json=route_config_body()))
        await until_changed(seen_a, "routes")
        ok(await a.api.post(f"{N}/listeners", json=listener_body(port=10001)))
        ok(await a.api.put(
            f"{N}/clusters/other", json=cluster_body("other", 9091), headers={"If-Match": '"1"'}
        ), 200)  # fmt: skip
        await until_changed(seen_b, "edge")
        await until_changed(seen_b, "other")
        snap_a, snap_b = await published(a.core), await published(b.core)
    assert contents(snap_a) == contents(snap_b)
    assert snap_a.versions() == snap_b.versions()
    compared = {url.rpartition(".")[2] for url, res in contents(snap_a).items() if res}
    assert {"Cluster", "RouteConfiguration", "Listener"} <= compared  # not vacuous
    assert {"backend", "other"} <= set(contents(snap_a)[
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    ])  # fmt: skip
