"""Acceptance of issue 12: a real Envoy follows a rollback. A route is changed (traffic goes to
upstream B), then rolled back to its first version (traffic back to upstream A), within the usual
push latency and with no NACK."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from flowplane.settings import Settings
from flowplane.testing.envoy import ads_bootstrap, run_envoy
from flowplane.testing.factories import cluster_body, listener_body
from flowplane.testing.ports import free_port
from tests.e2e.helpers import fwd, plane_and_upstreams, reaches, routes_with
from tests.helpers import N, ok

pytestmark = pytest.mark.e2e


async def test_envoy_follows_a_rollback_without_nack(
    xds_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    with trio.fail_after(60):
        async with plane_and_upstreams(xds_settings) as (plane, up1, up2):
            api = plane.api
            ok(await api.post(f"{N}/clusters", json=cluster_body("a", up1.port)))
            ok(await api.post(f"{N}/clusters", json=cluster_body("b", up2.port)))
            ok(await api.post(f"{N}/route-configs", json=routes_with(fwd("/", "a"))))
            ok(await api.post(f"{N}/listeners",
                              json=listener_body(address="127.0.0.1", port=port)))  # fmt: skip
            node = "envoy-rollback"
            async with run_envoy(ads_bootstrap(node, "127.0.0.1", plane.xds_port),
                                 tmp_dir=tmp_path) as envoy:  # fmt: skip
                await envoy.wait_for(reaches(envoy, port, "one"), 15, what="traffic to A")
                ok(await api.put(f"{N}/route-configs/routes", json=routes_with(fwd("/", "b"))), 200)
                await envoy.wait_for(reaches(envoy, port, "two"), 15, what="traffic to B")

                back = await api.post(f"{N}/route-configs/routes/rollback", json={"version": 1},
                                      headers={"If-Match": '"2"'})  # fmt: skip
                assert back.status_code == 200, back.text
                assert back.json()["version"] == 3
                started = trio.current_time()
                await envoy.wait_for(reaches(envoy, port, "one"), 15, what="traffic back to A")
                print(f"rollback reached Envoy's traffic in {trio.current_time() - started:.3f} s")
                assert all(v == 0 for v in (await envoy.rejected_counts()).values())
                status = (await api.get(f"/api/v1/nodes/{node}")).json()
                assert all(r["lastRejection"] is None for r in status["resources"].values())
