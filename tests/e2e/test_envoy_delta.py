"""Incremental (delta) ADS against real Envoy 1.40 processes (`api_type: DELTA_GRPC`).

The same scenarios as `test_envoy_sotw.py`, over `DeltaAggregatedResources`: traffic and
changes, routes added and deleted, a NACK, a control-plane restart (Envoy keeps serving; after
the restart it receives *zero* resources), and a mixed fleet of one SotW and one delta Envoy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import REGISTRY

from flowplane.settings import Settings
from flowplane.testing.envoy import EnvoyProcess, ads_bootstrap, run_envoy
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import run_plane
from flowplane.testing.ports import free_port
from flowplane.testing.upstream import run_upstream
from flowplane.xds.types import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.e2e.helpers import (
    all_acked,
    fwd,
    has_cluster,
    move_backend,
    node,
    plane_and_upstreams,
    reaches,
    routes_with,
    setup,
)
from tests.helpers import N, ok, plane_settings

pytestmark = pytest.mark.e2e
TYPES = (CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE)
DUMP_KINDS = (
    ("clusters", CLUSTER_TYPE),
    ("listeners", LISTENER_TYPE),
    ("route_configs", ROUTE_TYPE),
)


def delta_boot(node: str, port: int) -> dict[str, Any]:
    boot = ads_bootstrap(node, "127.0.0.1", port, delta=True)
    assert boot["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    return boot


def delta_responses() -> dict[str, float]:
    """The server's `flowplane_xds_responses_total{protocol="delta"}` per type, all teams
    together (process-wide)."""
    out = dict.fromkeys(TYPES, 0.0)
    short = {t.rpartition(".")[2]: t for t in TYPES}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            labels = s.labels
            if s.name == "flowplane_xds_responses_total" and labels["protocol"] == "delta" and (
                labels["type"] in short
            ):
                out[short[labels["type"]]] += s.value
    return out


UPDATE_STATS = (
    "cluster_manager.cds.update_success",
    "cluster_manager.cds.update_rejected",
    "listener_manager.lds.update_success",
    "listener_manager.lds.update_rejected",
    "http.edge.rds.routes.update_success",
    "http.edge.rds.routes.update_rejected",
)


async def update_stats(envoy: EnvoyProcess) -> dict[str, int | None]:
    stats = await envoy.stats()
    return {name: stats.get(name) for name in UPDATE_STATS}


# -- traffic --------------------------------------------------------------------------------------


async def test_traffic_flows_and_endpoint_change_moves_it(
    xds_settings: Settings, tmp_path: Path
) -> None:
    """A delta Envoy gets its config (the node shows as a delta stream, every type ACKed, each
    resource at the server's per-resource version) and serves traffic; changing the cluster's
    endpoint moves the traffic; Envoy rejects nothing."""
    port = free_port()
    with trio.fail_after(60):
        async with plane_and_upstreams(xds_settings) as (plane, up1, up2):
            await setup(plane, up1.port, port)
            async with run_envoy(
                delta_boot("envoy-delta-1", plane.xds_port), tmp_dir=tmp_path
            ) as envoy:
                await envoy.wait_for(
                    reaches(envoy, port, "one"), 15, what="traffic to upstream one"
                )
                status = await node(plane, "envoy-delta-1")
                assert status is not None and status["protocol"] == "delta"
                assert {r["typeUrl"] for r in status["resources"].values()} == set(TYPES)
                snap = plane.core.hub.snapshot
                held = await envoy.resource_versions()
                for kind, type_url in DUMP_KINDS:
                    expected = {n: r.version for n, r in snap.get(type_url).resources.items()}
                    assert held[kind] == expected, (kind, held[kind], expected)

                await move_backend(plane.api, up2.port)
                await envoy.wait_for(
                    reaches(envoy, port, "two"), 15, what="traffic to upstream two"
                )
                assert all(v == 0 for v in (await envoy.rejected_counts()).values())


async def test_add_and_delete_a_route(xds_settings: Settings, tmp_path: Path) -> None:
    """A route added (to a new cluster, created in the same breath) routes; deleted, it stops
    routing (Envoy answers 404); the cluster deleted afterwards goes away cleanly."""
    port = free_port()
    with trio.fail_after(60):
        async with plane_and_upstreams(xds_settings) as (plane, up1, up2):
            api = plane.api
            ok(await api.post(f"{N}/clusters", json=cluster_body("c1", up1.port)))
            ok(await api.post(f"{N}/route-configs", json=routes_with(fwd("/a", "c1"))))
            ok(await api.post(f"{N}/listeners", json=listener_body(address="127.0.0.1", port=port)))
            async with run_envoy(
                delta_boot("envoy-delta-routes", plane.xds_port), tmp_dir=tmp_path
            ) as envoy:

                async def status_of(path: str) -> tuple[int, bytes] | None:
                    try:
                        status, _, body = await envoy.request(port, path)
                    except (OSError, httpx.TransportError):
                        return None
                    return status, body

                def until(
                    path: str, check: Callable[[int, bytes], bool]
                ) -> Callable[[], Awaitable[bool]]:
                    async def probe() -> bool:
                        r = await status_of(path)
                        return r is not None and check(*r)

                    return probe

                await envoy.wait_for(
                    until("/a", lambda s, b: s == 200 and b.startswith(b"one")), 15, what="route /a"
                )
                ok(await api.post(f"{N}/clusters", json=cluster_body("c2", up2.port)))
                rc = routes_with(fwd("/b", "c2"), fwd("/a", "c1"))
                ok(await api.put(f"{N}/route-configs/routes", json=rc), 200)
                await envoy.wait_for(
                    until("/b", lambda s, b: s == 200 and b.startswith(b"two")), 15, what="route /b"
                )
                ok(
                    await api.put(f"{N}/route-configs/routes", json=routes_with(fwd("/a", "c1"))),
                    200,
                )
                await envoy.wait_for(until("/b", lambda s, b: s == 404), 15, what="route /b gone")
                ok(await api.delete(f"{N}/clusters/c2"), 204)

                async def c2_gone() -> bool:
                    return "c2" not in (await envoy.resource_versions())["clusters"]

                await envoy.wait_for(c2_gone, 15, what="cluster c2 removed")
                assert await until("/a", lambda s, b: s == 200 and b.startswith(b"one"))()
                assert all(v == 0 for v in (await envoy.rejected_counts()).values())


# -- NACK -----------------------------------------------------------------------------------------


async def test_nack_recorded_old_config_serves_no_resend(
    xds_settings: Settings, tmp_path: Path
) -> None:
    """A listener Envoy cannot bind (192.0.2.1 is not on this host) passes our validation; the
    delta Envoy NACKs it. The rejection shows in `/api/v1/nodes/{id}` (protocol "delta", the
    rejected name), the old listener keeps serving, and nothing more is sent for LDS (Envoy's
    `listener_manager.lds.update_attempt` stays put across an unrelated CDS change and a quiet
    window) until the listener's content changes; the fixed listener is then accepted."""
    port, bad_port, fixed_port = free_port(), free_port(), free_port()
    node_id = "envoy-delta-nack"
    with trio.fail_after(60):
        async with run_plane(xds_settings) as plane, run_upstream("one") as up:
            api = plane.api
            await setup(plane, up.port, port)
            async with run_envoy(delta_boot(node_id, plane.xds_port), tmp_dir=tmp_path) as envoy:
                serving = reaches(envoy, port, "one")
                await envoy.wait_for(serving, 15, what="traffic")
                unbindable = listener_body("unbindable", address="192.0.2.1", port=bad_port)
                ok(await api.post(f"{N}/listeners", json=unbindable))

                async def rejected() -> Any:
                    status = await node(plane, node_id)
                    return status and status["resources"]["Listener"]["lastRejection"]

                rej = await envoy.wait_for(rejected, 15, what="NACK recorded")
                assert "192.0.2.1" in rej["errorDetail"] or "bind" in rej["errorDetail"].lower()
                assert rej["time"] and rej["version"]
                assert rej["resourceNames"] == ["unbindable"]
                status = await node(plane, node_id)
                assert status is not None and status["protocol"] == "delta"
                assert await serving()  # the old config keeps serving
                attempts = await envoy.stat("listener_manager.lds.update_attempt")
                assert await envoy.stat("listener_manager.lds.update_rejected") == 1
                # an unrelated change (a new cluster) must not resend the rejected listener
                ok(await api.post(f"{N}/clusters", json=cluster_body("other", up.port)))
                await envoy.wait_for(
                    lambda: has_cluster(envoy, "other"), 10, what="CDS update delivered"
                )
                await trio.sleep(0.5)  # a quiet window: nothing more may arrive for LDS
                assert await envoy.stat("listener_manager.lds.update_attempt") == attempts
                assert await envoy.stat("listener_manager.lds.update_rejected") == 1
                # new content for the listener is sent, and Envoy accepts it
                fixed = listener_body("unbindable", address="127.0.0.1", port=fixed_port)
                ok(await api.put(f"{N}/listeners/unbindable", json=fixed), 200)
                await envoy.wait_for(reaches(envoy, fixed_port, "one"), 15, what="fixed listener")

                async def acked() -> bool:
                    status = await node(plane, node_id)
                    v = status["resources"]["Listener"] if status else {}
                    return bool(v) and v["versionAcknowledged"] == v["versionSent"]

                await envoy.wait_for(acked, 10, what="LDS acked")
                assert await envoy.stat("listener_manager.lds.update_rejected") == 1
                assert await serving()


# -- control-plane restart --------------------------------------------------------------------------


async def test_control_plane_restart_envoy_keeps_serving_and_receives_nothing(
    db_url: str, tmp_path: Path
) -> None:
    """Kill the control plane: the delta Envoy keeps serving. Restart it on the same database
    with unchanged configuration: Envoy reconnects with `initial_resource_versions` and receives
    **zero** resources (xds rules 8, 12). Asserted precisely:

    - Envoy's `control_plane.connected_state` goes back to 1 and the node reappears in
      `/api/v1/nodes` with CDS, LDS and RDS requested, `versionSent` None (nothing sent on the
      new stream) and `versionAcknowledged` equal to the server's version of each type (what
      Envoy declared it holds);
    - after a 1 s quiet window: the server's `flowplane_xds_responses_total{protocol="delta"}`
      did not move for any type since before the restart, and Envoy's
      `cluster_manager.cds.update_success`, `listener_manager.lds.update_success` and
      `http.edge.rds.routes.update_success` (and the `update_rejected` counters) are unchanged —
      Envoy applied no response at all;
    - Envoy's resources and their versions (config_dump) are those it held before, and it
      serves throughout.
    """
    port, xds_port = free_port(), free_port()
    settings = plane_settings(db_url, xds_port)
    node_id = "envoy-delta-restart"
    with trio.fail_after(90):
        async with run_upstream("one") as up, AsyncExitStack() as first:
            plane = await first.enter_async_context(run_plane(settings))
            await setup(plane, up.port, port)
            versions = plane.core.hub.snapshot.versions()
            async with run_envoy(delta_boot(node_id, xds_port), tmp_dir=tmp_path) as envoy:
                serving = reaches(envoy, port, "one")
                await envoy.wait_for(serving, 15, what="traffic")
                await envoy.wait_for(
                    lambda: all_acked(plane, node_id, versions), 15, what="every type ACKed"
                )
                held = await envoy.resource_versions()
                stats_before = await update_stats(envoy)
                assert all(stats_before[s] for s in UPDATE_STATS if s.endswith("_success"))
                await first.aclose()  # the control plane goes away entirely

                async def disconnected() -> bool:
                    return await envoy.stat("control_plane.connected_state") == 0

                await envoy.wait_for(disconnected, 10, what="Envoy saw the plane go")
                for _ in range(20):
                    assert await serving()  # Envoy keeps serving without it
                sent_before = delta_responses()
                async with run_plane(settings) as plane:
                    assert plane.core.hub.snapshot.versions() == versions  # content hashes

                    async def resynced() -> bool:
                        if await envoy.stat("control_plane.connected_state") != 1:
                            return False
                        return await all_acked(plane, node_id, versions)

                    await envoy.wait_for(resynced, 30, what="Envoy reconnected")
                    await trio.sleep(1.0)  # a quiet window: nothing may be sent to Envoy
                    status = await node(plane, node_id)
                    assert status is not None and status["protocol"] == "delta"
                    assert all(v["versionSent"] is None for v in status["resources"].values())
                    assert delta_responses() == sent_before
                    assert await update_stats(envoy) == stats_before
                    assert await envoy.resource_versions() == held
                    assert await serving()
                    # the new stream is live: a change still arrives
                    ok(
                        await plane.api.put(
                            f"{N}/route-configs/routes",
                            json=route_config_body(domains=["*", "x.example"]),
                        ),
                        200,
                    )

                    async def rds_updated() -> bool:
                        return (await envoy.resource_versions())["route_configs"] != held[
                            "route_configs"
                        ]

                    await envoy.wait_for(rds_updated, 15, what="RDS change delivered")
                    assert all(v == 0 for v in (await envoy.rejected_counts()).values())


async def test_changes_made_while_envoy_is_away_arrive_on_reconnect(
    db_url: str, tmp_path: Path
) -> None:
    """xds rule 12 with a real Envoy: while the plane Envoy knows is down, the configuration
    changes (through another plane on the same database but an xDS port Envoy does not know):
    a listener, its route config and its cluster are deleted and the backend cluster moves to
    another upstream. When the plane comes back, Envoy reconnects with what it holds and
    converges: the changed cluster is updated in place (`cluster_manager.cluster_modified` +1,
    no cluster added), the deleted cluster and listener are removed (`cluster_removed`,
    `listener_removed` +1), the untouched listener keeps its version, and traffic moves."""
    port, xds_port, away_port = free_port(), free_port(), free_port()
    settings = plane_settings(db_url, xds_port)
    away = plane_settings(db_url, away_port)
    node_id = "envoy-delta-away"
    with trio.fail_after(90):
        async with (
            run_upstream("one") as up1,
            run_upstream("two") as up2,
            AsyncExitStack() as first,
        ):
            plane = await first.enter_async_context(run_plane(settings))
            await setup(plane, up1.port, port)
            api = plane.api
            ok(await api.post(f"{N}/clusters", json=cluster_body("other", up1.port)))
            ok(await api.post(f"{N}/route-configs", json=route_config_body("r2", "other")))
            l2 = listener_body("l2", "r2", address="127.0.0.1", port=free_port())
            ok(await api.post(f"{N}/listeners", json=l2))
            async with run_envoy(delta_boot(node_id, xds_port), tmp_dir=tmp_path) as envoy:
                await envoy.wait_for(reaches(envoy, port, "one"), 15, what="traffic to one")

                async def holds_l2() -> bool:
                    return "l2" in (await envoy.resource_versions())["listeners"]

                await envoy.wait_for(holds_l2, 15, what="listener l2")
                held = await envoy.resource_versions()
                await first.aclose()
                async with run_plane(away) as elsewhere:
                    for kind, name in (
                        ("listeners", "l2"), ("route-configs", "r2"), ("clusters", "other"),
                    ):  # fmt: skip
                        ok(await elsewhere.api.delete(f"{N}/{kind}/{name}"), 204)
                    await move_backend(elsewhere.api, up2.port)
                    await elsewhere.settled()
                stats = await envoy.stats()
                async with run_plane(settings) as plane:
                    await envoy.wait_for(reaches(envoy, port, "two"), 30, what="traffic to two")
                    snap = plane.core.hub.snapshot

                    async def converged() -> bool:
                        now = await envoy.resource_versions()
                        active = {n for n, v in now["listeners"].items() if v}  # "": draining
                        return now["clusters"] == {
                            "backend": snap.get(CLUSTER_TYPE).resources["backend"].version
                        } and active == {"edge"}

                    await envoy.wait_for(converged, 15, what="Envoy converged")
                    now = await envoy.resource_versions()
                    assert now["listeners"]["edge"] == held["listeners"]["edge"]
                    after = await envoy.stats()
                    for name, delta in (
                        ("cluster_manager.cluster_added", 0),
                        ("cluster_manager.cluster_modified", 1),
                        ("cluster_manager.cluster_removed", 1),
                        ("listener_manager.listener_added", 0),
                        ("listener_manager.listener_modified", 0),
                        ("listener_manager.listener_removed", 1),
                    ):
                        assert after[name] - stats[name] == delta, name
                    assert all(v == 0 for v in (await envoy.rejected_counts()).values())


# -- mixed fleet ----------------------------------------------------------------------------------


async def _served(envoy: EnvoyProcess, listener: str) -> int:
    """Requests Envoy's HCM on `listener` completed (stat prefix = listener name)."""
    return await envoy.stat(f"http.{listener}.downstream_rq_completed") or 0


def _strip_versions(dump: dict[str, Any]) -> list[Any]:
    """The dynamic resources of a config_dump without version_info/last_updated (comparable
    across SotW and delta Envoys)."""
    out: list[Any] = []
    for section in dump.get("configs", []):
        for key in ("dynamic_listeners", "dynamic_active_clusters", "dynamic_route_configs"):
            for item in section.get(key, []):
                if key == "dynamic_listeners":
                    out.append((key, item["name"], item["active_state"]["listener"]))
                elif key == "dynamic_active_clusters":
                    out.append((key, item["cluster"]["name"], item["cluster"]))
                else:
                    out.append((key, item["route_config"]["name"], item["route_config"]))
    return sorted(out, key=lambda e: (e[0], e[1]))


async def test_mixed_fleet_sotw_and_delta_envoys_converge(
    xds_settings: Settings, tmp_path: Path
) -> None:
    """One SotW Envoy and one delta Envoy on the same plane, both seeing everything, converge on
    the same configuration: the same resources with identical content in their config_dumps,
    the same per-type version acknowledged in `/api/v1/nodes` (the delta system version of a
    wildcard subscription is the SotW type version), and the delta Envoy holds each resource at
    the server's per-resource version. Traffic flows through both (each Envoy's own HCM stats
    count requests: both bind the listener port with SO_REUSEPORT), before and after a change."""
    port = free_port()
    with trio.fail_after(60):
        async with plane_and_upstreams(xds_settings) as (plane, up1, up2):
            await setup(plane, up1.port, port)
            sotw_boot = ads_bootstrap("envoy-sotw", "127.0.0.1", plane.xds_port)
            async with (
                run_envoy(sotw_boot, tmp_dir=tmp_path / "sotw") as sotw,
                run_envoy(
                    delta_boot("envoy-delta", plane.xds_port), tmp_dir=tmp_path / "delta"
                ) as delta,
            ):
                fleet = (sotw, delta)

                async def converged() -> bool:
                    snap = plane.core.hub.snapshot
                    want = {t: snap.version(t) for t in TYPES}
                    for node_id in ("envoy-sotw", "envoy-delta"):
                        status = await node(plane, node_id)
                        res = status["resources"] if status else {}
                        got = {v["typeUrl"]: v["versionAcknowledged"] for v in res.values()}
                        if got != want:
                            return False
                    return _strip_versions(await sotw.config_dump()) == _strip_versions(
                        await delta.config_dump()
                    )

                async def through_both(name: str) -> None:
                    for envoy in fleet:
                        await envoy.wait_for(
                            reaches(envoy, port, name), 15, what=f"traffic to {name}"
                        )
                    start = [await _served(e, "edge") for e in fleet]

                    async def both_served() -> bool:
                        assert await reaches(sotw, port, name)()  # whichever Envoy takes it
                        now = [await _served(e, "edge") for e in fleet]
                        return all(n > s for n, s in zip(now, start, strict=True))

                    await sotw.wait_for(both_served, 15, what=f"both Envoys serve {name}")

                await through_both("one")
                await sotw.wait_for(converged, 15, what="the fleet converged")
                protocols = {
                    (await node(plane, n) or {}).get("protocol")
                    for n in ("envoy-sotw", "envoy-delta")
                }
                assert protocols == {"sotw", "delta"}
                snap = plane.core.hub.snapshot
                assert all(
                    v == snap.version(CLUSTER_TYPE)
                    for v in (await sotw.resource_versions())["clusters"].values()
                )  # SotW: each resource carries its response's (type) version
                held = await delta.resource_versions()
                assert held["clusters"] == {
                    n: r.version for n, r in snap.get(CLUSTER_TYPE).resources.items()
                }

                await move_backend(plane.api, up2.port)
                await through_both("two")
                await sotw.wait_for(converged, 15, what="the fleet converged after a change")
                for envoy in fleet:
                    assert all(v == 0 for v in (await envoy.rejected_counts()).values())
