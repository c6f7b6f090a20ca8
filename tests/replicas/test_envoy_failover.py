"""Fail-over of a real Envoy between two real `flowplane serve` replicas on one PostgreSQL
database (issue 13): its bootstrap lists both replicas' xDS ports; the one it is connected to is
SIGKILLed; it reconnects to the other, keeps its configuration, gets a write made there during
the fail-over, and never rejects anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from flowplane.testing.envoy import ads_bootstrap, run_envoy
from flowplane.testing.factories import cluster_body
from tests.replicas.test_serve_processes import serve_two

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def both_replicas(boot: dict[str, Any], other_port: int) -> dict[str, Any]:
    """`boot` with the second replica's xDS port added to its xDS cluster."""
    xds = boot["static_resources"]["clusters"][0]
    endpoints = xds["load_assignment"]["endpoints"][0]["lb_endpoints"]
    second = {"endpoint": {"address": {"socket_address": {
        "address": "127.0.0.1", "port_value": other_port}}}}  # fmt: skip
    endpoints.append(second)
    return boot


async def test_envoy_fails_over_to_the_other_replica(tmp_path: Path) -> None:
    """The rule: "an Envoy whose bootstrap lists both replicas keeps serving when A is
    SIGKILLed, reconnects to B ...; writes during the fail-over are not lost" and "Envoy never
    NACKs" (issue 13)."""
    async with serve_two(tmp_path) as s, httpx.AsyncClient(headers=s.auth) as c:
        boot = both_replicas(
            ads_bootstrap("dp-1", "127.0.0.1", s.xds[0], keepalive=(1, 1)), s.xds[1]
        )
        r = await c.post(f"{s.api[0]}/api/v1/native/clusters", json=cluster_body("before"))
        assert r.status_code == 201, r.text
        async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
            await envoy.wait_ready()

            async def has(name: str) -> bool:
                return name in (await envoy.resource_versions())["clusters"]

            await envoy.wait_for(lambda: has("before"), 15, what="cluster before")

            async def connected_to() -> int:
                """1 + the index of the live replica listing the Envoy (0: none)."""
                for i, base in enumerate(s.api):
                    if s.procs[i].poll() is not None:
                        continue
                    got = await c.get(f"{base}/api/v1/nodes")
                    if got.status_code == 200 and got.json()["items"]:
                        return i + 1
                return 0

            first = await envoy.wait_for(connected_to, 10, what="node listed") - 1
            other = 1 - first
            s.procs[first].kill()  # SIGKILL: no goodbye to the Envoy
            await s.procs[first].wait()
            r = await c.post(f"{s.api[other]}/api/v1/native/clusters", json=cluster_body("during"))
            assert r.status_code == 201, r.text
            await envoy.wait_for(lambda: has("during"), 30, what="cluster during")
            assert await has("before")
            assert await connected_to() == other + 1
            assert set((await envoy.rejected_counts()).values()) <= {0}
