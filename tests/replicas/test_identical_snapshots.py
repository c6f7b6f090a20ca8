"""Identical snapshots (README "Replicas"): two replicas with the same data publish the same
resource bytes and the same content-hash versions, so an Envoy that moves to the other replica
is sent nothing it already has."""

from __future__ import annotations

import pytest
import trio

from flowplane.app import Core
from flowplane.testing.adsclient import delta_client, sotw_client
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.xds.snapshot import Snapshot
from flowplane.xds.types import CLUSTER_TYPE
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


async def test_an_envoy_moving_to_the_other_replica_is_sent_nothing_it_has(
    replicas: tuple[Replica, Replica],
) -> None:
    """The rule: "an Envoy that reconnects to another replica is sent nothing it already has
    (SotW: same version; delta: zero resources)" (issue 13). A delta stream to A receives the
    clusters; a delta stream to B that starts with those versions (as a reconnecting Envoy
    does) is sent only the cluster created afterwards; a SotW stream to B gets the version A's
    SotW stream got."""
    a, b = replicas
    seen = watch(b.core)
    with trio.fail_after(30):
        for i in range(5):
            ok(await a.api.post(f"{N}/clusters", json=cluster_body(f"c{i}")))
        await until_changed(seen, "c4")
        await published(b.core)
        await published(a.core)
        assert a.core.xds_port and b.core.xds_port
        async with delta_client("127.0.0.1", a.core.xds_port, node_id="dp") as on_a:
            await on_a.send(CLUSTER_TYPE)
            first = await on_a.recv()
            held = {r.name: r.version for r in first.resources}
        assert set(held) == {f"c{i}" for i in range(5)}
        async with delta_client("127.0.0.1", b.core.xds_port, node_id="dp") as on_b:
            await on_b.send(CLUSTER_TYPE, initial_versions=held)
            ok(await a.api.post(f"{N}/clusters", json=cluster_body("new")))
            resp = await on_b.recv()
        assert [r.name for r in resp.resources] == ["new"]
        assert list(resp.removed_resources) == []
        await until_changed(seen, "new")  # B has it too
        versions = []
        for core in (a.core, b.core):
            await published(core)
            assert core.xds_port
            async with sotw_client("127.0.0.1", core.xds_port, node_id="dp") as sotw:
                await sotw.send(CLUSTER_TYPE)
                versions.append((await sotw.recv()).version_info)
    assert versions[0] == versions[1]
