"""A real Envoy 1.40 through xDS worker processes (issue 14): traffic, an update, a NACK seen
on the core, and a killed worker (the Envoy reconnects and keeps serving throughout)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from flowplane.grpc.pool import WorkerPool
from flowplane.testing.envoy import ads_bootstrap, run_envoy
from flowplane.testing.factories import cluster_body, listener_body
from flowplane.testing.plane import run_plane
from flowplane.testing.ports import free_port
from flowplane.testing.upstream import run_upstream
from tests.e2e.helpers import has_cluster, move_backend, node, post_edge, reaches
from tests.helpers import N, ok, plane_settings

pytestmark = pytest.mark.e2e


async def test_envoy_through_workers(db_url: str, tmp_path: Path) -> None:
    port, bad_port = free_port(), free_port()
    node_id = "envoy-workers"
    settings = plane_settings(db_url, snapshot_debounce_seconds=0.001)
    with trio.fail_after(90):
        async with (
            run_plane(settings, workers=2) as plane,
            run_upstream("one") as up1,
            run_upstream("two") as up2,
        ):
            pool = plane.xds
            assert isinstance(pool, WorkerPool)
            api = plane.api
            await post_edge(api, up1.port, port)
            boot = ads_bootstrap(node_id, "127.0.0.1", plane.xds_port)
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                # traffic through the configuration a worker served
                await envoy.wait_for(reaches(envoy, port, "one"), 15, what="traffic to one")
                # an update written to the core reaches the Envoy through its worker
                await move_backend(api, up2.port)
                await envoy.wait_for(reaches(envoy, port, "two"), 15, what="traffic to two")

                # a NACK (a listener Envoy cannot bind) is visible on the core
                ok(await api.post(f"{N}/listeners", json=listener_body(
                    "unbindable", address="192.0.2.1", port=bad_port)))  # fmt: skip

                async def rejected() -> Any:
                    n = await node(plane, node_id)
                    return n["resources"]["Listener"]["lastRejection"] if n else None

                rej = await envoy.wait_for(rejected, 15, what="NACK visible on the core")
                assert "unbindable" in rej["resourceNames"]
                ok(await api.delete(f"{N}/listeners/unbindable"), 204)

                # kill the worker holding the Envoy's stream: it keeps serving traffic, the core
                # restarts the worker, the Envoy reconnects and later changes still arrive
                (slot,) = {s.worker for s in pool.connected() if s.node_id == node_id}
                pid = pool.pids()[slot]
                before = (await node(plane, node_id) or {})["streamId"]
                os.kill(pid, signal.SIGKILL)
                assert await reaches(envoy, port, "two")()

                async def reconnected() -> bool:
                    n = await node(plane, node_id)
                    return n is not None and n["streamId"] != before

                await envoy.wait_for(reconnected, 30, what="Envoy reconnected to a worker")
                assert await reaches(envoy, port, "two")()
                ok(await api.post(f"{N}/clusters", json=cluster_body("later", up1.port)))
                await envoy.wait_for(lambda: has_cluster(envoy, "later"), 15,
                                     what="a change after the reconnect")  # fmt: skip
                assert pool.restarts == 1
