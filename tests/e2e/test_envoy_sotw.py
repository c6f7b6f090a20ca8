"""State-of-the-world ADS against real Envoy 1.40 processes."""

from __future__ import annotations

import json
import os
import sys
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from flowplane.settings import Settings
from flowplane.testing.envoy import ads_bootstrap, run_envoy
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import run_plane
from flowplane.testing.ports import free_port
from flowplane.testing.upstream import run_upstream
from flowplane.xds.types import LISTENER_TYPE
from tests.e2e.helpers import (
    all_acked,
    body_of,
    fwd,
    has_cluster,
    move_backend,
    plane_and_upstreams,
    post_edge,
    routes_with,
    setup,
)
from tests.helpers import N, ok, plane_settings

pytestmark = pytest.mark.e2e


async def test_traffic_flows_and_changes_arrive(xds_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    with trio.fail_after(60):
        async with plane_and_upstreams(xds_settings) as (plane, up1, up2):
            api = plane.api
            await post_edge(api, up1.port, port)
            boot = ads_bootstrap("envoy-1", "127.0.0.1", plane.xds_port)
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                got = await envoy.wait_for(
                    lambda: _contains(body_of(envoy, port), b"one GET /"),
                    15,
                    what="traffic to upstream one",
                )
                assert got

                # /config_dump shows our versions (content hashes)
                snap = plane.core.hub.snapshot
                versions = await envoy.dynamic_versions()
                assert snap.versions() and versions["clusters"] and versions["listeners"]
                assert versions["clusters"] <= set(snap.versions().values())

                # change the endpoint: traffic moves
                await move_backend(api, up2.port)
                await envoy.wait_for(
                    lambda: _contains(body_of(envoy, port), b"two GET /"),
                    15,
                    what="traffic to upstream two",
                )
                assert all(v == 0 for v in (await envoy.rejected_counts()).values())


async def _contains(coro: Any, needle: bytes) -> bool:
    body = await coro
    return body is not None and needle in body


async def test_routing_features_reach_envoy(xds_settings: Settings, tmp_path: Path) -> None:
    """Add/delete routes, weighted split, redirect, header/query/method matchers."""
    port = free_port()
    with trio.fail_after(90):
        async with plane_and_upstreams(xds_settings) as (plane, up1, up2):
            api = plane.api
            ok(await api.post(f"{N}/clusters", json=cluster_body("c1", up1.port)))
            ok(await api.post(f"{N}/clusters", json=cluster_body("c2", up2.port)))
            ok(await api.post(f"{N}/route-configs", json=routes_with(fwd("/a", "c1"))))
            ok(await api.post(f"{N}/listeners", json=listener_body(address="127.0.0.1", port=port)))
            boot = ads_bootstrap("envoy-routes", "127.0.0.1", plane.xds_port)
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:

                async def get(path: str, **kw: Any) -> tuple[int, dict[str, str], bytes] | None:
                    try:
                        return await envoy.request(port, path, **kw)
                    except (OSError, httpx.TransportError):
                        return None

                async def until(path: str, check: Any, what: str, **kw: Any) -> None:
                    async def probe() -> bool:
                        r = await get(path, **kw)
                        return r is not None and bool(check(*r))

                    await envoy.wait_for(probe, 15, what=what)

                await until("/a", lambda s, h, b: s == 200 and b.startswith(b"one"), "route /a")
                # add a route -> it routes
                rc = routes_with(fwd("/b", "c2"), fwd("/a", "c1"))
                ok(await api.put(f"{N}/route-configs/routes", json=rc), 200)
                await until("/b", lambda s, h, b: s == 200 and b.startswith(b"two"), "route /b")
                # delete a route -> it stops routing (404 from Envoy: no route)
                rc = routes_with(fwd("/a", "c1"))
                ok(await api.put(f"{N}/route-configs/routes", json=rc), 200)
                await until("/b", lambda s, h, b: s == 404, "route /b gone")

                # header, query-parameter and method matchers pick the right route
                rc = routes_with(
                    fwd("/m", "c2", headers=[{"name": "x-pick", "exact": "two"}]),
                    fwd("/m", "c2", queryParameters=[{"name": "pick", "exact": "two"}]),
                    fwd("/m", "c2", methods=["POST"]),
                    fwd("/m", "c1"),
                    {"match": {"path": {"type": "exact", "value": "/old"}},
                     "action": {"type": "redirect", "path": "/new", "responseCode": 301}},
                    {"match": {"path": {"type": "prefix", "value": "/w"}},
                     "action": {"type": "weighted", "clusters": [{"name": "c1", "weight": 50},
                                                                  {"name": "c2", "weight": 50}]}},
                )  # fmt: skip
                ok(await api.put(f"{N}/route-configs/routes", json=rc), 200)
                await until(
                    "/old",
                    lambda s, h, b: s == 301 and h.get("location", "").endswith("/new"),
                    "redirect",
                )
                assert (await get("/m"))[2].startswith(b"one")  # type: ignore[index]
                r = await get("/m", headers={"x-pick": "two"})
                assert r is not None and r[2].startswith(b"two")
                r = await get("/m?pick=two")
                assert r is not None and r[2].startswith(b"two")
                r = await get("/m?pick=one")
                assert r is not None and r[2].startswith(b"one")
                r = await get("/m", method="POST")
                assert r is not None and r[2].startswith(b"two")
                seen = set()
                for _ in range(60):
                    r = await get("/w")
                    assert r is not None and r[0] == 200
                    seen.add(r[2][:3])
                    if len(seen) == 2:
                        break
                assert seen == {b"one", b"two"}, seen
                assert all(v == 0 for v in (await envoy.rejected_counts()).values())


async def test_nack_recorded_old_config_serves_no_resend(
    xds_settings: Settings, tmp_path: Path
) -> None:
    """A listener Envoy cannot bind (an address not on this host) passes our validation; Envoy
    NACKs it. The rejection shows in /api/v1/nodes, the old listener keeps serving, and nothing
    more is sent for LDS until the content changes (xds rules 4-5)."""
    port, bad_port = free_port(), free_port()
    node = "envoy-nack"
    with trio.fail_after(60):
        async with run_plane(xds_settings) as plane, run_upstream("one") as up:
            api = plane.api
            await post_edge(api, up.port, port)
            async with run_envoy(
                ads_bootstrap(node, "127.0.0.1", plane.xds_port), tmp_dir=tmp_path
            ) as envoy:
                serving = partial(_serving, envoy, port)
                await envoy.wait_for(serving, 15, what="traffic")
                ok(
                    await api.post(
                        f"{N}/listeners",
                        json=listener_body("unbindable", address="192.0.2.1", port=bad_port),
                    )
                )

                async def rejected() -> Any:
                    r = await api.get(f"/api/v1/nodes/{node}")
                    rej = (
                        r.json()["resources"]["Listener"]["lastRejection"]
                        if r.status_code == 200
                        else None
                    )
                    return rej

                rej = await envoy.wait_for(rejected, 15, what="NACK recorded")
                assert "192.0.2.1" in rej["errorDetail"] or "bind" in rej["errorDetail"].lower()
                assert rej["time"] and rej["version"]
                assert "unbindable" in rej["resourceNames"]
                nodes = (await api.get("/api/v1/nodes")).json()
                assert [n["id"] for n in nodes["items"]] == [node]
                assert nodes["items"][0]["team"] is None  # legacy node: no team, sees all
                assert await serving()  # the old config keeps serving
                attempts = await envoy.stat("listener_manager.lds.update_attempt")
                rejected_count = await envoy.stat("listener_manager.lds.update_rejected")
                assert rejected_count == 1
                # an unrelated change (a new cluster) must not resend the rejected LDS content
                ok(await api.post(f"{N}/clusters", json=cluster_body("other", up.port)))
                await envoy.wait_for(
                    lambda: has_cluster(envoy, "other"), 10, what="CDS update delivered"
                )
                await trio.sleep(0.5)  # a quiet window: nothing more may arrive for LDS
                assert await envoy.stat("listener_manager.lds.update_attempt") == attempts
                assert await envoy.stat("listener_manager.lds.update_rejected") == 1
                # fixing the content sends LDS again, and Envoy accepts it
                ok(await api.delete(f"{N}/listeners/unbindable"), 204)

                async def accepted() -> bool:
                    v = (await api.get(f"/api/v1/nodes/{node}")).json()["resources"]["Listener"]
                    return (
                        v["versionAcknowledged"]
                        == v["versionSent"]
                        == plane.core.hub.snapshot.version(LISTENER_TYPE)
                    )

                await envoy.wait_for(accepted, 10, what="LDS acked")
                assert await envoy.stat("listener_manager.lds.update_rejected") == 1
                assert await serving()


async def test_control_plane_restart_envoy_keeps_serving_same_versions(
    db_url: str, tmp_path: Path
) -> None:
    """Kill the control plane: Envoy keeps serving. Restart it on the same database: Envoy
    reconnects and receives identical versions (content hashes, xds rule 8), with no blip."""
    port, xds_port = free_port(), free_port()
    settings = plane_settings(db_url, xds_port)
    node = "envoy-restart"
    with trio.fail_after(90):
        async with run_upstream("one") as up, AsyncExitStack() as first:
            plane = await first.enter_async_context(run_plane(settings))
            await setup(plane, up.port, port)
            versions = plane.core.hub.snapshot.versions()
            boot = ads_bootstrap(node, "127.0.0.1", xds_port)
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                await envoy.wait_for(lambda: _serving(envoy, port), 15, what="traffic")
                held = await envoy.resource_versions()
                await first.aclose()  # the control plane goes away entirely
                for _ in range(20):
                    assert await _serving(envoy, port)  # Envoy keeps serving without it
                async with run_plane(settings) as plane:
                    assert plane.core.hub.snapshot.versions() == versions  # content hashes
                    await envoy.wait_for(
                        lambda: all_acked(plane, node, versions),
                        30,
                        what="Envoy reconnected and acked",
                    )
                    assert await envoy.resource_versions() == held
                    assert await _serving(envoy, port)
                    assert all(v == 0 for v in (await envoy.rejected_counts()).values())


async def _serving(envoy: Any, port: int) -> bool:
    try:
        return (await envoy.request(port, "/"))[2].startswith(b"one")
    except (OSError, httpx.TransportError):
        return False


async def test_two_envoys_converge(xds_settings: Settings, tmp_path: Path) -> None:
    port_a, port_b = free_port(), free_port()
    with trio.fail_after(60):
        async with run_plane(xds_settings) as plane, run_upstream("one") as up:
            api = plane.api
            ok(await api.post(f"{N}/clusters", json=cluster_body("backend", up.port)))
            ok(await api.post(f"{N}/route-configs", json=route_config_body()))
            ok(
                await api.post(
                    f"{N}/listeners", json=listener_body("a", address="127.0.0.1", port=port_a)
                )
            )
            ok(
                await api.post(
                    f"{N}/listeners", json=listener_body("b", address="127.0.0.2", port=port_b)
                )
            )
            boot1 = ads_bootstrap("envoy-a", "127.0.0.1", plane.xds_port)
            boot2 = ads_bootstrap("envoy-b", "127.0.0.1", plane.xds_port)
            async with (
                run_envoy(boot1, tmp_dir=tmp_path / "1") as e1,
                run_envoy(boot2, tmp_dir=tmp_path / "2") as e2,
            ):
                for e in (e1, e2):
                    await e.wait_for(lambda e=e: _serving(e, port_a), 15, what="traffic")
                await plane.settled()
                assert await e1.resource_versions() == await e2.resource_versions()
                nodes = (await api.get("/api/v1/nodes")).json()["items"]
                assert sorted(n["id"] for n in nodes) == ["envoy-a", "envoy-b"]


async def test_grpc_proxyless_client_resolves_through_api_listener(
    xds_settings: Settings, tmp_path: Path
) -> None:
    """gRPC's own xDS client: named LDS for an API listener (inline routes), then CDS for a
    LOGICAL_DNS cluster; it sends `node` on the first request only."""
    backend_port = free_port()
    api_listener = {
        "name": "echo",
        "apiListener": True,
        "filterChains": [{"filters": [{
            "type": "httpConnectionManager",
            "inlineRouteConfig": {"virtualHosts": [{
                "name": "echo", "domains": ["*"],
                "routes": [{"match": {"path": {"type": "prefix", "value": "/"}},
                            "action": {"type": "forward", "cluster": "echo-backend"}}],
            }]},
        }]}],
    }  # fmt: skip
    with trio.fail_after(60):
        async with run_plane(xds_settings) as plane:
            api = plane.api
            body = {
                "name": "echo-backend",
                "endpoints": [{"host": "localhost", "port": backend_port}],
            }
            ok(await api.post(f"{N}/clusters", json=body))
            ok(await api.post(f"{N}/listeners", json=api_listener))
            bootstrap = {
                "xds_servers": [{"server_uri": f"127.0.0.1:{plane.xds_port}",
                                 "channel_creds": [{"type": "insecure"}],
                                 "server_features": ["xds_v3"]}],
                "node": {"id": "grpc-client-1", "locality": {}},
            }  # fmt: skip
            env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(bootstrap)}
            result = await trio.run_process(
                [sys.executable, str(Path(__file__).with_name("grpc_xds_client.py")),
                 str(backend_port), "echo"],
                env=env, capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr.decode()[-3000:]
            assert result.stdout.decode().strip() == "echo:hello"
